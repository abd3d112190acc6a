"""Summarise the invoice loop: documents posted, files that failed, totals per currency.

The ``summary`` step of the invoice-sync integration runs this file with ``code.run``.
Its ``loop`` argument is the output of the ``invoices`` loop step: ``results`` contains
each iteration's accounting record, or null where the iteration failed, and ``errors``
contains one entry per failed iteration.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any


def run(context: Any, *, loop: dict[str, Any]) -> dict[str, Any]:
    """Count processed and failed files and add up the payable amounts per currency."""
    records = [record for record in loop.get("results", []) if record is not None]
    errors = loop.get("errors", [])
    summary = {
        "processed": len(records),
        "failed": len(errors),
        "failed_files": [_failed_file(error) for error in errors],
        "totals": _totals(records),
    }
    context.logger.info("documents processed: %d, failed: %d", len(records), len(errors))
    return summary


def _failed_file(error: dict[str, Any]) -> dict[str, Any]:
    item = error.get("item")
    name = item.get("name") if isinstance(item, dict) else None
    return {"file": name, "error": error.get("error")}


def _totals(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Add up payable amounts per currency, counting a credit note's amount as negative.

    A UBL credit note states a positive PayableAmount that the supplier owes back, so a
    plain sum would count it as money due.
    """
    counts: dict[str, int] = {}
    sums: dict[str, Decimal] = {}
    for record in records:
        currency = record["currency"]
        amount = Decimal(record["payable_amount"])
        if record["document_type"] == "credit_note":
            amount = -amount
        counts[currency] = counts.get(currency, 0) + 1
        sums[currency] = sums.get(currency, Decimal(0)) + amount
    return {
        currency: {"invoices": counts[currency], "payable_amount": format(sums[currency], "f")}
        for currency in sorted(counts)
    }
