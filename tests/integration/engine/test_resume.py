"""Resuming an execution that a dead worker left: committed steps never run again."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from splice.engine.supervisor import ExecutionOutcome
from splice.engine.values import RAW_TEXT, decode
from splice.store.records import StepRunRecord

from .conftest import Worker, code_step, definition, log_row, step_run_row

THREE_STEPS = (
    code_step("first", "mark", "{name: first, value: 21}")
    + code_step("second", "double", '{name: second, value: "{{ steps.first }}"}')
    + code_step("third", "double", '{name: third, value: "{{ steps.second }}"}')
)


@dataclass
class Resumed:
    outcome: ExecutionOutcome
    marked: list[str]
    runs: list[StepRunRecord]
    logs: list[dict[str, Any]]


def runs_by_path(runs: list[StepRunRecord]) -> dict[str, list[StepRunRecord]]:
    found: dict[str, list[StepRunRecord]] = {}
    for run in runs:
        found.setdefault(run.path, []).append(run)
    return found


@pytest.fixture
def resumed(any_database_worker: Worker) -> Resumed:
    """Resume THREE_STEPS after a dead worker committed ``first`` (output 10) and two logs."""
    worker = any_database_worker
    integration = worker.load(definition(THREE_STEPS))
    execution_id = worker.create(integration, status="running")
    worker.store.write_batch(
        [step_run_row(execution_id, 1, "first", value=10)],
        [log_row(execution_id, 1, "one"), log_row(execution_id, 2, "two")],
    )
    outcome = worker.run(integration, execution_id)
    return Resumed(
        outcome,
        worker.marked(),
        worker.store.step_runs(execution_id),
        worker.store.logs(execution_id),
    )


def test_resume_succeeds(resumed: Resumed) -> None:
    """The resumed execution ends succeeded."""
    assert "succeeded" == resumed.outcome.status, resumed.outcome.error_message


def test_resume_skips_committed_step(resumed: Resumed) -> None:
    """Only the steps after the checkpoint run."""
    assert ["second", "third"] == resumed.marked


def test_resume_uses_recorded_output(resumed: Resumed) -> None:
    """Later steps get the checkpoint's recorded output, not what the step would return."""
    assert 40 == resumed.outcome.result


def test_resume_records_no_new_run(resumed: Resumed) -> None:
    """The checkpointed step keeps its one step run."""
    assert 1 == len(runs_by_path(resumed.runs)["first"])


def test_resume_continues_step_sequence(resumed: Resumed) -> None:
    """New step runs are numbered after the ones stored."""
    assert [(1, "first"), (2, "second"), (3, "third")] == [
        (run.sequence, run.path) for run in resumed.runs
    ]


def test_resume_continues_log_sequence(resumed: Resumed) -> None:
    """New log lines are numbered after the ones stored."""
    sequences = [line["sequence"] for line in resumed.logs]
    assert list(range(1, len(sequences) + 1)) == sequences


def test_resume_logs_checkpoint(resumed: Resumed) -> None:
    """The first new log line gives the number of steps already complete."""
    assert "resumed from checkpoint: 1 step already complete" == resumed.logs[2]["message"]


def test_resume_counts_all_runs(resumed: Resumed, any_database_worker: Worker) -> None:
    """The execution's record and outcome count the stored runs of both workers."""
    record = any_database_worker.store.get_execution(resumed.outcome.execution_id)
    assert record is not None
    assert 3 == record.step_runs
    assert 3 == resumed.outcome.step_runs


def test_resume_keeps_start_time(worker: Worker) -> None:
    """A record the service queued gets a start time, and is running while it runs."""
    integration = worker.load(definition(code_step("first", "mark", "{name: first}")))
    execution_id = worker.create(integration)
    worker.run(integration, execution_id)
    record = worker.store.get_execution(execution_id)
    assert record is not None
    assert record.started_at is not None
    assert record.ended_at is not None


def test_failed_attempt_runs_again(worker: Worker) -> None:
    """A step whose latest run failed runs again, numbered after the stored attempts."""
    integration = worker.load(definition(THREE_STEPS))
    execution_id = worker.create(integration, status="running")
    worker.store.write_batch([step_run_row(execution_id, 1, "first", status="failed")], [])
    outcome = worker.run(integration, execution_id)
    runs = runs_by_path(worker.store.step_runs(execution_id))
    assert ["first", "second", "third"] == worker.marked()
    assert 84 == outcome.result
    assert [(1, "failed"), (2, "succeeded")] == [(r.attempt, r.status) for r in runs["first"]]


def test_final_record_not_run_again(worker: Worker) -> None:
    """An execution whose final state is committed returns it and runs nothing."""
    integration = worker.load(definition(THREE_STEPS))
    execution_id = worker.create(integration)
    first = worker.run(integration, execution_id)
    again = worker.run(integration, execution_id)
    assert ["first", "second", "third"] == worker.marked()
    assert "succeeded" == again.status
    assert first.result == again.result
    assert 3 == again.step_runs


def test_all_steps_complete(worker: Worker) -> None:
    """With every step checkpointed, nothing runs and the result is the last output."""
    integration = worker.load(definition(THREE_STEPS))
    execution_id = worker.create(integration, status="running")
    worker.store.write_batch(
        [
            step_run_row(execution_id, 1, "first", value=1),
            step_run_row(execution_id, 2, "second", value=2),
            step_run_row(execution_id, 3, "third", value=3),
        ],
        [],
    )
    outcome = worker.run(integration, execution_id)
    assert [] == worker.marked()
    assert 3 == outcome.result
    assert 3 == outcome.step_runs


