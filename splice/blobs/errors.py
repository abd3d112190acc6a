"""Errors of the blob stores, part of the ``StoreError`` branch of ``splice.errors``."""

from __future__ import annotations

from splice.errors import StoreError


class BlobStoreError(StoreError):
    """The blob store failed, for example unreachable or denied; ``key`` is the blob, if any."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        self.key = key
        super().__init__(message)


class BlobNotFoundError(BlobStoreError, FileNotFoundError):
    """No blob is stored under ``key``.

    It is also a FileNotFoundError, the error the local store raised before this class
    existed, so callers that catch that keep working.
    """

    def __init__(self, message: str, *, key: str) -> None:
        super().__init__(message, key=key)
