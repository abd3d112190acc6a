"""Tests of examples/invoice-sync/accounting_server.py, run as a subprocess on 127.0.0.1."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

SERVER_SCRIPT = (
    Path(__file__).resolve().parents[3] / "examples" / "invoice-sync" / "accounting_server.py"
)
API_KEY = "test-key-1"
START_TIMEOUT = 10.0  # seconds for the server to print its address


@dataclass
class RunningServer:
    process: subprocess.Popen[str]
    url: str

    def client(self, api_key: str | None = API_KEY) -> httpx.Client:
        headers = {"X-API-Key": api_key} if api_key is not None else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=5)


def start_server(*extra: str) -> RunningServer:
    command = [sys.executable, str(SERVER_SCRIPT), "--port", "0", "--api-key", API_KEY, *extra]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(START_TIMEOUT)
    line = lines[0] if lines else ""
    if not line.startswith("listening on http://127.0.0.1:"):
        stop_server(process)
        pytest.fail(f"server did not start: first stdout line {line!r}")
    return RunningServer(process, line.removeprefix("listening on ").strip())


def stop_server(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()


@pytest.fixture
def server() -> Iterator[RunningServer]:
    running = start_server()
    yield running
    stop_server(running.process)


def invoice(invoice_id: str = "INV-1") -> dict[str, Any]:
    return {"invoice_id": invoice_id, "currency": "EUR", "payable_amount": "1656.25"}


def test_server_stores_invoice(server: RunningServer) -> None:
    """A POST with the key is stored and listed by GET."""
    with server.client() as client:
        created = client.post("/invoices", json=invoice("INV-1"))
        listed = client.get("/invoices")

    assert created.status_code == 201
    assert created.json()["invoice_id"] == "INV-1"
    assert listed.status_code == 200
    assert [entry["invoice"] for entry in listed.json()] == [invoice("INV-1")]
    assert listed.json()[0]["id"] == created.json()["id"]


@pytest.mark.parametrize("api_key", [None, "wrong-key"])
def test_server_rejects_bad_key(server: RunningServer, api_key: str | None) -> None:
    """Both routes return 401 with a JSON error when the key is missing or wrong."""
    with server.client(api_key) as client:
        posted = client.post("/invoices", json=invoice())
        listed = client.get("/invoices")
    with server.client() as client:
        stored = client.get("/invoices").json()

    assert posted.status_code == 401
    assert "X-API-Key" in posted.json()["error"]
    assert listed.status_code == 401
    assert stored == []


def test_server_deduplicates_by_idempotency_key(server: RunningServer) -> None:
    """A repeated Idempotency-Key gets the first response and stores the invoice once."""
    headers = {"Idempotency-Key": "execution-1:invoices[0].post"}
    with server.client() as client:
        first = client.post("/invoices", json=invoice("INV-1"), headers=headers)
        second = client.post("/invoices", json=invoice("INV-1"), headers=headers)
        other = client.post("/invoices", json=invoice("INV-1"), headers={"Idempotency-Key": "k2"})
        stored = client.get("/invoices").json()

    assert first.status_code == 201
    assert second.status_code == 201
    assert second.json() == first.json()
    assert other.json()["id"] != first.json()["id"]
    assert len(stored) == 2


def test_server_rejects_reused_key_with_other_body(server: RunningServer) -> None:
    """An Idempotency-Key sent again with a different body is a conflict, not a new record."""
    headers = {"Idempotency-Key": "k1"}
    with server.client() as client:
        client.post("/invoices", json=invoice("INV-1"), headers=headers)
        conflict = client.post("/invoices", json=invoice("INV-2"), headers=headers)
        stored = client.get("/invoices").json()

    assert conflict.status_code == 409
    assert "Idempotency-Key" in conflict.json()["error"]
    assert len(stored) == 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[1, 2]", "JSON object"),
        (b'"text"', "JSON object"),
        (b"{not json", "not valid JSON"),
        (b'{"currency": "EUR"}', "invoice_id"),
        (b'{"invoice_id": 17}', "invoice_id"),
    ],
)
def test_server_rejects_bad_body(server: RunningServer, body: bytes, message: str) -> None:
    """A body that is not a JSON object with an invoice_id gets 400 and is not stored."""
    with server.client() as client:
        response = client.post(
            "/invoices", content=body, headers={"Content-Type": "application/json"}
        )
        stored = client.get("/invoices").json()

    assert response.status_code == 400
    assert message in response.json()["error"]
    assert stored == []


def test_server_unknown_route(server: RunningServer) -> None:
    """Paths other than /invoices return 404 with a JSON error."""
    with server.client() as client:
        response = client.get("/orders")

    assert response.status_code == 404
    assert "/invoices" in response.json()["error"]


def test_server_keeps_connection_alive(server: RunningServer) -> None:
    """Accepted and rejected requests alike leave the HTTP/1.1 connection usable."""
    host, port = server.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    requests = [
        ({"X-API-Key": "wrong"}, json.dumps(invoice("INV-1")), 401),
        ({"X-API-Key": API_KEY}, "[]", 400),
        ({"X-API-Key": API_KEY}, json.dumps(invoice("INV-1")), 201),
        ({"X-API-Key": API_KEY}, json.dumps(invoice("INV-2")), 201),
    ]
    statuses = []
    try:
        connection.connect()
        first_socket = connection.sock
        for headers, body, _ in requests:
            connection.request("POST", "/invoices", body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            statuses.append(response.status)
        same_socket = connection.sock is first_socket
    finally:
        connection.close()

    assert statuses == [status for _, _, status in requests]
    assert same_socket


def test_server_many_requests_one_connection(server: RunningServer) -> None:
    """Hundreds of posts on one kept-alive connection are all stored."""
    count = 300
    with server.client() as client:
        statuses = {
            client.post("/invoices", json=invoice(f"INV-{n}")).status_code for n in range(count)
        }
        stored = client.get("/invoices").json()

    assert statuses == {201}
    assert [entry["invoice"]["invoice_id"] for entry in stored] == [
        f"INV-{n}" for n in range(count)
    ]


def test_server_store_file(tmp_path: Path) -> None:
    """With --store, entries are appended as JSON lines and loaded again after a restart."""
    store = tmp_path / "invoices.jsonl"
    headers = {"Idempotency-Key": "k1"}
    first = start_server("--store", str(store))
    try:
        with first.client() as client:
            first_response = client.post("/invoices", json=invoice("INV-1"), headers=headers).json()
    finally:
        stop_server(first.process)
    lines = store.read_text(encoding="utf-8").splitlines()

    second = start_server("--store", str(store))
    try:
        with second.client() as client:
            replay = client.post("/invoices", json=invoice("INV-1"), headers=headers).json()
            stored = client.get("/invoices").json()
    finally:
        stop_server(second.process)

    assert [json.loads(line)["invoice"] for line in lines] == [invoice("INV-1")]
    assert replay == first_response
    assert len(stored) == 1


def test_server_port_zero_prints_address() -> None:
    """--port 0 binds a free port and prints the address it got."""
    running = start_server()
    try:
        port = int(running.url.rsplit(":", 1)[1])
    finally:
        stop_server(running.process)

    assert port > 0
