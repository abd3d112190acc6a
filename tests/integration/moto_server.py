"""moto's S3 server for the tests, on a free port of 127.0.0.1, stopped by its PID."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

MOTO_START_SECONDS = 30


def free_port() -> int:
    """Return a port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_moto_server(folder: Path, environment: dict[str, str]) -> Iterator[str]:
    """Start moto's server on a free port, yield its URL, then stop it by its PID."""
    if importlib.util.find_spec("moto") is None:
        reason = "moto is not installed; install the dev extra to run the S3 tests"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    port = free_port()
    log = folder / "server.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, **environment},
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_answering(url, process, log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_until_answering(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Poll ``url`` until it responds; fail with the server's log if it exits or times out."""
    deadline = time.monotonic() + MOTO_START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"moto server exited with {process.returncode}:\n{log.read_text()}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    pytest.fail(f"moto server did not answer on {url} within {MOTO_START_SECONDS} s")
