"""Reliability: nothing accepted is lost while workers are killed at random.

Three `splice worker` processes, two `splice scheduler` processes and one `splice api` run on
PostgreSQL and a Redis of the test's own. 1,000 deliveries (SPLICE_RELIABILITY_DELIVERIES) of
a UBL invoice go to the invoice flow's webhook while a worker is killed with SIGKILL every few
seconds and started again. At the end every delivery has exactly one execution, and every
execution succeeded once. Its step runs are intact: one succeeded run per step, and sequences
are unique. The accounting API stores one record per execution. A schedule firing every minute
fires each due time once.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, select

from splice.engine.values import decode
from splice.store.tables import executions, step_runs
from tests.conftest import EXAMPLE_DIR
from tests.integration.conftest import postgres_url  # noqa: F401
from tests.integration.queue.redis_server import RedisServer, free_port

SPLICE = Path(sys.executable).parent / "splice"
DELIVERIES = int(os.environ.get("SPLICE_RELIABILITY_DELIVERIES", "1000"))
INVOICE = EXAMPLE_DIR / "invoices" / "base-example.xml"
STEPS = ["parse", "map", "post", "answer"]

TICKER = """
key: ticker
name: Ticker
flows:
  tick:
    trigger: {type: schedule, cron: "* * * * *"}
    steps:
      - {id: note, action: log.write, inputs: {message: tick}}
"""


class Processes:
    """The service's processes, each started and stopped by its PID."""

    def __init__(self, environment: dict[str, str], logs: Path) -> None:
        self.environment = environment
        self.logs = logs
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        self.killed = 0

    def start(self, name: str, *arguments: str) -> None:
        # The child keeps its own copy of the descriptor, so ours is closed at once.
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - closed after Popen
        self.running[name] = subprocess.Popen(
            [str(SPLICE), *arguments], env=self.environment, stdout=log, stderr=log
        )
        log.close()

    def kill(self, name: str) -> None:
        process = self.running.pop(name)
        process.send_signal(signal.SIGKILL)
        process.wait()
        self.killed += 1

    def stop_all(self) -> None:
        for process in self.running.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for name, process in self.running.items():
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                raise AssertionError(f"{name} did not stop on SIGTERM within 40 s") from None
        self.running.clear()


def _wait_ready(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"the API at {url} did not become ready within {timeout:g} s")


