"""Servers for the component integration tests: a scripted HTTP server and moto's S3 server.

Both listen on 127.0.0.1 on a free port and stop when the test session ends.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from splice.sdk import ActionContext
from splice.testing import make_context


def free_port() -> int:
    """Return a port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    return free_port()


@dataclass
class ReceivedRequest:
    """One request as the scripted server received it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    client_port: int


@dataclass
class ScriptedServer:
    """An HTTP server whose paths script the responses; it records every request."""

    url: str
    requests: list[ReceivedRequest] = field(default_factory=list)
    hits: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, request: ReceivedRequest, key: str) -> int:
        """Store ``request`` and return how often ``key`` has been requested, this one included."""
        with self.lock:
            self.requests.append(request)
            self.hits[key] += 1
            return self.hits[key]

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.hits.clear()


class ScriptedHandler(BaseHTTPRequestHandler):
    """Routes: /json, /text, /xml, /bytes, /empty, /echo, /status/N, /flaky/ID, /slow, /redirect.

    /flaky/ID fails ``fail`` times with ``status`` (and ``retry_after`` when given), then
    returns 200 with the number of attempts. /redirect sends a 302 to the ``to`` parameter.
    """

    protocol_version = "HTTP/1.1"
    server: ThreadingHTTPServer

    def do_GET(self) -> None:
        self.respond()

    def do_POST(self) -> None:
        self.respond()

    def do_PUT(self) -> None:
        self.respond()

    def do_DELETE(self) -> None:
        self.respond()

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output free of access log lines."""

    def respond(self) -> None:
        scripted: ScriptedServer = self.server.scripted  # type: ignore[attr-defined]
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        length = int(self.headers.get("Content-Length") or 0)
        received = ReceivedRequest(
            method=self.command,
            path=parts.path,
            query=query,
            headers={name.lower(): value for name, value in self.headers.items()},
            body=self.rfile.read(length),
            client_port=self.client_address[1],
        )
        count = scripted.record(received, parts.path)
        self.route(parts.path, query, received, count)

    def route(
        self, path: str, query: dict[str, list[str]], received: ReceivedRequest, count: int
    ) -> None:
        if path == "/json":
            self.send(200, b'{"ok": true, "items": [1, 2]}', "application/json")
        elif path == "/problem":
            self.send(200, b'{"title": "x"}', "application/problem+json")
        elif path == "/text":
            self.send(200, "héllo".encode(), "text/plain; charset=utf-8")
        elif path == "/xml":
            self.send(200, b"<r>1</r>", "application/xml")
        elif path == "/bytes":
            self.send(200, b"\x00\x01\xff", "application/octet-stream")
        elif path == "/empty":
            self.send(204, b"", None)
        elif path == "/echo":
            self.send(200, json.dumps(self.describe(received)).encode(), "application/json")
        elif path.startswith("/status/"):
            self.send(int(path.rsplit("/", 1)[1]), b"no such invoice: INV-404", "text/plain")
        elif path.startswith("/flaky/"):
            self.flaky(query, count)
        elif path == "/slow":
            time.sleep(float(query["seconds"][0]))
            self.send(200, b"late", "text/plain")
        elif path == "/redirect":
            self.send(302, b"", None, {"Location": query["to"][0]})
        else:
            self.send(404, b"unknown test route", "text/plain")

    def flaky(self, query: dict[str, list[str]], count: int) -> None:
        if count <= int(query["fail"][0]):
            extra = {"Retry-After": query["retry_after"][0]} if "retry_after" in query else {}
            self.send(int(query["status"][0]), b"try again later", "text/plain", extra)
        else:
            self.send(200, json.dumps({"attempts": count}).encode(), "application/json")

    def describe(self, received: ReceivedRequest) -> dict[str, Any]:
        return {
            "method": received.method,
            "query": received.query,
            "headers": received.headers,
            "body": received.body.decode("utf-8", errors="replace"),
        }

    def send(
        self,
        status: int,
        body: bytes,
        content_type: str | None,
        extra_headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        if content_type is not None:
            self.send_header("Content-Type", content_type)
        for name, value in (extra_headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def start_scripted_server() -> tuple[ThreadingHTTPServer, ScriptedServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), ScriptedHandler)
    server.daemon_threads = True
    port = server.server_address[1]
    scripted = ScriptedServer(url=f"http://127.0.0.1:{port}")
    server.scripted = scripted  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, scripted


@pytest.fixture(scope="session")
def _http_servers() -> Iterator[tuple[ScriptedServer, ScriptedServer]]:
    """Two scripted servers on different ports, so that a redirect can change origin."""
    started = [start_scripted_server(), start_scripted_server()]
    yield started[0][1], started[1][1]
    for server, _ in started:
        server.shutdown()
        server.server_close()


@pytest.fixture
def http_server(_http_servers: tuple[ScriptedServer, ScriptedServer]) -> ScriptedServer:
    """The scripted HTTP server, with no requests recorded yet."""
    server = _http_servers[0]
    server.reset()
    return server


@pytest.fixture
def other_http_server(_http_servers: tuple[ScriptedServer, ScriptedServer]) -> ScriptedServer:
    """A second scripted server: another origin than ``http_server``."""
    server = _http_servers[1]
    server.reset()
    return server


@pytest.fixture
def context(tmp_path: Path) -> Iterator[ActionContext]:
    """An action context whose shared resources (HTTP and S3 clients) are closed afterwards."""
    context = make_context(scratch_dir=tmp_path)
    yield context
    for resource in context.resources.values():
        resource.close()
