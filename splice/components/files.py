"""The files component: list, read and write files in local folders.

A relative path is taken from the execution's working directory (where `splice run` was
started) when it has one, otherwise from the current directory.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from splice.sdk import ActionContext, ActionError, Component, Input

component = Component("files", description="Local files and folders")


def resolve_path(context: ActionContext, path: str) -> Path:
    """Return ``path`` as an absolute path, relative ones taken from the working directory."""
    candidate = Path(path)
    if not candidate.is_absolute() and context.working_dir is not None:
        candidate = context.working_dir / candidate
    return candidate.absolute()


@component.action(
    name="list",
    inputs={
        "path": Input("string", required=True, description="Folder to list"),
        "pattern": Input("string", default="*", description="Glob pattern for file names"),
        "recursive": Input("boolean", default=False, description="Include sub-folders"),
        "case_sensitive": Input(
            "boolean", default=False, description="Match the pattern case-sensitively"
        ),
    },
    description="List the files of a folder whose names match a glob pattern",
    output="object with files (path, name, size, modified) sorted by name, and count",
)
def list_files(
    context: ActionContext, *, path: str, pattern: str, recursive: bool, case_sensitive: bool
) -> dict[str, Any]:
    """List matching files; ``modified`` is an ISO-8601 UTC timestamp."""
    folder = resolve_path(context, path)
    if not folder.is_dir():
        raise ActionError(_missing_folder_message(folder), retryable=False)
    found = [
        _describe(file)
        for file in _walk(folder, recursive)
        if _matches(file.name, pattern, case_sensitive)
    ]
    found.sort(key=lambda entry: (entry["name"], entry["path"]))
    return {"files": found, "count": len(found)}


def _missing_folder_message(folder: Path) -> str:
    if folder.exists():
        return f"{folder} is not a folder; give files.list the folder that contains the files"
    return f"folder {folder} not found; check the path input"


def _walk(folder: Path, recursive: bool) -> Iterator[Path]:
    if not recursive:
        yield from (entry for entry in folder.iterdir() if entry.is_file())
        return
    for parent, _, names in os.walk(folder):
        for name in names:
            entry = Path(parent, name)
            if entry.is_file():
                yield entry


def _matches(name: str, pattern: str, case_sensitive: bool) -> bool:
    if case_sensitive:
        return fnmatch.fnmatchcase(name, pattern)
    return fnmatch.fnmatchcase(name.casefold(), pattern.casefold())


def _describe(file: Path) -> dict[str, Any]:
    status = file.stat()
    return {
        "path": str(file),
        "name": file.name,
        "size": status.st_size,
        "modified": datetime.fromtimestamp(status.st_mtime, UTC).isoformat(),
    }


@component.action(
    inputs={
        "path": Input("string", required=True, description="File to read"),
        "mode": Input(
            "string", default="bytes", choices=("bytes", "text"), description="Return bytes or text"
        ),
        "encoding": Input("string", default="utf-8", description="Encoding of the text"),
    },
    description="Read a file as bytes or text",
    output="bytes, or string when mode is text",
)
def read(context: ActionContext, *, path: str, mode: str, encoding: str) -> bytes | str:
    """Read a file; in text mode a UTF-8 byte order mark is dropped."""
    file = resolve_path(context, path)
    data = read_file(file)
    if mode == "bytes":
        return data
    return decode_text(data, encoding, source=str(file))


def read_file(file: Path) -> bytes:
    """Read ``file``; a failure raises ActionError naming it."""
    try:
        return file.read_bytes()
    except FileNotFoundError as error:
        raise ActionError(
            f"file {file} not found; check the path input", retryable=False
        ) from error
    except IsADirectoryError as error:
        raise ActionError(
            f"{file} is a folder; use files.list to find the files in it", retryable=False
        ) from error
    except OSError as error:
        raise ActionError(f"cannot read {file}: {error.strerror}") from error


def decode_text(data: bytes, encoding: str, *, source: str) -> str:
    """Decode ``data``, dropping a UTF-8 BOM; the error names ``source`` and the byte offset."""
    codec = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    try:
        return data.decode(codec)
    except LookupError as error:
        raise ActionError(
            f"unknown encoding {encoding!r} for {source}; give a Python codec name such as "
            "'utf-8' or 'cp1252'",
            retryable=False,
        ) from error
    except UnicodeDecodeError as error:
        raise ActionError(
            f"{source} is not valid {encoding}: invalid byte at offset {error.start}; "
            "set the encoding input to the encoding the file uses, or read it as bytes",
            retryable=False,
        ) from error


@component.action(
    inputs={
        "path": Input("string", required=True, description="File to write"),
        "content": Input("string|bytes", required=True, description="What to write"),
        "overwrite": Input("boolean", default=True, description="Replace an existing file"),
        "make_dirs": Input("boolean", default=True, description="Create missing parent folders"),
        "encoding": Input("string", default="utf-8", description="Encoding of string content"),
    },
    description="Write a file atomically",
    output="object with the absolute path and the size in bytes",
)
def write(
    context: ActionContext,
    *,
    path: str,
    content: str | bytes,
    overwrite: bool,
    make_dirs: bool,
    encoding: str,
) -> dict[str, Any]:
    """Write ``content`` to a temporary file in the target folder, then rename it into place.

    Readers see either the old file or the whole new one, never a partly written file.
    """
    file = resolve_path(context, path)
    data = _encode(content, encoding, file)
    _prepare_folder(file.parent, make_dirs)
    temporary = file.with_name(f".{file.name}.{secrets.token_hex(6)}.tmp")
    try:
        _write_synced(temporary, data)
        _move_into_place(temporary, file, overwrite)
    finally:
        temporary.unlink(missing_ok=True)
    return {"path": str(file), "size": len(data)}


def _encode(content: str | bytes, encoding: str, file: Path) -> bytes:
    if isinstance(content, bytes):
        return content
    try:
        return content.encode(encoding)
    except LookupError as error:
        raise ActionError(
            f"unknown encoding {encoding!r} for {file}; give a Python codec name such as "
            "'utf-8' or 'cp1252'",
            retryable=False,
        ) from error
    except UnicodeEncodeError as error:
        raise ActionError(
            f"content for {file} cannot be encoded as {encoding}: character "
            f"{content[error.start]!r} at offset {error.start}; choose an encoding that has it",
            retryable=False,
        ) from error


def _prepare_folder(folder: Path, make_dirs: bool) -> None:
    if folder.is_dir():
        return
    if not make_dirs:
        raise ActionError(
            f"folder {folder} not found; create it or set make_dirs to true", retryable=False
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ActionError(f"cannot create folder {folder}: {error.strerror}") from error


def _write_synced(temporary: Path, data: bytes) -> None:
    # os.open with mode 0o666 lets the umask set the permissions, as a plain open() would.
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
    except OSError as error:
        raise ActionError(f"cannot write {temporary.parent}: {error.strerror}") from error


def _move_into_place(temporary: Path, file: Path, overwrite: bool) -> None:
    try:
        if overwrite:
            os.replace(temporary, file)
        else:
            _link_without_replacing(temporary, file)
    except FileExistsError as error:
        raise ActionError(
            f"file {file} already exists; set overwrite to true to replace it", retryable=False
        ) from error
    except IsADirectoryError as error:
        raise ActionError(f"{file} is a folder; give a file path", retryable=False) from error
    except OSError as error:
        raise ActionError(f"cannot write {file}: {error.strerror}") from error


def _link_without_replacing(temporary: Path, file: Path) -> None:
    # A hard link fails when the target exists, so a file created meanwhile is kept.
    try:
        os.link(temporary, file)
    except FileExistsError:
        raise
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS):
            raise
        # NOTE: without hard links, a file created between this check and the rename is replaced.
        if file.exists():
            raise FileExistsError(errno.EEXIST, "File exists", str(file)) from error
        os.replace(temporary, file)
