"""A worker killed with SIGKILL mid-execution: nothing of it runs on, and another resumes.

Each test starts killable_worker.py as a process of its own, waits until its execution is
inside a step, and kills it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from splice.definition import Integration
from splice.engine.supervisor import ExecutionOutcome, Supervisor
from splice.sandbox.forkserver import ForkServerSandbox
from splice.settings import Settings

from .conftest import (
    Worker,
    child_pids,
    code_step,
    definition,
    process_gone,
    wait_for,
)

WORKER_SCRIPT = Path(__file__).with_name("killable_worker.py")
NAP_SECONDS = 3
NAPPING = definition(code_step("nap", "mark", f"{{name: nap, sleep: {NAP_SECONDS}}}"))


@dataclass
class KillableWorker:
    """A worker process running one execution, and its sandbox template's pid."""

    process: subprocess.Popen[str]
    template: int

    def kill(self) -> list[int]:
        """SIGKILL the worker; return the pids of the template's children just before."""
        children = child_pids(self.template)
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        return children


def start_worker(
    worker: Worker, integration: Integration, execution_id: str, *assignments: str
) -> KillableWorker:
    options = {
        "environment": {"SPLICE_DATA_DIR": str(worker.settings.data_dir)},
        "definition": integration.source_path,
        "execution_id": execution_id,
        "assignments": [f"marks={worker.marks}", *assignments],
    }
    process = subprocess.Popen(
        [sys.executable, str(WORKER_SCRIPT), json.dumps(options)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    process.stdout.close()
    if not line.startswith("{"):
        process.kill()
        process.wait()
        pytest.fail(f"the worker process did not start: its first line was {line!r}")
    return KillableWorker(process, json.loads(line)["template"])


def test_killed_worker_leaves_no_process(worker: Worker) -> None:
    """The template and the execution's child die with the worker; the step never ends."""
    integration = worker.load(NAPPING)
    execution_id = worker.create(integration)
    killable = start_worker(worker, integration, execution_id)
    assert wait_for(lambda: "nap" in worker.marked()), "the step never started"
    napping_since = time.monotonic()
    children = killable.kill()
    assert children, "the template had no child while the step ran"
    assert wait_for(lambda: process_gone(killable.template))
    assert [] == [pid for pid in children if not wait_for(partial(process_gone, pid))]
    # Past the end of the nap: a surviving step would have written its second mark by now.
    time.sleep(max(0.0, napping_since + NAP_SECONDS + 1 - time.monotonic()))
    assert ["nap"] == worker.marked()


@dataclass
class HeldServer:
    """An HTTP server on 127.0.0.1 that delays its first response until ``release`` is set."""

    url: str
    keys: list[str | None] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)


def serve_held(server: HeldServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            server.keys.append(self.headers.get("Idempotency-Key"))
            if len(server.keys) == 1:
                server.release.wait(30)
            body = b'{"ok": true}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def held_server() -> Iterator[HeldServer]:
    server = HeldServer(url="")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), serve_held(server))
    server.url = f"http://127.0.0.1:{httpd.server_address[1]}/receive"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield server
    server.release.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join()


POSTING = definition(
    "      - id: post\n        action: http.request\n"
    "        inputs: {method: POST, url: '{{ config.url }}', json: {a: 1},"
    " idempotency_key: true, retries: 0}\n"
    + code_step("after", "mark", '{name: after, value: "{{ steps.post.status }}"}')
).replace("config:\n", "config:\n  url: {type: string}\n")


def test_rerun_sends_same_idempotency_key(worker: Worker, held_server: HeldServer) -> None:
    """A POST cut short by the worker's death is sent again with the same Idempotency-Key."""
    integration = worker.load(POSTING)
    execution_id = worker.create(integration)
    killable = start_worker(worker, integration, execution_id, f"url={held_server.url}")
    assert wait_for(lambda: len(held_server.keys) == 1), "the POST never arrived"
    killable.kill()
    assert wait_for(lambda: process_gone(killable.template))
    held_server.release.set()
    outcome = worker.supervisor.run_execution(
        execution_id,
        integration,
        flow="main",
        config=worker.config(integration, f"url={held_server.url}"),
        trigger={"type": "manual"},
    )
    runs = worker.store.step_runs(execution_id)
    assert "succeeded" == outcome.status, outcome.error_message
    assert [f"{execution_id}:post"] * 2 == held_server.keys
    assert [("post", 1, "succeeded"), ("after", 1, "succeeded")] == [
        (run.path, run.attempt, run.status) for run in runs
    ]
    assert ["after"] == worker.marked()


def test_killed_worker_record_left_running(worker: Worker) -> None:
    """The killed worker's execution stays running, for another worker to resume."""
    integration = worker.load(NAPPING)
    execution_id = worker.create(integration)
    killable = start_worker(worker, integration, execution_id)
    assert wait_for(lambda: "nap" in worker.marked()), "the step never started"
    killable.kill()
    record = worker.store.get_execution(execution_id)
    assert record is not None
    assert "running" == record.status
    assert os.path.isdir(worker.settings.scratch_dir / execution_id)


def test_close_stops_running_execution(
    worker: Worker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Closing the sandbox stops an execution still running after the wait, and returns."""
    monkeypatch.setattr("splice.sandbox.forkserver.CLOSE_WAIT", 0.5)
    sandbox = ForkServerSandbox(Settings.from_env({"SPLICE_DATA_DIR": str(tmp_path / "closed")}))
    supervisor = Supervisor(
        store=worker.store, blobs=worker.blobs, sandbox=sandbox, settings=worker.settings
    )
    thread, outcomes = _start_napping(worker, supervisor, seconds=60)
    try:
        assert wait_for(lambda: "nap" in worker.marked()), "the step never started"
        template = sandbox._process
        assert template is not None
    finally:
        sandbox.close()
        thread.join(60)
    assert process_gone(template.pid)
    assert "failed" == outcomes[0].status
    assert "SandboxError" == outcomes[0].error_type


def test_dead_template_kills_children(worker: Worker, tmp_path: Path) -> None:
    """When the template dies, its running execution's child dies with it."""
    sandbox = ForkServerSandbox(Settings.from_env({"SPLICE_DATA_DIR": str(tmp_path / "dies")}))
    supervisor = Supervisor(
        store=worker.store, blobs=worker.blobs, sandbox=sandbox, settings=worker.settings
    )
    thread, outcomes = _start_napping(worker, supervisor, seconds=20)
    try:
        assert wait_for(lambda: "nap" in worker.marked()), "the step never started"
        template = sandbox._process
        assert template is not None
        template.kill()  # the template this test started
        thread.join(15)
    finally:
        sandbox.close()
        thread.join(60)
    assert ["nap"] == worker.marked()
    assert "failed" == outcomes[0].status
    assert "SandboxError" == outcomes[0].error_type


def _start_napping(
    worker: Worker, supervisor: Supervisor, *, seconds: int
) -> tuple[threading.Thread, list[ExecutionOutcome]]:
    """Run a step that marks itself and sleeps, on a thread; its outcome lands in the list."""
    integration = worker.load(
        definition(code_step("nap", "mark", f"{{name: nap, sleep: {seconds}}}"))
    )
    execution_id = worker.create(integration)
    outcomes: list[ExecutionOutcome] = []

    def run() -> None:
        outcomes.append(
            supervisor.run_execution(
                execution_id,
                integration,
                flow="main",
                config=worker.config(integration),
                trigger={"type": "manual"},
            )
        )

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcomes
