"""Retention: prune finished executions older than the retention period, with their blobs.

Step runs and logs go with their execution (foreign keys with ON DELETE CASCADE), and blobs
live under ``executions/<id>/`` in the blob store. Webhook delivery ids older than the
delivery window are deleted too. Blobs are deleted before the rows, so a crash in between
leaves rows whose blobs are gone, never blobs that nothing points at.
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select

from splice.blobs import BlobStore
from splice.store import RecordStore
from splice.store.records import utc
from splice.store.tables import executions, logs, step_runs, webhook_deliveries

logger = logging.getLogger(__name__)

BATCH = 500
TERMINAL = ("succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class Pruned:
    """The number of executions, blobs and delivery ids one prune deleted."""

    executions: int
    blobs: int
    deliveries: int


def prune(
    store: RecordStore,
    blobs: BlobStore,
    *,
    ended_before: datetime.datetime,
    delivered_before: datetime.datetime,
) -> Pruned:
    """Delete executions that ended before ``ended_before`` with their step runs, logs and blobs.

    Also deletes webhook delivery ids received before ``delivered_before``. Both times are
    naive UTC. Executions go in batches of BATCH.
    """
    pruned = blob_count = 0
    while True:
        with store.engine.connect() as connection:
            ids = [
                row[0]
                for row in connection.execute(
                    select(executions.c.id)
                    .where(
                        executions.c.status.in_(TERMINAL) & (executions.c.ended_at < ended_before)
                    )
                    .limit(BATCH)
                )
            ]
        if not ids:
            break
        for execution_id in ids:
            blob_count += blobs.delete_prefix(f"executions/{execution_id}")
        with store.begin() as connection:
            # Explicit deletes too, for a SQLite connection without foreign keys enforced.
            connection.execute(delete(step_runs).where(step_runs.c.execution_id.in_(ids)))
            connection.execute(delete(logs).where(logs.c.execution_id.in_(ids)))
            connection.execute(delete(executions).where(executions.c.id.in_(ids)))
        pruned += len(ids)
    with store.begin() as connection:
        deliveries = connection.execute(
            delete(webhook_deliveries).where(webhook_deliveries.c.received_at < delivered_before)
        ).rowcount
    return Pruned(pruned, blob_count, int(deliveries))


class Retention:
    """A thread that prunes, every ``interval`` seconds, executions older than ``retention``."""

    def __init__(
        self,
        store: RecordStore,
        blobs: BlobStore,
        *,
        retention: float,
        delivery_window: float,
        interval: float = 3600.0,
        clock: Any = time.time,
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.retention = retention
        self.delivery_window = delivery_window
        self.interval = interval
        self.clock = clock
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def prune_now(self) -> Pruned:
        """Prune once with the current clock; return the counts."""
        now = self.clock()
        # SPLICE_RETENTION_DAYS=0 keeps executions for ever; delivery ids still expire.
        keep_all = self.retention <= 0
        return prune(
            self.store,
            self.blobs,
            ended_before=utc(0) if keep_all else utc(now - self.retention),
            delivered_before=utc(now - self.delivery_window),
        )

    def start(self) -> None:
        """Start pruning on a daemon thread."""
        self._thread = threading.Thread(target=self._loop, name="splice-retention", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stopping.wait(self.interval):
            try:
                pruned = self.prune_now()
                if pruned.executions or pruned.deliveries:
                    logger.info(
                        "pruned %d executions, %d blobs and %d delivery ids",
                        pruned.executions, pruned.blobs, pruned.deliveries,
                    )  # fmt: skip
            except Exception as error:
                logger.warning(
                    "pruning old executions failed, retrying in %g s: %s", self.interval, error
                )

    def stop(self) -> None:
        """Stop the thread, waiting up to 5 s for a running prune."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
