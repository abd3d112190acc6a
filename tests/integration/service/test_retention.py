"""Retention prunes old executions with their step runs, logs and blobs, and old delivery ids."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import func, select

from splice.service.retention import Retention
from splice.store.tables import executions, logs, step_runs, webhook_deliveries

DAY = 86_400.0
SPILL_THRESHOLD = 1024

DEFINITION = """
    key: archive
    name: Archive
    flows:
      big:
        trigger: {type: manual}
        steps:
          - {id: note, action: log.write, inputs: {message: "making a big value"}}
          - id: make
            action: code.run
            inputs:
              source: |
                def run(context, size):
                    return "x" * size
              args: {size: "{{ trigger.body }}"}
      hook:
        trigger: {type: webhook, delivery_id: {header: X-Delivery-Id}}
        steps:
          - id: size
            action: code.run
            inputs:
              source: |
                def run(context, raw):
                    print("got", len(raw), "bytes")
                    return len(raw)
              args: {raw: "{{ trigger.raw }}"}
      slow:
        trigger: {type: manual}
        concurrency: 1
        steps:
          - id: nap
            action: code.run
            inputs:
              source: |
                import time
                def run(context):
                    print("napping", flush=True)
                    time.sleep(120)
"""


class Clock:
    """A clock that tests move by hand; it starts at the real time."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def _count(service, table, execution_id: str | None = None) -> int:
    query = select(func.count()).select_from(table)
    if execution_id is not None:
        column = table.c.id if table is executions else table.c.execution_id
        query = query.where(column == execution_id)
    with service.runtime.store.engine.connect() as connection:
        return int(connection.execute(query).scalar_one())


def _blob_keys(service, execution_id: str) -> list[str]:
    """The blob keys that an execution's records point at: result, outputs, request body."""
    record = service.runtime.store.get_execution(execution_id)
    keys = [record.result_blob, record.trigger_blob]
    keys += [run.output_blob for run in service.runtime.store.step_runs(execution_id)]
    return [key for key in keys if key is not None]


def _start(service, flow: str, value: Any) -> str:
    answer = service.client.post(
        f"/api/instances/acme/archive/flows/{flow}/executions", json={"input": value}
    )
    assert answer.status_code == 202, answer.text
    return str(answer.json()["execution_id"])


def _post_hook(service, url: str, delivery: str, body: bytes) -> dict[str, Any]:
    answer = service.client.post(
        url,
        content=body,
        headers={"content-type": "application/octet-stream", "x-delivery-id": delivery},
    )
    assert answer.status_code == 202, answer.text
    return dict(answer.json())


