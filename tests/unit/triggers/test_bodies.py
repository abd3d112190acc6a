"""Tests of webhook body parsing by Content-Type and of the trigger mapping steps read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from splice.triggers.bodies import (
    InvalidBodyError,
    ParsedBody,
    build_trigger,
    join_headers,
    parse_body,
    parse_content_type,
    parse_form,
)

FIXTURES = Path(__file__).parents[2] / "fixtures" / "github-webhooks"
GITHUB_PAYLOADS = sorted(FIXTURES.glob("*.json"))

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
  <!ENTITY lol "lol">
  <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
  <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
  <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
  <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
  <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
  <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
  <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<lolz>&lol9;</lolz>
"""


# JSON


@pytest.mark.parametrize("path", GITHUB_PAYLOADS, ids=lambda path: path.name)
def test_json_github_payload(path: Path) -> None:
    """Each real GitHub payload parses to the same value as the standard library's."""
    body = path.read_bytes()
    parsed = parse_body("application/json", body)
    assert "json" == parsed.kind
    assert json.loads(body) == parsed.body


def test_json_suffix_and_charset() -> None:
    """A +json media type is JSON; the charset parameter and case are accepted."""
    parsed = parse_body("Application/Problem+JSON; charset=UTF-8", b'{"status": 404}')
    assert ParsedBody("json", {"status": 404}, "application/problem+json", "UTF-8") == parsed


def test_json_utf8_bom() -> None:
    """A leading UTF-8 byte order mark is skipped."""
    body = b"\xef\xbb\xbf" + '{"name": "Z\u00fcrich"}'.encode()
    parsed = parse_body("application/json", body)
    assert "json" == parsed.kind
    assert {"name": "Z\u00fcrich"} == parsed.body


def test_json_declared_latin1() -> None:
    """A declared charset other than UTF-8 is honoured."""
    body = '{"name": "Z\u00fcrich"}'.encode("iso-8859-1")
    parsed = parse_body("application/json; charset=iso-8859-1", body)
    assert {"name": "Z\u00fcrich"} == parsed.body


def test_json_invalid_utf8() -> None:
    """JSON that is not UTF-8 is invalid, with the offset of the first bad byte."""
    body = b'{"name": "Z\xfcrich"}'
    parsed = parse_body("application/json", body)
    assert "invalid" == parsed.kind
    assert None is parsed.body
    assert "not valid utf-8: the byte at offset 11 (b'\\xfc')" in (parsed.problem or "")


def test_json_invalid_utf8_after_bom() -> None:
    """The offset counts the byte order mark, so it points into the raw body."""
    parsed = parse_body("application/json", b'\xef\xbb\xbf["\xff"]')
    assert "offset 5" in (parsed.problem or "")


def test_json_malformed() -> None:
    """Malformed JSON is invalid, with the parser's reason."""
    parsed = parse_body("application/json", b'{"a": 1,}')
    assert "invalid" == parsed.kind
    assert (parsed.problem or "").startswith("the body is not valid JSON: ")


def test_json_not_a_number() -> None:
    """NaN is not JSON, even though Python's json module reads it."""
    parsed = parse_body("application/json", b"[NaN]")
    assert "invalid" == parsed.kind


def test_json_nested_too_deeply() -> None:
    """Deep nesting is invalid instead of a RecursionError."""
    parsed = parse_body("application/json", b"[" * 100_000 + b"]" * 100_000)
    assert "invalid" == parsed.kind
    assert "nested too deeply" in (parsed.problem or "")


# Form-encoded


def test_form_repeated_keys() -> None:
    """A repeated name becomes a list in order; a single name stays a string."""
    parsed = parse_body(
        "application/x-www-form-urlencoded", b"tag=b&name=Ada&tag=a&tag=c&note=one+two%21"
    )
    assert "form" == parsed.kind
    assert {"tag": ["b", "a", "c"], "name": "Ada", "note": "one two!"} == parsed.body


def test_form_blank_values() -> None:
    """Blank values stay empty strings; empty pairs are skipped."""
    parsed = parse_body("application/x-www-form-urlencoded", b"a=&b&&c=1&=x")
    assert {"a": "", "b": "", "c": "1", "": "x"} == parsed.body


def test_form_percent_encoded_utf8() -> None:
    """Percent escapes are UTF-8 by default; invalid escapes are kept as they are."""
    parsed = parse_body("application/x-www-form-urlencoded", b"city=Z%C3%BCrich&rate=100%")
    assert {"city": "Z\u00fcrich", "rate": "100%"} == parsed.body


