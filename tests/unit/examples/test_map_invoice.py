"""Tests of examples/invoice-sync/map_invoice.py against the 12 PEPPOL example documents.

Each document goes through the real ``xml.parse`` action with the namespaces and
force_list of integration.yaml. The expected record is computed independently from
the same XML with lxml XPath.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from decimal import Decimal
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from lxml import etree
from ruamel.yaml import YAML

from splice.sdk import ActionError
from splice.testing import invoke_action, make_context

EXAMPLE_DIR = Path(__file__).resolve().parents[3] / "examples" / "invoice-sync"
INBOX = EXAMPLE_DIR / "invoices"
INVOICE_FILES = sorted(path.name for path in INBOX.glob("*.xml"))
NS = {
    "cac": "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2",
    "cbc": "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2",
}


def load_example_module(name: str) -> ModuleType:
    """Import an example's .py file under a name that cannot clash with other modules."""
    module_name = f"invoice_sync_{name}"
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLE_DIR / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


map_invoice = load_example_module("map_invoice")


@cache
def parse_step_inputs() -> dict[str, Any]:
    """Return the inputs of the ``parse`` step as integration.yaml gives them."""
    definition = YAML(typ="safe").load(EXAMPLE_DIR / "integration.yaml")
    loop = next(step for step in definition["flows"]["sync"]["steps"] if step["id"] == "invoices")
    parse = next(step for step in loop["steps"] if step["id"] == "parse")
    return parse["inputs"]


def parse(path: Path) -> dict[str, Any]:
    inputs = parse_step_inputs()
    return invoke_action(
        "xml.parse",
        path=str(path),
        namespaces=inputs["namespaces"],
        force_list=inputs["force_list"],
    )


@cache
def mapped(file_name: str) -> dict[str, Any]:
    path = INBOX / file_name
    return map_invoice.run(make_context(), document=parse(path), source_file=file_name)


# Expected values, computed from the XML with XPath.


def xpath_root(file_name: str) -> etree._Element:
    return etree.parse(str(INBOX / file_name)).getroot()


def first_text(node: etree._Element, expression: str, **variables: str) -> str | None:
    found = node.xpath(expression, namespaces=NS, **variables)
    if not found:
        return None
    text = found[0] if isinstance(found[0], str) else found[0].text
    return (text or "").strip() or None


def expected_party(root: etree._Element, role: str) -> dict[str, str | None]:
    party = f"cac:{role}/cac:Party"
    return {
        "name": first_text(root, f"{party}/cac:PartyLegalEntity/cbc:RegistrationName"),
        "vat_id": first_text(
            root, f"{party}/cac:PartyTaxScheme[cac:TaxScheme/cbc:ID='VAT']/cbc:CompanyID"
        ),
    }


def expected_lines(root: etree._Element) -> list[dict[str, Any]]:
    lines = []
    for line in root.xpath("cac:InvoiceLine | cac:CreditNoteLine", namespaces=NS):
        quantity = line.xpath("cbc:InvoicedQuantity | cbc:CreditedQuantity", namespaces=NS)
        lines.append(
            {
                "id": first_text(line, "cbc:ID"),
                "description": first_text(line, "cac:Item/cbc:Name"),
                "quantity": quantity[0].text.strip() if quantity else None,
                "unit_code": quantity[0].get("unitCode") if quantity else None,
                "net_amount": Decimal(first_text(line, "cbc:LineExtensionAmount")),
            }
        )
    return lines


def expected_due_date(root: etree._Element) -> str | None:
    if etree.QName(root).localname == "Invoice":
        return first_text(root, "cbc:DueDate")
    return first_text(root, "cac:PaymentMeans/cbc:PaymentDueDate")


def with_decimal_amounts(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**line, "net_amount": Decimal(line["net_amount"])} for line in lines]


# The 12 example documents.


@pytest.mark.parametrize("file_name", INVOICE_FILES)
def test_map_header_fields(file_name: str) -> None:
    """Ids, type, dates and currency come from the document's header elements."""
    root = xpath_root(file_name)
    record = mapped(file_name)
    document_types = {"Invoice": "invoice", "CreditNote": "credit_note"}

    assert record["source_file"] == file_name
    assert record["invoice_id"] == first_text(root, "cbc:ID")
    assert record["document_type"] == document_types[etree.QName(root).localname]
    assert record["issue_date"] == first_text(root, "cbc:IssueDate")
    assert record["due_date"] == expected_due_date(root)
    assert record["currency"] == first_text(root, "cbc:DocumentCurrencyCode")


