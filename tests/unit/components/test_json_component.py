"""Tests of json.parse and json.render."""

from __future__ import annotations

from decimal import Decimal

import pytest

from splice.sdk import ActionError
from splice.testing import invoke_action


def test_parse_text() -> None:
    """json.parse returns the value of JSON text."""
    assert {"a": [1, 2.5, None, True]} == invoke_action(
        "json.parse", content='{"a": [1, 2.5, null, true]}'
    )


def test_parse_bytes_with_bom() -> None:
    """json.parse accepts UTF-8 bytes that start with a byte order mark."""
    content = '\ufeff{"name": "Zoë"}'.encode()
    assert {"name": "Zoë"} == invoke_action("json.parse", content=content)


def test_parse_text_with_bom() -> None:
    """json.parse accepts text that starts with a byte order mark."""
    assert [1] == invoke_action("json.parse", content="\ufeff[1]")


def test_parse_utf16_bytes() -> None:
    """json.parse detects UTF-16 bytes."""
    assert {"a": "é"} == invoke_action("json.parse", content='{"a": "é"}'.encode("utf-16"))


def test_parse_error_names_line_and_column() -> None:
    """An invalid document fails with its line and column."""
    with pytest.raises(ActionError) as raised:
        invoke_action("json.parse", content='{\n  "a": 1,\n  "b": }')
    assert "line 3, column 8" in str(raised.value)
    assert raised.value.retryable is False


def test_parse_invalid_bytes() -> None:
    """Bytes that are not UTF-8 fail with the offset of the bad byte."""
    with pytest.raises(ActionError) as raised:
        invoke_action("json.parse", content=b'{"a": "\xff"}')
    assert "offset 7" in str(raised.value)


def test_render_compact() -> None:
    """json.render without indent writes one line."""
    assert '{"b":1,"a":[true,null]}' == invoke_action(
        "json.render", value={"b": 1, "a": [True, None]}
    )


def test_render_keeps_non_ascii() -> None:
    """json.render writes non-ASCII characters as they are."""
    assert '["Ærøskøbing","東京"]' == invoke_action("json.render", value=["Ærøskøbing", "東京"])


def test_render_decimal_exact() -> None:
    """A Decimal is written as the exact number it holds."""
    value = {"amount": Decimal("1656.250"), "rate": Decimal("0.1")}
    assert '{"amount":1656.250,"rate":0.1}' == invoke_action("json.render", value=value)


def test_render_sort_keys() -> None:
    """sort_keys orders the keys of every object."""
    value = {"b": {"z": 1, "y": 2}, "a": 0}
    rendered = invoke_action("json.render", value=value, sort_keys=True)
    assert '{"a":0,"b":{"y":2,"z":1}}' == rendered


def test_render_indent() -> None:
    """indent puts each member on its own line."""
    assert '{\n  "a": [\n    1\n  ]\n}' == invoke_action("json.render", value={"a": [1]}, indent=2)


def test_render_round_trip() -> None:
    """Rendering then parsing gives the original value."""
    value = {"name": "Zoë", "lines": [{"qty": 2, "price": 9.95}], "paid": False, "note": None}
    rendered = invoke_action("json.render", value=value)
    assert value == invoke_action("json.parse", content=rendered)


def test_render_unsupported_value() -> None:
    """A value that JSON cannot represent fails with a message naming the allowed types."""
    with pytest.raises(ActionError) as raised:
        invoke_action("json.render", value={"when": object()})
    assert "cannot be rendered as JSON" in str(raised.value)
