"""A redis-server of the test's own, on a free port of 127.0.0.1, persisting every write.

Tests never use the machine's Redis. The server writes its append-only file to a directory of
the test with ``appendfsync always``. So a restart on the same port and directory, even after
SIGKILL, keeps every write that Redis confirmed to its client.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis

REDIS_SERVER = shutil.which("redis-server")


def free_port() -> int:
    """Return a TCP port of 127.0.0.1 that nothing listened on a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """One redis-server process; ``restart`` keeps its port and data directory."""

    def __init__(self, directory: Path, *, port: int | None = None) -> None:
        if REDIS_SERVER is None:
            raise RuntimeError("redis-server is not installed; install it to run these tests")
        self.directory = directory
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait until it has loaded its data and replies to PING."""
        assert REDIS_SERVER is not None
        command = [
            REDIS_SERVER,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.directory),
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(self.directory / "redis.log"),
        ]  # fmt: skip
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url, socket_timeout=1.0)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    client.ping()  # raises BusyLoadingError while the AOF is loading
                    return
                except redis.ConnectionError:
                    if self.process.poll() is not None:
                        log = (self.directory / "redis.log").read_text(errors="replace")
                        raise RuntimeError(f"redis-server exited at start:\n{log}") from None
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)
        finally:
            client.close()

    def stop(self, *, kill: bool = False) -> None:
        """Stop the server by its PID: SIGTERM (a clean shutdown) or SIGKILL (a crash)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            self.process.wait(timeout=10)
        self.process = None

    def restart(self, *, kill: bool = False) -> None:
        """Stop the server and start it again on the same port and data directory."""
        self.stop(kill=kill)
        self.start()

    def client(self) -> redis.Redis:
        """Return a client for checking the server's state directly."""
        return redis.Redis.from_url(self.url, decode_responses=True)
