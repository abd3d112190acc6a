"""Several executions at once on one supervisor and one sandbox, from worker threads."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from splice.engine.supervisor import DEFINITION_CACHE_SIZE, ExecutionOutcome, Supervisor
from splice.engine.values import decode
from splice.sandbox.forkserver import ForkServerSandbox
from splice.settings import Settings

from .conftest import Worker, code_step, definition

EXECUTIONS = 8
THREADS = 4
DOUBLE_TWICE = definition(
    code_step("first", "double", '{name: "first{{ trigger.n }}", value: "{{ trigger.n }}"}')
    + code_step("second", "double", '{name: "second{{ trigger.n }}", value: "{{ steps.first }}"}')
)


@dataclass
class Concurrent:
    worker: Worker
    outcomes: dict[int, ExecutionOutcome]


def run_concurrently(worker: Worker, supervisor: Supervisor) -> Concurrent:
    """Run DOUBLE_TWICE for n = 1..EXECUTIONS from THREADS threads on ``supervisor``."""
    integration = worker.load(DOUBLE_TWICE)
    execution_ids = {n: worker.create(integration) for n in range(1, EXECUTIONS + 1)}

    def run(n: int) -> ExecutionOutcome:
        return supervisor.run_execution(
            execution_ids[n],
            integration,
            flow="main",
            config=worker.config(integration),
            trigger={"type": "manual", "n": n},
        )

    with ThreadPoolExecutor(THREADS) as pool:
        outcomes = dict(zip(execution_ids, pool.map(run, execution_ids), strict=True))
    return Concurrent(worker, outcomes)


@pytest.fixture
def concurrent(any_database_worker: Worker) -> Concurrent:
    """Run the executions on the session's sandbox, records on SQLite, then PostgreSQL."""
    return run_concurrently(any_database_worker, any_database_worker.supervisor)


@pytest.fixture
def short_lived_sandbox(tmp_path: Path) -> Iterator[ForkServerSandbox]:
    """A sandbox whose template is replaced after every 3 forks."""
    settings = Settings.from_env(
        {"SPLICE_DATA_DIR": str(tmp_path / "short-lived"), "SPLICE_SANDBOX_MAX_FORKS": "3"}
    )
    sandbox = ForkServerSandbox(settings)
    yield sandbox
    sandbox.close()


def check_records(concurrent: Concurrent) -> None:
    """Assert that every execution's record, step runs and result belong to it."""
    store = concurrent.worker.store
    for n, outcome in concurrent.outcomes.items():
        record = store.get_execution(outcome.execution_id)
        runs = store.step_runs(outcome.execution_id)
        assert record is not None
        assert ("succeeded", 2) == (record.status, record.step_runs), record.error_message
        assert 4 * n == outcome.result
        assert [(1, "first", 2 * n), (2, "second", 4 * n)] == [
            (run.sequence, run.path, decode(run.output or b"")) for run in runs
        ]


def test_concurrent_records(concurrent: Concurrent) -> None:
    """Each of the executions run at once has its own records, complete and correct."""
    check_records(concurrent)


def test_concurrent_steps_all_ran(concurrent: Concurrent) -> None:
    """Every step of every execution ran exactly once."""
    expected = sorted(
        f"{step}{n}" for n in range(1, EXECUTIONS + 1) for step in ("first", "second")
    )
    assert expected == sorted(concurrent.worker.marked())


def test_concurrent_template_replacement(
    worker: Worker, short_lived_sandbox: ForkServerSandbox
) -> None:
    """Executions started from several threads succeed while the template is replaced."""
    supervisor = Supervisor(
        store=worker.store,
        blobs=worker.blobs,
        sandbox=short_lived_sandbox,
        settings=worker.settings,
    )
    check_records(run_concurrently(worker, supervisor))


def test_definition_cache_bounded(worker: Worker) -> None:
    """The supervisor keeps the dumped definitions of the latest integrations only."""
    integrations = [worker.load(DOUBLE_TWICE) for _ in range(DEFINITION_CACHE_SIZE + 5)]
    for integration in integrations:
        worker.supervisor._definition(integration)
    kept = [entry[0] for entry in worker.supervisor._dumps.values()]
    assert DEFINITION_CACHE_SIZE == len(kept)
    assert integrations[5:] == kept
