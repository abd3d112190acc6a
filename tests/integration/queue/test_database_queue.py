"""The database-backed queue on SQLite and PostgreSQL: leases, reclaims, the outbox write."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import func, insert, select

from splice.queue import QueueEntry
from splice.queue.database import DatabaseQueue
from splice.store import RecordStore
from splice.store.records import now
from splice.store.tables import executions, queue_entries

LEASE = 30.0


class FakeClock:
    """A clock that moves only when a test advances it."""

    def __init__(self) -> None:
        self.time = 1_800_000_000.0

    def __call__(self) -> float:
        return self.time

    def advance(self, seconds: float) -> None:
        self.time += seconds


@pytest.fixture
def store(database_url: str) -> Iterator[RecordStore]:
    store = RecordStore.open(database_url)
    yield store
    store.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def queue(store: RecordStore, clock: FakeClock) -> Iterator[DatabaseQueue]:
    queue = DatabaseQueue(store, lease=LEASE, clock=clock, poll_interval=0.01)
    yield queue
    queue.close()


def _count_entries(store: RecordStore) -> int:
    with store.engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(queue_entries)).scalar())


def _execution_row(execution_id: str) -> dict[str, object]:
    return {
        "id": execution_id,
        "integration_key": "invoice-sync",
        "flow": "sync",
        "trigger_type": "webhook",
        "status": "queued",
        "created_at": now(),
        "step_runs": 0,
        "continued_failures": 0,
    }


def test_enqueue_claim_ack(queue: DatabaseQueue, store: RecordStore) -> None:
    """A claimed entry carries its execution and first delivery; ack removes it."""
    entry_id = queue.enqueue("exec-1")

    claimed = queue.claim("worker-a")
    assert [QueueEntry(entry_id, "exec-1", 1)] == claimed
    assert [] == queue.claim("worker-b")

    queue.ack("worker-a", claimed[0])
    assert 0 == _count_entries(store)


def test_enqueue_repeated_execution_is_noop(queue: DatabaseQueue, store: RecordStore) -> None:
    """Enqueueing a queued execution again returns the existing entry and adds none."""
    first = queue.enqueue("exec-1")
    with store.engine.begin() as connection:
        second = queue.enqueue_in(connection, "exec-1")
    third = queue.enqueue("exec-1")

    assert first == second
    assert first == third
    assert 1 == _count_entries(store)


def test_claim_fifo_order(queue: DatabaseQueue, clock: FakeClock) -> None:
    """Entries are claimed in the order they were enqueued, across and within claims."""
    for number in range(6):
        queue.enqueue(f"exec-{number}")
        clock.advance(0.001)

    first = queue.claim("worker-a", limit=4)
    second = queue.claim("worker-b", limit=4)

    assert ["exec-0", "exec-1", "exec-2", "exec-3"] == [e.execution_id for e in first]
    assert ["exec-4", "exec-5"] == [e.execution_id for e in second]


def test_claim_fifo_order_same_time(queue: DatabaseQueue) -> None:
    """Entries enqueued at the same clock time are claimed in insertion order."""
    for number in range(5):
        queue.enqueue(f"exec-{number}")

    claimed = queue.claim("worker-a", limit=5)

    assert [f"exec-{number}" for number in range(5)] == [e.execution_id for e in claimed]


def test_expired_lease_is_reclaimed(queue: DatabaseQueue, clock: FakeClock) -> None:
    """An entry whose lease expired goes to the next claim as its second delivery."""
    queue.enqueue("exec-1")
    first = queue.claim("worker-a")

    clock.advance(LEASE - 1)
    assert [] == queue.claim("worker-b")

    clock.advance(2)
    second = queue.claim("worker-b")
    assert 1 == len(second)
    assert "exec-1" == second[0].execution_id
    assert first[0].entry_id == second[0].entry_id
    assert 2 == second[0].deliveries


def test_renew_prevents_reclaim(queue: DatabaseQueue, clock: FakeClock) -> None:
    """A renewed lease holds the entry past the end of the first lease."""
    queue.enqueue("exec-1")
    claimed = queue.claim("worker-a")

    clock.advance(LEASE * 2 / 3)
    assert claimed == queue.renew("worker-a", claimed)

    clock.advance(LEASE * 2 / 3)
    assert [] == queue.claim("worker-b")

    clock.advance(LEASE)
    assert ["exec-1"] == [e.execution_id for e in queue.claim("worker-b")]


def test_renew_skips_taken_over_entry(queue: DatabaseQueue, clock: FakeClock) -> None:
    """Renew returns only entries the consumer still holds, and keeps the other's lease."""
    queue.enqueue("exec-1")
    queue.enqueue("exec-2")
    lost = queue.claim("worker-a", limit=2)
    clock.advance(LEASE + 1)
    takeover = queue.claim("worker-b", limit=1)

    renewed = queue.renew("worker-a", lost)

    assert ["exec-1"] == [e.execution_id for e in takeover]
    assert ["exec-2"] == [e.execution_id for e in renewed]
    assert takeover == queue.renew("worker-b", takeover)


