"""Webhook triggers over real HTTP: bodies, signatures, deliveries, limits, responses."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import func, select

from splice.store.tables import executions
from tests.conftest import REPOSITORY_ROOT

GITHUB_FIXTURES = REPOSITORY_ROOT / "tests" / "fixtures" / "github-webhooks"
SECRET = "it's a secret to everybody"

ECHO = """
    def run(context, trigger):
        raw = trigger["raw"]
        return {
            "method": trigger["method"],
            "query": trigger["query"],
            "content_type": trigger["headers"].get("content-type"),
            "body": trigger["body"],
            "kind": trigger["body_kind"],
            "problem": trigger["body_problem"],
            "raw_size": len(raw),
            "raw_sha256": __import__("hashlib").sha256(raw).hexdigest(),
        }
"""

DEFINITION = """
    key: hooks
    name: Hooks
    config:
      github_secret: {type: secret, required: true}
    flows:
      inbox:
        trigger: {type: webhook}
        steps:
          - id: echo
            action: code.run
            inputs: {file: echo.py, args: {trigger: "{{ trigger }}"}}
      echo:
        trigger: {type: webhook, sync: true}
        steps:
          - id: echo
            action: code.run
            inputs: {file: echo.py, args: {trigger: "{{ trigger }}"}}
      respond:
        trigger: {type: webhook, sync: true}
        steps:
          - id: reply
            action: webhook.respond
            inputs:
              status: 201
              headers: {X-Reply: "yes", Content-Length: "999"}
              body: {got: "{{ trigger.body.name }}"}
          - id: after
            action: log.write
            inputs: {message: responded}
      text:
        trigger: {type: webhook, sync: true}
        steps:
          - id: reply
            action: webhook.respond
            inputs: {status: 200, body: "plain {{ trigger.query.who }}", content_type: text/plain}
      fail:
        trigger: {type: webhook, sync: true}
        steps:
          - id: boom
            action: code.run
            inputs: {source: "def run(context):\\n    raise ValueError('no such customer')\\n"}
      slow:
        trigger: {type: webhook, sync: true, sync_timeout: 0.5}
        steps:
          - id: nap
            action: code.run
            inputs:
              source: "import time\\ndef run(context):\\n    time.sleep(2)\\n    return 'late'\\n"
      github:
        trigger:
          type: webhook
          signature: {scheme: github, secret: github_secret}
          delivery_id: {header: X-GitHub-Delivery}
        steps:
          - id: echo
            action: code.run
            inputs: {file: echo.py, args: {trigger: "{{ trigger }}"}}
      optional:
        trigger: {type: webhook, delivery_id: {header: X-Delivery-Id, required: false}}
        steps:
          - id: echo
            action: code.run
            inputs: {file: echo.py, args: {trigger: "{{ trigger }}"}}
      by_field:
        trigger: {type: webhook, delivery_id: {body: event.id}}
        steps:
          - id: echo
            action: code.run
            inputs: {file: echo.py, args: {trigger: "{{ trigger }}"}}
