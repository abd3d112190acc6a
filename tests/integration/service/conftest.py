"""A running service for integration tests: a Runtime with its API served over real HTTP.

``start_service`` builds the runtime from SPLICE_* settings on the test's database (SQLite or
PostgreSQL), optionally with a worker, a scheduler and Redis, and serves the FastAPI app with
uvicorn on a free port of 127.0.0.1 in a thread. Everything stops at the end of the test.
"""

from __future__ import annotations

import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from splice.api import create_app
from splice.sandbox.forkserver import ForkServerSandbox
from splice.service.runtime import Runtime
from splice.settings import Settings
from tests.integration.blobs.conftest import (  # noqa: F401  (S3 fixtures, moto's server)
    aws_environment,
    bucket,
    s3_admin,
)
from tests.integration.queue.redis_server import free_port


@dataclass
class RunningService:
    """A started Runtime, its base URL, an HTTP client and, when served, the uvicorn server."""

    runtime: Runtime
    url: str
    client: httpx.Client
    server: uvicorn.Server | None = None
    thread: threading.Thread | None = None
    extra: list[Any] = field(default_factory=list)

    def deploy(self, definition: Path, customer: str = "acme", **config: Any) -> Any:
        """Deploy the definition to ``customer`` with ``config`` as NAME=VALUE assignments."""
        from splice.definition import load_integration

        assignments = [f"{name}={value}" for name, value in config.items()]
        return self.runtime.instances.deploy(
            load_integration(definition), customer=customer, assignments=assignments
        )

    def wait_for(self, execution_id: str, timeout: float = 30.0) -> Any:
        """Wait until the execution ended; return its record."""
        deadline = time.monotonic() + timeout
        record = None
        while time.monotonic() < deadline:
            record = self.runtime.store.get_execution(execution_id)
            if record is not None and record.status in ("succeeded", "failed", "cancelled"):
                return record
            time.sleep(0.02)
        raise AssertionError(
            f"execution {execution_id} did not end within {timeout:g} s; last status: "
            f"{record.status if record is not None else 'no record'}"
        )

    def stop(self) -> None:
        """Stop the HTTP server, then drain the worker for up to 5 s and close the runtime."""
        if self.server is not None:
            self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout=10)
        self.client.close()
        self.runtime.close(drain=5)


StartService = Callable[..., RunningService]


@pytest.fixture
def start_service(
    tmp_path: Path, database_url: str, sandbox: ForkServerSandbox
) -> Iterator[StartService]:
    """Start a service on the test's database; keyword SPLICE_* overrides go to settings."""
    started: list[RunningService] = []

    def start(
        *,
        worker: bool = True,
        http: bool = True,
        concurrency: int = 4,
        heartbeat: float | None = None,
        clock: Any = time.time,
        **environment: str,
    ) -> RunningService:
        port = free_port()
        env = {
            "SPLICE_DATA_DIR": str(tmp_path / "data"),
            "SPLICE_DATABASE_URL": database_url,
            "SPLICE_PORT": str(port),
            "SPLICE_LEASE": "5",
            "SPLICE_MASTER_KEY": "x" * 43 + "=",
            **environment,
        }
        settings = Settings.from_env(env)
        runtime = Runtime(settings, clock=clock)
        url = f"http://127.0.0.1:{port}"
        service = RunningService(runtime, url, httpx.Client(base_url=url, timeout=60))
        # Registered first, so that teardown closes the runtime even if a step below fails.
        started.append(service)
        runtime.start_relay()
        runtime.listen_for_completions()
        if worker:
            runtime.start_worker(concurrency=concurrency, heartbeat=heartbeat, sandbox=sandbox)
        if http:
            config = uvicorn.Config(
                create_app(runtime),
                host="127.0.0.1",
                port=port,
                lifespan="off",
                access_log=False,
                log_level="warning",
            )
            server = uvicorn.Server(config)
            thread = threading.Thread(target=server.run, daemon=True)
            thread.start()
            service.server = server
            service.thread = thread
            deadline = time.monotonic() + 10
            while not server.started:
                if time.monotonic() > deadline or not thread.is_alive():
                    raise RuntimeError(f"the test's API server did not start on port {port}")
                time.sleep(0.01)
        return service

    yield start
    for service in reversed(started):
        service.stop()


@pytest.fixture
def definition(tmp_path: Path) -> Callable[..., Path]:
    """Write a definition (dedented) and code files into a folder; return its path."""

    def write(
        text: str, files: dict[str, str] | None = None, name: str = "integration.yaml"
    ) -> Path:
        folder = tmp_path / "definitions"
        folder.mkdir(exist_ok=True)
        for file_name, content in (files or {}).items():
            (folder / file_name).write_text(textwrap.dedent(content))
        path = folder / name
        path.write_text(textwrap.dedent(text))
        return path

    return write
