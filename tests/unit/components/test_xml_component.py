"""Tests of xml.parse and xml.render, on small documents and the PEPPOL example invoices."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from splice.sdk import ActionError
from splice.testing import invoke_action

INVOICES = Path(__file__).parents[3] / "examples" / "invoice-sync" / "invoices"
INVOICE_FILES = sorted(INVOICES.glob("*.xml"))
CBC = "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2"
CAC = "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2"
UBL = {"cbc": CBC, "cac": CAC}
LINE_KEYS = ["cac:InvoiceLine", "cac:CreditNoteLine"]

ORDER = f"""<?xml version="1.0" encoding="UTF-8"?>
<inv:Invoice xmlns:inv="urn:example:invoice" xmlns:b="{CBC}" xmlns:a="{CAC}">
  <b:ID>INV-1</b:ID>
  <a:InvoiceLine><b:ID>1</b:ID><b:Amount currencyID="EUR">10.50</b:Amount></a:InvoiceLine>
  <b:Note/>
</inv:Invoice>
"""


def parse(**inputs: Any) -> Any:
    return invoke_action("xml.parse", **inputs)


def test_parse_caller_prefixes() -> None:
    """Elements in a namespace the caller names get the caller's prefix."""
    parsed = parse(content=ORDER, namespaces=UBL)
    expected = {
        "cbc:ID": "INV-1",
        "cac:InvoiceLine": {
            "cbc:ID": "1",
            "cbc:Amount": {"@currencyID": "EUR", "#text": "10.50"},
        },
        "cbc:Note": "",
    }
    assert expected == parsed["document"]


def test_parse_root_key() -> None:
    """root is the root element's key, namespace its URI."""
    parsed = parse(content=ORDER, namespaces=UBL)
    assert "inv:Invoice" == parsed["root"]
    assert "urn:example:invoice" == parsed["namespace"]


def test_parse_document_prefixes() -> None:
    """Without namespaces, keys use the prefixes the document declares."""
    parsed = parse(content=ORDER)
    assert ["b:ID", "a:InvoiceLine", "b:Note"] == list(parsed["document"])


def test_parse_empty_caller_prefix() -> None:
    """The empty prefix in namespaces gives plain local names."""
    parsed = parse(content=ORDER, namespaces={"": "urn:example:invoice", "cbc": CBC})
    assert "Invoice" == parsed["root"]


def test_parse_default_namespace() -> None:
    """Elements in the document's default namespace get plain local names."""
    parsed = parse(content='<r xmlns="urn:x"><item>1</item></r>')
    assert {"root": "r", "namespace": "urn:x", "document": {"item": "1"}} == parsed


def test_parse_no_namespace() -> None:
    """A document without namespaces has null namespace."""
    parsed = parse(content="<r>text</r>")
    assert {"root": "r", "namespace": None, "document": "text"} == parsed


def test_parse_first_declaration_wins() -> None:
    """A namespace declared twice is keyed by its first prefix."""
    content = '<p:r xmlns:p="urn:x"><q:a xmlns:q="urn:x">1</q:a></p:r>'
    assert {"p:a": "1"} == parse(content=content)["document"]


def test_parse_namespaced_attribute() -> None:
    """A namespaced attribute is keyed by @prefix:name."""
    content = (
        '<r xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        'xsi:schemaLocation="urn:x x.xsd" xml:lang="de"><a>1</a></r>'
    )
    document = parse(content=content)["document"]
    assert "urn:x x.xsd" == document["@xsi:schemaLocation"]
    assert "de" == document["@xml:lang"]


def test_parse_repeated_key_is_list() -> None:
    """A key that occurs more than once is a list in document order."""
    content = "<r><line>1</line><other/><line>2</line><line>3</line></r>"
    assert ["1", "2", "3"] == parse(content=content)["document"]["line"]


def test_parse_single_key_not_list() -> None:
    """A key that occurs once is a plain value without force_list."""
    assert "1" == parse(content="<r><line>1</line></r>")["document"]["line"]


def test_parse_force_list_single() -> None:
    """A key in force_list is a list even when it occurs once."""
    parsed = parse(content="<r><line>1</line><total>1</total></r>", force_list=["line"])
    assert {"line": ["1"], "total": "1"} == parsed["document"]


