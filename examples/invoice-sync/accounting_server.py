"""An example accounting API that receives the records of the invoice-sync integration.

Standard library only, so the demo runs without extra packages::

    python accounting_server.py --host 127.0.0.1 --port 8700 --api-key KEY [--store FILE.jsonl]

Routes, both of which require the key in the ``X-API-Key`` header:

- ``POST /invoices`` stores a JSON object that has an ``invoice_id`` and returns 201 with
  ``{"id": ..., "invoice_id": ...}``. A request that repeats an ``Idempotency-Key``
  header gets the first request's response and stores nothing new.
- ``GET /invoices`` returns every stored entry as a JSON list of
  ``{"id", "idempotency_key", "invoice"}`` objects, ``invoice`` being the posted object.

Errors are JSON objects ``{"error": message}``. With ``--store`` every entry is also
appended to a JSON Lines file, and the entries already in it are loaded at start-up.
With ``--port 0`` the system picks a free port. In every case the first line on stdout
is ``listening on http://HOST:PORT``, so that a script can read the address.
"""

from __future__ import annotations

import argparse
import hmac
import json
import signal
import socket
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

MAX_BODY_BYTES = 1024 * 1024


class InvoiceStore:
    """Thread-safe store of entries in memory, optionally appended to a JSON Lines file."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._entries: list[dict[str, Any]] = []
        # Idempotency key -> (canonical request body, stored entry).
        self._by_key: dict[str, tuple[str, dict[str, Any]]] = {}
        if path is not None and path.exists():
            self._load(path)

    def _load(self, path: Path) -> None:
        with path.open(encoding="utf-8") as lines:
            for line in lines:
                if line.strip():
                    self._remember(json.loads(line), body=None)

    def _remember(self, entry: dict[str, Any], body: str | None) -> None:
        self._entries.append(entry)
        key = entry.get("idempotency_key")
        if key is not None:
            canonical = body if body is not None else _canonical(entry["invoice"])
            self._by_key[key] = (canonical, entry)

    def add(self, invoice: dict[str, Any], key: str | None) -> tuple[dict[str, Any], bool]:
        """Store ``invoice`` unless ``key`` was seen, then return the entry and whether it is new.

        Raises KeyError when ``key`` was used before with a different body.
        """
        body = _canonical(invoice)
        with self._lock:
            if key is not None and key in self._by_key:
                stored_body, entry = self._by_key[key]
                if stored_body != body:
                    raise KeyError(key)
                return entry, False
            entry = {
                "id": f"inv-{len(self._entries) + 1:06d}",
                "idempotency_key": key,
                "invoice": invoice,
            }
            if self._path is not None:
                with self._path.open("a", encoding="utf-8") as file:
                    file.write(json.dumps(entry, ensure_ascii=False) + "\n")
            self._remember(entry, body)
            return entry, True

    def entries(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._entries)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


class AccountingHandler(BaseHTTPRequestHandler):
    """Request handler for the /invoices routes, served by an AccountingServer."""

    server: AccountingServer
    protocol_version = "HTTP/1.1"  # keep connections open between requests
    # The status line and headers go out in one write and the body in another, which
    # Nagle's algorithm can delay by tens of milliseconds on a kept-alive connection.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        if not self._check_path() or not self._check_api_key():
            return
        self._send_json(HTTPStatus.OK, self.server.store.entries())

    def do_POST(self) -> None:
        # Read the body before any check so that a rejected request leaves the
        # connection ready for the next one.
        body = self._read_body()
        if body is None or not self._check_path() or not self._check_api_key():
            return
        invoice = self._parse_invoice(body)
        if invoice is None:
            return
        key = self.headers.get("Idempotency-Key")
        try:
            entry, _ = self.server.store.add(invoice, key)
        except KeyError:
            self._send_error(
                HTTPStatus.CONFLICT,
                f"Idempotency-Key {key!r} was already used with a different body; "
                "send a new key for a new record",
            )
            return
        response_body = {"id": entry["id"], "invoice_id": invoice["invoice_id"]}
        self._send_json(HTTPStatus.CREATED, response_body)

    def _read_body(self) -> bytes | None:
        length_header = self.headers.get("Content-Length")
        if length_header is None or not length_header.isdigit():
            self.close_connection = True
            self._send_error(
                HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length header"
            )
            return None
        length = int(length_header)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            self._send_error(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"body of {length} bytes is over the limit of {MAX_BODY_BYTES} bytes",
            )
            return None
        return self.rfile.read(length)

    def _parse_invoice(self, body: bytes) -> dict[str, Any] | None:
        try:
            invoice = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            self._send_error(HTTPStatus.BAD_REQUEST, f"body is not valid JSON: {error}")
            return None
        if not isinstance(invoice, dict):
            kind = type(invoice).__name__
            self._send_error(HTTPStatus.BAD_REQUEST, f"body must be a JSON object, not {kind}")
            return None
        invoice_id = invoice.get("invoice_id")
        if not isinstance(invoice_id, str) or not invoice_id:
            self._send_error(
                HTTPStatus.BAD_REQUEST, "body must have an invoice_id that is a non-empty string"
            )
            return None
        return invoice

    def _check_path(self) -> bool:
        if self.path.split("?", 1)[0] == "/invoices":
            return True
        self._send_error(HTTPStatus.NOT_FOUND, f"no route {self.path!r}; use /invoices")
        return False

    def _check_api_key(self) -> bool:
        sent_key = self.headers.get("X-API-Key", "").encode()
        if hmac.compare_digest(sent_key, self.server.api_key.encode()):
            return True
        problem = "missing" if not sent_key else "invalid"
        self._send_error(HTTPStatus.UNAUTHORIZED, f"{problem} X-API-Key header")
        return False

    def _send_error(self, status: HTTPStatus, message: str) -> None:
        self._send_json(status, {"error": message})

    def _send_json(self, status: HTTPStatus, value: Any) -> None:
        payload = json.dumps(value, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)


class AccountingServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], *, api_key: str, store: InvoiceStore, verbose: bool
    ):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.api_key = api_key
        self.store = store
        self.verbose = verbose
        super().__init__(address, AccountingHandler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}"


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Example accounting API for the invoice-sync demo."
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)"
    )
    parser.add_argument(
        "--port", type=int, default=8700, help="TCP port; 0 picks a free one (default: 8700)"
    )
    parser.add_argument("--api-key", required=True, help="key that clients must send in X-API-Key")
    parser.add_argument("--store", type=Path, help="JSON Lines file to append stored invoices to")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    store = InvoiceStore(arguments.store)
    server = AccountingServer(
        (arguments.host, arguments.port),
        api_key=arguments.api_key,
        store=store,
        verbose=arguments.verbose,
    )
    # Turn SIGTERM into SystemExit so that the socket is closed on the way out.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    print(f"listening on {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
