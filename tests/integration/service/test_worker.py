"""Workers: resume after SIGKILL, drain on SIGTERM, concurrency slots, cancel, Redis restarts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlalchemy import select

from splice.service.slots import Slots
from splice.store.tables import executions, step_runs
from tests.integration.queue.redis_server import RedisServer

WORKER = Path(__file__).with_name("worker_process.py")
REPOSITORY = Path(__file__).resolve().parents[3]


class Receiver:
    """An HTTP server that records each request's path and Idempotency-Key.

    A request to /hold waits until ``release`` is set, the first time only.
    """

    def __init__(self) -> None:
        self.requests: list[tuple[str, str | None]] = []
        self.release = threading.Event()
        self.hold_started = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                self.rfile.read(length)
                receiver.requests.append((self.path, self.headers.get("idempotency-key")))
                if self.path == "/hold" and not receiver.hold_started.is_set():
                    receiver.hold_started.set()
                    receiver.release.wait(30)
                self.send_response(201)
                self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"ok": true}')

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.stop()


RESUMABLE = """
    key: resumable
    name: Resumable
    config:
      url: {type: string, required: true}
    flows:
      post:
        trigger: {type: manual}
        steps:
          - id: first
            action: http.request
            inputs:
              method: POST
              url: "{{ config.url }}/first"
              json: {n: 1}
              idempotency_key: true
          - id: hold
            action: http.request
            inputs:
              method: POST
              url: "{{ config.url }}/hold"
              json: {n: 2}
              idempotency_key: true
          - id: last
            action: http.request
            inputs:
              method: POST
              url: "{{ config.url }}/last"
              json: {n: 3}
              idempotency_key: true
"""


def _environment(service) -> dict[str, str]:
    settings = service.runtime.settings
    return {
        **os.environ,
        "SPLICE_DATA_DIR": str(settings.data_dir),
        "SPLICE_DATABASE_URL": settings.database_url,
        "SPLICE_LEASE": "2",
        "SPLICE_MASTER_KEY": "x" * 43 + "=",
        "PYTHONPATH": str(REPOSITORY),
        **({"SPLICE_QUEUE_URL": settings.service.queue_url} if settings.service.queue_url else {}),
    }


def _spawn_worker(service) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, str(WORKER)],
        env=_environment(service),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    return process


def _start(service, flow: str, value=None, customer: str = "acme") -> str:
    instance = service.runtime.instances.find(customer=customer)[0]
    return service.runtime.intake.accept(
        instance, flow=flow, trigger_type="manual", trigger={"type": "manual", "body": value}
    ).execution_id


def _runs(service, execution_id: str) -> list[tuple[str, str]]:
    with service.runtime.store.engine.connect() as connection:
        rows = connection.execute(
            select(step_runs.c.step_id, step_runs.c.status)
            .where(step_runs.c.execution_id == execution_id)
            .order_by(step_runs.c.sequence)
        ).all()
    return [(row.step_id, row.status) for row in rows]


def _wait(condition, timeout: float = 30.0, description: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {description}")
        time.sleep(0.02)


def test_killed_worker_resumes_from_checkpoint(start_service, definition, receiver):
    """SIGKILL mid-step: another worker resumes. The checkpointed step never runs again;
    the interrupted one runs again with the same idempotency key; the execution ends once."""
    service = start_service(worker=False, http=False, SPLICE_LEASE="2")
    service.deploy(definition(RESUMABLE), url=receiver.url)
    execution_id = _start(service, "post")
    doomed = _spawn_worker(service)
    try:
        assert receiver.hold_started.wait(30), "the hold step never started"
        _wait(
            lambda: _runs(service, execution_id) == [("first", "succeeded")],
            description="checkpoint",
        )
    finally:
        doomed.send_signal(signal.SIGKILL)
        doomed.wait()
        doomed.stdout.close()
    receiver.release.set()
    service.runtime.start_worker(concurrency=2, sandbox=None)
    record = service.wait_for(execution_id, timeout=60)
    assert record.status == "succeeded", record.error_message
    assert record.resumes == 1
    assert _runs(service, execution_id) == [
        ("first", "succeeded"),
        ("hold", "succeeded"),
        ("last", "succeeded"),
    ]
    paths = Counter(path for path, _ in receiver.requests)
    assert paths == {"/first": 1, "/hold": 2, "/last": 1}
    hold_keys = {key for path, key in receiver.requests if path == "/hold"}
    assert len(hold_keys) == 1
    assert None not in hold_keys


SLEEPY = """
    key: sleepy
    name: Sleepy
    config:
      out: {type: string, required: true, grant: write}
    flows:
      nap:
        trigger: {type: manual}
        concurrency: 2
        steps:
          - id: nap
            action: code.run
            inputs:
              file: nap.py
              args: {out: "{{ config.out }}", seconds: "{{ trigger.body }}"}
      lone:
        trigger: {type: manual}
        concurrency: 1
        steps:
          - id: nap
            action: code.run
            inputs:
              file: nap.py
              args: {out: "{{ config.out }}", seconds: "{{ trigger.body }}"}
