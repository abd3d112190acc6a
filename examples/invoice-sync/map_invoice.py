"""Map one parsed UBL 2.1 invoice or credit note to an accounting record.

The ``map`` step of the invoice-sync integration runs this file with ``code.run``. It
receives the output of ``xml.parse`` (elements keyed with the ``cac:`` and ``cbc:``
prefixes, the repeatable ones always lists) and returns a record that is posted to
the accounting API as JSON.

Amounts are decimal strings. An amount read from the document keeps the document's
own formatting (``"1656.25"``, ``"1300"``). ``line_total`` is a sum computed with
``Decimal``, so no amount ever passes through a float.
"""

from __future__ import annotations

import datetime
from decimal import Decimal, InvalidOperation
from pathlib import PurePath
from typing import Any, NamedTuple

from splice.sdk import ActionError

FIX = "correct the file at its sender or move it out of the inbox"


class DocumentKind(NamedTuple):
    """The names and elements that differ between a UBL invoice and a UBL credit note."""

    namespace: str
    document_type: str
    line_element: str
    quantity_element: str


DOCUMENT_KINDS = {
    "Invoice": DocumentKind(
        namespace="urn:oasis:names:specification:ubl:schema:xsd:Invoice-2",
        document_type="invoice",
        line_element="cac:InvoiceLine",
        quantity_element="cbc:InvoicedQuantity",
    ),
    "CreditNote": DocumentKind(
        namespace="urn:oasis:names:specification:ubl:schema:xsd:CreditNote-2",
        document_type="credit_note",
        line_element="cac:CreditNoteLine",
        quantity_element="cbc:CreditedQuantity",
    ),
}


def run(context: Any, *, document: dict[str, Any], source_file: str) -> dict[str, Any]:
    """Build the accounting record of one document, or raise ActionError when it is unusable."""
    source_file = PurePath(source_file).name
    root_name, kind = _document_kind(document, source_file)
    root = document.get("document")
    if not isinstance(root, dict):
        root = {}

    def required(*path: str) -> str:
        return _required_text(root, path, root_name, source_file)

    currency = required("cbc:DocumentCurrencyCode")
    lines = [
        _line(line, kind, source_file, index)
        for index, line in enumerate(_children(root, kind.line_element), start=1)
    ]
    line_total = sum((Decimal(line["net_amount"]) for line in lines), Decimal(0))
    payable_element = ("cac:LegalMonetaryTotal", "cbc:PayableAmount")
    record = {
        "source_file": source_file,
        "invoice_id": required("cbc:ID"),
        "document_type": kind.document_type,
        "issue_date": _date(required("cbc:IssueDate"), "cbc:IssueDate", source_file),
        "due_date": _due_date(root, kind, source_file),
        "currency": currency,
        "supplier": _party(root, "cac:AccountingSupplierParty"),
        "customer": _party(root, "cac:AccountingCustomerParty"),
        "lines": lines,
        "line_count": len(lines),
        "line_total": format(line_total, "f"),
        "tax_total": _tax_total(root, currency, source_file),
        "payable_amount": _amount(
            required(*payable_element), "/".join(payable_element), source_file
        ),
    }
    context.logger.info(
        "mapped %s %s from %s, line count %d",
        kind.document_type,
        record["invoice_id"],
        source_file,
        len(lines),
    )
    return record


def _document_kind(document: Any, source_file: str) -> tuple[str, DocumentKind]:
    """Tell an invoice from a credit note by the root element and its namespace."""
    if not isinstance(document, dict) or "root" not in document:
        raise ActionError(
            f"{source_file}: the document argument is not the output of xml.parse; "
            "pass the parse step's whole output, as in document: '{{ steps.parse }}'",
            retryable=False,
        )
    root_key = str(document["root"])
    # xml.parse may key the root with a prefix or a {namespace}, so compare the local name.
    root_name = root_key.rpartition("}")[2].rpartition(":")[2]
    kind = DOCUMENT_KINDS.get(root_name)
    namespace = document.get("namespace")
    if kind is None or namespace != kind.namespace:
        where = f"in namespace {namespace!r}" if namespace else "without a namespace"
        raise ActionError(
            f"{source_file}: root element {root_key!r} {where} is not a UBL 2.1 Invoice "
            "or CreditNote; "
            f"only UBL invoices and credit notes can be mapped, so {FIX}",
            retryable=False,
        )
    return root_name, kind


def _required_text(
    root: dict[str, Any], path: tuple[str, ...], root_name: str, source_file: str
) -> str:
    value = _text(_first(root, *path))
    if value is None:
        raise ActionError(
            f"{source_file}: missing {'/'.join(path)} in {root_name}, which the accounting "
            f"record needs; {FIX}",
            retryable=False,
        )
    return value


