"""The example accounting API for the acceptance tests, as a process of its own."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.conftest import EXAMPLE_DIR

SERVER_START_TIMEOUT = 10.0  # seconds to wait for the "listening on" line


@dataclass
class Server:
    url: str
    api_key: str

    def stored(self) -> list[dict]:
        request = urllib.request.Request(
            f"{self.url}/invoices", headers={"X-API-Key": self.api_key}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)


@pytest.fixture
def server() -> Iterator[Server]:
    """The example accounting API on a free port of 127.0.0.1, stopped by its PID."""
    api_key = secrets.token_urlsafe(16)
    process = subprocess.Popen(
        [
            sys.executable,
            str(EXAMPLE_DIR / "accounting_server.py"),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            f"--api-key={api_key}",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    assert process.stdout is not None
    reader = threading.Thread(target=lambda: lines.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(SERVER_START_TIMEOUT)
    try:
        line = lines[0].strip() if lines else ""
        assert line.startswith("listening on http://127.0.0.1:"), line
        yield Server(line.removeprefix("listening on "), api_key)
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()