"""

NAP = """
    import os, time

    def run(context, out, seconds):
        name = os.path.join(out, context.execution_id)
        with open(name + ".start", "w") as file:
            file.write(repr(time.time()))
        time.sleep(seconds)
        with open(name + ".end", "w") as file:
            file.write(repr(time.time()))
        return seconds
"""


def _granted(factory) -> Path:
    """A folder for executions to write to, outside the test's data and database folders."""
    out = factory.mktemp("granted")
    out.chmod(0o777)
    return out


def _intervals(folder: Path) -> list[tuple[float, float]]:
    found = []
    for start in folder.glob("*.start"):
        end = start.with_suffix(".end")
        if end.exists():
            found.append((float(start.read_text()), float(end.read_text())))
    return found


def _max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    return peak


def test_concurrency_limit_across_two_workers(start_service, definition, tmp_path_factory):
    out = _granted(tmp_path_factory)
    service = start_service(http=False, concurrency=6)
    second = start_service(http=False, concurrency=6)
    service.deploy(definition(SLEEPY, {"nap.py": NAP}), out=str(out))
    ids = [_start(service, "nap", 0.3) for _ in range(10)]
    for execution_id in ids:
        assert service.wait_for(execution_id, timeout=60).status == "succeeded"
    intervals = _intervals(out)
    assert len(intervals) == 10
    assert _max_overlap(intervals) == 2
    workers = {service.runtime.store.get_execution(i).worker for i in ids}
    assert workers <= {service.runtime.name, second.runtime.name}


def test_cancel_running_frees_one_slot(start_service, definition, tmp_path_factory):
    out = _granted(tmp_path_factory)
    service = start_service(http=False, concurrency=4, heartbeat=0.2)
    service.deploy(definition(SLEEPY, {"nap.py": NAP}), out=str(out))
    long = _start(service, "lone", 30)
    _wait(lambda: (out / f"{long}.start").exists(), description="the long execution to start")
    waiting = [_start(service, "lone", 0.2) for _ in range(2)]
    time.sleep(0.5)
    assert not any((out / f"{w}.start").exists() for w in waiting)
    from splice.service.control import cancel_execution

    assert cancel_execution(service.runtime.store, long) == "cancelling"
    record = service.wait_for(long, timeout=20)
    assert record.status == "cancelled"
    assert record.error_type == "Cancelled"
    for execution_id in waiting:
        assert service.wait_for(execution_id, timeout=30).status == "succeeded"
    assert _max_overlap(_intervals(out)) == 1  # the two waiting ones ran one after the other


def test_cancel_queued_execution(start_service, definition, tmp_path_factory):
    service = start_service(worker=False, http=False)
    service.deploy(definition(SLEEPY, {"nap.py": NAP}), out=str(_granted(tmp_path_factory)))
    execution_id = _start(service, "nap", 0)
    from splice.service.control import cancel_execution

    assert cancel_execution(service.runtime.store, execution_id) == "cancelled"
    service.runtime.start_worker(concurrency=1)
    time.sleep(0.5)
    record = service.runtime.store.get_execution(execution_id)
    assert record.status == "cancelled"
    assert record.started_at is None
    with service.runtime.store.engine.connect() as connection:
        assert connection.execute(select(executions.c.status)).scalars().all() == ["cancelled"]