"""


@pytest.fixture
def hooks(start_service, definition):
    service = start_service()
    path = definition(DEFINITION, {"echo.py": ECHO})
    deployment = service.deploy(path, github_secret=SECRET)
    return service, deployment.webhooks


def _echo(service, execution_id):
    record = service.wait_for(execution_id)
    assert record.status == "succeeded", (record.error_type, record.error_message)
    return service.runtime.read_completion(execution_id).result


def _count(service) -> int:
    with service.runtime.store.engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(executions)).scalar_one()


def test_async_webhook_returns_202(hooks):
    service, urls = hooks
    response = service.client.post(urls["inbox"] + "?a=1&a=2&b=x", json={"order": 7})
    assert response.status_code == 202
    execution_id = response.json()["execution_id"]
    echo = _echo(service, execution_id)
    assert echo["method"] == "POST"
    assert echo["query"] == {"a": ["1", "2"], "b": "x"}
    assert echo["body"] == {"order": 7}
    assert echo["kind"] == "json"


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
def test_webhook_accepts_any_method(hooks, method):
    service, urls = hooks
    response = service.client.request(
        method, urls["echo"], content=b"x" if method != "GET" else None
    )
    assert response.status_code == 200, response.text
    assert response.json()["method"] == method


BODIES = [
    # (content type, body, expected kind, expected parsed body, problem expected)
    ("application/json", b'{"a": [1, 2]}', "json", {"a": [1, 2]}, False),
    (
        "application/x-www-form-urlencoded",
        b"tag=a&tag=b&name=J%C3%BCrgen+X",
        "form",
        {"tag": ["a", "b"], "name": "Jürgen X"},
        False,
    ),
    ("text/plain; charset=iso-8859-1", "Grüße".encode("latin-1"), "text", "Grüße", False),
    ("text/plain", "naïve".encode(), "text", "naïve", False),
    ("application/octet-stream", bytes(range(256)), "binary", None, False),
    ("application/json", b"", "empty", None, False),
    ("application/json", b'{"a": "\xff\xfe"}', None, None, True),
    ("application/json", b"{not json", None, None, True),
    ("text/plain; charset=utf-8", b"\xc3\x28 broken", None, None, True),
    ("application/xml", b"<a><b>1</b><b>2</b></a>", "xml", None, False),
]


@pytest.mark.parametrize(("content_type", "body", "kind", "parsed", "problem"), BODIES)
def test_webhook_bodies_never_return_5xx(hooks, content_type, body, kind, parsed, problem):
    service, urls = hooks
    response = service.client.post(
        urls["echo"], content=body, headers={"content-type": content_type}
    )
    assert response.status_code == 200, response.text
    echo = response.json()
    assert echo["raw_size"] == len(body)
    assert echo["raw_sha256"] == hashlib.sha256(body).hexdigest()
    if kind is not None:
        assert echo["kind"] == kind
    if parsed is not None:
        assert echo["body"] == parsed
    assert (echo["problem"] is not None) == problem


def test_large_body_streams_to_blob_store(hooks):
    service, urls = hooks
    body = os.urandom(3 * 1024 * 1024 + 17)

    def chunks():
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    response = service.client.post(
        urls["inbox"], content=chunks(), headers={"content-type": "application/octet-stream"}
    )
    assert response.status_code == 202
    execution_id = response.json()["execution_id"]
    echo = _echo(service, execution_id)
    assert echo["raw_size"] == len(body)
    assert echo["raw_sha256"] == hashlib.sha256(body).hexdigest()
    record = service.runtime.store.get_execution(execution_id)
    assert record.trigger_blob == f"executions/{execution_id}/request-body"
    assert len(record.trigger) < 10_000  # the body is not in the record


def test_oversized_body_returns_413(start_service, definition):
    service = start_service(SPLICE_WEBHOOK_MAX_BODY="2048")
    path = definition(DEFINITION, {"echo.py": ECHO})
    urls = service.deploy(path, github_secret=SECRET).webhooks
    declared = service.client.post(urls["inbox"], content=b"x" * 4096)
    assert declared.status_code == 413
    assert declared.json()["limit"] == 2048
    assert "SPLICE_WEBHOOK_MAX_BODY" in declared.json()["error"]

    def streamed():
        for _ in range(8):
            yield b"y" * 1024

    chunked = service.client.post(urls["inbox"], content=streamed())
    assert chunked.status_code == 413
    assert _count(service) == 0
    assert service.client.post(urls["inbox"], content=b"x" * 2048).status_code == 202


def test_sync_response_from_respond_step(hooks):
    service, urls = hooks
    response = service.client.post(urls["respond"], json={"name": "Ada"})
    assert response.status_code == 201
    assert response.json() == {"got": "Ada"}
    assert response.headers["x-reply"] == "yes"
    assert response.headers["content-length"] == str(len(response.content))
    assert response.headers["x-splice-execution-id"]
    text = service.client.get(urls["text"], params={"who": "you"})
    assert text.status_code == 200
    assert text.text == "plain you"
    assert text.headers["content-type"].startswith("text/plain")


def test_sync_response_defaults_to_result(hooks):
    service, urls = hooks
    response = service.client.post(urls["echo"], json={"x": 1})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json()["body"] == {"x": 1}


def test_failed_sync_execution_returns_500(hooks):
    service, urls = hooks
    response = service.client.post(urls["fail"], content=b"")
    assert response.status_code == 500
    data = response.json()
    assert data["status"] == "failed"
    assert "no such customer" in data["error"]["message"]
    assert data["error"]["step"] == "boom"
    assert service.runtime.store.get_execution(data["execution_id"]).status == "failed"


def test_sync_timeout_returns_202(hooks):
    service, urls = hooks
    response = service.client.post(urls["slow"], content=b"")
    assert response.status_code == 202
    execution_id = response.json()["execution_id"]
    assert f"/api/executions/{execution_id}" in response.json()["detail"]
    assert service.wait_for(execution_id).status == "succeeded"


def _github_headers(body: bytes, *, secret: str = SECRET, delivery: str | None = None) -> dict:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {
        "content-type": "application/json",
        "x-github-event": "push",
        "x-github-delivery": delivery or str(uuid.uuid4()),
        "x-hub-signature-256": f"sha256={digest}",
    }


@pytest.mark.parametrize(
    "payload", sorted(GITHUB_FIXTURES.glob("*.payload.json")), ids=lambda p: p.name
)
def test_github_valid_signatures_accepted(hooks, payload: Path):
    service, urls = hooks
    body = payload.read_bytes()
    response = service.client.post(urls["github"], content=body, headers=_github_headers(body))
    assert response.status_code == 202, response.text
    echo = _echo(service, response.json()["execution_id"])
    assert echo["body"] == json.loads(body)
    assert echo["raw_sha256"] == hashlib.sha256(body).hexdigest()


def test_github_invalid_signatures_return_401(hooks):
    service, urls = hooks
    body = (GITHUB_FIXTURES / "push.payload.json").read_bytes()
    wrong_secret = _github_headers(body, secret="another secret")
    tampered = _github_headers(body)
    missing = _github_headers(body)
    del missing["x-hub-signature-256"]
    for headers, content in (
        (wrong_secret, body),
        (tampered, body.replace(b'"ref"', b'"reF"')),
        (missing, body),
        (tampered, body + b" "),
    ):
        response = service.client.post(urls["github"], content=content, headers=headers)
        assert response.status_code == 401, response.text
        assert "X-Hub-Signature-256" in response.json()["error"]
        assert SECRET not in response.text
    assert _count(service) == 0


def test_repeated_delivery_starts_nothing_new(hooks):
    service, urls = hooks
    body = (GITHUB_FIXTURES / "ping.payload.json").read_bytes()
    headers = _github_headers(body, delivery="72d3162e-cc78-11e3-81ab-4c9367dc0958")
    first = service.client.post(urls["github"], content=body, headers=headers)
    again = service.client.post(urls["github"], content=body, headers=headers)
    assert first.status_code == 202
    assert again.status_code == 202
    assert again.json() == {"execution_id": first.json()["execution_id"], "duplicate": True}
    assert _count(service) == 1


def test_concurrent_repeated_deliveries_start_one_execution(hooks):
    service, urls = hooks
    body = (GITHUB_FIXTURES / "issues.opened.payload.json").read_bytes()
    headers = _github_headers(body, delivery="d-" + uuid.uuid4().hex)
    with ThreadPoolExecutor(8) as pool:
        responses = list(
            pool.map(
                lambda _: service.client.post(urls["github"], content=body, headers=headers),
                range(16),
            )
        )
    assert {response.status_code for response in responses} == {202}
    assert len({response.json()["execution_id"] for response in responses}) == 1
    assert _count(service) == 1


def test_delivery_id_from_body_field(hooks):
    service, urls = hooks
    first = service.client.post(urls["by_field"], json={"event": {"id": 41}})
    again = service.client.post(urls["by_field"], json={"event": {"id": 41}, "retry": True})
    other = service.client.post(urls["by_field"], json={"event": {"id": 42}})
    assert again.json()["execution_id"] == first.json()["execution_id"]
    assert other.json()["execution_id"] != first.json()["execution_id"]
    missing = service.client.post(urls["by_field"], json={"event": {}})
    assert missing.status_code == 400
    assert "event.id" in missing.json()["error"]


def test_missing_delivery_header_returns_400(hooks):
    service, urls = hooks
    body = b"{}"
    headers = _github_headers(body)
    del headers["x-github-delivery"]
    response = service.client.post(urls["github"], content=body, headers=headers)
    assert response.status_code == 400
    assert "X-GitHub-Delivery" in response.json()["error"]


def test_unknown_token_and_disabled_instance(hooks):
    service, urls = hooks
    assert service.client.post(service.url + "/webhooks/not-a-token").status_code == 404
    instance = service.runtime.instances.find()[0]
    service.runtime.instances.set_enabled(instance.id, False)
    disabled = service.client.post(urls["inbox"], json={})
    assert disabled.status_code == 409
    assert "splice instances enable" in disabled.json()["error"]
    assert _count(service) == 0


def test_optional_delivery_id(hooks):
    service, urls = hooks
    plain = [service.client.post(urls["optional"], json={}).json() for _ in range(2)]
    assert plain[0]["execution_id"] != plain[1]["execution_id"]
    headers = {"x-delivery-id": "same"}
    marked = [
        service.client.post(urls["optional"], json={}, headers=headers).json() for _ in range(2)
    ]
    assert marked[1] == {"execution_id": marked[0]["execution_id"], "duplicate": True}


def test_sync_response_from_another_runtime(start_service, definition):
    """`splice api` and `splice worker` on the database queue share no channel: the API
    reads the outcome from the records."""
    api = start_service(worker=False)
    start_service(http=False)  # the worker, with completions of its own
    urls = api.deploy(definition(DEFINITION, {"echo.py": ECHO}), github_secret=SECRET).webhooks
    response = api.client.post(urls["respond"], json={"name": "Grace"})
    assert response.status_code == 201
    assert response.json() == {"got": "Grace"}
    assert api.client.post(urls["fail"], content=b"").status_code == 500


def test_head_request_gets_the_id_in_a_header(hooks):
    service, urls = hooks
    response = service.client.head(urls["inbox"])
    assert response.status_code == 202
    execution_id = response.headers["x-splice-execution-id"]
    assert service.wait_for(execution_id).status == "succeeded"
