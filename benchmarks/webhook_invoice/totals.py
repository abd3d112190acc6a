"""Read the fields of one parsed UBL invoice and compute its line count and line total.

The ``totals`` step of the webhook benchmark runs this file with ``code.run``. It does what
the JavaScript Code node of the n8n reference chain does: count the ``cac:InvoiceLine``
elements and add up their ``cbc:LineExtensionAmount``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from splice.sdk import ActionError


def run(context: Any, *, document: dict[str, Any]) -> dict[str, Any]:
    """Return the invoice id, supplier name, currency, line count and line total."""
    if document.get("root") != "Invoice":
        raise ActionError(
            f"the root element is {document.get('root')!r}, not Invoice; post a UBL 2.1 invoice",
            retryable=False,
        )
    invoice = document["document"]
    lines = invoice.get("cac:InvoiceLine", [])
    total = sum((Decimal(_text(line["cbc:LineExtensionAmount"])) for line in lines), Decimal(0))
    party = invoice["cac:AccountingSupplierParty"]["cac:Party"]
    return {
        "invoice_id": _text(invoice["cbc:ID"]),
        "supplier": _text(party["cac:PartyName"]["cbc:Name"]),
        "currency": _text(invoice["cbc:DocumentCurrencyCode"]),
        "line_count": len(lines),
        # A JSON number, as the n8n Code node returns: an integer when the sum is whole.
        "line_total": int(total) if total == total.to_integral_value() else float(total),
    }


def _text(value: Any) -> str:
    """Return an element's text, whether xml.parse gave a string or an object with #text."""
    return str(value["#text"] if isinstance(value, dict) else value)
