"""Tests of http.request against a scripted HTTP server on 127.0.0.1."""

from __future__ import annotations

import base64
import logging
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import TYPE_CHECKING, Any

import pytest

from splice.sdk import ActionContext, ActionError
from splice.testing import invoke_action

if TYPE_CHECKING:
    from conftest import ScriptedServer


def request(context: ActionContext, **inputs: Any) -> Any:
    return invoke_action("http.request", context=context, **inputs)


def test_json_response(context: ActionContext, http_server: ScriptedServer) -> None:
    """A JSON response is parsed by its content type."""
    response = request(context, url=f"{http_server.url}/json")
    assert 200 == response["status"]
    assert {"ok": True, "items": [1, 2]} == response["body"]
    assert "application/json" == response["headers"]["content-type"]


def test_plus_json_response(context: ActionContext, http_server: ScriptedServer) -> None:
    """A +json media type is parsed as JSON."""
    assert {"title": "x"} == request(context, url=f"{http_server.url}/problem")["body"]


def test_text_response(context: ActionContext, http_server: ScriptedServer) -> None:
    """A text/* response is decoded with its charset."""
    assert "héllo" == request(context, url=f"{http_server.url}/text")["body"]


def test_xml_response(context: ActionContext, http_server: ScriptedServer) -> None:
    """An XML response is returned as text."""
    assert "<r>1</r>" == request(context, url=f"{http_server.url}/xml")["body"]


def test_bytes_response(context: ActionContext, http_server: ScriptedServer) -> None:
    """Any other media type is returned as bytes."""
    assert b"\x00\x01\xff" == request(context, url=f"{http_server.url}/bytes")["body"]


def test_empty_response(context: ActionContext, http_server: ScriptedServer) -> None:
    """An empty body is null."""
    response = request(context, url=f"{http_server.url}/empty")
    assert 204 == response["status"]
    assert response["body"] is None


def test_response_type_text(context: ActionContext, http_server: ScriptedServer) -> None:
    """response_type text returns a JSON body unparsed."""
    response = request(context, url=f"{http_server.url}/json", response_type="text")
    assert '{"ok": true, "items": [1, 2]}' == response["body"]


def test_response_type_json_invalid(context: ActionContext, http_server: ScriptedServer) -> None:
    """response_type json on a body that is not JSON fails with the URL."""
    with pytest.raises(ActionError) as raised:
        request(context, url=f"{http_server.url}/text", response_type="json")
    assert f"GET {http_server.url}/text returned HTTP 200 with a body that is not valid JSON" in (
        str(raised.value)
    )


def test_json_body_and_query(context: ActionContext, http_server: ScriptedServer) -> None:
    """The json input is sent as a JSON body and query values are repeated for lists."""
    request(
        context,
        method="post",
        url=f"{http_server.url}/echo",
        json={"invoice": "INV-1", "total": 1656.25, "city": "Zürich"},
        query={"tag": ["a", "b"], "draft": False},
        headers={"X-Trace": 7},
    )
    received = http_server.requests[0]
    assert "POST" == received.method
    assert '{"invoice":"INV-1","total":1656.25,"city":"Zürich"}' == received.body.decode()
    assert "application/json" == received.headers["content-type"]
    assert {"tag": ["a", "b"], "draft": ["false"]} == received.query
    assert "7" == received.headers["x-trace"]


def test_text_body(context: ActionContext, http_server: ScriptedServer) -> None:
    """The text input is sent as UTF-8 plain text."""
    request(context, method="PUT", url=f"{http_server.url}/echo", text="Größe")
    received = http_server.requests[0]
    assert "Größe".encode() == received.body
    assert "text/plain; charset=utf-8" == received.headers["content-type"]


