"""Queues hand accepted executions to workers: the Queue interface and its backends.

``queue.database`` keeps entries in the records database, so an execution record and its
entry are written in one transaction (the embedded default, and the outbox of the
scaled-out mode); ``queue.redis`` uses Redis Streams with a consumer group. Both give
at-least-once delivery with leases: an entry claimed by a worker that stops renewing its
lease is claimed again by another worker once the lease expires.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

Clock = Callable[[], float]  # seconds; time.time by default, injectable for tests


@dataclass(frozen=True)
class QueueEntry:
    """One delivery of a queued execution to a consumer."""

    entry_id: str  # the backend's id of the entry
    execution_id: str
    deliveries: int  # 1 the first time the entry is claimed, then one more per reclaim


class Queue(Protocol):
    def enqueue(self, execution_id: str) -> str:
        """Add an entry for the execution; return the entry's id."""
        ...

    def claim(self, consumer: str, *, limit: int = 1, wait: float = 0.0) -> list[QueueEntry]:
        """Lease up to ``limit`` entries to ``consumer``: new ones, or ones whose lease expired.

        Waits up to ``wait`` seconds when none is available.
        """
        ...

    def renew(self, consumer: str, entries: Sequence[QueueEntry]) -> list[QueueEntry]:
        """Extend the leases of ``entries``; return those the consumer still holds."""
        ...

    def ack(self, consumer: str, entry: QueueEntry) -> None:
        """Remove a finished entry; call only after the execution's final record is committed."""
        ...

    def release(self, consumer: str, entry: QueueEntry) -> None:
        """Give an entry back at once, for another consumer (a worker draining on SIGTERM)."""
        ...

    def close(self) -> None: ...