def test_parse_force_list_many() -> None:
    """A key in force_list that occurs several times is one flat list."""
    parsed = parse(content="<r><line>1</line><line>2</line></r>", force_list=["line"])
    assert ["1", "2"] == parsed["document"]["line"]


def test_parse_force_list_all() -> None:
    """force_list true makes every child key a list."""
    parsed = parse(content='<r><a x="1"><b>2</b></a></r>', force_list=True)
    assert {"a": [{"@x": "1", "b": ["2"]}]} == parsed["document"]


def test_parse_strip_whitespace() -> None:
    """By default leading and trailing whitespace of text is stripped."""
    assert {"a": "x y"} == parse(content="<r><a>\n  x y  \n</a></r>")["document"]


def test_parse_keep_whitespace() -> None:
    """With strip_whitespace false the text is kept as is."""
    parsed = parse(content="<r><a> x </a></r>", strip_whitespace=False)
    assert {"a": " x "} == parsed["document"]


def test_parse_mixed_content() -> None:
    """Text around children is joined into #text."""
    parsed = parse(content="<p>Hello <b>you</b> there</p>")
    assert {"b": "you", "#text": "Hello  there"} == parsed["document"]


def test_parse_cdata_and_escapes() -> None:
    """CDATA and character references become plain text."""
    parsed = parse(content="<r><a><![CDATA[<b> & c]]></a><d>&lt;&#233;</d></r>")
    assert {"a": "<b> & c", "d": "<é"} == parsed["document"]


def test_parse_bytes_with_bom() -> None:
    """UTF-8 bytes that start with a byte order mark parse."""
    content = "\ufeff<?xml version='1.0' encoding='UTF-8'?><r>Zoë</r>".encode()
    assert "Zoë" == parse(content=content)["document"]


def test_parse_text_with_bom() -> None:
    """Text that starts with a byte order mark parses."""
    assert "Zoë" == parse(content="\ufeff<r>Zoë</r>")["document"]


def test_parse_declared_latin1_bytes() -> None:
    """Bytes are decoded with the encoding their declaration names."""
    content = "<?xml version='1.0' encoding='ISO-8859-1'?><r>Größe</r>".encode("iso-8859-1")
    assert "Größe" == parse(content=content)["document"]


def test_parse_declared_latin1_file(tmp_path: Path) -> None:
    """A file is decoded with the encoding its declaration names."""
    file = tmp_path / "latin.xml"
    file.write_bytes("<?xml version='1.0' encoding='ISO-8859-1'?><r>Größe</r>".encode("iso-8859-1"))
    assert "Größe" == parse(path=str(file))["document"]


def test_parse_text_with_latin1_declaration() -> None:
    """Text keeps its characters even when its declaration names another encoding."""
    assert (
        "Größe"
        == parse(content="<?xml version='1.0' encoding='ISO-8859-1'?><r>Größe</r>")["document"]
    )


def test_parse_rejects_billion_laughs() -> None:
    """A DOCTYPE with nested entities is rejected before anything expands."""
    entities = ['<!ENTITY lol0 "lol">'] + [
        f'<!ENTITY lol{level} "{f"&lol{level - 1};" * 10}">' for level in range(1, 10)
    ]
    content = f"<?xml version='1.0'?><!DOCTYPE lolz [{''.join(entities)}]><lolz>&lol9;</lolz>"
    with pytest.raises(ActionError) as raised:
        parse(content=content)
    assert "declares the entity 'lol0'" in str(raised.value)
    assert raised.value.retryable is False


def test_parse_rejects_external_entity() -> None:
    """An external entity is rejected, so no local file is read."""
    content = '<!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><r>&xxe;</r>'
    with pytest.raises(ActionError) as raised:
        parse(content=content.encode())
    assert "declares the entity 'xxe'" in str(raised.value)


def test_parse_rejects_parameter_entity() -> None:
    """An external parameter entity is rejected too."""
    content = '<!DOCTYPE r [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]><r>1</r>'
    with pytest.raises(ActionError) as raised:
        parse(content=content)
    assert "declares the entity 'p'" in str(raised.value)


def test_parse_rejects_entity_in_utf16() -> None:
    """The entity check also reads UTF-16 documents."""
    content = '<!DOCTYPE r [<!ENTITY e "x">]><r>&e;</r>'.encode("utf-16")
    with pytest.raises(ActionError) as raised:
        parse(content=content)
    assert "declares the entity 'e'" in str(raised.value)