def test_renew_same_consumer_old_delivery(queue: DatabaseQueue, clock: FakeClock) -> None:
    """A consumer's entry from an earlier delivery cannot renew the entry's newer delivery."""
    queue.enqueue("exec-1")
    old = queue.claim("worker-a")
    clock.advance(LEASE + 1)
    new = queue.claim("worker-a")

    assert [] == queue.renew("worker-a", old)
    assert new == queue.renew("worker-a", new)


def test_ack_after_lost_lease_keeps_entry(
    queue: DatabaseQueue, store: RecordStore, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """An ack from a consumer whose entry was taken over deletes nothing and logs a warning."""
    queue.enqueue("exec-1")
    lost = queue.claim("worker-a")
    clock.advance(LEASE + 1)
    takeover = queue.claim("worker-b")

    with caplog.at_level(logging.WARNING, logger="splice.queue.database"):
        queue.ack("worker-a", lost[0])

    assert 1 == _count_entries(store)
    assert "not acknowledged" in caplog.text
    assert "worker-a" in caplog.text
    assert takeover == queue.renew("worker-b", takeover)

    queue.ack("worker-b", takeover[0])
    assert 0 == _count_entries(store)


def test_release_makes_entry_claimable(queue: DatabaseQueue) -> None:
    """A released entry is claimed again at once, as its next delivery."""
    queue.enqueue("exec-1")
    claimed = queue.claim("worker-a")

    queue.release("worker-a", claimed[0])
    reclaimed = queue.claim("worker-b")

    assert ["exec-1"] == [e.execution_id for e in reclaimed]
    assert 2 == reclaimed[0].deliveries
    assert [] == queue.renew("worker-a", claimed)


def test_release_by_other_consumer_is_noop(
    queue: DatabaseQueue, caplog: pytest.LogCaptureFixture
) -> None:
    """Releasing an entry held by another consumer keeps that consumer's lease."""
    queue.enqueue("exec-1")
    claimed = queue.claim("worker-a")

    with caplog.at_level(logging.WARNING, logger="splice.queue.database"):
        queue.release("worker-b", claimed[0])

    assert "not released" in caplog.text
    assert [] == queue.claim("worker-b")
    assert claimed == queue.renew("worker-a", claimed)


def test_enqueue_in_commits_with_record(queue: DatabaseQueue, store: RecordStore) -> None:
    """An entry enqueued inside the caller's transaction is claimable after its commit."""
    with store.engine.begin() as connection:
        connection.execute(insert(executions), [_execution_row("exec-1")])
        queue.enqueue_in(connection, "exec-1")

    assert store.get_execution("exec-1") is not None
    assert ["exec-1"] == [e.execution_id for e in queue.claim("worker-a")]


def test_enqueue_in_rollback_leaves_nothing(queue: DatabaseQueue, store: RecordStore) -> None:
    """A rolled-back transaction leaves neither the execution record nor its entry."""

    class TriggerFailed(Exception):
        pass

    with pytest.raises(TriggerFailed), store.engine.begin() as connection:
        connection.execute(insert(executions), [_execution_row("exec-1")])
        queue.enqueue_in(connection, "exec-1")
        raise TriggerFailed

    assert store.get_execution("exec-1") is None
    assert 0 == _count_entries(store)
    assert [] == queue.claim("worker-a")


def test_claim_waits_for_enqueue(store: RecordStore) -> None:
    """A waiting claim returns an entry enqueued through the same queue before its poll."""
    queue = DatabaseQueue(store, poll_interval=10.0)

    def enqueue_later() -> None:
        time.sleep(0.1)
        with store.engine.begin() as connection:
            queue.enqueue_in(connection, "exec-1")
        queue.notify()

    enqueuer = threading.Thread(target=enqueue_later)
    started = time.monotonic()
    enqueuer.start()
    claimed = queue.claim("worker-a", wait=5.0)
    elapsed = time.monotonic() - started
    enqueuer.join()
    queue.close()

    assert ["exec-1"] == [e.execution_id for e in claimed]
    assert elapsed < 2.0


def test_claim_polls_for_other_enqueuer(store: RecordStore) -> None:
    """A waiting claim finds an entry enqueued through another queue object by polling."""
    queue = DatabaseQueue(store, poll_interval=0.02)
    other = DatabaseQueue(store)
    timer = threading.Timer(0.1, other.enqueue, args=("exec-1",))

    timer.start()
    claimed = queue.claim("worker-a", wait=5.0)
    timer.join()
    queue.close()
    other.close()

    assert ["exec-1"] == [e.execution_id for e in claimed]


def test_claim_wait_ends_empty(queue: DatabaseQueue) -> None:
    """A claim with nothing to take returns an empty list once its wait has elapsed."""
    started = time.monotonic()
    claimed = queue.claim("worker-a", wait=0.1)
    elapsed = time.monotonic() - started

    assert [] == claimed
    assert elapsed >= 0.1


def test_close_ends_waiting_claim(store: RecordStore) -> None:
    """Closing the queue makes a waiting claim return at once."""
    queue = DatabaseQueue(store, poll_interval=10.0)
    timer = threading.Timer(0.1, queue.close)
    started = time.monotonic()

    timer.start()
    claimed = queue.claim("worker-a", wait=30.0)
    timer.join()

    assert [] == claimed
    assert time.monotonic() - started < 5.0


def test_concurrent_claimers_share_entries(database_url: str, store: RecordStore) -> None:
    """Four claimers, each with its own connection pool, get all entries exactly once."""
    producer = DatabaseQueue(store)
    expected = {f"exec-{number:03d}" for number in range(200)}
    for execution_id in sorted(expected):
        producer.enqueue(execution_id)

    start = threading.Barrier(4)
    claimed: dict[str, list[str]] = {}
    errors: list[BaseException] = []

    def claim_until_empty(consumer: str) -> None:
        own_store = RecordStore(database_url)
        queue = DatabaseQueue(own_store)
        execution_ids: list[str] = []
        try:
            start.wait()
            while batch := queue.claim(consumer, limit=3):
                execution_ids.extend(entry.execution_id for entry in batch)
        except BaseException as error:
            errors.append(error)
        finally:
            claimed[consumer] = execution_ids
            queue.close()
            own_store.close()

    threads = [
        threading.Thread(target=claim_until_empty, args=(f"worker-{number}",))
        for number in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    everything = [execution_id for ids in claimed.values() for execution_id in ids]
    assert [] == errors
    assert len(everything) == len(set(everything)), "an entry was claimed twice"
    assert expected == set(everything)
