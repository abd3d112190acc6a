"""Step values: encoding for records, sizes, masking of secrets, spilling large values to files."""

from __future__ import annotations

import datetime
import decimal
import errno
import os
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import msgspec

MASK = "[secret]"

# Encodings of a recorded value: msgpack of the value, or the raw bytes or text of a
# top-level bytes or str value, so a 100 MB file never gets a second copy for encoding.
MSGPACK, RAW_BYTES, RAW_TEXT = "msgpack", "bytes", "text"


class UnrecordableValue(TypeError):
    """A step produced a value that cannot be recorded or handed on."""


def _encode_hook(value: Any) -> Any:
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, uuid.UUID | decimal.Decimal | datetime.date | datetime.time):
        return str(value)
    raise UnrecordableValue(
        f"a value of type {type(value).__name__} cannot be recorded; return dicts, lists, "
        "strings, numbers, booleans, bytes or null"
    )


_encoder = msgspec.msgpack.Encoder(enc_hook=_encode_hook, decimal_format="string")
_decoder = msgspec.msgpack.Decoder()


def encode(value: Any) -> bytes:
    return _encoder.encode(value)


def decode(data: bytes, encoding: str = MSGPACK) -> Any:
    if encoding == RAW_BYTES:
        return data
    if encoding == RAW_TEXT:
        return data.decode("utf-8")
    return _decoder.decode(data)


SIZE_SAMPLE = 64  # items of a container measured before the rest is extrapolated


def value_size(value: Any) -> int:
    """Estimate a value's size in bytes without encoding it (strings count their UTF-8 bytes).

    Containers with more than SIZE_SAMPLE items are measured on their first items and
    extrapolated, so sizing a large parsed document costs the same as sizing a small one.
    """
    kind = type(value)
    if kind is str:
        return len(value) if value.isascii() else len(value.encode("utf-8", "surrogatepass"))
    if kind is dict:
        total = 1
        for count, (key, item) in enumerate(value.items()):
            if count == SIZE_SAMPLE:
                return 1 + (total - 1) * len(value) // count
            total += value_size(key) + value_size(item)
        return total
    if kind is list or kind is tuple:
        total = 1
        for count, item in enumerate(value):
            if count == SIZE_SAMPLE:
                return 1 + (total - 1) * len(value) // count
            total += value_size(item)
        return total
    if kind is bytes or kind is bytearray or kind is memoryview:
        return len(value)
    if isinstance(value, str | bytes | Mapping | list | tuple):  # subclasses: the slow path
        return value_size(_plain_copy(value))
    return 8


def _plain_copy(value: Any) -> Any:
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bytes):
        return bytes(value)
    if isinstance(value, Mapping):
        return dict(value)
    return list(value)


class Masker:
    """Replaces secret values wherever they occur in strings, bytes, logs and errors."""

    def __init__(self, secrets: Iterable[str]) -> None:
        unique = {s for s in secrets if s}
        # Sorted by length, longest first, so a secret that contains another is masked whole.
        self.secrets = sorted(unique, key=len, reverse=True)
        self._encoded = [s.encode("utf-8") for s in self.secrets]

    def __bool__(self) -> bool:
        return bool(self.secrets)

    def text(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def data(self, data: bytes) -> bytes:
        for secret in self._encoded:
            if secret in data:
                data = data.replace(secret, MASK.encode())
        return data

    def found_in(self, data: bytes) -> bool:
        return any(secret in data for secret in self._encoded)

    def value(self, value: Any) -> Any:
        """Return ``value`` with every secret masked (containers are copied, not changed)."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, bytes | bytearray):
            return self.data(bytes(value))
        if isinstance(value, Mapping):
            return {self.value(k): self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(item) for item in value]
        return value


class Recorded(msgspec.Struct, array_like=True, omit_defaults=True):
    """A value as recorded: inline encoded bytes, or a file in the scratch directory."""

    encoding: str
    size: int
    data: bytes | None = None  # inline, when at most the spill threshold
    file: str | None = None  # name within the scratch directory, when spilled


def record_value(value: Any, *, masker: Masker, threshold: int, scratch_dir: Path) -> Recorded:
    """Encode a value for the records, masking secrets and spilling large ones to a file."""
    if isinstance(value, bytes | bytearray | memoryview) and len(value) > threshold:
        data = masker.data(bytes(value)) if masker and masker.found_in(bytes(value)) else value
        return _spill(data, RAW_BYTES, scratch_dir)
    if isinstance(value, str) and len(value) > threshold:
        return _spill(masker.text(value).encode("utf-8"), RAW_TEXT, scratch_dir)
    encoded = encode(value)
    if masker and masker.found_in(encoded):
        encoded = encode(masker.value(value))
    if len(encoded) > threshold:
        return _spill(encoded, MSGPACK, scratch_dir)
    return Recorded(MSGPACK, len(encoded), data=encoded)


def _spill(data: bytes | bytearray | memoryview, encoding: str, scratch_dir: Path) -> Recorded:
    name = f"value-{uuid.uuid4().hex}"
    path = scratch_dir / name
    try:
        with open(path, "wb") as file:
            file.write(data)
    except OSError as error:
        # A partial file must never be handed on as the value, so it goes.
        path.unlink(missing_ok=True)
        hint = (
            "raise SPLICE_SANDBOX_FILE_SIZE"
            if error.errno == errno.EFBIG
            else "free space for the scratch directory"
        )
        raise UnrecordableValue(
            f"a value of {len(data)} bytes could not be written to the scratch directory "
            f"({error.strerror}); {hint}, or return a smaller value"
        ) from None
    return Recorded(encoding, os.path.getsize(path), file=name)
