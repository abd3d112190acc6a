"""Tests of examples/invoice-sync/summarize.py, the summary step of the invoice demo."""

from __future__ import annotations

import importlib.util
import sys
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

from splice.testing import make_context

EXAMPLE_DIR = Path(__file__).resolve().parents[3] / "examples" / "invoice-sync"


def load_example_module(name: str) -> ModuleType:
    """Import an example's .py file under a name that cannot clash with other modules."""
    module_name = f"invoice_sync_{name}"
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLE_DIR / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


summarize = load_example_module("summarize")


def record(document_type: str, currency: str, payable_amount: str) -> dict[str, Any]:
    """Return the fields of an accounting record that the summary reads."""
    return {"document_type": document_type, "currency": currency, "payable_amount": payable_amount}


def file_item(name: str) -> dict[str, Any]:
    return {"path": f"/inbox/{name}", "name": name, "size": 100, "modified": "2025-01-01T00:00:00Z"}


def test_summarize_counts_and_totals() -> None:
    """Records are counted and summed per currency, a credit note counting as negative."""
    loop = {
        "results": [
            record("invoice", "EUR", "1656.25"),
            None,
            record("invoice", "EUR", "0.10"),
            record("credit_note", "EUR", "1000.05"),
            record("invoice", "GBP", "1200.00"),
        ],
        "errors": [
            {
                "index": 1,
                "item": file_item("broken.xml"),
                "step": "invoices[1].parse",
                "error": "bad",
            }
        ],
        "succeeded": 4,
        "failed": 1,
    }

    summary = summarize.run(make_context(), loop=loop)

    expected = {
        "processed": 4,
        "failed": 1,
        "failed_files": [{"file": "broken.xml", "error": "bad"}],
        "totals": {
            "EUR": {"invoices": 3, "payable_amount": "656.30"},
            "GBP": {"invoices": 1, "payable_amount": "1200.00"},
        },
    }
    assert summary == expected


def test_summarize_sums_exactly() -> None:
    """Decimal sums keep cents exact where floats would not (0.1 + 0.2)."""
    loop = {
        "results": [record("invoice", "EUR", "0.1"), record("invoice", "EUR", "0.2")],
        "errors": [],
        "succeeded": 2,
        "failed": 0,
    }

    summary = summarize.run(make_context(), loop=loop)

    assert summary["totals"]["EUR"]["payable_amount"] == "0.3"
    assert Decimal(summary["totals"]["EUR"]["payable_amount"]) == Decimal("0.3")


def test_summarize_all_failed() -> None:
    """When every file fails there are no totals and every failure is listed in order."""
    loop = {
        "results": [None, None],
        "errors": [
            {"index": 0, "item": file_item("a.xml"), "step": "invoices[0].map", "error": "no ID"},
            {
                "index": 1,
                "item": file_item("b.xml"),
                "step": "invoices[1].post",
                "error": "HTTP 401",
            },
        ],
        "succeeded": 0,
        "failed": 2,
    }

    summary = summarize.run(make_context(), loop=loop)

    assert summary["processed"] == 0
    assert summary["failed"] == 2
    assert summary["failed_files"] == [
        {"file": "a.xml", "error": "no ID"},
        {"file": "b.xml", "error": "HTTP 401"},
    ]
    assert summary["totals"] == {}


def test_summarize_empty_inbox() -> None:
    """An empty inbox gives an empty summary, not an error."""
    loop = {"results": [], "errors": [], "succeeded": 0, "failed": 0}

    summary = summarize.run(make_context(), loop=loop)

    assert summary == {"processed": 0, "failed": 0, "failed_files": [], "totals": {}}
