"""Blobs as files in a local folder, the embedded default."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import IO, BinaryIO

from splice.blobs.errors import BlobNotFoundError, BlobStoreError
from splice.blobs.keys import check_key


class LocalBlobStore:
    """Stores each blob as a file under ``root``; keys are relative POSIX paths."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"LocalBlobStore({str(self.root)!r})"

    def _resolve(self, key: str, *, label: str = "blob key") -> Path:
        return self.root.joinpath(*PurePosixPath(check_key(key, label=label)).parts)

    def put_file(self, source: Path, key: str) -> str:
        target = self._resolve(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(source, target)  # same file system: a rename, no copy
        except OSError:
            shutil.move(str(source), str(target))
        return key

    def write_stream(self, key: str, chunks: Iterable[bytes]) -> int:
        """Write the chunks to a temporary file beside the blob, then rename it into place.

        Readers see the old blob or the whole new one, never part of it. The file and its
        folder are synced before the rename returns, so a written blob survives a crash.
        """
        target = self._resolve(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            dir=target.parent, prefix=f".{target.name}.", suffix=".tmp", delete=False
        ) as temporary:
            try:
                size = _write_chunks(temporary, chunks)
            except BaseException:
                temporary.close()
                os.unlink(temporary.name)
                raise
        os.replace(temporary.name, target)
        _sync_folder(target.parent)
        return size

    def read_bytes(self, key: str) -> bytes:
        try:
            return self._resolve(key).read_bytes()
        except FileNotFoundError:
            raise self._not_found(key) from None

    def open_read(self, key: str) -> BinaryIO:
        try:
            return self._resolve(key).open("rb")
        except FileNotFoundError:
            raise self._not_found(key) from None

    def path(self, key: str) -> Path | None:
        return self._resolve(key)

    def exists(self, key: str) -> bool:
        return self._resolve(key).is_file()

    def delete(self, keys: Iterable[str]) -> int:
        targets = {key: self._resolve(key) for key in keys}
        for target in targets.values():
            # A folder of blobs is no blob, just as a key prefix in S3 is no object.
            with contextlib.suppress(IsADirectoryError):
                target.unlink(missing_ok=True)
        return len(targets)

    def delete_prefix(self, prefix: str) -> int:
        folder = self._resolve(prefix, label="key prefix")
        if not folder.is_dir():
            return 0
        count = sum(1 for item in folder.rglob("*") if item.is_file())
        shutil.rmtree(folder)
        return count

    def check(self) -> None:
        try:
            with tempfile.TemporaryFile(dir=self.root):
                pass
        except OSError as error:
            raise BlobStoreError(
                f"blob folder {str(self.root)!r} is not writable ({error}); give the user "
                "running Splice write access to it, or set SPLICE_BLOB_DIR or SPLICE_BLOB_URL "
                "to another folder"
            ) from error

    def close(self) -> None:
        """Do nothing, because the local store keeps no files or connections open."""

    def _not_found(self, key: str) -> BlobNotFoundError:
        return BlobNotFoundError(
            f"blob {key!r} not found in the folder {str(self.root)!r}: it was never written "
            "or has been deleted",
            key=key,
        )


def _write_chunks(output: IO[bytes], chunks: Iterable[bytes]) -> int:
    size = 0
    for chunk in chunks:
        output.write(chunk)
        size += len(chunk)
    output.flush()
    os.fsync(output.fileno())
    return size


def _sync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