def test_bytes_body(context: ActionContext, http_server: ScriptedServer) -> None:
    """The body input is sent as is with the caller's content type."""
    request(
        context,
        method="POST",
        url=f"{http_server.url}/echo",
        body=b"\x00\x01",
        headers={"Content-Type": "application/pdf"},
    )
    received = http_server.requests[0]
    assert b"\x00\x01" == received.body
    assert "application/pdf" == received.headers["content-type"]


def test_two_bodies_rejected(context: ActionContext, http_server: ScriptedServer) -> None:
    """Giving json and text together fails before anything is sent."""
    with pytest.raises(ActionError) as raised:
        request(context, method="POST", url=f"{http_server.url}/echo", json={}, text="x")
    assert "give only one of json, text and body" in str(raised.value)
    assert [] == http_server.requests


def test_auth_api_key_header(context: ActionContext, http_server: ScriptedServer) -> None:
    """An api_key connection sends its key in X-API-Key by default."""
    auth = {"type": "api_key", "api_key": "k-123"}
    request(context, url=f"{http_server.url}/echo", auth=auth)
    assert "k-123" == http_server.requests[0].headers["x-api-key"]


def test_auth_api_key_custom_header(context: ActionContext, http_server: ScriptedServer) -> None:
    """An api_key connection may name its header."""
    auth = {"type": "api_key", "api_key": "k-123", "header": "Api-Token"}
    request(context, url=f"{http_server.url}/echo", auth=auth)
    assert "k-123" == http_server.requests[0].headers["api-token"]


def test_auth_api_key_query(context: ActionContext, http_server: ScriptedServer) -> None:
    """An api_key connection with in=query sends the key as a query parameter."""
    auth = {"type": "api_key", "api_key": "k-123", "in": "query", "name": "key"}
    request(context, url=f"{http_server.url}/echo?page=2", auth=auth)
    assert {"page": ["2"], "key": ["k-123"]} == http_server.requests[0].query


def test_auth_bearer(context: ActionContext, http_server: ScriptedServer) -> None:
    """A bearer connection sends Authorization: Bearer."""
    request(context, url=f"{http_server.url}/echo", auth={"type": "bearer", "token": "t-1"})
    assert "Bearer t-1" == http_server.requests[0].headers["authorization"]


def test_auth_basic(context: ActionContext, http_server: ScriptedServer) -> None:
    """A basic connection sends Authorization: Basic with user and password."""
    auth = {"type": "basic", "username": "zoë", "password": "p:w"}
    request(context, url=f"{http_server.url}/echo", auth=auth)
    expected = "Basic " + base64.b64encode("zoë:p:w".encode()).decode()
    assert expected == http_server.requests[0].headers["authorization"]


def test_auth_missing_field(context: ActionContext, http_server: ScriptedServer) -> None:
    """A connection without its secret field fails with the field's name."""
    with pytest.raises(ActionError) as raised:
        request(context, url=f"{http_server.url}/echo", auth={"type": "bearer"})
    assert "missing the field 'token'" in str(raised.value)
    assert raised.value.retryable is False


def test_auth_unknown_type(context: ActionContext, http_server: ScriptedServer) -> None:
    """A connection without a usable type fails with the types allowed."""
    with pytest.raises(ActionError) as raised:
        request(context, url=f"{http_server.url}/echo", auth={"token": "t"})
    assert "auth has type None; give a connection of type api_key, bearer or basic" in str(
        raised.value
    )


def test_api_key_dropped_on_cross_origin_redirect(
    context: ActionContext, http_server: ScriptedServer, other_http_server: ScriptedServer
) -> None:
    """A redirect to another origin does not carry the API key header."""
    auth = {"type": "api_key", "api_key": "k-123"}
    target = f"{other_http_server.url}/echo"
    request(context, url=f"{http_server.url}/redirect", query={"to": target}, auth=auth)
    assert "k-123" == http_server.requests[0].headers["x-api-key"]
    assert "x-api-key" not in other_http_server.requests[0].headers


