"""The http component: send HTTP requests with authentication, retries and parsed responses.

All http.request steps of one execution share one ``httpx.Client``, so connections are kept
alive from one request to the next (a loop that posts hundreds of records opens one).
NOTE: the client is closed only when the execution's resources are closed or collected.
"""

from __future__ import annotations

import base64
import email.utils
import functools
import json as jsonlib
import socket
import ssl
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import httpx

from splice.sdk import ActionContext, ActionError, Component, Input

component = Component("http", description="HTTP requests")

CLIENT_RESOURCE = "http.client"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# Methods that RFC 9110 defines as idempotent: resending one after a lost response is safe.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
FIRST_BACKOFF_SECONDS = 0.5
MAX_REDIRECTS = 20
ERROR_BODY_CHARS = 500
DEFAULT_PORTS = {"http": 80, "https": 443}
RESPONSE_TYPES = ("auto", "json", "text", "bytes")


@component.action(
    inputs={
        "method": Input("string", default="GET", description="HTTP method"),
        "url": Input("string", required=True, description="Absolute http or https URL"),
        "headers": Input("object", description="Request headers"),
        "query": Input("object", description="Query parameters; a list value repeats the name"),
        "json": Input("any", description="Body sent as JSON"),
        "text": Input("string", description="Body sent as UTF-8 text"),
        "body": Input("bytes|string", description="Body sent as is"),
        "auth": Input("connection", description="An api_key, bearer or basic connection"),
        "timeout": Input("number", default=30, description="Seconds to wait for each attempt"),
        "retries": Input("integer", default=3, description="Extra attempts after a failure"),
        "retry_max_wait": Input(
            "number", default=60, description="Maximum wait in seconds between attempts"
        ),
        "response_type": Input(
            "string",
            default="auto",
            choices=RESPONSE_TYPES,
            description="How to read the body; auto goes by the Content-Type",
        ),
        "raise_for_status": Input(
            "boolean", default=True, description="Fail the step on a 4xx or 5xx status"
        ),
        "follow_redirects": Input("boolean", default=True, description="Follow 3xx redirects"),
        "idempotency_key": Input(
            "boolean|string",
            default=False,
            description="Send an Idempotency-Key header: true for the step's own key, or a key",
        ),
    },
    description="Send an HTTP request and return the status, headers and parsed body",
    output="object with status, headers (lower-case names) and body",
)
def request(
    context: ActionContext,
    *,
    method: str,
    url: str,
    headers: Mapping[str, Any] | None,
    query: Mapping[str, Any] | None,
    json: Any,
    text: str | None,
    body: bytes | str | None,
    auth: Mapping[str, Any] | None,
    timeout: float,
    retries: int,
    retry_max_wait: float,
    response_type: str,
    raise_for_status: bool,
    follow_redirects: bool,
    idempotency_key: bool | str,
) -> dict[str, Any]:
    """Send one request, retrying on 429, 5xx, connection errors and timeouts.

    A lost response (a read timeout, a dropped connection) is retried only for an
    idempotent method or when an idempotency key is sent, so a POST is never repeated
    unknowingly.
    """
    method = method.upper()
    target = _parse_url(url)
    _check_retry_inputs(retries, retry_max_wait, timeout)
    plan = _RequestPlan(method, target, timeout, follow_redirects)
    plan.add_headers(headers)
    plan.add_query(query)
    plan.set_body(json, text, body)
    plan.add_auth(auth)
    plan.add_idempotency_key(idempotency_key, context)
    response = _send_with_retries(context, plan, retries, retry_max_wait)
    if raise_for_status and response.is_error:
        raise _status_error(plan, response)
    return {
        "status": response.status_code,
        "headers": {name.lower(): value for name, value in response.headers.items()},
        "body": _read_body(plan, response, response_type),
    }


