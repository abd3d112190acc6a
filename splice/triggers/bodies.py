"""Webhook requests as steps see them: the parsed body and the ``trigger`` mapping.

``parse_body`` never raises on a body that a sender got wrong. An empty body has the kind
``empty``; a body that is not valid in its declared format or charset has the kind
``invalid`` and a ``problem`` that says why. The server still accepts such a delivery
(no 5xx), and steps can read the exact bytes from ``trigger.raw``.

Kinds by media type (the Content-Type without parameters, compared case-insensitively):

    application/json, */*+json             json    the parsed value
    application/x-www-form-urlencoded      form    field name -> string, or list of strings
    application/xml, text/xml, */*+xml     xml     what the xml.parse action returns
    other text/*                           text    the decoded string
    anything else, or no Content-Type      binary  None; the bytes are in trigger.raw

TODO: multipart/form-data is not parsed yet, so it arrives as binary.
"""

from __future__ import annotations

import codecs
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote_to_bytes

import msgspec

from splice.components import xml
from splice.sdk import ActionContext, ActionError

__all__ = [
    "BodyKind",
    "InvalidBodyError",
    "ParsedBody",
    "build_trigger",
    "join_headers",
    "parse_body",
    "parse_content_type",
    "parse_form",
]

BodyKind = Literal["json", "form", "xml", "text", "binary", "empty", "invalid"]

FORM_TYPE = "application/x-www-form-urlencoded"
XML_TYPES = frozenset({"application/xml", "text/xml"})
# Python codecs that interpret escapes or domain-name syntax instead of mapping bytes to
# characters. No charset label from a sender may select them.
_NOT_CHARSETS = frozenset(
    {"unicode-escape", "raw-unicode-escape", "idna", "punycode", "undefined", "charmap"}
)
_UTF8_BOM = codecs.BOM_UTF8

# xml.parse reads its context only to resolve a file path. A body is always passed as
# content, so nothing reads this placeholder.
_XML_CONTEXT = ActionContext(
    execution_id="",
    step="trigger",
    attempt=1,
    config={},
    logger=logging.LoggerAdapter(logging.getLogger(__name__), {}),
    scratch_dir=Path(),
)


@dataclass(frozen=True)
class ParsedBody:
    """A webhook body parsed by its Content-Type.

    ``body`` is None for the kinds binary, empty and invalid. ``charset`` is the charset
    the bytes were decoded with (for invalid, the declared one). It is None for binary
    and empty bodies, and for XML whose own declaration or byte order mark decided.
    ``problem`` describes why a body is invalid.
    """

    kind: BodyKind
    body: Any = None
    media_type: str | None = None
    charset: str | None = None
    problem: str | None = None


class InvalidBodyError(ValueError):
    """A body or query string is not valid in its declared format or charset.

    parse_body catches it and returns the kind invalid, with the message as its problem.
    """


def parse_body(content_type: str | None, body: bytes) -> ParsedBody:
    """Parse ``body`` by its ``content_type``; never raise on what a sender got wrong.

    The caller decides which bodies are small enough to parse in memory.
    """
    media_type, parameters = parse_content_type(content_type)
    charset = parameters.get("charset")
    if not body:
        return ParsedBody("empty", media_type=media_type)
    try:
        return _parse(media_type, charset, body)
    except InvalidBodyError as invalid:
        return ParsedBody("invalid", media_type=media_type, charset=charset, problem=str(invalid))


def _parse(media_type: str | None, charset: str | None, body: bytes) -> ParsedBody:
    if media_type is None:
        return ParsedBody("binary")
    if media_type == "application/json" or media_type.endswith("+json"):
        return _parse_json(media_type, charset, body)
    if media_type == FORM_TYPE:
        used = charset or "utf-8"
        return ParsedBody("form", parse_form(body, charset=used), media_type, used)
    if media_type in XML_TYPES or media_type.endswith("+xml"):
        return _parse_xml(media_type, charset, body)
    if media_type.startswith("text/"):
        return _parse_text(media_type, charset, body)
    return ParsedBody("binary", media_type=media_type)


def _parse_json(media_type: str, charset: str | None, body: bytes) -> ParsedBody:
    """Parse JSON: UTF-8 (RFC 8259) unless the sender declares another charset.

    A leading UTF-8 byte order mark is skipped, as RFC 8259 allows a parser to do.
    """
    text = _decode(body, charset or "utf-8", "JSON")
    try:
        value = msgspec.json.decode(text)
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        raise InvalidBodyError(f"the body is not valid JSON: {error}") from None
    except RecursionError:
        raise InvalidBodyError("the body is JSON nested too deeply to parse") from None
    return ParsedBody("json", value, media_type, charset or "utf-8")


def _parse_xml(media_type: str, charset: str | None, body: bytes) -> ParsedBody:
    """Parse XML with the xml.parse action, so DTD entity declarations are rejected.

    A charset parameter takes precedence over the document's own encoding declaration
    (RFC 7303, section 3). Without one, the byte order mark or the declaration decides.
    """
    content: str | bytes = body if charset is None else _decode(body, charset, "XML")
    try:
        value = xml.parse(
            _XML_CONTEXT,
            path=None,
            content=content,
            namespaces=None,
            force_list=None,
            strip_whitespace=True,
        )
    except ActionError as error:
        # xml.parse names its input "content"; here that input is the request body.
        message = str(error).removeprefix("content ")
        raise InvalidBodyError(f"the body {message}") from None
    except (LookupError, ValueError) as error:
        # xml.parse reports a bad encoding declaration as ActionError; these remain as a
        # guard, since a body must never make the webhook return a server error.
        raise InvalidBodyError(
            f"the body's XML declaration names an encoding that cannot be read: {error}"
        ) from None
    return ParsedBody("xml", value, media_type, charset)


