"""The database-backed queue: entries in the records database, leased to consumers.

It is the embedded default's queue (SQLite) and the scaled-out mode's outbox (PostgreSQL).
A trigger writes an execution record and its entry in one transaction through
:meth:`DatabaseQueue.enqueue_in`, so no entry exists without its record and no committed
record lacks an entry.

Each claim increments an entry's ``deliveries``, and that count also fences stale holders.
``renew``, ``ack`` and ``release`` act only on a row whose consumer and delivery count match
the caller's :class:`QueueEntry`. So a consumer whose lease expired and whose entry was
claimed again, even under the same consumer name, can no longer change it. A consumer may
still renew or acknowledge an entry after its lease expired if no one has claimed it since.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from splice.errors import StoreError
from splice.queue import Clock, QueueEntry
from splice.store import RecordStore
from splice.store.records import utc
from splice.store.tables import queue_entries

logger = logging.getLogger(__name__)

_INSERTS: dict[str, Callable[..., Any]] = {
    "postgresql": postgresql.insert,
    "sqlite": sqlite.insert,
}


class DatabaseQueue:
    """The :class:`~splice.queue.Queue` on the ``queue_entries`` table of a record store.

    ``lease`` is the length in seconds of the lease that a claim or renewal grants.
    ``clock`` gives the time for enqueue and lease times. ``poll_interval`` is how often,
    in seconds, a waiting :meth:`claim` looks for new entries. A waiting claim also wakes
    at once when an entry is enqueued or released through this same object.
    """

    def __init__(
        self,
        store: RecordStore,
        *,
        lease: float = 30.0,
        clock: Clock = time.time,
        poll_interval: float = 0.05,
    ) -> None:
        dialect = store.engine.dialect.name
        if dialect not in _INSERTS:
            raise StoreError(
                f"the database queue supports SQLite and PostgreSQL, not {dialect}; "
                "set SPLICE_DATABASE_URL to a sqlite:// or postgresql:// URL"
            )
        if lease <= 0:
            raise ValueError(f"lease must be a positive number of seconds, got {lease!r}")
        if poll_interval <= 0:
            raise ValueError(
                f"poll_interval must be a positive number of seconds, got {poll_interval!r}"
            )
        self.store = store
        self.lease = lease
        self.clock = clock
        self.poll_interval = poll_interval
        self._url = make_url(store.url).render_as_string(hide_password=True)
        # Waiting claims sleep on this condition. _wakeups counts enqueues and releases
        # committed through this object, so a claim notices one made while it was querying.
        self._wakeup = threading.Condition()
        self._wakeups = 0
        self._closed = False

    # -- enqueueing -----------------------------------------------------------------------

    def enqueue(self, execution_id: str) -> str:
        """Add an entry for the execution in a transaction of its own, and return its id.

        While an entry for ``execution_id`` is queued, enqueueing it again adds nothing and
        returns the existing entry's id. After that entry is acknowledged, it adds a new one.
        """
        try:
            with self.store.begin() as connection:
                entry_id = self._insert(connection, execution_id)
        except SQLAlchemyError as error:
            raise StoreError(
                f"could not enqueue execution {execution_id} in {self._url}: {error}"
            ) from error
        self._notify_waiters()
        return entry_id

    def enqueue_in(self, connection: Connection, execution_id: str) -> str:
        """Add an entry for the execution inside the caller's transaction, and return its id.

        The caller writes the execution record through the same ``connection`` and commits
        both together. A rollback removes both. A repeated execution id behaves as in
        :meth:`enqueue`. Database errors propagate unchanged, so the caller's own error
        handling decides about its transaction. Call :meth:`notify` after the commit, so
        that waiting claims of this object take the entry at once instead of at their next
        poll. (SQLAlchemy's commit event fires before the commit, when a claim cannot see
        the entry yet.)
        """
        return self._insert(connection, execution_id)

    def _insert(self, connection: Connection, execution_id: str) -> str:
        moment = utc(self.clock())
        # ON CONFLICT DO NOTHING rather than catching an IntegrityError, because on
        # PostgreSQL a failed statement would abort the caller's whole transaction.
        statement = (
            _INSERTS[connection.dialect.name](queue_entries)
            .values(
                execution_id=execution_id,
                enqueued_at=moment,
                available_at=moment,
                deliveries=0,
            )
            .on_conflict_do_nothing(index_elements=["execution_id"])
            .returning(queue_entries.c.id)
        )
        entry_id = connection.execute(statement).scalar()
        if entry_id is None:
            entry_id = connection.execute(
                select(queue_entries.c.id).where(queue_entries.c.execution_id == execution_id)
            ).scalar_one()
        return str(entry_id)

    # -- claiming -------------------------------------------------------------------------

    def claim(self, consumer: str, *, limit: int = 1, wait: float = 0.0) -> list[QueueEntry]:
        """Lease up to ``limit`` entries to ``consumer``, oldest available first.

        An entry is available when it has no lease or its lease expired. Claiming it sets
        the consumer and the lease and increments ``deliveries``. When none is available,
        this waits up to ``wait`` seconds, and returns an empty list at the end of the wait
        or once the queue is closed.
        """
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit!r}")
        deadline = time.monotonic() + wait
        while True:
            with self._wakeup:
                seen = self._wakeups
            entries = self._claim_available(consumer, limit)
            remaining = deadline - time.monotonic()
            if entries or remaining <= 0 or self._closed:
                return entries
            # NOTE: on PostgreSQL, LISTEN/NOTIFY could replace this polling for entries
            # enqueued by other processes. Until then they wait up to poll_interval.
            self._wait_for_wakeup(seen, min(self.poll_interval, remaining))

    def _wait_for_wakeup(self, seen: int, timeout: float) -> None:
        with self._wakeup:
            self._wakeup.wait_for(lambda: self._wakeups != seen or self._closed, timeout)

    def _claim_available(self, consumer: str, limit: int) -> list[QueueEntry]:
        now = self.clock()
        table = queue_entries
        # Rows locked by another claim in progress are skipped (PostgreSQL) rather than
        # waited for. SQLite ignores FOR UPDATE, but there the UPDATE holds the database's
        # single write lock for the whole statement, so two claims never interleave.
        available = (
            select(table.c.id)
            .where(table.c.available_at <= utc(now))
            .where(table.c.lease_until.is_(None) | (table.c.lease_until < utc(now)))
            .order_by(table.c.available_at, table.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        statement = (
            update(table)
            .where(table.c.id.in_(available.scalar_subquery()))
            .values(
                consumer=consumer,
                lease_until=utc(now + self.lease),
                deliveries=table.c.deliveries + 1,
            )
            .returning(table.c.id, table.c.execution_id, table.c.deliveries, table.c.available_at)
        )
        try:
            with self.store.begin() as connection:
                rows = list(connection.execute(statement))
        except SQLAlchemyError as error:
            raise StoreError(
                f"could not claim queue entries for consumer {consumer} in {self._url}: {error}"
            ) from error
        # RETURNING gives rows in no particular order.
        rows.sort(key=lambda row: (row.available_at, row.id))
        return [
            QueueEntry(
                entry_id=str(row.id), execution_id=row.execution_id, deliveries=row.deliveries
            )
            for row in rows
        ]

    # -- holding and finishing ------------------------------------------------------------

    def renew(self, consumer: str, entries: Sequence[QueueEntry]) -> list[QueueEntry]:
        """Extend the leases of ``entries`` by ``lease`` seconds from now.

        Returns those the consumer still holds. An entry that another claim took over, or
        that was acknowledged or released, is left as it is and left out of the result.
        """
        if not entries:
            return []
        now = self.clock()
        renewed: set[int] = set()
        try:
            with self.store.begin() as connection:
                for entry in entries:
                    row_id = connection.execute(
                        update(queue_entries)
                        .where(self._held_by(consumer, entry))
                        .values(lease_until=utc(now + self.lease))
                        .returning(queue_entries.c.id)
                    ).scalar()
                    if row_id is not None:
                        renewed.add(row_id)
        except SQLAlchemyError as error:
            raise StoreError(
                f"could not renew queue leases for consumer {consumer} in {self._url}: {error}"
            ) from error
        return [entry for entry in entries if int(entry.entry_id) in renewed]

    def ack(self, consumer: str, entry: QueueEntry) -> None:
        """Delete a finished entry. Call this only after the execution's final record is committed.

        An entry that the consumer no longer owns is left in place, and a warning is logged.
        """
        try:
            with self.store.begin() as connection:
                deleted = connection.execute(
                    delete(queue_entries).where(self._held_by(consumer, entry))
                ).rowcount
        except SQLAlchemyError as error:
            raise StoreError(
                f"could not acknowledge queue entry {entry.entry_id} "
                f"(execution {entry.execution_id}) in {self._url}: {error}"
            ) from error
        if deleted == 0:
            logger.warning(
                "queue entry %s (execution %s, delivery %d) was not acknowledged because "
                "consumer %s no longer holds it. Another claim took it over after its lease "
                "expired, or it was already acknowledged or released",
                entry.entry_id,
                entry.execution_id,
                entry.deliveries,
                consumer,
            )

    def release(self, consumer: str, entry: QueueEntry) -> None:
        """Clear the entry's lease so that any consumer can claim it at once.

        Its ``deliveries`` count stays, so the next claim counts as a redelivery. An entry
        that the consumer no longer holds is left in place, and a warning is logged.
        """
        try:
            with self.store.begin() as connection:
                released = connection.execute(
                    update(queue_entries)
                    .where(self._held_by(consumer, entry))
                    .values(consumer=None, lease_until=None)
                ).rowcount
        except SQLAlchemyError as error:
            raise StoreError(
                f"could not release queue entry {entry.entry_id} "
                f"(execution {entry.execution_id}) in {self._url}: {error}"
            ) from error
        if released == 0:
            logger.warning(
                "queue entry %s (execution %s, delivery %d) was not released because "
                "consumer %s no longer holds it",
                entry.entry_id,
                entry.execution_id,
                entry.deliveries,
                consumer,
            )
        else:
            self._notify_waiters()

    @staticmethod
    def _held_by(consumer: str, entry: QueueEntry) -> Any:
        return (
            (queue_entries.c.id == int(entry.entry_id))
            & (queue_entries.c.consumer == consumer)
            & (queue_entries.c.deliveries == entry.deliveries)
        )

    # -- waking and closing ---------------------------------------------------------------

    def _notify_waiters(self) -> None:
        with self._wakeup:
            self._wakeups += 1
            self._wakeup.notify_all()

    def notify(self) -> None:
        """Wake the waiting claims of this object: entries were committed through enqueue_in."""
        self._notify_waiters()

    def close(self) -> None:
        """End waiting claims. The record store stays open, because its owner closes it."""
        with self._wakeup:
            self._closed = True
            self._wakeup.notify_all()