@pytest.mark.parametrize("file_name", INVOICE_FILES)
def test_map_parties(file_name: str) -> None:
    """Supplier and customer carry the legal name and the VAT-scheme company id."""
    root = xpath_root(file_name)
    record = mapped(file_name)

    assert record["supplier"] == expected_party(root, "AccountingSupplierParty")
    assert record["customer"] == expected_party(root, "AccountingCustomerParty")


@pytest.mark.parametrize("file_name", INVOICE_FILES)
def test_map_lines(file_name: str) -> None:
    """Every line is mapped, in document order, with its amount as a decimal string."""
    expected = expected_lines(xpath_root(file_name))
    record = mapped(file_name)

    assert record["line_count"] == len(expected)
    assert len(record["lines"]) == len(expected)
    for index, (expected_line, line) in enumerate(zip(expected, record["lines"], strict=True)):
        assert isinstance(line["net_amount"], str), f"line {index}"
        assert with_decimal_amounts([line]) == [expected_line], f"line {index}"


@pytest.mark.parametrize("file_name", INVOICE_FILES)
def test_map_amounts(file_name: str) -> None:
    """Totals are decimal strings: tax in the document currency, lines summed exactly."""
    root = xpath_root(file_name)
    record = mapped(file_name)
    currency = record["currency"]
    document_line_total = Decimal(
        first_text(root, "cac:LegalMonetaryTotal/cbc:LineExtensionAmount")
    )
    line_sum = sum((line["net_amount"] for line in expected_lines(root)), Decimal(0))
    tax_total = first_text(root, "cac:TaxTotal/cbc:TaxAmount[@currencyID=$c]", c=currency)
    payable = first_text(root, "cac:LegalMonetaryTotal/cbc:PayableAmount")

    for field in ("line_total", "tax_total", "payable_amount"):
        assert isinstance(record[field], str), field
    assert Decimal(record["line_total"]) == line_sum
    assert Decimal(record["line_total"]) == document_line_total
    assert Decimal(record["tax_total"]) == Decimal(tax_total)
    assert record["tax_total"] == tax_total
    assert Decimal(record["payable_amount"]) == Decimal(payable)
    assert record["payable_amount"] == payable


@pytest.mark.parametrize("file_name", INVOICE_FILES)
def test_map_record_keys(file_name: str) -> None:
    """The record has exactly the documented fields, so none goes untested."""
    expected_keys = {
        "source_file",
        "invoice_id",
        "document_type",
        "issue_date",
        "due_date",
        "currency",
        "supplier",
        "customer",
        "lines",
        "line_count",
        "line_total",
        "tax_total",
        "payable_amount",
    }
    record = mapped(file_name)

    assert set(record) == expected_keys
    for line in record["lines"]:
        assert set(line) == {"id", "description", "quantity", "unit_code", "net_amount"}


def test_map_examples_cover_hard_cases() -> None:
    """The example set still contains the cases the mapping was written for."""
    records = {name: mapped(name) for name in INVOICE_FILES}
    supplier_names = [record["supplier"]["name"] for record in records.values()]
    tax_currencies = [first_text(xpath_root(name), "cbc:TaxCurrencyCode") for name in records]
    line_counts = [record["line_count"] for record in records.values()]

    assert None in supplier_names
    assert any(currency is not None for currency in tax_currencies)
    assert {"invoice", "credit_note"} <= {record["document_type"] for record in records.values()}
    assert 1 in line_counts
    assert max(line_counts) > 1


def test_map_through_code_run() -> None:
    """code.run loads map_invoice.py the way a step does and returns the same record."""
    source = (EXAMPLE_DIR / "map_invoice.py").read_text(encoding="utf-8")
    context = make_context(sources={"map_invoice.py": source})
    file_name = "base-example.xml"

    record = invoke_action(
        "code.run",
        context=context,
        file="map_invoice.py",
        args={"document": parse(INBOX / file_name), "source_file": file_name},
    )

    assert record == mapped(file_name)


def test_map_logs_ids_not_payload(caplog: pytest.LogCaptureFixture) -> None:
    """One info line per document, naming the invoice and file but no party data."""
    file_name = "base-example.xml"
    document = parse(INBOX / file_name)
    caplog.set_level(logging.INFO)

    record = map_invoice.run(make_context(), document=document, source_file=file_name)

    messages = [entry.getMessage() for entry in caplog.records if entry.levelno == logging.INFO]
    assert len(messages) == 1
    assert record["invoice_id"] in messages[0]
    assert file_name in messages[0]
    assert record["supplier"]["name"] not in messages[0]


# Variants of the examples, written to tmp_path.