def _parse_url(url: str) -> httpx.URL:
    try:
        target = httpx.URL(url)
    except httpx.InvalidURL as error:
        raise ActionError(f"url {url!r} is invalid: {error}", retryable=False) from error
    if target.scheme not in ("http", "https") or not target.host:
        raise ActionError(
            f"url {url!r} is not an absolute http or https URL; give one such as "
            "https://api.example.com/v1/items",
            retryable=False,
        )
    return target


def _check_retry_inputs(retries: int, retry_max_wait: float, timeout: float) -> None:
    if retries < 0:
        raise ActionError(f"retries must be 0 or more, got {retries}", retryable=False)
    if retry_max_wait < 0:
        raise ActionError(
            f"retry_max_wait must be 0 or more seconds, got {retry_max_wait}", retryable=False
        )
    if timeout <= 0:
        raise ActionError(f"timeout must be more than 0 seconds, got {timeout}", retryable=False)


def safe_url(url: httpx.URL) -> str:
    """Return ``url`` without user info, query string or fragment, which may carry secrets."""
    return str(url.copy_with(query=None, fragment=None, username=None, password=None))


class _RequestPlan:
    """Everything one request needs, kept so that each attempt sends the same request."""

    def __init__(self, method: str, url: httpx.URL, timeout: float, follow_redirects: bool) -> None:
        self.method = method
        self.url = url
        self.timeout = timeout
        self.follow_redirects = follow_redirects
        self.headers = httpx.Headers()
        self.query: list[tuple[str, str]] = []
        self.content: bytes | None = None
        # A custom header that carries a secret. On a redirect to another origin httpx
        # removes only Authorization, so _send_following_redirects removes this one.
        self.secret_header: str | None = None
        self.idempotent = method in IDEMPOTENT_METHODS

    @property
    def label(self) -> str:
        return f"{self.method} {safe_url(self.url)}"

    def add_headers(self, headers: Mapping[str, Any] | None) -> None:
        for name, value in (headers or {}).items():
            if not isinstance(value, str | int | float) or isinstance(value, bool):
                raise ActionError(
                    f"header {name!r} must be a string or number, got {type(value).__name__}",
                    retryable=False,
                )
            self.headers[name] = str(value)

    def add_query(self, query: Mapping[str, Any] | None) -> None:
        for name, value in (query or {}).items():
            for item in value if isinstance(value, list | tuple) else [value]:
                if item is not None:
                    self.query.append((name, _query_text(name, item)))

    def set_body(self, json: Any, text: str | None, body: bytes | str | None) -> None:
        bodies = [
            name
            for name, value in (("json", json), ("text", text), ("body", body))
            if value is not None
        ]
        if len(bodies) > 1:
            raise ActionError(
                f"give only one of json, text and body; this step gives {' and '.join(bodies)}",
                retryable=False,
            )
        if json is not None:
            self.content = _encode_json(json)
            self.headers.setdefault("Content-Type", "application/json")
        elif text is not None:
            self.content = text.encode("utf-8")
            self.headers.setdefault("Content-Type", "text/plain; charset=utf-8")
        elif body is not None:
            self.content = body.encode("utf-8") if isinstance(body, str) else bytes(body)

    def add_auth(self, auth: Mapping[str, Any] | None) -> None:
        if auth is None:
            return
        kind = auth.get("type")
        if kind == "bearer":
            self.headers["Authorization"] = f"Bearer {_auth_field(auth, 'token')}"
        elif kind == "basic":
            credentials = f"{_auth_field(auth, 'username')}:{_auth_field(auth, 'password')}"
            encoded = base64.b64encode(credentials.encode("utf-8")).decode("ascii")
            self.headers["Authorization"] = f"Basic {encoded}"
        elif kind == "api_key":
            self._add_api_key(auth)
        else:
            raise ActionError(
                f"auth has type {kind!r}; give a connection of type api_key, bearer or basic",
                retryable=False,
            )

    def _add_api_key(self, auth: Mapping[str, Any]) -> None:
        key = _auth_field(auth, "api_key")
        placement = auth.get("in") or "header"
        if placement == "header":
            self.secret_header = str(auth.get("header") or "X-API-Key")
            self.headers[self.secret_header] = key
        elif placement == "query":
            self.query.append((str(auth.get("name") or "api_key"), key))
        else:
            raise ActionError(
                f"auth field 'in' is {placement!r}; use 'header' or 'query'", retryable=False
            )

    def add_idempotency_key(self, idempotency_key: bool | str, context: ActionContext) -> None:
        if idempotency_key is False or idempotency_key == "":
            return
        key = context.idempotency_key if idempotency_key is True else idempotency_key
        self.headers["Idempotency-Key"] = key
        self.idempotent = True

    def build(self, client: httpx.Client) -> httpx.Request:
        url = self.url.copy_merge_params(tuple(self.query)) if self.query else self.url
        return client.build_request(
            self.method, url, headers=self.headers, content=self.content, timeout=self.timeout
        )