def test_form_invalid_utf8() -> None:
    """A field that is not UTF-8 after percent-decoding makes the body invalid."""
    parsed = parse_body("application/x-www-form-urlencoded", b"a=1&city=Z%FCrich")
    assert "invalid" == parsed.kind
    assert "field 2 of the form-encoded data is not valid utf-8" in (parsed.problem or "")


def test_form_declared_latin1() -> None:
    """A declared charset decodes the percent escapes."""
    parsed = parse_body("application/x-www-form-urlencoded; charset=ISO-8859-1", b"city=Z%FCrich")
    assert {"city": "Z\u00fcrich"} == parsed.body
    assert "ISO-8859-1" == parsed.charset


def test_parse_form_strict_raises() -> None:
    """parse_form itself raises InvalidBodyError; parse_body turns it into kind invalid."""
    with pytest.raises(InvalidBodyError):
        parse_form(b"a=%FF")


# XML


def test_xml_parsed_like_xml_parse() -> None:
    """XML gives what xml.parse returns: root, namespace and document."""
    body = b'<order xmlns="urn:shop"><id>7</id><line n="1">a</line><line n="2">b</line></order>'
    parsed = parse_body("application/xml", body)
    expected = {
        "root": "order",
        "namespace": "urn:shop",
        "document": {
            "id": "7",
            "line": [{"@n": "1", "#text": "a"}, {"@n": "2", "#text": "b"}],
        },
    }
    assert "xml" == parsed.kind
    assert expected == parsed.body


def test_xml_media_types() -> None:
    """text/xml and +xml types are XML too."""
    for content_type in ("text/xml", "application/soap+xml", "application/atom+xml"):
        assert "xml" == parse_body(content_type, b"<a>1</a>").kind, content_type


def test_xml_declaration_encoding() -> None:
    """Without a charset parameter, the document's encoding declaration decides."""
    body = '<?xml version="1.0" encoding="ISO-8859-1"?><city>Z\u00fcrich</city>'.encode("latin-1")
    parsed = parse_body("application/xml", body)
    assert "Z\u00fcrich" == parsed.body["document"]


def test_xml_utf16_bom() -> None:
    """A UTF-16 document with its byte order mark is read without a charset parameter."""
    body = '<?xml version="1.0" encoding="UTF-16"?><city>Z\u00fcrich</city>'.encode("utf-16")
    parsed = parse_body("text/xml", body)
    assert "Z\u00fcrich" == parsed.body["document"]


def test_xml_charset_parameter_wins() -> None:
    """A charset parameter takes precedence over the encoding declaration."""
    body = '<?xml version="1.0" encoding="UTF-8"?><city>Z\u00fcrich</city>'.encode("latin-1")
    parsed = parse_body("application/xml; charset=iso-8859-1", body)
    assert "Z\u00fcrich" == parsed.body["document"]


def test_xml_malformed() -> None:
    """Malformed XML is invalid, with the line and column of the fault."""
    parsed = parse_body("application/xml", b"<order>\n  <id>7</order>")
    assert "invalid" == parsed.kind
    assert "not well-formed XML" in (parsed.problem or "")
    assert "line 2" in (parsed.problem or "")


def test_xml_billion_laughs() -> None:
    """Entity declarations are rejected as invalid before anything expands."""
    parsed = parse_body("application/xml", BILLION_LAUGHS)
    assert "invalid" == parsed.kind
    assert "declares the entity 'lol'" in (parsed.problem or "")


def test_xml_external_entity() -> None:
    """An external entity is rejected as invalid, so no local file is read."""
    body = b'<!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/hostname">]><a>&x;</a>'
    parsed = parse_body("application/xml", body)
    assert "invalid" == parsed.kind


def test_xml_unknown_declared_encoding() -> None:
    """An encoding declaration naming no known encoding is invalid, not an exception."""
    parsed = parse_body("application/xml", b'<?xml version="1.0" encoding="UTF1"?><a/>')
    assert "invalid" == parsed.kind
    assert "cannot be decoded as its XML declaration says" in (parsed.problem or "")


# Text


def test_text_declared_latin1() -> None:
    """ISO-8859-1 text decodes with its declared charset."""
    parsed = parse_body("text/plain; charset=ISO-8859-1", "caf\u00e9 \u00a310".encode("latin-1"))
    assert ParsedBody("text", "caf\u00e9 \u00a310", "text/plain", "ISO-8859-1") == parsed


def test_text_default_utf8() -> None:
    """Text without a charset is read as UTF-8."""
    parsed = parse_body("text/plain", "caf\u00e9 \u2615".encode())
    assert ParsedBody("text", "caf\u00e9 \u2615", "text/plain", "utf-8") == parsed


