"""The plain-Python floor of the webhook benchmark: the same job in one process, no records.

A bare ASGI application runs on uvicorn, with httptools and uvloop when installed, as
`splice serve` does. For each POST it parses the invoice with the ``xml.parse`` action
function and the inputs of the flow's ``parse`` step, and calls ``totals.run``. Then it maps
the result, posts it to the receiver with one shared ``httpx.AsyncClient``, and responds
with the mapped JSON. Nothing is queued, sandboxed or recorded, so it shows what the job
itself costs in Python on the machine.

Usage: .venv/bin/python benchmarks/webhook_invoice/floor.py --port P --receiver-url URL
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import httpx
import uvicorn
import yaml

from splice.components import find_action
from splice.engine.inputs import prepare_inputs
from splice.testing import make_context

HERE = Path(__file__).resolve().parent
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def parse_settings() -> dict[str, Any]:
    """Read the namespaces and force_list of the flow's parse step, so both parse alike."""
    definition = yaml.safe_load((HERE / "integration.yaml").read_text())
    inputs = definition["flows"]["invoice"]["steps"][0]["inputs"]
    return {"namespaces": inputs["namespaces"], "force_list": inputs["force_list"]}


def load_totals() -> Any:
    spec = importlib.util.spec_from_file_location("totals", HERE / "totals.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_app(receiver_url: str) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """Return the ASGI application that does the benchmark's job for each POST."""
    parse = find_action("xml.parse")
    assert parse is not None
    settings = parse_settings()
    totals = load_totals()
    context = make_context()
    clients: list[httpx.AsyncClient] = []  # created in the server's event loop

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = bytearray()
        while True:
            message = await receive()
            body.extend(message.get("body", b""))
            if not message.get("more_body"):
                break
        if scope["method"] == "GET":
            await send_json(send, 200, b'{"status":"ok"}')
            return
        inputs = prepare_inputs(parse, {"content": bytes(body), **settings}, step="parse")
        document = parse.function(context, **inputs)
        fields = totals.run(context, document=document)
        record = {
            "invoice_id": fields["invoice_id"],
            "supplier": fields["supplier"],
            "total": fields["line_total"],
            "currency": fields["currency"],
            "lines": fields["line_count"],
        }
        if not clients:
            clients.append(httpx.AsyncClient())
        response = await clients[0].post(receiver_url, json=record)
        response.raise_for_status()
        await send_json(send, 200, json.dumps(record, separators=(",", ":")).encode())

    return app


async def send_json(send: Send, status: int, data: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True, help="port to listen on at 127.0.0.1")
    parser.add_argument("--receiver-url", required=True, help="URL the records are posted to")
    options = parser.parse_args()
    installed = importlib.util.find_spec
    uvicorn.run(
        build_app(options.receiver_url),
        host="127.0.0.1",
        port=options.port,
        loop="uvloop" if installed("uvloop") else "asyncio",
        http="httptools" if installed("httptools") else "h11",
        lifespan="off",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
