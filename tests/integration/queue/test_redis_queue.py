"""RedisQueue against a real redis-server that each test starts on a free port of 127.0.0.1."""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from splice.errors import OperatorError
from splice.queue import QueueEntry
from splice.queue.redis import QueueUnavailable, RedisQueue, redact_url
from tests.integration.queue.redis_server import REDIS_SERVER, RedisServer, free_port

pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed")

MakeQueue = Callable[..., RedisQueue]


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def make_queue(redis_server: RedisServer) -> Iterator[MakeQueue]:
    """Open RedisQueues on the test's server; every one is closed after the test."""
    queues: list[RedisQueue] = []

    def make(**options: float | str) -> RedisQueue:
        queue = RedisQueue(redis_server.url, **options)  # type: ignore[arg-type]
        queues.append(queue)
        return queue

    yield make
    for queue in queues:
        queue.close()


def claim_within(
    queue: RedisQueue, consumer: str, timeout: float = 5.0, *, limit: int = 1
) -> list[QueueEntry]:
    """Poll ``claim`` until it returns entries; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entries = queue.claim(consumer, limit=limit, wait=0.05)
        if entries:
            return entries
    pytest.fail(f"{consumer} claimed nothing within {timeout} s")


def test_enqueue_claim_ack(make_queue: MakeQueue, redis_server: RedisServer) -> None:
    queue = make_queue()
    entry_id = queue.enqueue("execution-1")

    entries = queue.claim("worker-1")

    assert [QueueEntry(entry_id, "execution-1", 1)] == entries
    assert [] == queue.claim("worker-2")
    queue.ack("worker-1", entries[0])
    assert [] == queue.claim("worker-1")
    client = redis_server.client()
    pending: Any = client.xpending("splice:executions", "workers")
    assert 0 == client.xlen("splice:executions")
    assert 0 == pending["pending"]
    client.close()


def test_claim_returns_entries_in_order(make_queue: MakeQueue) -> None:
    queue = make_queue()
    ids = [f"execution-{n}" for n in range(10)]
    for execution_id in ids:
        queue.enqueue(execution_id)

    first = queue.claim("worker-1", limit=4)
    rest = queue.claim("worker-2", limit=10)

    assert ids[:4] == [entry.execution_id for entry in first]
    assert ids[4:] == [entry.execution_id for entry in rest]


def test_claim_waits_for_new_entry(make_queue: MakeQueue) -> None:
    queue = make_queue()
    started = time.monotonic()
    assert [] == queue.claim("worker-1", wait=0.2)
    assert time.monotonic() - started >= 0.2

    timer = threading.Timer(0.1, queue.enqueue, args=["execution-1"])
    timer.start()
    started = time.monotonic()
    entries = queue.claim("worker-1", wait=5.0)
    timer.join()

    assert ["execution-1"] == [entry.execution_id for entry in entries]
    assert time.monotonic() - started < 2.0


def test_expired_lease_is_reclaimed(make_queue: MakeQueue) -> None:
    queue = make_queue(lease=0.2)
    queue.enqueue("execution-1")
    [first] = queue.claim("worker-1")
    assert [] == queue.claim("worker-2")

    [second] = claim_within(queue, "worker-2")

    assert first.entry_id == second.entry_id
    assert "execution-1" == second.execution_id
    assert 2 == second.deliveries
    assert [] == queue.renew("worker-1", [first])
    assert [second] == queue.renew("worker-2", [second])


def test_renew_prevents_reclaim(make_queue: MakeQueue) -> None:
    queue = make_queue(lease=0.5)
    queue.enqueue("execution-1")
    [entry] = queue.claim("worker-1")

    deadline = time.monotonic() + 1.5  # three leases
    while time.monotonic() < deadline:
        assert [entry] == queue.renew("worker-1", [entry])
        assert [] == queue.claim("worker-2", wait=0.1)

    queue.ack("worker-1", entry)
    assert [] == queue.claim("worker-2")


def test_ack_after_losing_ownership_is_noop(
    make_queue: MakeQueue, caplog: pytest.LogCaptureFixture
) -> None:
    queue = make_queue(lease=0.2)
    queue.enqueue("execution-1")
    [lost] = queue.claim("worker-1")
    [taken] = claim_within(queue, "worker-2")

    with caplog.at_level(logging.WARNING, logger="splice.queue.redis"):
        queue.ack("worker-1", lost)

    assert 1 == len(caplog.records)
    assert "by consumer worker-1 skipped: the entry is now owned by worker-2" in (
        caplog.records[0].message
    )
    assert [taken] == queue.renew("worker-2", [taken])
    queue.ack("worker-2", taken)
    assert [] == queue.claim("worker-3", wait=0.3)


def test_release_makes_entry_claimable(
    make_queue: MakeQueue, caplog: pytest.LogCaptureFixture
) -> None:
    queue = make_queue(lease=30.0)
    queue.enqueue("execution-1")
    [released] = queue.claim("worker-1")

    queue.release("worker-1", released)
    [entry] = queue.claim("worker-2")

    assert released.entry_id == entry.entry_id
    assert 2 == entry.deliveries
    assert [] == queue.renew("worker-1", [released])
    with caplog.at_level(logging.WARNING, logger="splice.queue.redis"):
        queue.ack("worker-1", released)
    assert 1 == len(caplog.records)
    queue.ack("worker-2", entry)
    assert [] == queue.claim("worker-3")


def test_release_by_other_consumer_is_noop(make_queue: MakeQueue) -> None:
    queue = make_queue(lease=30.0)
    queue.enqueue("execution-1")
    [entry] = queue.claim("worker-1")

    queue.release("worker-2", entry)

    assert [] == queue.claim("worker-3")
    assert [entry] == queue.renew("worker-1", [entry])


def test_released_entry_survives_other_lease(make_queue: MakeQueue) -> None:
    # A released entry's delivery time is 1970, so a queue with any lease takes it at once.
    releasing = make_queue(lease=0.2)
    claiming = make_queue(lease=3600.0)
    releasing.enqueue("execution-1")
    [entry] = releasing.claim("worker-1")

    releasing.release("worker-1", entry)

    assert ["execution-1"] == [e.execution_id for e in claiming.claim("worker-2")]


def test_entry_without_execution_is_skipped(
    make_queue: MakeQueue, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    queue = make_queue()
    queue.enqueue("execution-1")
    client = redis_server.client()
    foreign_id = client.xadd("splice:executions", {"job": "not from splice"})
    queue.enqueue("execution-2")

    with caplog.at_level(logging.ERROR, logger="splice.queue.redis"):
        entries = queue.claim("worker-1", limit=3)

    pending: Any = client.xpending_range("splice:executions", "workers", "-", "+", 10)
    client.close()
    assert ["execution-1", "execution-2"] == [entry.execution_id for entry in entries]
    assert 1 == len(caplog.records)
    assert f"queue entry {foreign_id} in stream splice:executions has no execution_id" in (
        caplog.records[0].message
    )
    assert foreign_id not in [item["message_id"] for item in pending]


def test_concurrent_consumers_share_entries(make_queue: MakeQueue) -> None:
    queue = make_queue()
    total = 300
    for n in range(total):
        queue.enqueue(f"execution-{n}")
    claimed: list[str] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def consume(consumer: str) -> None:
        try:
            while True:
                entries = queue.claim(consumer, limit=5, wait=0.2)
                if not entries:
                    return
                for entry in entries:
                    with lock:
                        claimed.append(entry.execution_id)
                    queue.ack(consumer, entry)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=consume, args=[f"worker-{n}"]) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert [] == errors
    assert [] == [item for item, count in Counter(claimed).items() if count > 1]
    assert {f"execution-{n}" for n in range(total)} == set(claimed)


def test_unreachable_redis_raises_queue_unavailable() -> None:
    port = free_port()  # nothing listens there
    queue = RedisQueue(f"redis://:secret-password@127.0.0.1:{port}/0", socket_timeout=1.0)

    with pytest.raises(QueueUnavailable) as raised:
        queue.claim("worker-1")

    queue.close()
    assert isinstance(raised.value, OperatorError)
    assert f"127.0.0.1:{port}" in str(raised.value)
    assert "secret-password" not in str(raised.value)


def test_redact_url_hides_passwords() -> None:
    assert "redis://user:***@host:6380/1" == redact_url("redis://user:pw@host:6380/1")
    assert "redis://:***@host/0" == redact_url("redis://:pw@host/0")
    assert "redis://host/0?password=***&db=1" == redact_url("redis://host/0?password=pw&db=1")
    assert "redis://host:6380/0" == redact_url("redis://host:6380/0")


def test_queue_recovers_after_redis_restart(
    make_queue: MakeQueue, redis_server: RedisServer
) -> None:
    queue = make_queue()
    queue.enqueue("execution-1")
    [entry] = queue.claim("worker-1")
    redis_server.stop()

    with pytest.raises(QueueUnavailable, match=f"127.0.0.1:{redis_server.port}"):
        queue.renew("worker-1", [entry])
    with pytest.raises(QueueUnavailable):
        queue.ack("worker-1", entry)

    redis_server.start()
    assert [entry] == queue.renew("worker-1", [entry])
    queue.ack("worker-1", entry)
    assert [] == queue.claim("worker-2")


def test_redis_restart_under_load_loses_nothing(
    make_queue: MakeQueue, redis_server: RedisServer
) -> None:
    total = 200
    queue = make_queue(lease=0.5)
    for n in range(total):
        queue.enqueue(f"execution-{n}")
    # This consumer dies holding its entries, which come back after the lease.
    abandoned = queue.claim("crashed-worker", limit=20)
    assert 20 == len(abandoned)

    acked: list[str] = []  # executions whose ack returned
    redelivered_after_ack: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    unavailable = Counter[str]()
    errors: list[BaseException] = []

    def retry(operation: Callable[[], object], consumer: str) -> object:
        while True:
            try:
                return operation()
            except QueueUnavailable:
                with lock:
                    unavailable[consumer] += 1
                time.sleep(0.02)

    def consume(consumer: str) -> None:
        try:
            while not stop.is_set():
                entries = retry(lambda: queue.claim(consumer, limit=3, wait=0.1), consumer)
                assert isinstance(entries, list)
                for entry in entries:
                    with lock:
                        if entry.execution_id in acked:
                            redelivered_after_ack.append(entry.execution_id)
                    time.sleep(0.002)  # the execution's work
                    # An ack whose reply was lost in the crash is repeated. The repeat finds
                    # the entry gone and changes nothing.
                    retry(functools.partial(queue.ack, consumer, entry), consumer)
                    with lock:
                        acked.append(entry.execution_id)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=consume, args=[f"worker-{n}"]) for n in range(3)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 5.0
    while len(acked) < 60 and time.monotonic() < deadline:
        time.sleep(0.005)
    acked_before_restart = len(acked)

    redis_server.restart(kill=True)

    deadline = time.monotonic() + 15.0
    while len(set(acked)) < total and time.monotonic() < deadline and not errors:
        time.sleep(0.02)
    stop.set()
    for thread in threads:
        thread.join(timeout=10)

    assert [] == errors
    assert 0 < acked_before_restart < total
    assert sum(unavailable.values()) > 0, "the restart was not observed by any consumer"
    assert {f"execution-{n}" for n in range(total)} == set(acked)
    assert [] == [item for item, count in Counter(acked).items() if count > 1]
    assert [] == redelivered_after_ack
    client = redis_server.client()
    pending: Any = client.xpending("splice:executions", "workers")
    assert 0 == client.xlen("splice:executions")
    assert 0 == pending["pending"]
    client.close()