def _query_text(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise ActionError(
        f"query parameter {name!r} must be a string, number, boolean or a list of them, "
        f"got {type(value).__name__}",
        retryable=False,
    )


def _encode_json(value: Any) -> bytes:
    try:
        return jsonlib.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except (TypeError, ValueError) as error:
        raise ActionError(
            f"the json input cannot be sent as JSON: {error}; give objects, lists, strings, "
            "numbers, booleans and null, or send bytes with the body input",
            retryable=False,
        ) from error


def _auth_field(auth: Mapping[str, Any], name: str) -> str:
    value = auth.get(name)
    if value is None or not isinstance(value, str):
        raise ActionError(
            f"auth connection of type {auth.get('type')!r} is missing the field {name!r}; "
            "set it in the connection's config value",
            retryable=False,
        )
    return value


@functools.cache
def tls_context() -> ssl.SSLContext:
    """Return the TLS settings of every request: the system's defaults with certifi's CA bundle.

    Loading the bundle takes tens of milliseconds, so the sandbox template builds it once
    and every execution forked from the template starts with it ready.
    """
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


def _client(context: ActionContext) -> httpx.Client:
    """Return the execution's shared client, creating it on the first request."""
    client = context.resources.get(CLIENT_RESOURCE)
    if client is None or client.is_closed:
        client = new_client()
        context.resources[CLIENT_RESOURCE] = client
    return client


def new_client() -> httpx.Client:
    """Return a client as every execution gets it: no redirects followed, TLS from tls_context()."""
    # TCP_NODELAY: httpx writes the headers and a small body separately, and with Nagle's
    # algorithm the body then waits for the server's delayed ACK, 40 ms on Linux.
    transport = httpx.HTTPTransport(
        verify=tls_context(), socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
    )
    return httpx.Client(
        follow_redirects=False, headers={"User-Agent": "splice"}, transport=transport
    )


def _send_with_retries(
    context: ActionContext, plan: _RequestPlan, retries: int, retry_max_wait: float
) -> httpx.Response:
    client = _client(context)
    for attempt in range(retries + 1):
        last = attempt == retries
        try:
            response = _send_following_redirects(client, plan)
        except httpx.TransportError as error:
            if last or not _may_resend(plan, error):
                raise _transport_error(plan, error, attempt + 1) from error
            _wait(
                context, plan, _backoff(attempt, retry_max_wait), _describe(error), attempt, retries
            )
            continue
        if last or response.status_code not in RETRY_STATUSES:
            return response
        wait = _retry_after(response, retry_max_wait)
        if wait is None:
            wait = _backoff(attempt, retry_max_wait)
        _wait(context, plan, wait, f"status {response.status_code}", attempt, retries)
    raise AssertionError("unreachable: the last attempt returns or raises")


def _send_following_redirects(client: httpx.Client, plan: _RequestPlan) -> httpx.Response:
    request = plan.build(client)
    for _ in range(MAX_REDIRECTS + 1):
        response = client.send(request, follow_redirects=False)
        next_request = response.next_request
        if not plan.follow_redirects or next_request is None:
            return response
        if plan.secret_header and _origin(next_request.url) != _origin(request.url):
            next_request.headers.pop(plan.secret_header, None)
        request = next_request
    raise ActionError(
        f"{plan.label} redirected more than {MAX_REDIRECTS} times; check the URL",
        retryable=False,
    )


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port or DEFAULT_PORTS.get(url.scheme)


def _may_resend(plan: _RequestPlan, error: httpx.TransportError) -> bool:
    # A connect error or connect timeout means no byte reached the server, so resending is safe.
    return plan.idempotent or isinstance(error, httpx.ConnectError | httpx.ConnectTimeout)


def _describe(error: httpx.TransportError) -> str:
    if isinstance(error, httpx.TimeoutException):
        return f"timed out ({type(error).__name__})"
    return str(error) or type(error).__name__


def _backoff(attempt: int, retry_max_wait: float) -> float:
    return min(FIRST_BACKOFF_SECONDS * 2**attempt, retry_max_wait)


def _retry_after(response: httpx.Response, retry_max_wait: float) -> float | None:
    """Return the wait a Retry-After header requests (seconds or an HTTP date), capped."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), retry_max_wait)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    seconds = (moment - datetime.now(UTC)).total_seconds()
    return min(max(seconds, 0.0), retry_max_wait)


def _wait(
    context: ActionContext,
    plan: _RequestPlan,
    seconds: float,
    reason: str,
    attempt: int,
    retries: int,
) -> None:
    context.logger.warning(
        "%s failed with %s; retrying in %.1f s (retry %d of %d)",
        plan.label,
        reason,
        seconds,
        attempt + 1,
        retries,
    )
    time.sleep(seconds)


def _transport_error(plan: _RequestPlan, error: httpx.TransportError, attempts: int) -> ActionError:
    tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
    return ActionError(
        f"{plan.label} failed after {tries}: {_describe(error)}; check that the server is up "
        "and the URL is right, or raise the timeout input"
    )


def _status_error(plan: _RequestPlan, response: httpx.Response) -> ActionError:
    status = response.status_code
    # 4xx other than 408 and 429 means the request itself is wrong, so repeating it fails too.
    retryable = status >= 500 or status in (408, 429)
    return ActionError(
        f"{plan.label} returned HTTP {status} {response.reason_phrase}: {_body_preview(response)}",
        retryable=retryable,
    )


def _body_preview(response: httpx.Response) -> str:
    if not response.content:
        return "(empty body)"
    try:
        text = response.content.decode(response.encoding or "utf-8")
    except (LookupError, UnicodeDecodeError):
        return f"({len(response.content)} bytes of binary body)"
    if len(text) > ERROR_BODY_CHARS:
        return text[:ERROR_BODY_CHARS] + "..."
    return text


def _read_body(plan: _RequestPlan, response: httpx.Response, response_type: str) -> Any:
    if not response.content:
        return None
    kind = response_type if response_type != "auto" else _kind_of(response)
    if kind == "bytes":
        return response.content
    if kind == "text":
        return response.text
    try:
        return jsonlib.loads(response.content)
    except (ValueError, UnicodeDecodeError) as error:
        raise ActionError(
            f"{plan.label} returned HTTP {response.status_code} with a body that is not "
            f"valid JSON ({error}); set response_type to text to read it as is",
            retryable=False,
        ) from error


def _kind_of(response: httpx.Response) -> str:
    """Return json, text or bytes from the response's media type."""
    media_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if media_type == "application/json" or media_type.endswith("+json"):
        return "json"
    if media_type.startswith("text/") or media_type.endswith(("/xml", "+xml")):
        return "text"
    return "bytes"
