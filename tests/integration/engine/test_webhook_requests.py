"""Webhook requests handed to run_execution: the child parses the body and builds the trigger."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from splice.engine.requests import WebhookRequest

from .conftest import Worker, code_step, definition

DESCRIBE = definition(
    code_step("describe", "describe", '{trigger: "{{ trigger }}"}'),
    trigger="{type: webhook}",
)
HEADERS = [("Content-Type", "application/json"), ("X-Test", "a"), ("x-test", "b")]
LARGE_JSON = json.dumps({"items": [{"n": n, "text": "é" * 20} for n in range(40_000)]}).encode()


def run_request(worker: Worker, request: WebhookRequest) -> dict[str, Any]:
    """Run DESCRIBE for ``request`` and return what the step saw of its trigger."""
    integration = worker.load(DESCRIBE)
    execution_id = worker.create(integration)
    outcome = worker.run(integration, execution_id, request=request)
    assert "succeeded" == outcome.status, outcome.error_message
    return dict(outcome.result)


def store_body(worker: Worker, tmp_path: Path, body: bytes) -> str:
    source = tmp_path / "body"
    source.write_bytes(body)
    return worker.blobs.put_file(source, f"webhooks/{os.urandom(4).hex()}/body")


def test_json_request_fields(worker: Worker) -> None:
    """Method, headers joined by name, query fields and the parsed JSON body reach the step."""
    body = b'{"id": 7, "name": "J\xc3\xb6rg"}'
    seen = run_request(worker, WebhookRequest("post", HEADERS, b"a=1&a=2&b=%20x", body))
    assert "webhook" == seen["type"]
    assert "POST" == seen["method"]
    assert {"content-type": "application/json", "x-test": "a, b"} == seen["headers"]
    assert {"a": ["1", "2"], "b": " x"} == seen["query"]
    assert {"id": 7, "name": "Jörg"} == seen["body"]
    assert "json" == seen["body_kind"]


def test_raw_is_body_bytes(worker: Worker) -> None:
    """trigger.raw contains the body's exact bytes."""
    body = b'{"id": 7}  \n'
    seen = run_request(worker, WebhookRequest("POST", HEADERS, b"", body))
    assert "bytes" == seen["raw_type"]
    assert hashlib.sha256(body).hexdigest() == seen["raw_sha256"]


def test_form_request(worker: Worker) -> None:
    """A form body becomes fields, repeated names a list in order."""
    headers = [("Content-Type", "application/x-www-form-urlencoded")]
    body = b"a=1&a=2&name=J%C3%B6rg"
    seen = run_request(worker, WebhookRequest("POST", headers, b"", body))
    assert "form" == seen["body_kind"]
    assert {"a": ["1", "2"], "name": "Jörg"} == seen["body"]


@pytest.mark.parametrize("body", [None, b""], ids=["none", "empty-bytes"])
def test_empty_request(worker: Worker, body: bytes | None) -> None:
    """Without a body the kind is empty and trigger.raw is empty bytes."""
    seen = run_request(worker, WebhookRequest("GET", HEADERS, b"", body))
    assert "empty" == seen["body_kind"]
    assert None is seen["body"]
    assert 0 == seen["raw_size"]
    assert "bytes" == seen["raw_type"]


def test_invalid_utf8_request(worker: Worker) -> None:
    """A JSON body that is not UTF-8 has the kind invalid, a problem, and its raw bytes."""
    body = b'{"name": "\xff"}'
    seen = run_request(worker, WebhookRequest("POST", HEADERS, b"", body))
    assert "invalid" == seen["body_kind"]
    assert "not valid utf-8" in seen["body_problem"]
    assert hashlib.sha256(body).hexdigest() == seen["raw_sha256"]


def test_blob_json_request(worker: Worker, tmp_path: Path) -> None:
    """A body in the blob store reaches the child whole, parsed."""
    key = store_body(worker, tmp_path, LARGE_JSON)
    seen = run_request(worker, WebhookRequest("POST", HEADERS, b"", body_blob=key))
    assert "json" == seen["body_kind"]
    assert 1 == seen["body_length"]
    assert len(LARGE_JSON) == seen["raw_size"]
    assert hashlib.sha256(LARGE_JSON).hexdigest() == seen["raw_sha256"]


def test_blob_body_file_removed(worker: Worker, tmp_path: Path) -> None:
    """The child deletes the staged body file once read; the blob itself stays."""
    key = store_body(worker, tmp_path, LARGE_JSON)
    seen = run_request(worker, WebhookRequest("POST", HEADERS, b"", body_blob=key))
    assert "request-body" not in seen["scratch_files"]
    assert worker.blobs.exists(key)


def test_blob_invalid_text_request(worker: Worker, tmp_path: Path) -> None:
    """A large text body with invalid bytes in its declared charset is invalid, not an error."""
    body = b"line\n" * 300_000 + b"\xfe\xff"
    headers = [("Content-Type", "text/plain; charset=utf-8")]
    key = store_body(worker, tmp_path, body)
    seen = run_request(worker, WebhookRequest("PUT", headers, b"", body_blob=key))
    assert "invalid" == seen["body_kind"]
    assert "PUT" == seen["method"]
    assert hashlib.sha256(body).hexdigest() == seen["raw_sha256"]


def test_blob_binary_request(worker: Worker, tmp_path: Path) -> None:
    """A binary body has no parsed value; its bytes are in trigger.raw."""
    body = os.urandom(1_500_000)
    headers = [("Content-Type", "application/octet-stream")]
    key = store_body(worker, tmp_path, body)
    seen = run_request(worker, WebhookRequest("POST", headers, b"", body_blob=key))
    assert "binary" == seen["body_kind"]
    assert hashlib.sha256(body).hexdigest() == seen["raw_sha256"]


def test_parent_never_parses(worker: Worker, monkeypatch: pytest.MonkeyPatch) -> None:
    """The supervisor's process does not parse the body: the child does."""

    def fail_if_called(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the body was parsed in the supervisor's process")

    monkeypatch.setattr("splice.triggers.bodies.parse_body", fail_if_called)
    monkeypatch.setattr("splice.engine.requests.parse_body", fail_if_called)
    seen = run_request(worker, WebhookRequest("POST", HEADERS, b"", b'{"id": 1}'))
    assert {"id": 1} == seen["body"]


def test_request_with_both_bodies() -> None:
    """A request cannot carry an inline body and a body blob at once."""
    with pytest.raises(ValueError, match="either an inline body or a body blob"):
        WebhookRequest("POST", [], b"", b"x", body_blob="webhooks/1/body")


@pytest.mark.parametrize("given", ["both", "neither"])
def test_trigger_or_request_required(worker: Worker, given: str) -> None:
    """run_execution takes exactly one of trigger and request."""
    integration = worker.load(DESCRIBE)
    execution_id = worker.create(integration)
    request = WebhookRequest("POST", [], b"", b"")
    options: dict[str, Any] = (
        {"trigger": {"type": "manual"}, "request": request}
        if given == "both"
        else {"trigger": None, "request": None}
    )
    with pytest.raises(ValueError, match=f"but got {given}"):
        worker.supervisor.run_execution(
            execution_id, integration, flow="main", config=worker.config(integration), **options
        )
