"""The outbox relay: moves entries from the database outbox to the Redis queue.

Triggers write each execution and its outbox entry in one database transaction. The relay
claims outbox entries like any consumer, adds each to the Redis stream, and only then
acknowledges it in the outbox. A relay that dies in between leaves the outbox entry to be
relayed again, so an execution may reach the stream twice but never zero times. The duplicate
is harmless because a worker runs an execution only while no other live worker runs it.
"""

from __future__ import annotations

import logging
import threading

from splice.queue import Queue
from splice.queue.database import DatabaseQueue

logger = logging.getLogger(__name__)

BATCH = 200


class Relay:
    """A thread that moves outbox entries to the queue in batches of up to BATCH."""

    def __init__(
        self, outbox: DatabaseQueue, queue: Queue, *, name: str, wait: float = 0.5
    ) -> None:
        self.outbox = outbox
        self.queue = queue
        self.name = name
        self.wait = wait
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def relay_once(self, *, wait: float = 0.0) -> int:
        """Relay the entries in the outbox, waiting up to ``wait`` s for some; return the count.

        When the queue fails, the entries not yet relayed go back to the outbox and the
        error is raised.
        """
        entries = self.outbox.claim(self.name, limit=BATCH, wait=wait)
        relayed = 0
        for entry in entries:
            try:
                self.queue.enqueue(entry.execution_id)
            except Exception:
                for rest in entries[relayed:]:
                    self.outbox.release(self.name, rest)
                raise
            self.outbox.ack(self.name, entry)
            relayed += 1
        return relayed

    def start(self) -> None:
        """Start relaying on a daemon thread."""
        self._thread = threading.Thread(target=self._loop, name="splice-relay", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        backoff = 0.1
        while not self._stopping.is_set():
            try:
                self.relay_once(wait=self.wait)
                backoff = 0.1
            except Exception as error:
                logger.warning(
                    "outbox relay %s failed, retrying in %.1f s: %s", self.name, backoff, error
                )
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def stop(self) -> None:
        """Stop the thread, waiting up to 5 s for the current batch."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
