"""Workers: take queued executions, run them in the sandbox, and finish their entries.

A worker runs up to ``concurrency`` executions at once, each on a thread of its own that
drives one sandboxed child. A heartbeat thread renews every lease the worker owns (queue
entries, execution records, concurrency slots) and picks up cancel requests.
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
    """Return a queue consumer name unique to this process: host, pid and a random suffix."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass
class _Claim:
    """A queue entry this worker claimed, parked for a concurrency slot or running."""

    entry: QueueEntry
    running: bool = False
    cancel: threading.Event = field(default_factory=threading.Event)
    limit: int | None = None  # the flow's concurrency limit, when it has one
    instance_id: str = ""
    flow: str = ""
    trigger: Any = None  # (trigger mapping, stored webhook request) from decode_trigger
    response: Any = None  # the output of a webhook.respond step
    response_in_store: bool = False  # True: read the response from the step run records


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
        self._claims: dict[str, _Claim] = {}
        self._lock = threading.Condition()
        self._stopping = threading.Event()
        self._closed = threading.Event()
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="splice-execution")
        self._threads: list[threading.Thread] = []

    # -- running --------------------------------------------------------------------------

    def start(self) -> None:
        """Start the claim and heartbeat threads."""
        for target, name in ((self._claim_loop, "claim"), (self._heartbeat_loop, "heartbeat")):
            thread = threading.Thread(target=target, name=f"splice-worker-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        logger.info("worker %s started: %d executions at once", self.name, self.concurrency)

    def stop(self, *, drain: float = 60.0) -> bool:
        """Stop claiming and let running executions finish for up to ``drain`` seconds.

        Returns True when every execution finished. Parked entries (waiting for a
        concurrency slot) go back to the queue at once. Executions still running after the
        drain are left to their leases: once the process exits, another worker resumes them.
        """
        self._stopping.set()
        deadline = time.monotonic() + drain
        with self._lock:
            parked = [claim for claim in self._claims.values() if not claim.running]
            for claim in parked:
                del self._claims[claim.entry.execution_id]
            self._lock.notify_all()
        for claim in parked:
            self._release(claim.entry)
        with self._lock:
            while self._claims and time.monotonic() < deadline:
                self._lock.wait(min(0.1, max(0.0, deadline - time.monotonic())))
            drained = not self._claims
        self._closed.set()  # ends the heartbeat even when executions are still running
        for thread in self._threads:
            thread.join(timeout=5)
        self._pool.shutdown(wait=drained)
        if not drained:
            logger.warning(
                "worker %s stopped with %d executions still running; they resume on another "
                "worker once their leases expire",
                self.name,
                len(self._claims),
            )
        return drained

    def cancel(self, execution_id: str) -> bool:
        """Signal a claimed execution to stop; return False when this worker has not claimed it."""
        with self._lock:
            claim = self._claims.get(execution_id)
        if claim is None:
            return False
        claim.cancel.set()
        return True

    def running(self) -> list[str]:
        """Return the ids of the executions this worker is running now."""
        with self._lock:
            return [key for key, claim in self._claims.items() if claim.running]

    # -- claiming -------------------------------------------------------------------------

    def _claim_loop(self) -> None:
        backoff = 0.1
        while not self._stopping.is_set():
            try:
                self._retry_parked()
                with self._lock:
                    running = sum(1 for claim in self._claims.values() if claim.running)
                    # At most `concurrency` running and as many again parked for a slot.
                    room = min(self.concurrency - running, 2 * self.concurrency - len(self._claims))
                    if room <= 0:
                        self._lock.wait(PARK_RETRY)
                        continue
                    parked = len(self._claims) - running
                wait = PARK_RETRY if parked else 0.5
                for entry in self.queue.claim(self.name, limit=room, wait=wait):
                    self._admit(entry)
                backoff = 0.1
            except Exception as error:
                if self._stopping.is_set():
                    return
                logger.warning(
                    "worker %s failed to claim executions, retrying in %.1f s: %s",
                    self.name,
                    backoff,
                    error,
                )
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def _admit(self, entry: QueueEntry) -> None:
        """Act on a claimed entry: acknowledge, cancel, fail, skip, park or run it."""
        execution_id = entry.execution_id
        record = self._read_record(execution_id)
        if record is None:
            logger.warning(
                "queue entry %s names execution %s, which has no record (pruned?); "
                "acknowledging the entry",
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
            # Another live worker runs it (a duplicate entry, or its lease outlived the
            # entry's). Leave the entry unrenewed, so it comes back once that lease expires.
            logger.info(
                "execution %s is running on worker %s; leaving it", execution_id, record.worker
            )
            return
        if record.instance_id is None:
            self._fail(entry, "the execution has no instance, so a worker cannot run it")
            return

        try:
            loaded = self.instances.load(record.instance_id)
            limit = loaded.integration.flows[record.flow].concurrency
        except (SpliceError, KeyError) as error:
            self._fail(
                entry,
                f"instance {record.instance_id} or its flow {record.flow!r} could not be "
                f"loaded: {error}",
            )
            return

        claim = _Claim(
            entry,
            limit=limit,
            instance_id=record.instance_id,
            flow=record.flow,
            trigger=decode_trigger(record.trigger, record.trigger_blob),
        )
        with self._lock:
            # stop() gives parked entries back under this lock, so register none after it.
            stopping = self._stopping.is_set()
            if not stopping:
                self._claims[execution_id] = claim
        if stopping:
            self._release(entry)
            return
        if limit is None or self.slots.acquire(
            record.instance_id, record.flow, limit, execution_id
        ):
            self._launch(claim)

    def _read_record(self, execution_id: str) -> Any:
        """Read the execution fields that decide what to do with its entry, or None."""
        with self.store.engine.connect() as connection:
            return connection.execute(
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

    def _retry_parked(self) -> None:
        """Launch each parked execution whose flow now has a free concurrency slot."""
        with self._lock:
            parked = [claim for claim in self._claims.values() if not claim.running]
        for claim in parked:
            if self._stopping.is_set():
                return
            assert claim.limit is not None
            execution_id = claim.entry.execution_id
            if self.slots.acquire(claim.instance_id, claim.flow, claim.limit, execution_id):
                self._launch(claim)

    def _launch(self, claim: _Claim) -> None:
        """Mark the claim running and run its execution on the pool."""
        execution_id = claim.entry.execution_id
        with self._lock:
            # stop() may have given a parked entry back to the queue since the slot was taken.
            still_claimed = self._claims.get(execution_id) is claim
            if still_claimed:
                claim.running = True
        if not still_claimed:
            if claim.limit is not None:
                self._release_slot(execution_id)
            return
        self._pool.submit(self._execute, claim)

    # -- executing ------------------------------------------------------------------------

    def _execute(self, claim: _Claim) -> None:
        """Run one claimed execution, then acknowledge its entry and free its slot.

        Every error is logged here, because the pool would keep it in a future that is never read.
        """
        entry = claim.entry
        execution_id = entry.execution_id
        slot_released = claim.limit is None
        try:
            if not self._mark_running(execution_id):
                self._ack_if_ended(entry)
                return
            outcome = self._run(claim)
            if claim.limit is not None:
                self.slots.release(execution_id)
                slot_released = True
            self.queue.ack(self.name, entry)
            if self.completions is not None:
                self.completions.publish(_completion(outcome, claim))
        except StoreError as error:
            # The records or the queue are unreachable: the lease brings the entry back.
            logger.error(
                "worker %s left execution %s to be retried: %s", self.name, execution_id, error
            )
        except SpliceError as error:
            # Bad input that no retry fixes (a config value, a definition): record it.
            try:
                self._finish_unrun(entry, "failed", type(error).__name__, str(error))
            except Exception:
                logger.exception(
                    "worker %s failed to record the error of execution %s: %s",
                    self.name,
                    execution_id,
                    error,
                )
        except Exception:
            logger.exception("worker %s failed on execution %s", self.name, execution_id)
        finally:
            with self._lock:
                self._claims.pop(execution_id, None)
                self._lock.notify_all()
            if not slot_released:
                self._release_slot(execution_id)

    def _mark_running(self, execution_id: str) -> bool:
        """Mark the execution running on this worker, unless another live worker runs it.

        Counts a resume when the execution was already running on another worker whose
        lease expired. Returns whether this worker now owns the execution.
        """
        now = utc(self.clock())
        table = executions
        with self.store.begin() as connection:
            updated = connection.execute(
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
        return updated == 1

    def _ack_if_ended(self, entry: QueueEntry) -> None:
        """Acknowledge the entry when its execution ended or has no record any more.

        Otherwise another worker runs it, and the entry comes back if that worker dies.
        """
        with self.store.engine.connect() as connection:
            status = connection.execute(
                select(executions.c.status).where(executions.c.id == entry.execution_id)
            ).scalar()
        if status in TERMINAL or status is None:
            self.queue.ack(self.name, entry)

    def _run(self, claim: _Claim) -> ExecutionOutcome:
        """Run the execution in the sandbox and capture a webhook.respond output on the way."""
        execution_id = claim.entry.execution_id
        loaded = self.instances.load(claim.instance_id)
        trigger, stored = claim.trigger
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
        claim.response = None
        # A respond step checkpointed before a resume sends no event: read it from the records.
        claim.response_in_store = _has_respond_step(loaded.integration.flows[claim.flow].steps)

        def watch(event: Event) -> None:
            # Keep the response of a synchronous webhook for a waiter in this process.
            if (
                isinstance(event, StepRunEvent)
                and event.action == RESPOND_ACTION
                and event.status == "succeeded"
                and event.output is not None
                and event.output.data is not None
            ):
                claim.response = decode(event.output.data, event.output.encoding)
                claim.response_in_store = False

        return self.supervisor.run_execution(
            execution_id,
            loaded.integration,
            flow=claim.flow,
            config=loaded.config,
            trigger=trigger,
            request=request,
            cancel=claim.cancel,
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
        with self.store.begin() as connection:
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
        """Give an entry back to the queue; on failure its lease brings it back."""
        try:
            self.queue.release(self.name, entry)
        except Exception as error:
            logger.warning(
                "worker %s failed to give back entry %s of execution %s, so it returns when "
                "its lease expires: %s",
                self.name,
                entry.entry_id,
                entry.execution_id,
                error,
            )

    def _release_slot(self, execution_id: str) -> None:
        """Free the execution's concurrency slot; on failure the slot's lease frees it."""
        try:
            self.slots.release(execution_id)
        except Exception as error:
            logger.warning(
                "worker %s failed to free the slot of execution %s, so it frees when its "
                "lease expires: %s",
                self.name,
                execution_id,
                error,
            )

    # -- heartbeat ------------------------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        """Call beat() once per heartbeat interval until stopped and drained."""
        # Runs on through a drain, so running executions keep their leases.
        while True:
            # Waits on _closed, which stop() sets only after the drain, so that a draining
            # worker still beats once per interval instead of in a busy loop.
            if self._closed.wait(self.heartbeat):
                return
            with self._lock:
                idle = not self._claims
            if self._stopping.is_set() and idle:
                return
            try:
                self.beat()
            except Exception as error:
                logger.warning("worker %s failed to renew its leases: %s", self.name, error)

    def beat(self) -> None:
        """Renew every lease this worker owns and pick up cancel requests."""
        with self._lock:
            claims = list(self._claims.values())
        if not claims:
            return
        self.queue.renew(self.name, [claim.entry for claim in claims])
        running = [claim.entry.execution_id for claim in claims if claim.running]
        if not running:
            return
        with self.store.begin() as connection:
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
        self.slots.renew(
            [claim.entry.execution_id for claim in claims if claim.limit and claim.running]
        )
        for claim in claims:
            if claim.entry.execution_id in cancelled:
                claim.cancel.set()


def _has_respond_step(steps: Any) -> bool:
    """Return whether any of the steps, at any depth, runs the webhook.respond action."""
    for step in steps:
        if getattr(step, "action", None) == RESPOND_ACTION:
            return True
        nested = list(getattr(step, "steps", None) or [])
        for branch in getattr(step, "branch", None) or []:
            nested.extend(branch.steps)
        nested.extend(getattr(step, "else_", None) or [])
        if nested and _has_respond_step(nested):
            return True
    return False


def _completion(outcome: ExecutionOutcome, claim: _Claim) -> Completion:
    return Completion(
        execution_id=outcome.execution_id,
        status=outcome.status,
        error_type=outcome.error_type,
        error_message=outcome.error_message,
        failed_step=outcome.failed_step,
        result=outcome.result,
        response=claim.response if isinstance(claim.response, dict) else None,
        from_store=claim.response_in_store,
    )