SPILLED_STEPS = code_step("first", "mark", "{name: first}") + code_step(
    "second", "size", '{name: second, value: "{{ steps.first }}"}'
)


class StreamingOnlyBlobs:
    """A blob store without local paths, like S3: the supervisor must stream from it."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.streamed: list[str] = []

    def path(self, key: str) -> Path | None:
        return None

    def open_read(self, key: str) -> Any:
        self.streamed.append(key)
        return self._inner.open_read(key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@pytest.mark.parametrize("streaming", [False, True], ids=["local-path", "stream"])
def test_resume_spilled_output(worker: Worker, tmp_path: Path, streaming: bool) -> None:
    """A checkpoint whose output is in the blob store reaches the next step whole."""
    text = "x" * 3_000_000
    source = tmp_path / "spilled"
    source.write_text(text)
    integration = worker.load(definition(SPILLED_STEPS))
    execution_id = worker.create(integration, status="running")
    key = worker.blobs.put_file(source, f"executions/{execution_id}/value-spilled")
    row = step_run_row(execution_id, 1, "first", output_blob=key, encoding=RAW_TEXT, size=len(text))
    worker.store.write_batch([row], [])
    if streaming:
        worker.supervisor.blobs = blobs = StreamingOnlyBlobs(worker.blobs)
    outcome = worker.run(integration, execution_id)
    assert "succeeded" == outcome.status, outcome.error_message
    assert ["second"] == worker.marked()
    assert len(text) == outcome.result
    assert worker.blobs.exists(key)  # the blob stays: the checkpoint is still its record
    if streaming:
        assert [key] == blobs.streamed


LOOP_STEPS = (
    "      - id: each\n        loop: '{{ [1, 2, 3, 4] }}'\n        steps:\n"
    + code_step("a", "double", '{name: "a{{ index }}", value: "{{ item }}"}', 10)
    + code_step("b", "double", '{name: "b{{ index }}", value: "{{ steps.a }}"}', 10)
    + code_step("after", "mark", '{name: after, value: "{{ steps.each.results }}"}')
)


def test_loop_resume_skips_completed_iterations(worker: Worker) -> None:
    """A loop re-enters and runs only the steps its completed iterations lack."""
    integration = worker.load(definition(LOOP_STEPS))
    execution_id = worker.create(integration, status="running")
    worker.store.write_batch(
        [
            step_run_row(execution_id, 1, "each[0].a", value=100),
            step_run_row(execution_id, 2, "each[0].b", value=200),
            step_run_row(execution_id, 3, "each[1].a", value=300),
        ],
        [],
    )
    outcome = worker.run(integration, execution_id)
    runs = worker.store.step_runs(execution_id)
    assert "succeeded" == outcome.status, outcome.error_message
    assert ["b1", "a2", "b2", "a3", "b3", "after"] == worker.marked()
    assert [200, 600, 12, 16] == outcome.result
    assert 1 == sum(run.path == "each[0].a" for run in runs)
    assert [4, 5, 6, 7, 8, 9, 10] == [run.sequence for run in runs][3:]


def test_completed_loop_skipped_whole(worker: Worker) -> None:
    """A loop whose own run succeeded is restored whole: no iteration runs."""
    integration = worker.load(definition(LOOP_STEPS))
    execution_id = worker.create(integration, status="running")
    output = {"results": [7, 8], "errors": [], "succeeded": 2, "failed": 0}
    worker.store.write_batch([step_run_row(execution_id, 1, "each", kind="loop", value=output)], [])
    outcome = worker.run(integration, execution_id)
    assert ["after"] == worker.marked()
    assert [7, 8] == outcome.result


BRANCH_STEPS = (
    "      - id: pick\n        branch:\n          - when: '{{ true }}'\n            steps:\n"
    + code_step("inner", "mark", "{name: inner, value: 1}", 14)
    + code_step("after", "double", '{name: after, value: "{{ steps.pick }}"}')
)


def test_completed_branch_skipped_whole(worker: Worker) -> None:
    """A branch whose own run succeeded is restored whole: its steps do not run."""
    integration = worker.load(definition(BRANCH_STEPS))
    execution_id = worker.create(integration, status="running")
    worker.store.write_batch([step_run_row(execution_id, 1, "pick", kind="branch", value=5)], [])
    outcome = worker.run(integration, execution_id)
    assert ["after"] == worker.marked()
    assert 10 == outcome.result


SECRET_STEPS = code_step(
    "first", "mark", '{name: first, value: "Bearer {{ config.token }}"}'
) + code_step("second", "mark", '{name: second, value: "{{ steps.first }}"}')
SECRET_DEFINITION = definition(SECRET_STEPS).replace(
    "config:\n", "config:\n  token: {type: secret}\n"
)


def test_masked_checkpoint_runs_again(worker: Worker) -> None:
    """A checkpoint recorded with a secret masked is not the real value, so its step runs."""
    integration = worker.load(SECRET_DEFINITION)
    execution_id = worker.create(integration, status="running")
    worker.store.write_batch([step_run_row(execution_id, 1, "first", value="Bearer [secret]")], [])
    outcome = worker.supervisor.run_execution(
        execution_id,
        integration,
        flow="main",
        config=worker.config(integration, "token=s3cr3t-value"),
        trigger={"type": "manual"},
    )
    runs = worker.store.step_runs(execution_id)
    assert "succeeded" == outcome.status, outcome.error_message
    assert ["first", "second"] == worker.marked()
    assert "Bearer [secret]" == decode(runs[-1].output or b"")