def test_parse_allows_doctype_without_entities() -> None:
    """A DOCTYPE that declares no entity is accepted and never loaded."""
    content = '<!DOCTYPE r SYSTEM "http://127.0.0.1:9/r.dtd"><r>1</r>'
    assert "1" == parse(content=content)["document"]


def test_parse_malformed_file(tmp_path: Path) -> None:
    """Malformed XML fails with the file name, line and reason."""
    file = tmp_path / "broken invoice.xml"
    file.write_text("<Invoice>\n  <ID>1</ID>\n  <Note>open\n</Invoice>\n")
    with pytest.raises(ActionError) as raised:
        parse(path=str(file))
    message = str(raised.value)
    assert message.startswith(f"{file} is not well-formed XML: ")
    assert "Opening and ending tag mismatch" in message
    assert "at line 4" in message


def test_parse_empty_content() -> None:
    """Empty content fails as malformed."""
    with pytest.raises(ActionError) as raised:
        parse(content=b"")
    assert "content is not well-formed XML: Document is empty" in str(raised.value)


def test_parse_missing_file(tmp_path: Path) -> None:
    """A missing file fails with its path."""
    with pytest.raises(ActionError) as raised:
        parse(path=str(tmp_path / "none.xml"))
    assert "none.xml not found" in str(raised.value)


def test_parse_needs_one_source() -> None:
    """Giving both path and content fails."""
    with pytest.raises(ActionError) as raised:
        parse(path="a.xml", content="<r/>")
    assert "exactly one of the path and content inputs" in str(raised.value)


def test_parse_needs_a_source() -> None:
    """Giving neither path nor content fails."""
    with pytest.raises(ActionError):
        parse()


def attachment_invoice(attachment: bytes) -> bytes:
    encoded = base64.b64encode(attachment).decode("ascii")
    return (
        f'<Invoice xmlns="urn:oasis:names:specification:ubl:schema:xsd:Invoice-2" '
        f'xmlns:cbc="{CBC}" xmlns:cac="{CAC}"><cbc:ID>1</cbc:ID>'
        "<cac:AdditionalDocumentReference><cac:Attachment>"
        '<cbc:EmbeddedDocumentBinaryObject mimeCode="application/pdf" filename="a.pdf">'
        f"{encoded}</cbc:EmbeddedDocumentBinaryObject>"
        "</cac:Attachment></cac:AdditionalDocumentReference></Invoice>"
    ).encode()


def embedded_bytes(parsed: dict[str, Any]) -> bytes:
    reference = parsed["document"]["cac:AdditionalDocumentReference"]
    binary = reference["cac:Attachment"]["cbc:EmbeddedDocumentBinaryObject"]
    return base64.b64decode(binary["#text"])


def test_parse_5mb_attachment(tmp_path: Path) -> None:
    """A 5 MB document with a base64 attachment parses with the attachment intact."""
    attachment = os.urandom(4 * 1024 * 1024)
    file = tmp_path / "with attachment.xml"
    file.write_bytes(attachment_invoice(attachment))
    assert file.stat().st_size > 5 * 1024 * 1024
    assert attachment == embedded_bytes(parse(path=str(file), namespaces=UBL))


def test_parse_attachment_over_libxml2_limit() -> None:
    """A text node above libxml2's default 10 MB limit still parses."""
    attachment = os.urandom(9 * 1024 * 1024)
    parsed = parse(content=attachment_invoice(attachment), namespaces=UBL)
    assert attachment == embedded_bytes(parsed)


def test_parse_deep_nesting() -> None:
    """Nesting deeper than Python's recursion limit parses."""
    depth = 2000
    content = "<a>" * depth + "x" + "</a>" * depth
    value = parse(content=content)["document"]
    for _ in range(depth - 1):
        value = value["a"]
    assert "x" == value


@pytest.mark.parametrize("file", INVOICE_FILES, ids=lambda file: file.name)
def test_invoice_lines_force_listed(file: Path) -> None:
    """In each example invoice, force-listed lines are a list with one entry per line."""
    parsed = parse(path=str(file), namespaces=UBL, force_list=LINE_KEYS)
    document = parsed["document"]
    line_key = next(key for key in LINE_KEYS if key in document)
    local_name = line_key.split(":")[1]
    expected_count = len(etree.parse(str(file)).getroot().findall(f"{{{CAC}}}{local_name}"))
    assert isinstance(document[line_key], list)
    assert expected_count == len(document[line_key])