def test_slots_race_and_expire_leases(start_service):
    service = start_service(worker=False, http=False)
    now = [1_000_000.0]
    slots = Slots(service.runtime.store, lease=5, clock=lambda: now[0])
    barrier = threading.Barrier(12)
    acquired: list[str] = []

    def acquire(index: int) -> None:
        barrier.wait()
        if slots.acquire("instance", "flow", 3, f"execution-{index}"):
            acquired.append(f"execution-{index}")

    threads = [threading.Thread(target=acquire, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(acquired) == 3
    assert not slots.acquire("instance", "flow", 3, "late")
    assert slots.release(acquired[0]) == 1
    assert slots.release(acquired[0]) == 0
    assert slots.acquire("instance", "flow", 3, "late")
    now[0] += 6  # the holders stopped renewing: their worker died
    assert slots.acquire("instance", "flow", 3, "after-lease")
    assert sorted(slots.holders("instance", "flow")) == ["after-lease"]


def test_sigterm_drains_running_executions(start_service, definition, tmp_path_factory):
    out = _granted(tmp_path_factory)
    service = start_service(worker=False, http=False)
    service.deploy(definition(SLEEPY, {"nap.py": NAP}), out=str(out))
    execution_id = _start(service, "nap", 1.5)
    worker = _spawn_worker(service)
    _wait(lambda: (out / f"{execution_id}.start").exists(), description="the execution to start")
    worker.send_signal(signal.SIGTERM)
    try:
        assert worker.wait(timeout=30) == 0
    finally:
        worker.stdout.close()
    record = service.runtime.store.get_execution(execution_id)
    assert record.status == "succeeded"
    assert record.resumes == 0


def test_redis_queue_survives_restart(start_service, definition, tmp_path, tmp_path_factory):
    redis_server = RedisServer(tmp_path / "redis")
    redis_server.start()
    try:
        service = start_service(
            http=False, concurrency=4, SPLICE_QUEUE_URL=redis_server.url, SPLICE_LEASE="3"
        )
        service.deploy(definition(SLEEPY, {"nap.py": NAP}), out=str(_granted(tmp_path_factory)))
        ids = [_start(service, "nap", 0.05) for _ in range(30)]
        time.sleep(0.3)
        redis_server.restart(kill=True)
        ids += [_start(service, "nap", 0.05) for _ in range(30)]
        for execution_id in ids:
            record = service.wait_for(execution_id, timeout=90)
            assert record.status == "succeeded", record.error_message
        with service.runtime.store.engine.connect() as connection:
            counts = Counter(
                connection.execute(
                    select(step_runs.c.execution_id).where(step_runs.c.step_id == "nap")
                ).scalars()
            )
        assert set(counts) == set(ids)
        assert set(counts.values()) == {1}
    finally:
        if "service" in locals():
            service.stop()
        redis_server.stop()


def test_recovery_requeues_lost_entries(start_service, definition, tmp_path, tmp_path_factory):
    from splice.service.recovery import Recovery
    from splice.store.tables import queue_entries

    redis_server = RedisServer(tmp_path / "redis")
    redis_server.start()
    try:
        service = start_service(http=False, worker=False, SPLICE_QUEUE_URL=redis_server.url)
        service.deploy(definition(SLEEPY, {"nap.py": NAP}), out=str(_granted(tmp_path_factory)))
        execution_id = _start(service, "nap", 0)

        def relayed() -> bool:
            with service.runtime.store.engine.connect() as connection:
                return connection.execute(select(queue_entries.c.id)).first() is None

        _wait(relayed, description="the relay to move the entry to Redis")
        with redis_server.client() as client:
            assert client.delete("splice:executions") == 1  # Redis lost its data
        runtime = service.runtime
        early = Recovery(runtime.store, runtime.outbox, stale_after=600)
        assert early.recover_once() == []  # queued for a moment only: not abandoned
        late = Recovery(
            runtime.store, runtime.outbox, stale_after=600, clock=lambda: time.time() + 601
        )
        assert late.recover_once() == [execution_id]
        runtime.start_worker(concurrency=1)
        assert service.wait_for(execution_id, timeout=60).status == "succeeded"
        assert late.recover_once() == []
    finally:
        redis_server.stop()
