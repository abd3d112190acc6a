"""Recovery: queue again the executions that no queue entry leads a worker to.

The outbox guarantees that every accepted execution reaches the queue once. A queue that
later loses entries (a Redis restarted without its data, an entry deleted by hand) would
leave executions queued for ever, or running under a lease that no worker renews. The
recovery pass finds executions queued for longer than ``stale_after`` seconds, and running
ones whose lease expired that long ago, and adds an outbox entry for each. A duplicate entry
is harmless because a worker runs an execution only while no other live worker runs it.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from sqlalchemy import select

from splice.queue.database import DatabaseQueue
from splice.store import RecordStore
from splice.store.records import utc
from splice.store.tables import executions, queue_entries

logger = logging.getLogger(__name__)

BATCH = 500


class Recovery:
    """A thread that runs the recovery pass every ``stale_after`` seconds."""

    def __init__(
        self,
        store: RecordStore,
        outbox: DatabaseQueue,
        *,
        stale_after: float,
        clock: Any = time.time,
    ) -> None:
        self.store = store
        self.outbox = outbox
        self.stale_after = stale_after
        self.clock = clock
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def recover_once(self) -> list[str]:
        """Queue again up to BATCH abandoned executions, oldest first; return their ids."""
        cutoff = utc(self.clock() - self.stale_after)
        table = executions
        abandoned = (
            select(table.c.id)
            .where(
                ((table.c.status == "queued") & (table.c.created_at < cutoff))
                | ((table.c.status == "running") & (table.c.lease_until < cutoff))
            )
            # An execution whose entry still waits in the outbox needs none.
            .where(~table.c.id.in_(select(queue_entries.c.execution_id)))
            .where(table.c.instance_id.is_not(None))
            .order_by(table.c.created_at)
            .limit(BATCH)
        )
        with self.store.engine.connect() as connection:
            found = [row[0] for row in connection.execute(abandoned)]
        for execution_id in found:
            self.outbox.enqueue(execution_id)
        if found:
            logger.warning(
                "queued %d executions again that no queue entry led to a worker for %g s "
                "(the queue lost entries, or workers are far behind): %s",
                len(found),
                self.stale_after,
                ", ".join(found[:5]) + (" ..." if len(found) > 5 else ""),
            )
        return found

    def start(self) -> None:
        """Start the recovery pass on a daemon thread."""
        self._thread = threading.Thread(target=self._loop, name="splice-recovery", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stopping.wait(self.stale_after):
            try:
                self.recover_once()
            except Exception as error:
                logger.warning(
                    "the recovery pass failed, retrying in %g s: %s", self.stale_after, error
                )

    def stop(self) -> None:
        """Stop the thread, waiting up to 5 s for a running pass."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
