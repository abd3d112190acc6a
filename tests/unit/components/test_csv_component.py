"""Tests of csv.parse and csv.render."""

from __future__ import annotations

from decimal import Decimal

import pytest

from splice.sdk import ActionError
from splice.testing import invoke_action


def test_parse_header_rows() -> None:
    """With a header, each row is an object keyed by column."""
    parsed = invoke_action("csv.parse", content="id,name\n1,Ann\n2,Bo\n")
    assert [{"id": "1", "name": "Ann"}, {"id": "2", "name": "Bo"}] == parsed["rows"]
    assert ["id", "name"] == parsed["columns"]


def test_parse_sniffs_semicolon() -> None:
    """Without a delimiter, a semicolon-separated file is recognised."""
    parsed = invoke_action("csv.parse", content="id;amount\n1;2,50\n2;3,00\n")
    assert [{"id": "1", "amount": "2,50"}, {"id": "2", "amount": "3,00"}] == parsed["rows"]


def test_parse_sniffs_tab() -> None:
    """Without a delimiter, a tab-separated file is recognised."""
    parsed = invoke_action("csv.parse", content="a\tb\nx y\tz\n")
    assert [{"a": "x y", "b": "z"}] == parsed["rows"]


def test_parse_single_column() -> None:
    """A single column, which the sniffer cannot classify, still parses."""
    parsed = invoke_action("csv.parse", content="email\na@example.com\nb@example.com\n")
    assert [{"email": "a@example.com"}, {"email": "b@example.com"}] == parsed["rows"]


def test_parse_explicit_delimiter() -> None:
    """A given delimiter is used as is."""
    parsed = invoke_action("csv.parse", content="a|b\n1|2\n", delimiter="|")
    assert [{"a": "1", "b": "2"}] == parsed["rows"]


def test_parse_bytes_with_bom() -> None:
    """A UTF-8 byte order mark does not end up in the first column's name."""
    parsed = invoke_action("csv.parse", content="\ufeffid,city\n1,Zürich\n".encode())
    assert ["id", "city"] == parsed["columns"]
    assert [{"id": "1", "city": "Zürich"}] == parsed["rows"]


def test_parse_cp1252_bytes() -> None:
    """Bytes in another encoding are decoded with the encoding input."""
    content = "name\nCafé €\n".encode("cp1252")
    parsed = invoke_action("csv.parse", content=content, encoding="cp1252")
    assert [{"name": "Café €"}] == parsed["rows"]


def test_parse_invalid_encoding() -> None:
    """Bytes that do not decode fail with the offset and a hint about the encoding input."""
    with pytest.raises(ActionError) as raised:
        invoke_action("csv.parse", content=b"name\nCaf\xe9\n")
    assert "offset 8" in str(raised.value)
    assert "encoding input" in str(raised.value)


def test_parse_quoted_newline() -> None:
    """A quoted field keeps its delimiter, quotes and line break."""
    content = 'id,note\r\n1,"line one\r\nline two, ""quoted"""\r\n'
    parsed = invoke_action("csv.parse", content=content)
    assert [{"id": "1", "note": 'line one\r\nline two, "quoted"'}] == parsed["rows"]


def test_parse_without_header() -> None:
    """With header false, rows are lists and there are no column names."""
    parsed = invoke_action("csv.parse", content="1,2\n3,4\n", header=False)
    assert [["1", "2"], ["3", "4"]] == parsed["rows"]
    assert [] == parsed["columns"]


def test_parse_skips_blank_lines() -> None:
    """Blank lines are not rows."""
    parsed = invoke_action("csv.parse", content="a,b\n\n1,2\n\n")
    assert [{"a": "1", "b": "2"}] == parsed["rows"]


def test_parse_short_row() -> None:
    """Cells missing at the end of a row are null."""
    parsed = invoke_action("csv.parse", content="a,b,c\n1\n")
    assert [{"a": "1", "b": None, "c": None}] == parsed["rows"]


def test_parse_long_row() -> None:
    """A row with more fields than columns fails with its line number."""
    with pytest.raises(ActionError) as raised:
        invoke_action("csv.parse", content="a,b\n1,2\n1,2,3\n")
    assert "line 3 has 3 fields" in str(raised.value)


def test_parse_duplicate_column() -> None:
    """A header that repeats a name fails with the name."""
    with pytest.raises(ActionError) as raised:
        invoke_action("csv.parse", content="id,id\n1,2\n")
    assert "column 'id' twice" in str(raised.value)


def test_parse_empty() -> None:
    """Empty content has no rows and no columns."""
    assert {"rows": [], "columns": []} == invoke_action("csv.parse", content="")


def test_render_objects() -> None:
    """Object rows are written under a header taken from their keys."""
    rows = [{"id": 1, "name": "Ann"}, {"id": 2, "name": "Bo, Jr."}]
    assert 'id,name\r\n1,Ann\r\n2,"Bo, Jr."\r\n' == invoke_action("csv.render", rows=rows)


def test_render_columns_select() -> None:
    """columns sets which keys are written and in what order."""
    rows = [{"id": 1, "name": "Ann", "secret": "x"}]
    rendered = invoke_action("csv.render", rows=rows, columns=["name", "id"])
    assert "name,id\r\nAnn,1\r\n" == rendered


def test_render_union_of_keys() -> None:
    """Without columns, keys that only later rows have become columns too."""
    rows = [{"a": 1}, {"b": 2}]
    assert "a,b\r\n1,\r\n,2\r\n" == invoke_action("csv.render", rows=rows)


def test_render_scalars() -> None:
    """Null is an empty cell, booleans are lower-case and a Decimal keeps its digits."""
    rows = [{"a": None, "b": True, "c": Decimal("10.50"), "d": 1.5}]
    assert "a,b,c,d\r\n,true,10.50,1.5\r\n" == invoke_action("csv.render", rows=rows)


def test_render_lists_without_header() -> None:
    """List rows with header false are written as they are."""
    rendered = invoke_action("csv.render", rows=[[1, "x"], [2, "y"]], delimiter=";", header=False)
    assert "1;x\r\n2;y\r\n" == rendered


def test_render_nested_value() -> None:
    """A list inside a cell fails with the row and column."""
    with pytest.raises(ActionError) as raised:
        invoke_action("csv.render", rows=[{"a": 1}, {"a": [1, 2]}])
    assert "row 1, column 'a' is a list" in str(raised.value)


def test_round_trip() -> None:
    """Parsing rendered rows gives them back as strings."""
    rows = [{"id": "1", "note": 'two\nlines, "quoted"'}, {"id": "2", "note": ""}]
    rendered = invoke_action("csv.render", rows=rows)
    assert rows == invoke_action("csv.parse", content=rendered)["rows"]
