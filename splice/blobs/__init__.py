"""Blob stores keep large values (step outputs, results, webhook bodies) outside the records
database, in a local folder (the embedded default) or an S3 bucket (the scaled-out mode).

A blob is named by a key, a relative POSIX path such as ``executions/ID/output-1.bin``
(see ``splice.blobs.keys``). Every store follows the same rules, so the engine works the same on
each of them. ``open_blob_store`` picks the store from the ``SPLICE_BLOB_URL`` setting.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO, Protocol

from splice.blobs.errors import BlobNotFoundError, BlobStoreError
from splice.blobs.local import LocalBlobStore
from splice.blobs.url import LocalLocation, S3Location, parse_blob_url


class BlobStore(Protocol):
    """Storage of blobs by key.

    Reading a missing blob raises BlobNotFoundError, and an invalid key raises ValueError.
    """

    def put_file(self, source: Path, key: str) -> str:
        """Move ``source`` into the store under ``key`` and return the key."""
        ...

    def write_stream(self, key: str, chunks: Iterable[bytes]) -> int:
        """Store the chunks as the blob ``key``, without holding them all, and return its size.

        The blob appears whole or not at all. After an error, including one raised by
        ``chunks``, a blob already stored under ``key`` is unchanged.
        """
        ...

    def read_bytes(self, key: str) -> bytes: ...

    def open_read(self, key: str) -> BinaryIO:
        """Open the blob for streaming reads. The caller must close the returned file."""
        ...

    def path(self, key: str) -> Path | None:
        """A local path to the blob, when the store has one (for streaming reads)."""
        ...

    def exists(self, key: str) -> bool: ...

    def delete(self, keys: Iterable[str]) -> int:
        """Delete the blobs ``keys`` and return how many distinct keys were given.

        A key without a blob is no error and counts too, because S3 does not report it.
        """
        ...

    def delete_prefix(self, prefix: str) -> int:
        """Delete every blob whose key starts with ``prefix + "/"`` and return how many."""
        ...

    def check(self) -> None:
        """Raise BlobStoreError unless the store can be written (bucket, folder, access)."""
        ...

    def close(self) -> None:
        """Release the store's connections. The store must not be used afterwards."""
        ...


def open_blob_store(url: str | None, *, local_root: Path) -> BlobStore:
    """Open the blob store that a ``SPLICE_BLOB_URL`` value names.

    None or an empty value opens the folder ``local_root``, ``file:///FOLDER`` another
    folder, and ``s3://BUCKET[/PREFIX][?endpoint_url=URL&region=REGION]`` an S3 bucket.
    An invalid URL raises SettingError. Only an s3 URL imports boto3.
    """
    location = parse_blob_url(url)
    if isinstance(location, S3Location):
        from splice.blobs.s3 import S3BlobStore

        return S3BlobStore(
            location.bucket,
            location.prefix,
            endpoint_url=location.endpoint_url,
            region=location.region,
        )
    return LocalBlobStore(location.folder or local_root)


__all__ = [
    "BlobNotFoundError",
    "BlobStore",
    "BlobStoreError",
    "LocalBlobStore",
    "LocalLocation",
    "S3Location",
    "open_blob_store",
    "parse_blob_url",
]