def _line(line: Any, kind: DocumentKind, source_file: str, index: int) -> dict[str, Any]:
    """Map one invoice or credit note line. ``index`` counts from 1, for error messages."""
    where = f"{kind.line_element} number {index}"
    net_amount = _first(line, "cbc:LineExtensionAmount")
    if _text(net_amount) is None:
        raise ActionError(
            f"{source_file}: missing cbc:LineExtensionAmount in {where}, which the line "
            f"total needs; {FIX}",
            retryable=False,
        )
    quantity = _first(line, kind.quantity_element)
    return {
        "id": _text(_first(line, "cbc:ID")),
        # Item/Name is the short label that PEPPOL BIS 3 requires on every line. The optional
        # Item/Description is free text that can run to several lines, so it is left out.
        "description": _text(_first(line, "cac:Item", "cbc:Name")),
        "quantity": _text(quantity),
        "unit_code": _attribute(quantity, "unitCode"),
        "net_amount": _amount(net_amount, f"{where}/cbc:LineExtensionAmount", source_file),
    }


def _party(root: dict[str, Any], role: str) -> dict[str, str | None]:
    """Read the legal name and VAT number of the supplier or customer party."""
    party = _first(root, role, "cac:Party")
    vat_id = None
    # A party may also list a non-VAT tax registration (Norwegian "Foretaksregisteret"),
    # so only the PartyTaxScheme whose TaxScheme is VAT gives the VAT number.
    for scheme in _children(party, "cac:PartyTaxScheme"):
        if _text(_first(scheme, "cac:TaxScheme", "cbc:ID")) == "VAT":
            vat_id = _text(_first(scheme, "cbc:CompanyID"))
            break
    return {
        "name": _text(_first(party, "cac:PartyLegalEntity", "cbc:RegistrationName")),
        "vat_id": vat_id,
    }


def _due_date(root: dict[str, Any], kind: DocumentKind, source_file: str) -> str | None:
    """Read the due date where UBL 2.1 puts it: DueDate, or PaymentMeans in a credit note."""
    if kind.document_type == "invoice":
        element = "cbc:DueDate"
        value = _text(root.get(element))
    else:
        element = "cac:PaymentMeans/cbc:PaymentDueDate"
        dates = [
            _text(_first(means, "cbc:PaymentDueDate"))
            for means in _children(root, "cac:PaymentMeans")
        ]
        value = next((date for date in dates if date is not None), None)
    return None if value is None else _date(value, element, source_file)


def _tax_total(root: dict[str, Any], currency: str, source_file: str) -> str | None:
    """Pick the TaxTotal in the document currency, not the one in the tax currency."""
    for tax_total in _children(root, "cac:TaxTotal"):
        tax_amount = _first(tax_total, "cbc:TaxAmount")
        if _attribute(tax_amount, "currencyID") == currency:
            return _amount(tax_amount, "cac:TaxTotal/cbc:TaxAmount", source_file)
    return None


def _amount(value: Any, element: str, source_file: str) -> str:
    """Return the amount's text as the document writes it, after checking it is a decimal."""
    text = _text(value)
    try:
        valid = text is not None and Decimal(text).is_finite()
    except InvalidOperation:
        valid = False
    if not valid:
        raise ActionError(
            f"{source_file}: {element} is {text!r}, not a decimal number; {FIX}",
            retryable=False,
        )
    return text


def _date(text: str, element: str, source_file: str) -> str:
    try:
        datetime.date.fromisoformat(text)
    except ValueError:
        raise ActionError(
            f"{source_file}: {element} is {text!r}, not a date in the form YYYY-MM-DD; {FIX}",
            retryable=False,
        ) from None
    return text


def _children(node: Any, key: str) -> list[Any]:
    """Return the values under ``key`` as a list, whether xml.parse gave none, one or many."""
    if not isinstance(node, dict) or key not in node:
        return []
    value = node[key]
    return value if isinstance(value, list) else [value]


def _first(node: Any, *path: str) -> Any:
    """Follow ``path`` through the parsed document, taking the first of repeated elements."""
    for key in path:
        children = _children(node, key)
        if not children:
            return None
        node = children[0]
    return node


def _text(value: Any) -> str | None:
    """Return an element's text without surrounding whitespace, or None when it is empty."""
    if isinstance(value, dict):
        value = value.get("#text")
    if not isinstance(value, str):
        return None
    return value.strip() or None


def _attribute(value: Any, name: str) -> str | None:
    if isinstance(value, dict) and isinstance(value.get(f"@{name}"), str):
        return value[f"@{name}"]
    return None
