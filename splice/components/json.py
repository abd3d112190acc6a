"""The json component: parse and render JSON text."""

from __future__ import annotations

import json
from typing import Any

import msgspec

from splice.sdk import ActionContext, ActionError, Component, Input

component = Component("json", description="Parse and render JSON")


@component.action(
    inputs={
        "content": Input("string|bytes", required=True, description="JSON text or its bytes"),
    },
    description="Parse JSON text into a value",
    output="the parsed value",
)
def parse(context: ActionContext, *, content: str | bytes) -> Any:
    """Parse ``content``; bytes may be UTF-8, UTF-16 or UTF-32, with or without a BOM."""
    if isinstance(content, str):
        content = content.removeprefix("\ufeff")
    try:
        return json.loads(content)
    except json.JSONDecodeError as error:
        raise ActionError(
            f"content is not valid JSON: {error.msg} at line {error.lineno}, "
            f"column {error.colno}; fix the JSON text given to json.parse",
            retryable=False,
        ) from error
    except UnicodeDecodeError as error:
        raise ActionError(
            f"content is not valid JSON: invalid {error.encoding} byte at offset "
            f"{error.start}; JSON bytes must be UTF-8, UTF-16 or UTF-32",
            retryable=False,
        ) from error


@component.action(
    inputs={
        "value": Input("any", description="The value to render; null renders as null"),
        "indent": Input("integer", description="Spaces per indent level; compact when null"),
        "sort_keys": Input("boolean", default=False, description="Sort object keys"),
    },
    description="Render a value as JSON text",
    output="string",
)
def render(context: ActionContext, *, value: Any, indent: int | None, sort_keys: bool) -> str:
    """Render ``value`` as JSON, keeping non-ASCII characters and exact decimals.

    A ``Decimal`` is written as the number it holds, bytes as a base64 string.
    """
    encoder = msgspec.json.Encoder(decimal_format="number", order="sorted" if sort_keys else None)
    try:
        encoded = encoder.encode(value)
    except (TypeError, msgspec.EncodeError) as error:
        raise ActionError(
            f"value cannot be rendered as JSON: {error}; "
            "give json.render only objects, lists, strings, numbers, booleans and null",
            retryable=False,
        ) from error
    if indent is not None:
        encoded = msgspec.json.format(encoded, indent=indent)
    return encoded.decode("utf-8")