@pytest.mark.timeout(900)
def test_no_delivery_lost_when_workers_killed(tmp_path, postgres_url, server):  # noqa: F811
    redis_server = RedisServer(tmp_path / "redis")
    redis_server.start()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    inbox = tmp_path / "inbox"
    shutil.copytree(EXAMPLE_DIR / "invoices", inbox)
    environment = {
        **{key: value for key, value in os.environ.items() if not key.startswith("SPLICE_")},
        "SPLICE_DATA_DIR": str(tmp_path / "data"),
        "SPLICE_DATABASE_URL": postgres_url,
        "SPLICE_QUEUE_URL": redis_server.url,
        "SPLICE_MASTER_KEY": "r" * 43 + "=",
        "SPLICE_PORT": str(port),
        "SPLICE_LEASE": "3",
        "SPLICE_WORKER_CONCURRENCY": "4",
        "SPLICE_WEBHOOK_SYNC_TIMEOUT": "20",
    }
    logs = tmp_path / "logs"
    logs.mkdir()
    processes = Processes(environment, logs)
    try:
        deployed = subprocess.run(
            [
                str(SPLICE), "deploy", str(EXAMPLE_DIR / "integration.yaml"), "--customer", "acme",
                "--config", f"inbox={inbox}", "--config", f"accounting_url={server.url}",
                "--config", f"accounting.api_key={server.api_key}", "--json",
            ],
            env=environment, capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        webhook = json.loads(deployed.stdout)["webhooks"]["receive"]
        ticker = tmp_path / "ticker.yaml"
        ticker.write_text(TICKER)
        subprocess.run(
            [str(SPLICE), "deploy", str(ticker), "--customer", "acme"],
            env=environment, capture_output=True, timeout=60, check=True,
        )  # fmt: skip
        processes.start("api", "api")
        for index in range(3):
            processes.start(f"worker-{index}", "worker")
        for index in range(2):
            processes.start(f"scheduler-{index}", "scheduler")
        _wait_ready(url)

        body = INVOICE.read_bytes()
        delivery_ids = [str(uuid.uuid4()) for _ in range(DELIVERIES)]
        status_codes: dict[str, int] = {}
        sending = threading.Event()
        sending.set()

        def killer() -> None:
            chaos = random.Random(4)
            while sending.is_set():
                time.sleep(chaos.uniform(1.0, 3.0))
                name = f"worker-{chaos.randrange(3)}"
                processes.kill(name)
                time.sleep(chaos.uniform(0.0, 1.0))
                processes.start(name, "worker")

        chaos_thread = threading.Thread(target=killer, daemon=True)
        chaos_thread.start()
        with httpx.Client(timeout=60) as client:

            def deliver(delivery_id: str) -> None:
                for _ in range(5):  # the API itself is never killed; retry only network errors
                    try:
                        response = client.post(
                            webhook,
                            content=body,
                            headers={
                                "content-type": "application/xml",
                                "x-delivery-id": delivery_id,
                            },
                        )
                        status_codes[delivery_id] = response.status_code
                        return
                    except httpx.TransportError:
                        time.sleep(0.5)

            with ThreadPoolExecutor(16) as pool:
                list(pool.map(deliver, delivery_ids))
        sending.clear()
        chaos_thread.join(timeout=10)
        assert processes.killed >= 3, "the test killed too few workers to mean anything"
        assert set(status_codes.values()) <= {200, 202}, Counter(status_codes.values())
        assert len(status_codes) == DELIVERIES

        engine = create_engine(postgres_url)
        try:
            deadline = time.monotonic() + 300
            while True:
                with engine.connect() as connection:
                    statuses = Counter(
                        connection.execute(
                            select(executions.c.status).where(executions.c.flow == "receive")
                        ).scalars()
                    )
                if statuses.get("succeeded", 0) == DELIVERIES or time.monotonic() > deadline:
                    break
                time.sleep(1)
            assert statuses == {"succeeded": DELIVERIES}, statuses
            with engine.connect() as connection:
                rows = connection.execute(
                    select(executions.c.id, executions.c.trigger, executions.c.resumes).where(
                        executions.c.flow == "receive"
                    )
                ).all()
                runs = connection.execute(
                    select(
                        step_runs.c.execution_id,
                        step_runs.c.step_id,
                        step_runs.c.status,
                        step_runs.c.sequence,
                    )
                ).all()
                ticks = (
                    connection.execute(
                        select(executions.c.trigger).where(executions.c.flow == "tick")
                    )
                    .scalars()
                    .all()
                )
        finally:
            engine.dispose()
        # One execution per delivery id.
        seen = Counter()
        for row in rows:
            headers = dict(decode(row.trigger)["request"]["headers"])
            seen[headers["x-delivery-id"]] += 1
        assert set(seen) == set(delivery_ids)
        assert set(seen.values()) == {1}
        # Every execution's records are intact: one succeeded run per step, no repeats.
        by_execution: dict[str, list] = {}
        for run in runs:
            by_execution.setdefault(run.execution_id, []).append(run)
        for row in rows:
            execution_runs = by_execution[row.id]
            succeeded = sorted(run.step_id for run in execution_runs if run.status == "succeeded")
            assert succeeded == sorted(STEPS), (row.id, succeeded)
            sequences = [run.sequence for run in execution_runs]
            assert len(sequences) == len(set(sequences)), (row.id, sequences)
        assert sum(row.resumes for row in rows) >= 1, "no execution was ever resumed"
        # The accounting API stores exactly one record per execution.
        stored = server.stored()
        keys = Counter(entry["idempotency_key"] for entry in stored)
        assert len(stored) == DELIVERIES
        assert set(keys.values()) == {1}
        # The schedule fired each due time once, whichever scheduler fired it.
        due = Counter(decode(trigger)["trigger"]["scheduled_for"] for trigger in ticks)
        assert all(count == 1 for count in due.values()), due
    finally:
        processes.stop_all()
        redis_server.stop()
