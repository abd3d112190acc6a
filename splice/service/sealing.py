"""Seal config values at rest with the master key (Fernet: AES-128-CBC with HMAC-SHA256)."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from splice.errors import SettingError, StoreError

KEY_FILE = "master.key"


class Sealer:
    """Encrypts and authenticates values with one master key."""

    def __init__(self, key: str | bytes) -> None:
        try:
            self._fernet = Fernet(key)
        except (ValueError, TypeError):
            raise SettingError(
                "the master key is not a Fernet key (32 random bytes, URL-safe base64)",
                setting="SPLICE_MASTER_KEY",
                fix="create one with `python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())'`",
            ) from None

    @classmethod
    def from_settings(cls, master_key: str | None, data_dir: Path) -> Sealer:
        """Build a sealer from SPLICE_MASTER_KEY, else from the key file in the data folder.

        The key file is created on first use, readable by its owner only.

        Every process of a scaled-out deployment must use the same key, so there the key is
        given in SPLICE_MASTER_KEY rather than left to each host's data folder.
        """
        if master_key:
            return cls(master_key.strip())
        path = data_dir / KEY_FILE
        if not path.exists():
            data_dir.mkdir(parents=True, exist_ok=True)
            try:
                descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass  # another process created it first
            else:
                with os.fdopen(descriptor, "wb") as file:
                    file.write(Fernet.generate_key())
        return cls(path.read_bytes().strip())

    def seal(self, data: bytes) -> bytes:
        """Encrypt and sign ``data``; return a Fernet token."""
        return self._fernet.encrypt(data)

    def unseal(self, token: bytes, *, what: str) -> bytes:
        """Decrypt ``token``; ``what`` names the value in the error when the key is wrong."""
        try:
            return self._fernet.decrypt(token)
        except InvalidToken:
            raise StoreError(
                f"{what} was sealed with another master key, so it cannot be read; set "
                "SPLICE_MASTER_KEY to the key this deployment was created with, or deploy "
                "the instance again"
            ) from None
