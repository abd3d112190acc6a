"""Writes an execution's step runs and logs to the record store in batches, off its path.

The supervisor's reading loop calls the recorder: rows are committed in batches at most
every ``flush_interval`` seconds while events arrive, and from the loop's idle ticks
while a long step runs. The child waits for a commit only when the socket buffer
between them is full.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from splice.blobs import BlobStore
from splice.engine.events import LogEvent, ResultEvent, StepRunEvent
from splice.engine.values import Recorded
from splice.errors import StoreError
from splice.store import RecordStore

logger = logging.getLogger(__name__)
_timestamp_lock = threading.Lock()


class Recorder:
    """Collects an execution's records and commits them in batches."""

    def __init__(
        self,
        *,
        store: RecordStore,
        blobs: BlobStore,
        execution_id: str,
        scratch_dir: Path,
        flush_interval: float = 0.05,
        max_batch: int = 2000,
        step_sequence: int = 0,
        log_sequence: int = 0,
    ) -> None:
        """Start the sequence numbers after ``step_sequence`` and ``log_sequence``.

        An execution resumed from its checkpoints passes the largest numbers already stored.
        """
        self._store = store
        self._blobs = blobs
        self._execution_id = execution_id
        self._scratch_dir = scratch_dir
        self._flush_interval = flush_interval
        self._max_batch = max_batch
        self._steps: list[tuple[Any, ...]] = []
        self._logs: list[tuple[Any, ...]] = []
        self._step_sequence = step_sequence
        self._log_sequence = log_sequence
        self._last_flush = time.monotonic()

    def add(self, event: StepRunEvent | LogEvent) -> None:
        if isinstance(event, StepRunEvent):
            self._steps.append(self._step_row(event))
        else:
            self._log_sequence += 1
            self._logs.append(
                (
                    self._execution_id,
                    self._log_sequence,
                    event.path,
                    event.level,
                    self._timestamp(event.time),
                    event.message,
                )
            )
        if len(self._steps) + len(self._logs) >= self._max_batch:
            self.flush()
        else:
            self.flush_if_due()

    def flush_if_due(self) -> None:
        """Commit the pending rows when the last commit is ``flush_interval`` old."""
        if time.monotonic() - self._last_flush >= self._flush_interval:
            self.flush()

    def flush(self) -> None:
        self._last_flush = time.monotonic()
        if self._steps or self._logs:
            steps, logs = self._take()
            self._store.write_batch(steps, logs)

    def finish(self, result: ResultEvent, execution: dict[str, Any]) -> None:
        """Commit what is left together with the execution's final state."""
        values = {**execution, **self.stored_value("result", result.result)}
        steps, logs = self._take()
        self._store.write_batch(steps, logs, (self._execution_id, values))

    def stored_value(self, prefix: str, recorded: Recorded | None) -> dict[str, Any]:
        """Columns for a recorded value: inline bytes, or a blob the spilled file moved to."""
        if recorded is None:
            return {}
        columns: dict[str, Any] = {
            f"{prefix}_encoding": recorded.encoding,
            f"{prefix}_size": recorded.size,
        }
        if recorded.file is not None:
            columns[f"{prefix}_blob"] = self._move_to_blobs(recorded.file)
        else:
            columns[prefix] = recorded.data
        return columns

    def _move_to_blobs(self, name: str) -> str:
        source = (self._scratch_dir / name).resolve()
        if source.parent != self._scratch_dir.resolve() or not source.is_file():
            raise StoreError(
                f"the sandboxed child named a value file {name!r} that is not in "
                "its scratch directory"
            )
        return self._blobs.put_file(source, f"executions/{self._execution_id}/{name}")

    def _step_row(self, event: StepRunEvent) -> tuple[Any, ...]:
        """Build a step_runs row as a tuple in the order of STEP_RUN_COLUMNS."""
        self._step_sequence += 1
        output = event.output
        output_data = output_blob = None
        if output is not None:
            if output.file is not None:
                output_blob = self._move_to_blobs(output.file)
            else:
                output_data = output.data
        item_data = item_blob = item_encoding = None
        if event.item is not None:
            item_encoding = event.item.encoding
            if event.item.file is not None:
                item_blob = self._move_to_blobs(event.item.file)
            else:
                item_data = event.item.data
        error = event.error
        timestamp = self._timestamp
        return (
            self._execution_id,
            self._step_sequence,
            event.path,
            event.step_id,
            event.kind,
            event.action,
            event.status,
            event.attempt,
            timestamp(event.started),
            timestamp(event.ended),
            event.input_size,
            output.size if output is not None else None,
            output_data,
            output.encoding if output is not None else None,
            output_blob,
            error.type if error is not None else None,
            error.message if error is not None else None,
            (error.traceback or None) if error is not None else None,
            event.continued,
            item_data,
            item_encoding,
            item_blob,
        )

    def _timestamp(self, seconds: float) -> Any:
        # NOTE: RecordStore.timestamp keeps its cache in two attributes, so two threads can
        # pair a second with the other's prefix. Recorders of concurrent executions share
        # the store, and take turns here until the store's cache is one value.
        with _timestamp_lock:
            return self._store.timestamp(seconds)

    def _take(self) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        steps, self._steps = self._steps, []
        logs, self._logs = self._logs, []
        return steps, logs
