"""Workers: take queued executions, run them in the sandbox, and finish their entries.

A worker runs up to ``concurrency`` executions at once, each on a thread of its own that
drives one sandboxed child. A heartbeat thread renews the leases of everything the worker
holds (queue entries, execution records, concurrency slots) and picks up cancel requests.
An entry is acknowledged only after the execution's final record is committed, so a worker
killed at any moment leaves its executions to another worker, which resumes each from its
last checkpointed step once the lease expires.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import case, func, select, update

from splice.engine.events import Event, StepRunEvent
from splice.engine.supervisor import ExecutionOutcome, Supervisor
from splice.engine.values import decode
from splice.errors import SpliceError, StoreError
from splice.queue import Queue, QueueEntry
from splice.service.completions import RESPOND_ACTION, TERMINAL, Completion, Completions
from splice.service.instances import Instances
from splice.service.intake import decode_trigger
from splice.service.slots import Slots
from splice.store import RecordStore
from splice.store.records import utc
from splice.store.tables import executions

logger = logging.getLogger(__name__)

PARK_RETRY = 0.05  # seconds between attempts to take a slot for a parked execution


def worker_name() -> str:
    """A consumer name unique to this process: host, pid and a random suffix."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass
class _Held:
    entry: QueueEntry
    running: bool = False
    cancel: threading.Event = field(default_factory=threading.Event)
    limit: int | None = None  # the flow's concurrency limit, when it has one
    instance_id: str = ""
    flow: str = ""
    trigger: Any = None  # (trigger mapping, stored webhook request) as decode_trigger gives
    response: Any = None  # the output of a webhook.respond step
    response_in_store: bool = False  # too large to keep here: read it from the records


