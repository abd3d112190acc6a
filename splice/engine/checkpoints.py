"""The progress an earlier run of an execution left in the records, for resuming it.

A worker that dies mid-execution leaves the step runs it committed. Each step whose
latest committed run succeeded is a checkpoint: the next run takes its recorded output
instead of running it again. Reads go through SQLAlchemy Core on the store's engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Row, func, select, update
from sqlalchemy.exc import SQLAlchemyError

from splice.engine.values import MSGPACK, encode
from splice.errors import StoreError
from splice.store import RecordStore, tables
from splice.store.records import now

FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})


@dataclass(frozen=True)
class StoredOutput:
    """A step run's output as stored: inline encoded bytes, or the key of a blob."""

    encoding: str
    data: bytes | None
    blob: str | None


@dataclass(frozen=True)
class Progress:
    """The step runs and logs already stored for an execution."""

    checkpoints: dict[str, StoredOutput] = field(default_factory=dict)  # by step path
    attempts: dict[str, int] = field(default_factory=dict)  # last attempt, other paths
    step_runs: int = 0
    continued_failures: int = 0
    step_sequence: int = 0  # the largest sequence number of its step runs
    log_sequence: int = 0  # the largest sequence number of its logs

    @property
    def resumed(self) -> bool:
        """Tell whether an earlier run recorded anything."""
        return self.step_runs > 0 or self.log_sequence > 0


def load_progress(store: RecordStore, execution_id: str) -> Progress:
    """Read the step runs and log sequence numbers stored for ``execution_id``."""
    runs = tables.step_runs
    query = (
        select(
            runs.c.sequence,
            runs.c.path,
            runs.c.status,
            runs.c.attempt,
            runs.c.continued,
            runs.c.output,
            runs.c.output_encoding,
            runs.c.output_blob,
        )
        .where(runs.c.execution_id == execution_id)
        .order_by(runs.c.sequence)
    )
    last_log = select(func.max(tables.logs.c.sequence)).where(
        tables.logs.c.execution_id == execution_id
    )
    latest: dict[str, StoredOutput | None] = {}
    attempts: dict[str, int] = {}
    step_runs = continued = step_sequence = 0
    try:
        with store.engine.connect() as connection:
            for row in connection.execute(query):
                step_runs += 1
                continued += bool(row.continued)
                step_sequence = max(step_sequence, row.sequence)
                attempts[row.path] = max(attempts.get(row.path, 0), row.attempt)
                latest[row.path] = _output(row) if row.status == "succeeded" else None
            log_sequence = connection.execute(last_log).scalar_one_or_none() or 0
    except SQLAlchemyError as error:
        raise StoreError(
            f"could not read the step runs of execution {execution_id}: {error}"
        ) from error
    checkpoints = {path: output for path, output in latest.items() if output is not None}
    return Progress(
        checkpoints=checkpoints,
        attempts={path: n for path, n in attempts.items() if path not in checkpoints},
        step_runs=step_runs,
        continued_failures=continued,
        step_sequence=step_sequence,
        log_sequence=int(log_sequence),
    )


def _output(row: Row[Any]) -> StoredOutput:
    encoding = row.output_encoding or MSGPACK
    if row.output is None and row.output_blob is None:
        return StoredOutput(encoding=MSGPACK, data=encode(None), blob=None)
    return StoredOutput(encoding=encoding, data=row.output, blob=row.output_blob)


def mark_running(store: RecordStore, execution_id: str) -> None:
    """Set the execution's status to running, and its start time unless it has one."""
    executions = tables.executions
    statement = (
        update(executions)
        .where(executions.c.id == execution_id)
        .values(status="running", started_at=func.coalesce(executions.c.started_at, now()))
    )
    try:
        with store.begin() as connection:
            connection.execute(statement)
    except SQLAlchemyError as error:
        raise StoreError(f"could not mark execution {execution_id} running: {error}") from error
