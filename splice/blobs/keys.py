"""Rules for blob keys, the same for every store so that a key valid in one is valid in all."""

from __future__ import annotations

from pathlib import PurePosixPath


def check_key(key: str, *, label: str = "blob key") -> str:
    """Return ``key`` unchanged, or raise ValueError unless it is a normalized relative path.

    A key is a relative POSIX path of non-empty names other than ``.`` and ``..``, such as
    ``executions/ID/output-1.bin``. The local store maps it to a file below its folder, and
    the S3 store to an object key below its prefix, so both see the same blob for one key.
    """
    if not isinstance(key, str) or not key:
        raise ValueError(f"{label} {key!r} is invalid: it must be a non-empty string")
    path = PurePosixPath(key)
    if path.is_absolute() or ".." in path.parts or path.as_posix() != key or key == ".":
        raise ValueError(
            f"{label} {key!r} is invalid: use a relative path of names separated by single "
            "'/', without '.', '..', a leading or a trailing '/'"
        )
    if "\x00" in key:
        raise ValueError(f"{label} {key!r} is invalid: it contains a NUL character")
    return key