def write_variant(tmp_path: Path, source_name: str, name: str, change: Any) -> Path:
    """Copy an example document, apply ``change`` to its lxml root and save it as ``name``."""
    tree = etree.parse(str(INBOX / source_name))
    change(tree.getroot())
    path = tmp_path / name
    tree.write(str(path), xml_declaration=True, encoding="UTF-8")
    return path


def remove(expression: str) -> Any:
    def change(root: etree._Element) -> None:
        for element in root.xpath(expression, namespaces=NS):
            element.getparent().remove(element)

    return change


def test_map_credit_note_due_date(tmp_path: Path) -> None:
    """A credit note's due date is read from PaymentMeans/PaymentDueDate."""

    def add_due_date(root: etree._Element) -> None:
        means = root.find("cac:PaymentMeans", NS)
        due_date = etree.SubElement(means, f"{{{NS['cbc']}}}PaymentDueDate")
        due_date.text = "2018-01-15"
        means.insert(1, due_date)

    path = write_variant(tmp_path, "base-creditnote-correction.xml", "credit.xml", add_due_date)

    record = map_invoice.run(make_context(), document=parse(path), source_file=path.name)

    assert record["due_date"] == "2018-01-15"


def test_map_single_party_tax_scheme(tmp_path: Path) -> None:
    """One PartyTaxScheme is read like several, because force_list makes it a list."""
    path = write_variant(
        tmp_path,
        "Norwegian-example-1.xml",
        "one-scheme.xml",
        remove(
            "cac:AccountingSupplierParty/cac:Party/cac:PartyTaxScheme[cac:TaxScheme/cbc:ID='TAX']"
        ),
    )

    record = map_invoice.run(make_context(), document=parse(path), source_file=path.name)

    assert record["supplier"]["vat_id"] == "NO123456785MVA"


@pytest.mark.parametrize(
    ("element", "expression"),
    [
        ("PayableAmount", "cac:LegalMonetaryTotal/cbc:PayableAmount"),
        ("cbc:ID", "cbc:ID"),
        ("IssueDate", "cbc:IssueDate"),
        ("DocumentCurrencyCode", "cbc:DocumentCurrencyCode"),
    ],
)
def test_map_missing_required_element(tmp_path: Path, element: str, expression: str) -> None:
    """A document without a required element is rejected with the file and element named."""
    path = write_variant(tmp_path, "base-example.xml", "incomplete.xml", remove(expression))
    document = parse(path)

    with pytest.raises(ActionError) as raised:
        map_invoice.run(make_context(), document=document, source_file=path.name)

    assert "incomplete.xml" in str(raised.value)
    assert element in str(raised.value)
    assert raised.value.retryable is False


def test_map_invalid_amount(tmp_path: Path) -> None:
    """An amount that is not a decimal number is rejected, not passed on."""

    def write_comma_amount(root: etree._Element) -> None:
        root.find("cac:LegalMonetaryTotal/cbc:PayableAmount", NS).text = "1.656,25"

    path = write_variant(tmp_path, "base-example.xml", "comma.xml", write_comma_amount)

    with pytest.raises(ActionError) as raised:
        map_invoice.run(make_context(), document=parse(path), source_file=path.name)

    assert "comma.xml" in str(raised.value)
    assert "'1.656,25'" in str(raised.value)


def test_map_non_invoice_document(tmp_path: Path) -> None:
    """An XML document that is not a UBL invoice or credit note is rejected by name."""
    path = tmp_path / "order.xml"
    path.write_text("<?xml version='1.0'?>\n<Order><ID>1</ID></Order>\n", encoding="utf-8")

    with pytest.raises(ActionError) as raised:
        map_invoice.run(make_context(), document=parse(path), source_file=path.name)

    assert "order.xml" in str(raised.value)
    assert "'Order'" in str(raised.value)


def test_map_invoice_in_wrong_namespace(tmp_path: Path) -> None:
    """An Invoice root outside the UBL 2.1 namespace is not taken for a UBL invoice."""
    path = tmp_path / "other.xml"
    path.write_text("<Invoice xmlns='urn:example:invoice'><ID>1</ID></Invoice>\n", encoding="utf-8")

    with pytest.raises(ActionError) as raised:
        map_invoice.run(make_context(), document=parse(path), source_file=path.name)

    assert "other.xml" in str(raised.value)
    assert "urn:example:invoice" in str(raised.value)


def test_parse_malformed_xml(tmp_path: Path) -> None:
    """A file that is not well-formed XML fails in the parse step, naming the file."""
    path = tmp_path / "broken.xml"
    path.write_text("<Invoice><cbc:ID>1</cbc:ID>\n", encoding="utf-8")

    with pytest.raises(ActionError) as raised:
        parse(path)

    assert "broken.xml" in str(raised.value)
