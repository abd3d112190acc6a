"""Blobs as files in a local folder, the embedded default."""

from __future__ import annotations

import os
import shutil
from pathlib import Path, PurePosixPath


class LocalBlobStore:
    """Stores each blob as a file under ``root``; keys are relative POSIX paths."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _resolve(self, key: str) -> Path:
        relative = PurePosixPath(key)
        if relative.is_absolute() or ".." in relative.parts:
            raise ValueError(f"blob key {key!r} must be a relative path without '..'")
        return self.root.joinpath(*relative.parts)

    def put_file(self, source: Path, key: str) -> str:
        target = self._resolve(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(source, target)  # same file system: a rename, no copy
        except OSError:
            shutil.move(str(source), str(target))
        return key

    def read_bytes(self, key: str) -> bytes:
        return self._resolve(key).read_bytes()

    def path(self, key: str) -> Path | None:
        return self._resolve(key)

    def delete_prefix(self, prefix: str) -> int:
        folder = self._resolve(prefix)
        if not folder.exists():
            return 0
        count = sum(1 for item in folder.rglob("*") if item.is_file())
        shutil.rmtree(folder)
        return count