def _parse_text(media_type: str, charset: str | None, body: bytes) -> ParsedBody:
    """Decode text in its declared charset; without one, UTF-8, else ISO-8859-1.

    RFC 2046 makes US-ASCII the default for text/plain, and UTF-8 decodes every US-ASCII
    body the same way. A body that is not UTF-8 either is decoded as ISO-8859-1, which
    maps every byte to a character, and ``charset`` reports that fallback.
    """
    if charset is not None:
        return ParsedBody("text", _decode(body, charset, "text"), media_type, charset)
    try:
        return ParsedBody("text", _decode_utf8(body), media_type, "utf-8")
    except UnicodeDecodeError:
        return ParsedBody("text", body.decode("iso-8859-1"), media_type, "iso-8859-1")


def _decode(body: bytes, charset: str, format_name: str) -> str:
    """Decode ``body`` in ``charset``, raising InvalidBodyError for bad bytes or names."""
    codec = _codec(charset)
    start = len(_UTF8_BOM) if codec == "utf-8" and body.startswith(_UTF8_BOM) else 0
    try:
        return body[start:].decode(codec)
    except UnicodeDecodeError as error:
        offset = start + error.start
        raise InvalidBodyError(
            f"the {format_name} body is not valid {charset}: the byte at offset {offset} "
            f"({body[offset : offset + 1]!r}) cannot be decoded"
        ) from None


def _codec(charset: str) -> str:
    """Return the Python codec of a charset label, raising InvalidBodyError if none fits."""
    try:
        name = codecs.lookup(charset).name
        if name not in _NOT_CHARSETS:
            # Codecs such as zlib or base64 convert bytes to bytes and reject decoding.
            b"\x00".decode(name, "replace")
            return name
    except (LookupError, UnicodeError):
        pass
    raise InvalidBodyError(f"the Content-Type declares the unknown charset {charset!r}")


def _decode_utf8(body: bytes) -> str:
    """Decode UTF-8, skipping a leading byte order mark."""
    return body.removeprefix(_UTF8_BOM).decode("utf-8")


def parse_form(data: bytes, *, charset: str = "utf-8", strict: bool = True) -> dict[str, Any]:
    """Parse ``application/x-www-form-urlencoded`` data (a body or a query string).

    A name that occurs once maps to a string; a repeated name maps to the list of its
    values in order. A blank value (``a=`` or a bare ``a``) stays an empty string, so a
    step can tell a field sent empty from one not sent. ``+`` is a space and invalid
    percent escapes are kept as they are (WHATWG URL standard). Text that is not valid in
    ``charset`` raises InvalidBodyError when ``strict``, else decodes to U+FFFD.
    """
    codec = _codec(charset)
    errors = "strict" if strict else "replace"
    fields: dict[str, Any] = {}
    for number, pair in enumerate(data.split(b"&"), start=1):
        if not pair:
            continue
        raw_name, _, raw_value = pair.partition(b"=")
        try:
            name = _unquote_plus(raw_name).decode(codec, errors)
            value = _unquote_plus(raw_value).decode(codec, errors)
        except UnicodeDecodeError:
            raise InvalidBodyError(
                f"field {number} of the form-encoded data is not valid {charset} "
                "once its percent escapes are decoded"
            ) from None
        _add_field(fields, name, value)
    return fields


def _unquote_plus(raw: bytes) -> bytes:
    return unquote_to_bytes(raw.replace(b"+", b" "))


def _add_field(fields: dict[str, Any], name: str, value: str) -> None:
    if name not in fields:
        fields[name] = value
    elif isinstance(fields[name], list):
        fields[name].append(value)
    else:
        fields[name] = [fields[name], value]


def parse_content_type(value: str | None) -> tuple[str | None, dict[str, str]]:
    """Split a Content-Type into the lower-case media type and its parameters.

    Parameter names are lower-cased and quoted values unquoted. A value without a
    ``type/subtype`` gives None, as a missing Content-Type does.
    """
    if not value:
        return None, {}
    media_type, *rest = value.split(";")
    media_type = media_type.strip().lower()
    kind, slash, subtype = media_type.partition("/")
    if not (kind and slash and subtype) or " " in media_type:
        return None, {}
    parameters: dict[str, str] = {}
    for item in rest:
        name, equals, parameter = item.partition("=")
        if equals:
            parameters[name.strip().lower()] = _unquote(parameter.strip())
    return media_type, parameters


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return value


def join_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Return the headers with lower-case names, repeated headers joined in order.

    Repeated fields are joined with ``", "`` (RFC 9110, section 5.3) and repeated
    ``Cookie`` fields with ``"; "`` (RFC 9113, section 8.2.3).
    """
    joined: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        if key in joined:
            separator = "; " if key == "cookie" else ", "
            joined[key] = joined[key] + separator + value
        else:
            joined[key] = value
    return joined


def build_trigger(
    *,
    method: str,
    headers: Iterable[tuple[str, str]],
    query_string: bytes,
    parsed: ParsedBody,
    raw: Any = None,
) -> dict[str, Any]:
    """Build the ``trigger`` mapping that the steps of a webhook execution read.

    ``raw`` is the reference to the body's bytes in the blob store, which the server
    fills in once the body is stored. The query string is decoded as UTF-8 with invalid
    bytes replaced, because a request's URL cannot be rejected as a body can.
    """
    # NOTE: headers are kept whole, Authorization and Cookie included, so steps can check
    # a sender's own credentials. They are recorded with the execution, as the body is.
    return {
        "method": method.upper(),
        "headers": join_headers(headers),
        "query": parse_form(query_string, strict=False),
        "body": parsed.body,
        "body_kind": parsed.kind,
        "body_problem": parsed.problem,
        "raw": raw,
    }
