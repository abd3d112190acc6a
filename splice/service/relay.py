"""The outbox relay: moves entries from the database outbox to the Redis queue.

Triggers write each execution and its outbox entry in one database transaction. The relay
claims outbox entries like any consumer, adds each to the Redis stream, and only then
acknowledges it in the outbox. A relay that dies in between leaves the outbox entry to be
relayed again, so an execution may reach the stream twice but never zero times; workers take
an execution only while no other live worker holds it.
"""

from __future__ import annotations

import logging
import threading

from splice.queue import Queue
from splice.queue.database import DatabaseQueue

logger = logging.getLogger(__name__)

BATCH = 200


class Relay:
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
        """Relay what the outbox holds now (waiting up to ``wait`` for some); return the count."""
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
        self._thread = threading.Thread(target=self._loop, name="splice-relay", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        backoff = 0.1
        while not self._stopping.is_set():
            try:
                self.relay_once(wait=self.wait)
                backoff = 0.1
            except Exception as error:
                logger.warning("outbox relay %s paused: %s", self.name, error)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