def test_api_key_kept_on_same_origin_redirect(
    context: ActionContext, http_server: ScriptedServer
) -> None:
    """A redirect within the origin keeps the API key header."""
    auth = {"type": "api_key", "api_key": "k-123"}
    request(context, url=f"{http_server.url}/redirect", query={"to": "/echo"}, auth=auth)
    assert "k-123" == http_server.requests[1].headers["x-api-key"]


def test_redirect_not_followed(context: ActionContext, http_server: ScriptedServer) -> None:
    """With follow_redirects false the 302 itself is returned."""
    response = request(
        context, url=f"{http_server.url}/redirect", query={"to": "/echo"}, follow_redirects=False
    )
    assert 302 == response["status"]
    assert "/echo" == response["headers"]["location"]


def test_retry_503_then_success(
    context: ActionContext, http_server: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A 503 is retried and the later success is returned."""
    with caplog.at_level(logging.WARNING, logger="splice.testing"):
        response = request(context, url=f"{http_server.url}/flaky/a?fail=1&status=503")
    assert {"attempts": 2} == response["body"]
    assert 1 == len(caplog.records)
    assert "failed with status 503; retrying in 0.5 s (retry 1 of 3)" in caplog.records[0].message


def test_retry_after_seconds(context: ActionContext, http_server: ScriptedServer) -> None:
    """A Retry-After in seconds sets the wait before the next attempt."""
    started = time.monotonic()
    response = request(context, url=f"{http_server.url}/flaky/b?fail=1&status=503&retry_after=1")
    elapsed = time.monotonic() - started
    assert {"attempts": 2} == response["body"]
    assert elapsed >= 0.9


def test_retry_after_date(context: ActionContext, http_server: ScriptedServer) -> None:
    """A Retry-After HTTP date sets the wait before the next attempt."""
    moment = format_datetime(datetime.now(UTC) + timedelta(seconds=2), usegmt=True)
    started = time.monotonic()
    response = request(
        context,
        url=f"{http_server.url}/flaky/c",
        query={"fail": 1, "status": 503, "retry_after": moment},
    )
    elapsed = time.monotonic() - started
    assert {"attempts": 2} == response["body"]
    assert elapsed >= 0.9


def test_retry_after_capped(context: ActionContext, http_server: ScriptedServer) -> None:
    """retry_max_wait caps a long Retry-After."""
    started = time.monotonic()
    request(
        context,
        url=f"{http_server.url}/flaky/d?fail=1&status=503&retry_after=30",
        retry_max_wait=0.2,
    )
    assert time.monotonic() - started < 5


def test_429_exhausted(context: ActionContext, http_server: ScriptedServer) -> None:
    """A 429 on every attempt fails after retries extra attempts, with status and body."""
    url = f"{http_server.url}/flaky/e"
    with pytest.raises(ActionError) as raised:
        request(context, url=url, query={"fail": 9, "status": 429, "retry_after": 0}, retries=2)
    assert f"GET {url} returned HTTP 429 Too Many Requests: try again later" == str(raised.value)
    assert 3 == http_server.hits["/flaky/e"]
    assert raised.value.retryable is True


def test_404_not_retried(context: ActionContext, http_server: ScriptedServer) -> None:
    """A 404 fails at once, with the body, and is marked not retryable."""
    with pytest.raises(ActionError) as raised:
        request(context, url=f"{http_server.url}/status/404")
    assert "returned HTTP 404 Not Found: no such invoice: INV-404" in str(raised.value)
    assert 1 == http_server.hits["/status/404"]
    assert raised.value.retryable is False


def test_404_without_raise(context: ActionContext, http_server: ScriptedServer) -> None:
    """With raise_for_status false an error status is returned as output."""
    response = request(context, url=f"{http_server.url}/status/404", raise_for_status=False)
    assert 404 == response["status"]
    assert "no such invoice: INV-404" == response["body"]


def test_error_hides_secrets(context: ActionContext, http_server: ScriptedServer) -> None:
    """The error message leaves out the query string and the credentials."""
    auth = {"type": "api_key", "api_key": "k-secret", "in": "query"}
    with pytest.raises(ActionError) as raised:
        request(context, url=f"{http_server.url}/status/401?token=q-secret", auth=auth)
    message = str(raised.value)
    assert f"GET {http_server.url}/status/401 returned HTTP 401" in message
    assert "secret" not in message


def test_connection_refused(context: ActionContext, closed_port: int) -> None:
    """A port without a listener fails with the URL."""
    url = f"http://127.0.0.1:{closed_port}/invoices"
    with pytest.raises(ActionError) as raised:
        request(context, url=f"{url}?key=q-secret", retries=0)
    message = str(raised.value)
    assert message.startswith(f"GET {url} failed after 1 attempt: ")
    assert "q-secret" not in message


def test_connection_refused_retried(
    context: ActionContext, closed_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    """A refused connection is retried, even for POST, because nothing was sent."""
    url = f"http://127.0.0.1:{closed_port}/invoices"
    with caplog.at_level(logging.WARNING, logger="splice.testing"), pytest.raises(ActionError):
        request(context, method="POST", url=url, json={}, retries=1)
    assert 1 == len(caplog.records)


def test_read_timeout_get_retried(context: ActionContext, http_server: ScriptedServer) -> None:
    """A GET that times out is sent again."""
    with pytest.raises(ActionError) as raised:
        request(context, url=f"{http_server.url}/slow?seconds=0.5", timeout=0.1, retries=1)
    assert "failed after 2 attempts: timed out" in str(raised.value)
    assert 2 == http_server.hits["/slow"]


def test_read_timeout_post_not_retried(context: ActionContext, http_server: ScriptedServer) -> None:
    """A POST without an idempotency key that times out is not sent twice."""
    with pytest.raises(ActionError):
        request(
            context,
            method="POST",
            url=f"{http_server.url}/slow?seconds=0.5",
            json={},
            timeout=0.1,
            retries=2,
        )
    assert 1 == http_server.hits["/slow"]


def test_idempotency_key_from_step(context: ActionContext, http_server: ScriptedServer) -> None:
    """idempotency_key true sends the step's key."""
    request(context, method="POST", url=f"{http_server.url}/echo", json={}, idempotency_key=True)
    assert context.idempotency_key == http_server.requests[0].headers["idempotency-key"]


def test_idempotency_key_given(context: ActionContext, http_server: ScriptedServer) -> None:
    """A string idempotency_key is sent as it is."""
    request(context, method="POST", url=f"{http_server.url}/echo", idempotency_key="inv-42")
    assert "inv-42" == http_server.requests[0].headers["idempotency-key"]


def test_no_idempotency_key(context: ActionContext, http_server: ScriptedServer) -> None:
    """By default no Idempotency-Key header is sent."""
    request(context, url=f"{http_server.url}/echo")
    assert "idempotency-key" not in http_server.requests[0].headers


def test_connection_reused(context: ActionContext, http_server: ScriptedServer) -> None:
    """Requests of one execution share one kept-alive connection."""
    for _ in range(5):
        request(context, method="POST", url=f"{http_server.url}/echo", json={})
    assert 1 == len({received.client_port for received in http_server.requests})


def test_invalid_url(context: ActionContext) -> None:
    """A URL without scheme fails with the URL."""
    with pytest.raises(ActionError) as raised:
        request(context, url="127.0.0.1/invoices")
    assert "url '127.0.0.1/invoices' is not an absolute http or https URL" in str(raised.value)


def test_content_type_any_case(context: ActionContext, http_server: ScriptedServer) -> None:
    """A caller's lower-case content-type replaces the JSON default instead of doubling it."""
    request(
        context,
        method="POST",
        url=f"{http_server.url}/echo",
        json={},
        headers={"content-type": "application/vnd.api+json"},
    )
    assert "application/vnd.api+json" == http_server.requests[0].headers["content-type"]