def _wait_for_log(service, execution_id: str, message: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(line["message"] == message for line in service.runtime.store.logs(execution_id)):
            return
        time.sleep(0.05)
    raise AssertionError(f"execution {execution_id} never logged {message!r}")


def _retention(service, clock: Any, *, retention: float, delivery_window: float) -> Retention:
    return Retention(
        service.runtime.store,
        service.runtime.blobs,
        retention=retention,
        delivery_window=delivery_window,
        clock=clock,
    )


def test_prune_removes_old_executions_and_blobs(start_service, definition):
    service = start_service(SPLICE_SPILL_THRESHOLD=str(SPILL_THRESHOLD))
    urls = service.deploy(definition(DEFINITION)).webhooks
    body = bytes(range(256)) * 20  # larger than the spill threshold

    old_big = _start(service, "big", 5000)
    old_hook = _post_hook(service, urls["hook"], "d-old", body)["execution_id"]
    running = _start(service, "slow", None)
    queued = _start(service, "slow", None)  # waits for the one concurrency slot
    for execution_id in (old_big, old_hook):
        assert service.wait_for(execution_id).status == "succeeded"
    _wait_for_log(service, running, "napping")
    cutoff = time.time()  # the executions above were created, and two ended, before this

    new_big = _start(service, "big", 6000)
    new_hook = _post_hook(service, urls["hook"], "d-new", body)["execution_id"]
    for execution_id in (new_big, new_hook):
        assert service.wait_for(execution_id).status == "succeeded"

    old_blobs = _blob_keys(service, old_big) + _blob_keys(service, old_hook)
    new_blobs = _blob_keys(service, new_big) + _blob_keys(service, new_hook)
    assert f"executions/{old_hook}/request-body" in old_blobs
    assert any(key.startswith(f"executions/{old_big}/") for key in old_blobs)
    assert f"executions/{new_hook}/request-body" in new_blobs
    for key in old_blobs + new_blobs:
        assert service.runtime.blobs.exists(key), key
    for execution_id in (old_big, old_hook):
        assert _count(service, step_runs, execution_id) > 0
        assert _count(service, logs, execution_id) > 0

    retention = 30 * DAY
    try:
        pruned = _retention(
            service, lambda: cutoff + retention, retention=retention, delivery_window=60 * DAY
        ).prune_now()
        kept = {
            execution_id: service.runtime.store.get_execution(execution_id)
            for execution_id in (running, queued)
        }
    finally:
        for execution_id in (running, queued):
            service.client.post(f"/api/executions/{execution_id}/cancel")

    assert pruned.executions == 2
    assert pruned.blobs >= len(old_blobs)
    assert pruned.deliveries == 0
    for execution_id in (old_big, old_hook):
        assert service.runtime.store.get_execution(execution_id) is None
        assert _count(service, executions, execution_id) == 0
        assert _count(service, step_runs, execution_id) == 0
        assert _count(service, logs, execution_id) == 0
    for key in old_blobs:
        assert not service.runtime.blobs.exists(key), key
    for execution_id in (new_big, new_hook):
        assert service.runtime.store.get_execution(execution_id).status == "succeeded"
        assert _count(service, step_runs, execution_id) > 0
    for key in new_blobs:
        assert service.runtime.blobs.exists(key), key
    assert kept[running].status == "running"
    assert kept[queued].status == "queued"
    assert service.client.get(f"/api/executions/{old_big}").status_code == 404
    assert service.wait_for(running).status == "cancelled"


def test_prune_keeps_unended_executions(start_service, definition):
    service = start_service(worker=False)
    service.deploy(definition(DEFINITION))
    queued = _start(service, "big", 10)
    far_future = time.time() + 365 * DAY
    pruned = _retention(service, lambda: far_future, retention=DAY, delivery_window=DAY).prune_now()
    assert pruned.executions == 0
    assert service.runtime.store.get_execution(queued).status == "queued"


def test_pruned_delivery_id_starts_a_new_execution(start_service, definition):
    clock = Clock()
    window = 3 * DAY
    service = start_service(
        worker=False, clock=clock, SPLICE_WEBHOOK_DELIVERY_WINDOW=str(int(window))
    )
    url = service.deploy(definition(DEFINITION)).webhooks["hook"]

    first = _post_hook(service, url, "d-1", b"one")
    repeated = _post_hook(service, url, "d-1", b"one")
    assert repeated == {"execution_id": first["execution_id"], "duplicate": True}
    clock.offset = 2 * DAY
    newer = _post_hook(service, url, "d-2", b"two")
    assert _count(service, webhook_deliveries) == 2

    moment = clock() + DAY  # d-1 is older than the window, d-2 is not
    pruned = _retention(
        service, lambda: moment, retention=30 * DAY, delivery_window=window
    ).prune_now()
    assert pruned.deliveries == 1
    assert _count(service, webhook_deliveries) == 1

    again = _post_hook(service, url, "d-1", b"one")
    assert "duplicate" not in again
    assert again["execution_id"] != first["execution_id"]
    still = _post_hook(service, url, "d-2", b"two")
    assert still == {"execution_id": newer["execution_id"], "duplicate": True}
    assert _count(service, executions) == 3


def test_delivery_id_past_the_window_starts_anew(start_service, definition):
    """A delivery id seen before the window starts a new execution even before pruning."""
    clock = Clock()
    service = start_service(worker=False, clock=clock, SPLICE_WEBHOOK_DELIVERY_WINDOW="3600")
    url = service.deploy(definition(DEFINITION)).webhooks["hook"]
    first = _post_hook(service, url, "d-1", b"one")
    clock.offset = 3600 + 60
    again = _post_hook(service, url, "d-1", b"one")
    assert "duplicate" not in again
    assert again["execution_id"] != first["execution_id"]
    repeated = _post_hook(service, url, "d-1", b"one")
    assert repeated == {"execution_id": again["execution_id"], "duplicate": True}
