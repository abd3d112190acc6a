"""Completions: tell a waiter, such as a synchronous webhook, that an execution ended.

Within one process (`splice serve`) a worker hands the outcome to the waiter directly. Across
processes the worker publishes the execution id on a Redis channel and the API process
reads the outcome from the record store.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from splice.blobs import BlobStore
from splice.engine.values import decode
from splice.store import RecordStore
from splice.store.tables import executions, step_runs

logger = logging.getLogger(__name__)

CHANNEL = "splice:completions"
TERMINAL = ("succeeded", "failed", "cancelled")
RESPOND_ACTION = "webhook.respond"


@dataclass(frozen=True)
class Completion:
    """The end of an execution, with the response a synchronous webhook sends."""

    execution_id: str
    status: str  # succeeded | failed | cancelled
    error_type: str | None = None
    error_message: str | None = None
    failed_step: str | None = None
    result: Any = None
    response: dict[str, Any] | None = None  # the output of its webhook.respond step, if any
    from_store: bool = False  # True: the waiter reads the response from the step run records


def read_completion(store: RecordStore, blobs: BlobStore, execution_id: str) -> Completion | None:
    """Read the completion of an ended execution from its records; None while it runs."""
    with store.engine.connect() as connection:
        row = connection.execute(
            select(
                executions.c.status,
                executions.c.error_type,
                executions.c.error_message,
                executions.c.failed_step,
                executions.c.result,
                executions.c.result_encoding,
                executions.c.result_blob,
            ).where(executions.c.id == execution_id)
        ).first()
        if row is None or row.status not in TERMINAL:
            return None
        respond_output = connection.execute(
            select(step_runs.c.output, step_runs.c.output_encoding, step_runs.c.output_blob)
            .where(
                (step_runs.c.execution_id == execution_id)
                & (step_runs.c.action == RESPOND_ACTION)
                & (step_runs.c.status == "succeeded")
            )
            .order_by(step_runs.c.sequence.desc())
            .limit(1)
        ).first()
    result = _value(blobs, row.result, row.result_encoding, row.result_blob)
    response = _value(blobs, *respond_output) if respond_output is not None else None
    return Completion(
        execution_id=execution_id,
        status=row.status,
        error_type=row.error_type,
        error_message=row.error_message,
        failed_step=row.failed_step,
        result=result,
        response=response if isinstance(response, dict) else None,
    )


def _value(blobs: BlobStore, data: bytes | None, encoding: str | None, blob: str | None) -> Any:
    """Decode a recorded value, inline or from the blob store."""
    if blob is not None:
        return decode(blobs.read_bytes(blob), encoding or "msgpack")
    if data is None:
        return None
    return decode(data, encoding or "msgpack")


class Completions:
    """Waiters for executions of this process, resolved by :meth:`resolve`."""

    def __init__(self) -> None:
        self._waiters: dict[str, list[Future[Completion]]] = {}
        self._lock = threading.Lock()

    def wait_for(self, execution_id: str) -> Future[Completion]:
        """Return a future resolved when the execution ends; :meth:`forget` it if abandoned."""
        future: Future[Completion] = Future()
        with self._lock:
            self._waiters.setdefault(execution_id, []).append(future)
        return future

    def forget(self, execution_id: str, future: Future[Completion]) -> None:
        """Remove a waiter; safe to call after it was resolved."""
        with self._lock:
            waiters = self._waiters.get(execution_id)
            if waiters and future in waiters:
                waiters.remove(future)
                if not waiters:
                    del self._waiters[execution_id]

    def waiting(self, execution_id: str) -> bool:
        """Return whether anything in this process waits for the execution."""
        with self._lock:
            return execution_id in self._waiters

    def resolve(self, completion: Completion) -> None:
        """Resolve and remove every waiter of the completed execution."""
        with self._lock:
            waiters = self._waiters.pop(completion.execution_id, [])
        for future in waiters:
            if not future.done():
                future.set_result(completion)

    def publish(self, completion: Completion) -> None:
        """Tell the waiters that an execution ended; a worker calls this."""
        self.resolve(completion)

    def close(self) -> None:
        """Release resources; the in-process waiters need none."""


class RedisCompletions(Completions):
    """Completions across processes: published on a Redis channel, read from the records."""

    def __init__(self, url: str, reader: Callable[[str], Completion | None]) -> None:
        super().__init__()
        import redis

        self._client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
        self._reader = reader
        self._listener: threading.Thread | None = None
        self._stopping = threading.Event()

    def publish(self, completion: Completion) -> None:
        self.resolve(completion)
        try:
            self._client.publish(CHANNEL, completion.execution_id)
        except Exception as error:  # waiters fall back to reading the records
            logger.warning(
                "failed to publish the completion of execution %s; waiters in other "
                "processes read it from the records instead: %s",
                completion.execution_id,
                error,
            )

    def listen(self) -> None:
        """Start the thread that resolves this process's waiters from the channel."""
        if self._listener is None:
            self._listener = threading.Thread(
                target=self._listen, name="splice-completions", daemon=True
            )
            self._listener.start()

    def _listen(self) -> None:
        """Resolve waiters from the channel until closed, subscribing again after errors."""
        while not self._stopping.is_set():
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(CHANNEL)
                while not self._stopping.is_set():
                    message = pubsub.get_message(timeout=0.5)
                    if message is None:
                        continue
                    execution_id = message["data"].decode()
                    if self.waiting(execution_id):
                        completion = self._reader(execution_id)
                        if completion is not None:
                            self.resolve(completion)
            except Exception as error:
                logger.warning(
                    "completion channel %s interrupted, subscribing again in 0.5 s: %s",
                    CHANNEL,
                    error,
                )
                self._stopping.wait(0.5)
            finally:
                # Each subscription uses a connection of its own.
                pubsub.close()

    def close(self) -> None:
        """Stop the listener thread and close the Redis client."""
        self._stopping.set()
        if self._listener is not None:
            self._listener.join(timeout=2)
        self._client.close()
