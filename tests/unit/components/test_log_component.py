"""Tests of log.write."""

from __future__ import annotations

import logging

import pytest

from splice.testing import invoke_action


def test_write_message(caplog: pytest.LogCaptureFixture) -> None:
    """log.write logs the message at the given level and returns null."""
    with caplog.at_level(logging.DEBUG, logger="splice.testing"):
        result = invoke_action("log.write", message="42 invoices found", level="warning")
    assert result is None
    assert [("WARNING", "42 invoices found")] == [
        (record.levelname, record.getMessage()) for record in caplog.records
    ]


def test_write_data(caplog: pytest.LogCaptureFixture) -> None:
    """data follows the message as compact JSON."""
    with caplog.at_level(logging.INFO, logger="splice.testing"):
        invoke_action("log.write", message="totals", data={"count": 2, "city": "Zürich"})
    assert ['totals {"count": 2, "city": "Zürich"}'] == [r.getMessage() for r in caplog.records]


def test_write_default_level(caplog: pytest.LogCaptureFixture) -> None:
    """The default level is info."""
    with caplog.at_level(logging.DEBUG, logger="splice.testing"):
        invoke_action("log.write", message="hello")
    assert ["INFO"] == [record.levelname for record in caplog.records]
