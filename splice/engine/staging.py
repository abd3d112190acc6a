"""Copies what a sandboxed child must read from the blob store into its scratch directory.

The child cannot reach the blob store, so the supervisor stream-copies checkpointed step
outputs and webhook bodies into the execution's scratch directory before the start. The
child reads each file once and deletes it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from splice.blobs import BlobStore
from splice.engine.checkpoints import StoredOutput
from splice.engine.requests import WebhookRequest
from splice.engine.values import Recorded
from splice.errors import StoreError
from splice.sandbox.spec import WebhookSpec

COPY_CHUNK = 1024 * 1024  # bytes per read when a blob store offers only a stream
# Inline checkpoint bytes passed in the spec itself; the rest go as files, so the spec
# stays far below the channel's largest frame.
INLINE_CHECKPOINT_BUDGET = 16 * 1024 * 1024
REQUEST_BODY_FILE = "request-body"


def stage_checkpoints(
    blobs: BlobStore, checkpoints: Mapping[str, StoredOutput], scratch_dir: Path
) -> dict[str, Recorded]:
    """Return the checkpoints as the child takes them, copying blob outputs to files."""
    staged: dict[str, Recorded] = {}
    inline_bytes = 0
    for number, (path, stored) in enumerate(checkpoints.items()):
        name = f"checkpoint-{number}"
        if stored.blob is not None:
            size = stage_blob(blobs, stored.blob, scratch_dir / name)
            staged[path] = Recorded(stored.encoding, size, file=name)
            continue
        data = stored.data or b""
        inline_bytes += len(data)
        if inline_bytes <= INLINE_CHECKPOINT_BUDGET:
            staged[path] = Recorded(stored.encoding, len(data), data=data)
        else:
            _write_readable(scratch_dir / name, data)
            staged[path] = Recorded(stored.encoding, len(data), file=name)
    return staged


def stage_request(blobs: BlobStore, request: WebhookRequest, scratch_dir: Path) -> WebhookSpec:
    """Return the request as the child takes it, copying a body blob to a file."""
    if request.body_blob is None:
        return WebhookSpec(
            method=request.method,
            headers=list(request.headers),
            query_string=request.query_string,
            body=request.body or b"",
        )
    stage_blob(blobs, request.body_blob, scratch_dir / REQUEST_BODY_FILE)
    return WebhookSpec(
        method=request.method,
        headers=list(request.headers),
        query_string=request.query_string,
        body_file=REQUEST_BODY_FILE,
    )


def stage_blob(blobs: BlobStore, key: str, target: Path) -> int:
    """Copy the blob ``key`` to ``target`` without holding it whole in memory; return its size."""
    try:
        local = blobs.path(key)
        if local is not None:
            shutil.copyfile(local, target)
        elif hasattr(blobs, "open_read"):
            with blobs.open_read(key) as source, open(target, "wb") as output:
                shutil.copyfileobj(source, output, COPY_CHUNK)
        else:
            # NOTE: this store offers neither a local path nor a stream, so the blob passes
            # through memory whole.
            target.write_bytes(blobs.read_bytes(key))
    except (OSError, LookupError) as error:
        raise StoreError(
            f"could not copy the blob {key!r} into the scratch directory {str(target.parent)!r}: "
            f"{error}; check that the blob store is reachable and still holds it"
        ) from error
    # The child runs as another user, which reads the file through the other-users bits.
    os.chmod(target, 0o644)
    return target.stat().st_size


def _write_readable(target: Path, data: bytes) -> None:
    target.write_bytes(data)
    os.chmod(target, 0o644)
