"""The csv component: parse and render comma-separated (or otherwise delimited) text."""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from typing import Any

from splice.sdk import ActionContext, ActionError, Component, Input

component = Component("csv", description="Parse and render CSV")

# Delimiters the sniffer chooses from when the delimiter input is null.
SNIFFED_DELIMITERS = ",;\t|"
SNIFF_SAMPLE_CHARS = 64 * 1024


@component.action(
    inputs={
        "content": Input("string|bytes", required=True, description="CSV text or its bytes"),
        "delimiter": Input(
            "string", description="Field delimiter; guessed from the text when null"
        ),
        "header": Input("boolean", default=True, description="The first row names the columns"),
        "encoding": Input("string", default="utf-8", description="Encoding of bytes content"),
        "quotechar": Input("string", default='"', description="Character that quotes a field"),
    },
    description="Parse CSV text into rows",
    output="object with rows (an object per row, or a list when header is false) and columns",
)
def parse(
    context: ActionContext,
    *,
    content: str | bytes,
    delimiter: str | None,
    header: bool,
    encoding: str,
    quotechar: str,
) -> dict[str, Any]:
    """Parse ``content``; a row shorter than the header gets null for its missing cells."""
    text = _decode(content, encoding)
    _check_single_character("quotechar", quotechar)
    if delimiter is None:
        delimiter = _sniff_delimiter(text)
    _check_single_character("delimiter", delimiter)
    records = _read_records(text, delimiter, quotechar)
    if not header:
        return {"rows": [fields for _, fields in records], "columns": []}
    if not records:
        return {"rows": [], "columns": []}
    columns = _check_columns(records[0][1])
    rows = [_row_object(columns, fields, line) for line, fields in records[1:]]
    return {"rows": rows, "columns": columns}


def _decode(content: str | bytes, encoding: str) -> str:
    if isinstance(content, str):
        return content.removeprefix("\ufeff")
    codec = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    try:
        return content.decode(codec)
    except LookupError as error:
        raise ActionError(
            f"unknown encoding {encoding!r}; give a Python codec name such as 'utf-8' or 'cp1252'",
            retryable=False,
        ) from error
    except UnicodeDecodeError as error:
        raise ActionError(
            f"content is not valid {encoding}: invalid byte at offset {error.start}; "
            "set the encoding input to the encoding the file uses",
            retryable=False,
        ) from error


def _check_single_character(name: str, value: str) -> None:
    if len(value) != 1:
        raise ActionError(f"{name} must be one character, got {value!r}", retryable=False)


def _sniff_delimiter(text: str) -> str:
    try:
        return csv.Sniffer().sniff(text[:SNIFF_SAMPLE_CHARS], SNIFFED_DELIMITERS).delimiter
    except csv.Error:
        # A single column, or a sample without a consistent delimiter.
        return ","


def _read_records(text: str, delimiter: str, quotechar: str) -> list[tuple[int, list[str]]]:
    """Return (line number, fields) of each non-blank record."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quotechar=quotechar)
    records = []
    try:
        for fields in reader:
            if fields:
                records.append((reader.line_num, fields))
    except csv.Error as error:
        raise ActionError(
            f"invalid CSV at line {reader.line_num}: {error}; fix the content",
            retryable=False,
        ) from error
    return records


def _check_columns(columns: list[str]) -> list[str]:
    seen = set()
    for name in columns:
        if name in seen:
            raise ActionError(
                f"the header row names column {name!r} twice; rename one of them, "
                "or set header to false and read the rows as lists",
                retryable=False,
            )
        seen.add(name)
    return columns


def _row_object(columns: list[str], fields: list[str], line: int) -> dict[str, Any]:
    if len(fields) > len(columns):
        raise ActionError(
            f"line {line} has {len(fields)} fields but the header names {len(columns)} "
            "columns; fix the row, or set header to false and read the rows as lists",
            retryable=False,
        )
    padded: list[str | None] = [*fields, *[None] * (len(columns) - len(fields))]
    return dict(zip(columns, padded, strict=True))


@component.action(
    inputs={
        "rows": Input("list", required=True, description="Objects, or lists of cells"),
        "columns": Input(
            "list",
            description="Column names and order; null takes the keys of the rows in order",
        ),
        "delimiter": Input("string", default=",", description="Field delimiter"),
        "header": Input("boolean", default=True, description="Write a header row"),
    },
    description="Render rows as CSV text",
    output="string",
)
def render(
    context: ActionContext,
    *,
    rows: list[Any],
    columns: list[str] | None,
    delimiter: str,
    header: bool,
) -> str:
    """Render ``rows`` with CRLF line endings (RFC 4180).

    Object rows are written in the order of ``columns``; keys missing from ``columns`` are
    left out. Null is written as an empty cell and a boolean as ``true`` or ``false``.
    """
    _check_single_character("delimiter", delimiter)
    if columns is None:
        columns = _columns_of(rows)
    output = io.StringIO(newline="")
    writer = csv.writer(output, delimiter=delimiter)
    if header and columns:
        writer.writerow([str(name) for name in columns])
    for index, row in enumerate(rows):
        writer.writerow(_cells_of(row, columns, index))
    return output.getvalue()


def _columns_of(rows: list[Any]) -> list[str]:
    columns: dict[str, None] = {}
    for row in rows:
        if isinstance(row, dict):
            columns.update(dict.fromkeys(row))
    return list(columns)


def _cells_of(row: Any, columns: list[str], index: int) -> list[str]:
    if isinstance(row, dict):
        return [_cell_text(row.get(name), index, name) for name in columns]
    if isinstance(row, list | tuple):
        return [_cell_text(value, index, position) for position, value in enumerate(row)]
    raise ActionError(
        f"row {index} is a {type(row).__name__}; each row must be an object or a list",
        retryable=False,
    )


def _cell_text(value: Any, index: int, column: str | int) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float | Decimal):
        return str(value)
    raise ActionError(
        f"row {index}, column {column!r} is a {type(value).__name__}; a CSV cell holds "
        "a string, number, boolean or null, so map the value to one of those first",
        retryable=False,
    )
