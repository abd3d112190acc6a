"""Cancelling an execution through run_execution's cancel event."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import pytest

from splice.engine.events import StepStartEvent
from splice.engine.supervisor import ExecutionOutcome, Supervisor
from splice.sandbox import ExecutionRequest
from splice.store.records import ExecutionRecord, StepRunRecord

from .conftest import Worker, code_step, definition, wait_for

SLEEPY = definition(
    code_step("first", "mark", "{name: first, value: 1}")
    + code_step("nap", "mark", "{name: nap, sleep: 60}")
    + code_step("last", "mark", "{name: last}")
)
LOOP_SLEEPY = definition(
    "      - id: each\n        loop: '{{ [1, 2, 3] }}'\n        concurrency: 3\n"
    "        steps:\n" + code_step("nap", "mark", '{name: "nap{{ index }}", sleep: 60}', 10)
)


class UnstartableSandbox:
    """A sandbox that fails the test if an execution is started on it."""

    def start(self, request: ExecutionRequest) -> Any:
        raise AssertionError(f"execution {request.execution_id} was started")

    def close(self) -> None:
        pass


@dataclass
class Cancelled:
    outcome: ExecutionOutcome
    record: ExecutionRecord
    runs: list[StepRunRecord]
    marked: list[str]


def cancel_when_marked(worker: Worker, name: str, cancel: threading.Event) -> threading.Thread:
    """Set ``cancel`` once a step has written ``name`` to marks.txt."""

    def watch() -> None:
        if wait_for(lambda: name in worker.marked(), timeout=60):
            cancel.set()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def run_and_cancel(worker: Worker, text: str, mark: str) -> Cancelled:
    integration = worker.load(text)
    execution_id = worker.create(integration)
    cancel = threading.Event()
    watcher = cancel_when_marked(worker, mark, cancel)
    outcome = worker.run(integration, execution_id, cancel=cancel)
    watcher.join()
    record = worker.store.get_execution(execution_id)
    assert record is not None
    return Cancelled(outcome, record, worker.store.step_runs(execution_id), worker.marked())


@pytest.fixture
def cancelled_during(worker: Worker) -> Cancelled:
    """Cancel SLEEPY while its step ``nap`` sleeps."""
    return run_and_cancel(worker, SLEEPY, "nap")


def test_cancel_during_status(cancelled_during: Cancelled) -> None:
    """The execution is recorded cancelled, with the error Cancelled."""
    assert "cancelled" == cancelled_during.outcome.status
    assert "cancelled" == cancelled_during.record.status
    assert "Cancelled" == cancelled_during.record.error_type
    assert "cancelled on request" in (cancelled_during.record.error_message or "")


def test_cancel_during_stops_step(cancelled_during: Cancelled) -> None:
    """The sleeping step never finishes and the steps after it never start."""
    assert ["first", "nap"] == cancelled_during.marked


def test_cancel_during_closes_attempt(cancelled_during: Cancelled) -> None:
    """The running step's attempt is recorded failed with the cancel error."""
    nap = cancelled_during.runs[-1]
    assert ("nap", "failed", "Cancelled") == (nap.path, nap.status, nap.error_type)
    assert "cancelled on request" in (nap.error_message or "")


def test_cancel_during_counts(cancelled_during: Cancelled) -> None:
    """The record counts both step runs and names the step that was running."""
    assert 2 == cancelled_during.record.step_runs
    assert "nap" == cancelled_during.record.failed_step


def test_cancel_during_loop(worker: Worker) -> None:
    """Cancelling a loop with concurrent iterations closes the loop and each running step."""
    cancelled = run_and_cancel(worker, LOOP_SLEEPY, "nap2")
    failed = {run.path: run.error_type for run in cancelled.runs}
    assert "cancelled" == cancelled.record.status
    assert "Cancelled" == failed["each"]
    assert "Cancelled" == failed["each[2].nap"]


def test_cancel_before_start(worker: Worker) -> None:
    """A cancel set before the start records cancelled and starts no sandbox."""
    supervisor = Supervisor(
        store=worker.store,
        blobs=worker.blobs,
        sandbox=UnstartableSandbox(),
        settings=worker.settings,
    )
    integration = worker.load(SLEEPY)
    execution_id = worker.create(integration)
    cancel = threading.Event()
    cancel.set()
    outcome = supervisor.run_execution(
        execution_id,
        integration,
        flow="main",
        config=worker.config(integration),
        trigger={"type": "manual"},
        cancel=cancel,
    )
    record = worker.store.get_execution(execution_id)
    assert record is not None
    assert "cancelled" == outcome.status
    assert ("cancelled", "Cancelled") == (record.status, record.error_type)
    assert "cancelled on request" in (record.error_message or "")
    assert record.ended_at is not None
    assert [] == worker.store.step_runs(execution_id)


def test_cancel_after_end(worker: Worker) -> None:
    """A cancel set after the execution ended changes nothing."""
    integration = worker.load(definition(code_step("first", "mark", "{name: first}")))
    execution_id = worker.create(integration)
    cancel = threading.Event()
    outcome = worker.run(integration, execution_id, cancel=cancel)
    cancel.set()
    again = worker.run(integration, execution_id, cancel=cancel)
    assert "succeeded" == outcome.status
    assert "succeeded" == again.status


def test_failing_callback_kills_child(worker: Worker) -> None:
    """When the event callback raises, the error propagates and the child is killed."""
    integration = worker.load(definition(code_step("nap", "mark", "{name: nap, sleep: 2}")))
    execution_id = worker.create(integration)

    def fail_on_start(event: Any) -> None:
        if isinstance(event, StepStartEvent):
            assert wait_for(lambda: "nap" in worker.marked()), "the step never started"
            raise RuntimeError("the callback failed")

    started = time.monotonic()
    with pytest.raises(RuntimeError, match="the callback failed"):
        worker.run(integration, execution_id, on_event=fail_on_start)
    # Past the end of the nap: a surviving step would have written its second mark by now.
    time.sleep(max(0.0, started + 3 - time.monotonic()))
    assert ["nap"] == worker.marked()