def test_text_latin1_fallback() -> None:
    """Text without a charset that is not UTF-8 falls back to ISO-8859-1 and reports it."""
    parsed = parse_body("text/plain", "caf\u00e9".encode("latin-1"))
    assert ParsedBody("text", "caf\u00e9", "text/plain", "iso-8859-1") == parsed


def test_text_invalid_in_declared_charset() -> None:
    """Text that is not valid in its declared charset is invalid, with no fallback."""
    parsed = parse_body("text/plain; charset=utf-8", "caf\u00e9".encode("latin-1"))
    assert "invalid" == parsed.kind
    assert "offset 3" in (parsed.problem or "")


def test_text_unknown_charset() -> None:
    """An unknown charset is invalid."""
    parsed = parse_body("text/plain; charset=klingon", b"Qapla'")
    assert "invalid" == parsed.kind
    assert "unknown charset 'klingon'" in (parsed.problem or "")


def test_text_python_codec_not_charset() -> None:
    """Python codecs that are not charsets, such as unicode_escape or zlib, are unknown."""
    for charset in ("unicode_escape", "zlib", "base64", "idna"):
        parsed = parse_body(f"text/plain; charset={charset}", b"\\x41")
        assert "invalid" == parsed.kind, charset


def test_text_other_subtypes() -> None:
    """text/csv and text/html are text; a quoted charset is unquoted."""
    parsed = parse_body('text/csv; charset="utf-8"', b"id,name\n1,Ada\n")
    assert ParsedBody("text", "id,name\n1,Ada\n", "text/csv", "utf-8") == parsed
    assert "text" == parse_body("text/html", b"<p>hi</p>").kind


# Binary and empty


def test_binary_types() -> None:
    """Other media types, none, or a malformed one give binary with no parsed body."""
    for content_type in (
        "application/octet-stream",
        "image/png",
        "multipart/form-data",
        None,
        "json",
    ):
        parsed = parse_body(content_type, b"\x89PNG\r\n")
        assert "binary" == parsed.kind, content_type
        assert None is parsed.body


def test_empty_body() -> None:
    """An empty body is kind empty whatever its declared type, and not a problem."""
    for content_type in ("application/json", "application/xml", "text/plain", None):
        assert ParsedBody("empty", media_type=parse_content_type(content_type)[0]) == parse_body(
            content_type, b""
        )


# Content-Type, headers and the trigger mapping


def test_content_type_parameters() -> None:
    """Media type and parameter names are lower-cased; values keep their case."""
    expected = ("multipart/form-data", {"boundary": "AbC", "charset": "utf-8"})
    assert expected == parse_content_type('Multipart/Form-Data; Boundary=AbC; CHARSET="utf-8"')


def test_join_headers() -> None:
    """Names are lower-cased; repeated fields are joined in order, Cookie with "; "."""
    headers = [
        ("Accept", "text/html"),
        ("X-GitHub-Event", "push"),
        ("accept", "application/json"),
        ("Cookie", "a=1"),
        ("cookie", "b=2"),
    ]
    expected = {
        "accept": "text/html, application/json",
        "x-github-event": "push",
        "cookie": "a=1; b=2",
    }
    assert expected == join_headers(headers)


def test_build_trigger() -> None:
    """The mapping contains method, headers, query, parsed body, its kind and raw."""
    parsed = parse_body("application/json", b'{"action": "opened"}')
    trigger = build_trigger(
        method="post",
        headers=[("Content-Type", "application/json")],
        query_string=b"tag=a&tag=b&page=2&empty=",
        parsed=parsed,
        raw={"blob": "sha256/ab12"},
    )
    expected = {
        "method": "POST",
        "headers": {"content-type": "application/json"},
        "query": {"tag": ["a", "b"], "page": "2", "empty": ""},
        "body": {"action": "opened"},
        "body_kind": "json",
        "body_problem": None,
        "raw": {"blob": "sha256/ab12"},
    }
    assert expected == trigger


def test_build_trigger_invalid_body() -> None:
    """An invalid body reaches steps as None with its problem."""
    parsed = parse_body("application/json", b"{")
    trigger = build_trigger(method="POST", headers=[], query_string=b"", parsed=parsed)
    assert None is trigger["body"]
    assert "invalid" == trigger["body_kind"]
    assert (trigger["body_problem"] or "").startswith("the body is not valid JSON")


def test_build_trigger_query_invalid_utf8() -> None:
    """Bytes in the query that are not UTF-8 become U+FFFD instead of failing."""
    trigger = build_trigger(
        method="GET", headers=[], query_string=b"q=Z%FCrich", parsed=parse_body(None, b"")
    )
    assert {"q": "Z\ufffdrich"} == trigger["query"]