def test_invoices_all_present() -> None:
    """All 12 example invoices are in the example folder."""
    assert 12 == len(INVOICE_FILES)


def test_invoice_amounts() -> None:
    """The payable amount of the base example keeps its currency attribute."""
    parsed = parse(path=str(INVOICES / "base-example.xml"), namespaces=UBL)
    payable = parsed["document"]["cac:LegalMonetaryTotal"]["cbc:PayableAmount"]
    assert {"@currencyID": "EUR", "#text": "1656.25"} == payable


def render(**inputs: Any) -> Any:
    return invoke_action("xml.render", **inputs)


@pytest.mark.parametrize("file", INVOICE_FILES, ids=lambda file: file.name)
def test_round_trip_invoice(file: Path) -> None:
    """Rendering a parsed invoice and parsing it again gives the same value."""
    first = parse(path=str(file), namespaces=UBL, force_list=LINE_KEYS)
    namespaces = {"": first["namespace"], **UBL}
    rendered = render(document=first["document"], root=first["root"], namespaces=namespaces)
    second = parse(content=rendered, namespaces=UBL, force_list=LINE_KEYS)
    assert first == second


def test_render_document() -> None:
    """xml.render writes attributes, text, repeated elements and the declaration."""
    document = {
        "@version": 2,
        "cbc:ID": "A&B",
        "line": [{"@n": "1", "#text": "x"}, "y"],
        "empty": None,
        "paid": False,
    }
    rendered = render(document=document, root="order", namespaces={"cbc": CBC})
    expected = (
        "<?xml version='1.0' encoding='utf-8'?>\n"
        f'<order xmlns:cbc="{CBC}" version="2"><cbc:ID>A&amp;B</cbc:ID>'
        '<line n="1">x</line><line>y</line><empty/><paid>false</paid></order>'
    )
    assert expected == rendered


def test_render_default_namespace() -> None:
    """The empty prefix sets the default namespace for plain keys."""
    rendered = render(document={"a": "1"}, root="r", namespaces={"": "urn:x"}, declaration=False)
    assert '<r xmlns="urn:x"><a>1</a></r>' == rendered


def test_render_bytes_base64() -> None:
    """Bytes are written as base64 text."""
    rendered = render(document={"data": b"\x00\xff"}, root="r", declaration=False)
    assert "<r><data>AP8=</data></r>" == rendered


def test_render_latin1() -> None:
    """The encoding input names the declared encoding of the text returned."""
    rendered = render(document="Größe", root="r", encoding="ISO-8859-1")
    assert "<?xml version='1.0' encoding='ISO-8859-1'?>\n<r>Größe</r>" == rendered


def test_render_pretty() -> None:
    """pretty indents nested elements."""
    rendered = render(document={"a": {"b": "1"}}, root="r", declaration=False, pretty=True)
    assert "<r>\n  <a>\n    <b>1</b>\n  </a>\n</r>\n" == rendered


def test_render_unknown_prefix() -> None:
    """A key whose prefix is not in namespaces fails with the key and where it is."""
    with pytest.raises(ActionError) as raised:
        render(document={"line": {"cbc:ID": "1"}}, root="r")
    assert "key 'cbc:ID' at r/line uses the prefix 'cbc'" in str(raised.value)


def test_render_invalid_name() -> None:
    """A key that is not an XML name fails with the key."""
    with pytest.raises(ActionError) as raised:
        render(document={"two words": "1"}, root="r")
    assert "key 'two words' at r is not a valid XML name" in str(raised.value)


def test_render_nested_list() -> None:
    """A list inside a list fails with where it is."""
    with pytest.raises(ActionError) as raised:
        render(document={"a": [["1"]]}, root="r")
    assert "r/a is a list inside a list" in str(raised.value)


def test_unknown_declared_encoding() -> None:
    """An XML declaration naming an unknown encoding is an ActionError, not a crash."""
    with pytest.raises(ActionError, match="cannot be decoded as its XML declaration says"):
        invoke_action("xml.parse", content=b'<?xml version="1.0" encoding="UTF1"?><a/>')
