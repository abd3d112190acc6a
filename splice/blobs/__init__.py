"""Blob stores keep large values (step outputs, results) outside the records database."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class BlobStore(Protocol):
    def put_file(self, source: Path, key: str) -> str:
        """Move ``source`` into the store under ``key`` and return the key."""
        ...

    def read_bytes(self, key: str) -> bytes: ...

    def path(self, key: str) -> Path | None:
        """A local path to the blob, when the store has one (for streaming reads)."""
        ...

    def delete_prefix(self, prefix: str) -> int: ...