class Worker:
    """Claims queue entries and runs their executions until stopped."""

    def __init__(
        self,
        *,
        store: RecordStore,
        queue: Queue,
        instances: Instances,
        supervisor: Supervisor,
        slots: Slots,
        completions: Completions | None = None,
        concurrency: int = 8,
        lease: float = 30.0,
        heartbeat: float | None = None,
        name: str | None = None,
        clock: Any = time.time,
    ) -> None:
        self.store = store
        self.queue = queue
        self.instances = instances
        self.supervisor = supervisor
        self.slots = slots
        self.completions = completions
        self.concurrency = concurrency
        self.lease = lease
        self.heartbeat = heartbeat if heartbeat is not None else lease / 3
        self.name = name or worker_name()
        self.clock = clock
        self._held: dict[str, _Held] = {}
        self._lock = threading.Condition()
        self._stopping = threading.Event()
        self._closed = threading.Event()
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="splice-execution")
        self._threads: list[threading.Thread] = []

    # -- running --------------------------------------------------------------------------

    def start(self) -> None:
        for target, name in ((self._claim_loop, "claim"), (self._heartbeat_loop, "heartbeat")):
            thread = threading.Thread(target=target, name=f"splice-worker-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        logger.info("worker %s started: %d executions at once", self.name, self.concurrency)

    def stop(self, *, drain: float = 60.0) -> bool:
        """Stop claiming, let running executions finish for up to ``drain`` seconds.

        Returns True when every execution finished. Parked entries (waiting for a
        concurrency slot) go back to the queue at once. Executions still running after the
        drain are left to their leases: once the process exits, another worker resumes them.
        """
        self._stopping.set()
        deadline = time.monotonic() + drain
        with self._lock:
            parked = [held for held in self._held.values() if not held.running]
            for held in parked:
                del self._held[held.entry.execution_id]
            self._lock.notify_all()
        for held in parked:
            self._release(held.entry)
        with self._lock:
            while self._held and time.monotonic() < deadline:
                self._lock.wait(min(0.1, max(0.0, deadline - time.monotonic())))
            drained = not self._held
        self._closed.set()  # ends the heartbeat even when executions are still running
        for thread in self._threads:
            thread.join(timeout=5)
        self._pool.shutdown(wait=drained)
        if not drained:
            logger.warning(
                "worker %s stopped with %d executions still running; they resume on another "
                "worker once their leases expire",
                self.name,
                len(self._held),
            )
        return drained

    def cancel(self, execution_id: str) -> bool:
        """Stop an execution this worker is running now; False when it holds none such."""
        with self._lock:
            held = self._held.get(execution_id)
        if held is None:
            return False
        held.cancel.set()
        return True

    def running(self) -> list[str]:
        with self._lock:
            return [key for key, held in self._held.items() if held.running]

    # -- claiming -------------------------------------------------------------------------

    def _claim_loop(self) -> None:
        backoff = 0.1
        while not self._stopping.is_set():
            try:
                self._retry_parked()
                with self._lock:
                    running = sum(1 for held in self._held.values() if held.running)
                    room = min(self.concurrency - running, 2 * self.concurrency - len(self._held))
                    if room <= 0:
                        self._lock.wait(PARK_RETRY)
                        continue
                    parked = len(self._held) - running
                wait = PARK_RETRY if parked else 0.5
                for entry in self.queue.claim(self.name, limit=room, wait=wait):
                    self._admit(entry)
                backoff = 0.1
            except Exception as error:
                if self._stopping.is_set():
                    return
                logger.warning("worker %s could not claim executions: %s", self.name, error)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def _admit(self, entry: QueueEntry) -> None:
        """Decide what to do with a claimed entry: finish it, park it, drop it or run it."""
        execution_id = entry.execution_id
        with self.store.engine.connect() as connection:
            record = connection.execute(
                select(
                    executions.c.status,
                    executions.c.worker,
                    executions.c.lease_until,
                    executions.c.cancel_requested,
                    executions.c.instance_id,
                    executions.c.flow,
                    executions.c.trigger,
                    executions.c.trigger_blob,
                ).where(executions.c.id == execution_id)
            ).first()
        if record is None:
            logger.warning(
                "queue entry %s names execution %s, which has no record (pruned?); "
                "acknowledging it",
                entry.entry_id,
                execution_id,
            )
            self.queue.ack(self.name, entry)
            return
        if record.status in TERMINAL:
            self.queue.ack(self.name, entry)  # a worker died between its final record and ack
            return
        if record.cancel_requested and record.status == "queued":
            self._cancel_queued(entry)
            return
        if (
            record.status == "running"
            and record.worker not in (None, self.name)
            and record.lease_until is not None
            and record.lease_until >= utc(self.clock())
        ):
            # Another worker holds it (a duplicate entry, or its lease outlived the entry's):
            # leave the entry unrenewed, so it comes back once that lease has run out.
            logger.info(
                "execution %s is held by worker %s; leaving it", execution_id, record.worker
            )
            return
        if record.instance_id is None:
            self._fail(entry, "the execution has no instance, so a worker cannot run it")
            return
        try:
            loaded = self.instances.load(record.instance_id)
            limit = loaded.integration.flows[record.flow].concurrency
        except (SpliceError, KeyError) as error:
            self._fail(entry, f"its instance could not be loaded: {error}")
            return
        held = _Held(
            entry,
            limit=limit,
            instance_id=record.instance_id,
            flow=record.flow,
            trigger=decode_trigger(record.trigger, record.trigger_blob),
        )
        with self._lock:
            self._held[execution_id] = held
        if limit is None or self.slots.acquire(
            record.instance_id, record.flow, limit, execution_id
        ):
            self._launch(held)

    def _retry_parked(self) -> None:
        with self._lock:
            parked = [held for held in self._held.values() if not held.running]
        for held in parked:
            if self._stopping.is_set():
                return
            assert held.limit is not None
            if self.slots.acquire(held.instance_id, held.flow, held.limit, held.entry.execution_id):
                self._launch(held)

    def _launch(self, held: _Held) -> None:
        with self._lock:
            held.running = True
        self._pool.submit(self._execute, held)

    # -- executing ------------------------------------------------------------------------

    def _execute(self, held: _Held) -> None:
        entry = held.entry
        execution_id = entry.execution_id
        finished = False
        try:
            if not self._take(execution_id):
                self._after_lost_take(entry)
                return
            outcome = self._run(held)
            finished = True
            if held.limit is not None:
                self.slots.release(execution_id)
            self.queue.ack(self.name, entry)
            if self.completions is not None:
                self.completions.publish(_completion(outcome, held))
        except StoreError as error:
            # The records or the queue are unreachable: the lease brings the entry back.
            logger.error(
                "worker %s left execution %s to be retried: %s", self.name, execution_id, error
            )
        except SpliceError as error:
            # Bad input that no retry fixes (a config value, a definition): record it.
            finished = True
            self._finish_unrun(entry, "failed", type(error).__name__, str(error))
        except Exception:
            logger.exception("worker %s failed on execution %s", self.name, execution_id)
        finally:
            with self._lock:
                self._held.pop(execution_id, None)
                self._lock.notify_all()
            if not finished and held.limit is not None:
                try:
                    self.slots.release(execution_id)
                except Exception:  # its lease frees it
                    logger.debug("slot of %s left to its lease", execution_id)

    def _take(self, execution_id: str) -> bool:
        """Mark the execution running on this worker, unless another live worker holds it."""
        now = utc(self.clock())
        table = executions
        with self.store.engine.begin() as connection:
            taken = connection.execute(
                update(table)
                .where(
                    (table.c.id == execution_id)
                    & table.c.status.in_(("queued", "running"))
                    & (
                        table.c.worker.is_(None)
                        | (table.c.worker == self.name)
                        | table.c.lease_until.is_(None)
                        | (table.c.lease_until < now)
                    )
                )
                .values(
                    resumes=table.c.resumes + case((table.c.status == "running", 1), else_=0),
                    status="running",
                    worker=self.name,
                    lease_until=utc(self.clock() + self.lease),
                    started_at=func.coalesce(table.c.started_at, now),
                )
            ).rowcount
        return taken == 1

    def _after_lost_take(self, entry: QueueEntry) -> None:
        with self.store.engine.connect() as connection:
            status = connection.execute(
                select(executions.c.status).where(executions.c.id == entry.execution_id)
            ).scalar()
        if status in TERMINAL or status is None:
            self.queue.ack(self.name, entry)

    def _run(self, held: _Held) -> ExecutionOutcome:
        execution_id = held.entry.execution_id
        loaded = self.instances.load(held.instance_id)
        trigger, stored = held.trigger
        request = None
        if stored is not None:
            from splice.engine.requests import WebhookRequest

            request = WebhookRequest(
                method=stored.method,
                headers=stored.headers,
                query_string=stored.query_string,
                body=stored.body,
                body_blob=stored.body_blob,
            )
        held.response = None
        # A respond step checkpointed before a resume sends no event: read it from the records.
        held.response_in_store = _responds(loaded.integration.flows[held.flow].steps)

        def watch(event: Event) -> None:
            # The answer of a synchronous webhook, handed to a waiter in this process.
            if (
                isinstance(event, StepRunEvent)
                and event.action == RESPOND_ACTION
                and event.status == "succeeded"
                and event.output is not None
                and event.output.data is not None
            ):
                held.response = decode(event.output.data, event.output.encoding)
                held.response_in_store = False

        return self.supervisor.run_execution(
            execution_id,
            loaded.integration,
            flow=held.flow,
            config=loaded.config,
            trigger=trigger,
            request=request,
            cancel=held.cancel,
            on_event=watch,
        )

    def _cancel_queued(self, entry: QueueEntry) -> None:
        self._finish_unrun(
            entry, "cancelled", "Cancelled", "cancelled on request before it started"
        )

    def _fail(self, entry: QueueEntry, reason: str) -> None:
        self._finish_unrun(entry, "failed", "ExecutionError", reason)

    def _finish_unrun(self, entry: QueueEntry, status: str, error_type: str, message: str) -> None:
        if status == "failed":
            logger.error("execution %s failed before it started: %s", entry.execution_id, message)
        now = utc(self.clock())
        with self.store.engine.begin() as connection:
            connection.execute(
                update(executions)
                .where(
                    (executions.c.id == entry.execution_id)
                    & executions.c.status.in_(("queued", "running"))
                )
                .values(status=status, ended_at=now, error_type=error_type, error_message=message)
            )
        self.queue.ack(self.name, entry)
        if self.completions is not None:
            self.completions.publish(
                Completion(entry.execution_id, status, error_type=error_type, error_message=message)
            )

    def _release(self, entry: QueueEntry) -> None:
        try:
            self.queue.release(self.name, entry)
        except Exception as error:  # its lease brings it back
            logger.warning("could not give back entry %s: %s", entry.entry_id, error)

    # -- heartbeat ------------------------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        # Runs on through a drain, so running executions keep their leases.
        while True:
            # Waits on _closed, which stop() sets only after the drain, so that a draining
            # worker still beats once per interval instead of in a busy loop.
            if self._closed.wait(self.heartbeat):
                return
            with self._lock:
                idle = not self._held
            if self._stopping.is_set() and idle:
                return
            try:
                self.beat()
            except Exception as error:
                logger.warning("worker %s could not renew its leases: %s", self.name, error)

    def beat(self) -> None:
        """Renew every lease this worker holds and pick up cancel requests."""
        with self._lock:
            held = list(self._held.values())
        if not held:
            return
        self.queue.renew(self.name, [item.entry for item in held])
        running = [item.entry.execution_id for item in held if item.running]
        if not running:
            return
        with self.store.engine.begin() as connection:
            # NOTE: a worker whose heartbeats stalled past the lease (a paused VM) keeps running
            # an execution that another worker has taken over, and both write its records.
            # Stopping it needs an abandon path in the supervisor that writes no final record.
            renewed = connection.execute(
                update(executions)
                .where(executions.c.id.in_(running) & (executions.c.worker == self.name))
                .values(lease_until=utc(self.clock() + self.lease))
            ).rowcount
            if renewed < len(running):
                logger.warning(
                    "worker %s lost the lease of %d running executions to another worker",
                    self.name,
                    len(running) - renewed,
                )
            cancelled = {
                row[0]
                for row in connection.execute(
                    select(executions.c.id).where(
                        executions.c.id.in_(running) & executions.c.cancel_requested
                    )
                )
            }
        self.slots.renew([item.entry.execution_id for item in held if item.limit and item.running])
        for item in held:
            if item.entry.execution_id in cancelled:
                item.cancel.set()


def _responds(steps: Any) -> bool:
    """Whether any of the steps, at any depth, is a webhook.respond action."""
    for step in steps:
        if getattr(step, "action", None) == RESPOND_ACTION:
            return True
        nested = list(getattr(step, "steps", None) or [])
        for branch in getattr(step, "branch", None) or []:
            nested.extend(branch.steps)
        nested.extend(getattr(step, "else_", None) or [])
        if nested and _responds(nested):
            return True
    return False


def _completion(outcome: ExecutionOutcome, held: _Held) -> Completion:
    return Completion(
        execution_id=outcome.execution_id,
        status=outcome.status,
        error_type=outcome.error_type,
        error_message=outcome.error_message,
        failed_step=outcome.failed_step,
        result=outcome.result,
        response=held.response if isinstance(held.response, dict) else None,
        from_store=held.response_in_store,
    )
