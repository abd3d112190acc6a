"""Behaviour every blob store shares, run on the local folder and on S3 (moto's server)."""

from __future__ import annotations

import hashlib
import random
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from splice.blobs import BlobNotFoundError, BlobStore

MIB = 1024 * 1024
STREAM_SIZE = 40 * 1000 * 1000
STREAM_CHUNK = 256 * 1024
# The S3 store buffers one 8 MiB part; the local store one chunk.
PEAK_MEMORY_LIMIT = STREAM_SIZE // 3


class StreamBroke(Exception):
    """The error the failing chunk iterators raise."""


def random_chunks(size: int, chunk_size: int, digest: hashlib._Hash) -> Iterator[bytes]:
    """Yield ``size`` pseudo-random bytes in chunks, adding each to ``digest``."""
    generator = random.Random(size)
    remaining = size
    while remaining > 0:
        chunk = generator.randbytes(min(chunk_size, remaining))
        digest.update(chunk)
        remaining -= len(chunk)
        yield chunk


def failing_chunks(size_before_error: int) -> Iterator[bytes]:
    """Yield ``size_before_error`` bytes, then raise StreamBroke."""
    for _ in range(size_before_error // MIB):
        yield b"x" * MIB
    raise StreamBroke("the client disconnected")


def test_put_file_moves_file(blob_store: BlobStore, tmp_path: Path) -> None:
    """put_file stores the file's bytes under the key and removes the source."""
    source = tmp_path / "output.bin"
    source.write_bytes(b"step output")
    key = blob_store.put_file(source, "executions/e1/output.bin")
    assert "executions/e1/output.bin" == key
    assert b"step output" == blob_store.read_bytes(key)
    assert not source.exists()


def test_write_stream_small(blob_store: BlobStore) -> None:
    """A few small chunks become one blob; the size returned is their total."""
    size = blob_store.write_stream("bodies/b1", [b"<Invoice>", b"", b"</Invoice>"])
    assert 19 == size
    assert b"<Invoice></Invoice>" == blob_store.read_bytes("bodies/b1")


def test_write_stream_empty(blob_store: BlobStore) -> None:
    """No chunks at all make an empty blob that exists."""
    assert 0 == blob_store.write_stream("bodies/empty", iter(()))
    assert blob_store.exists("bodies/empty")
    assert b"" == blob_store.read_bytes("bodies/empty")


def test_write_stream_replaces(blob_store: BlobStore) -> None:
    """Writing a key again replaces the blob."""
    blob_store.write_stream("bodies/b1", [b"first"])
    blob_store.write_stream("bodies/b1", [b"second"])
    assert b"second" == blob_store.read_bytes("bodies/b1")


def test_open_read_in_pieces(blob_store: BlobStore) -> None:
    """open_read returns a file whose read(n) returns n bytes until the end."""
    content = bytes(range(256)) * 1000
    blob_store.write_stream("bodies/b2", [content])
    with blob_store.open_read("bodies/b2") as reader:
        first = reader.read(1000)
        middle = reader.read(100_000)
        rest = reader.read()
        end = reader.read(10)
    assert content[:1000] == first
    assert content[1000:101_000] == middle
    assert content[101_000:] == rest
    assert b"" == end
    assert reader.closed


@pytest.mark.parametrize("operation", ["read_bytes", "open_read"])
def test_read_missing_blob(blob_store: BlobStore, operation: str) -> None:
    """Reading a key without a blob raises BlobNotFoundError naming the key."""
    with pytest.raises(BlobNotFoundError) as raised:
        getattr(blob_store, operation)("executions/none/output.bin")
    assert "executions/none/output.bin" == raised.value.key
    assert "'executions/none/output.bin' not found" in str(raised.value)
    assert isinstance(raised.value, FileNotFoundError)


def test_exists(blob_store: BlobStore) -> None:
    """exists is true for a stored blob only, not for a missing key or a folder."""
    blob_store.write_stream("executions/e1/output.bin", [b"x"])
    assert blob_store.exists("executions/e1/output.bin")
    assert not blob_store.exists("executions/e1/other.bin")
    assert not blob_store.exists("executions/e1")


def test_delete_keys(blob_store: BlobStore) -> None:
    """delete removes the given blobs, keeps the others and counts missing keys too."""
    for name in ("a", "b", "c"):
        blob_store.write_stream(f"executions/e1/{name}", [name.encode()])
    count = blob_store.delete(["executions/e1/a", "executions/e1/c", "executions/e1/missing"])
    assert 3 == count
    assert not blob_store.exists("executions/e1/a")
    assert blob_store.exists("executions/e1/b")
    assert not blob_store.exists("executions/e1/c")


def test_delete_folder_key(blob_store: BlobStore) -> None:
    """A key that is a folder of other blobs deletes nothing."""
    blob_store.write_stream("executions/e1/a", [b"a"])
    assert 1 == blob_store.delete(["executions/e1"])
    assert blob_store.exists("executions/e1/a")


def test_delete_duplicate_keys(blob_store: BlobStore) -> None:
    """A key given twice is deleted and counted once."""
    blob_store.write_stream("executions/e1/a", [b"a"])
    assert 1 == blob_store.delete(iter(["executions/e1/a", "executions/e1/a"]))
    assert not blob_store.exists("executions/e1/a")


def test_delete_nothing(blob_store: BlobStore) -> None:
    """Deleting no keys makes no request and returns 0."""
    assert 0 == blob_store.delete([])


def test_delete_prefix(blob_store: BlobStore) -> None:
    """delete_prefix removes the blobs below the prefix, not those of a longer sibling."""
    for key in ("executions/ab/x", "executions/ab/deep/y", "executions/abc/z", "other/w"):
        blob_store.write_stream(key, [b"1"])
    assert 2 == blob_store.delete_prefix("executions/ab")
    assert not blob_store.exists("executions/ab/x")
    assert not blob_store.exists("executions/ab/deep/y")
    assert blob_store.exists("executions/abc/z")
    assert blob_store.exists("other/w")


def test_delete_prefix_missing(blob_store: BlobStore) -> None:
    """A prefix without blobs deletes nothing and returns 0."""
    assert 0 == blob_store.delete_prefix("executions/none")


@pytest.mark.parametrize(
    "key", ["", "/absolute", "a/../b", "a//b", "a/./b", "trailing/", "./a", ".", "..", "a\x00b"]
)
def test_invalid_key(blob_store: BlobStore, key: str) -> None:
    """A key that is not a normalized relative path raises ValueError before any request."""
    with pytest.raises(ValueError, match="is invalid"):
        blob_store.write_stream(key, [b"x"])
    with pytest.raises(ValueError, match="is invalid"):
        blob_store.exists(key)


@pytest.mark.parametrize("prefix", ["", "/", "a/../b", "executions/"])
def test_invalid_prefix(blob_store: BlobStore, prefix: str) -> None:
    """delete_prefix rejects an empty or unnormalized prefix rather than delete everything."""
    blob_store.write_stream("executions/e1/a", [b"a"])
    with pytest.raises(ValueError, match="key prefix"):
        blob_store.delete_prefix(prefix)
    assert blob_store.exists("executions/e1/a")


def test_failed_stream_keeps_old_blob(blob_store: BlobStore) -> None:
    """An iterator that raises midway (past the first S3 part) leaves the old blob intact."""
    blob_store.write_stream("bodies/b1", [b"old body"])
    with pytest.raises(StreamBroke):
        blob_store.write_stream("bodies/b1", failing_chunks(12 * MIB))
    assert b"old body" == blob_store.read_bytes("bodies/b1")


def test_failed_stream_leaves_no_blob(blob_store: BlobStore) -> None:
    """An iterator that raises before its first part is sent leaves no blob."""
    with pytest.raises(StreamBroke):
        blob_store.write_stream("bodies/b1", failing_chunks(MIB))
    assert not blob_store.exists("bodies/b1")


def test_large_stream_round_trip(blob_store: BlobStore) -> None:
    """40 MB written and read in chunks round-trip by hash with a peak far below their size."""
    written = hashlib.sha256()
    tracemalloc.start()
    try:
        size = blob_store.write_stream(
            "bodies/large", random_chunks(STREAM_SIZE, STREAM_CHUNK, written)
        )
        _, write_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        read = hashlib.sha256()
        with blob_store.open_read("bodies/large") as reader:
            while chunk := reader.read(STREAM_CHUNK):
                read.update(chunk)
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert STREAM_SIZE == size
    assert written.hexdigest() == read.hexdigest()
    assert write_peak < PEAK_MEMORY_LIMIT, f"write peak {write_peak / MIB:.1f} MiB"
    assert read_peak < PEAK_MEMORY_LIMIT, f"read peak {read_peak / MIB:.1f} MiB"


def test_check_passes(blob_store: BlobStore) -> None:
    """check returns None on a usable store."""
    assert blob_store.check() is None
