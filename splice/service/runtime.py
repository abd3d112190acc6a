"""The runtime of a service process: its backends, built from settings, and its roles.

`splice serve` starts every role in one process, and `splice api`, `splice worker` and
`splice scheduler` start one each. The backends follow the settings: SQLite or PostgreSQL
records (SPLICE_DATABASE_URL), the database queue or Redis Streams (SPLICE_QUEUE_URL), and
the local blob folder or an S3-compatible store (SPLICE_BLOB_URL).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from splice.blobs import BlobStore, open_blob_store
from splice.queue import Queue
from splice.queue.database import DatabaseQueue
from splice.service.completions import Completion, Completions, RedisCompletions, read_completion
from splice.service.instances import Instances
from splice.service.intake import Intake
from splice.service.recovery import Recovery
from splice.service.relay import Relay
from splice.service.retention import Retention
from splice.service.scheduler import Scheduler
from splice.service.sealing import Sealer
from splice.service.slots import Slots
from splice.service.worker import Worker, worker_name
from splice.settings import Settings
from splice.store import RecordStore

logger = logging.getLogger(__name__)

OUTBOX_POLL = 0.5  # seconds between a relay's reads of the outbox
QUEUE_POLL = 0.05  # seconds between a worker's reads of the database queue


def open_blobs(settings: Settings) -> BlobStore:
    """Open the blob store that SPLICE_BLOB_URL names, else the local blob folder."""
    return open_blob_store(settings.service.blob_url, local_root=settings.blob_dir)


class Runtime:
    """Backends and roles of one service process; close it to stop every role."""

    def __init__(self, settings: Settings, *, clock: Any = time.time) -> None:
        service = settings.service
        self.settings = settings
        self.clock = clock
        self.name = worker_name()
        self.store = RecordStore.open(settings.database_url)
        try:
            self.blobs = open_blobs(settings)
            self.sealer = Sealer.from_settings(service.master_key, settings.data_dir)
            self.relayed = service.queue_url is not None
            # As the outbox, the database is read by relays. This process wakes its relay
            # after its own commits, and entries that other processes (the CLI) commit wait
            # for the next poll. As the queue, workers poll it for other processes' entries.
            self.outbox = DatabaseQueue(
                self.store,
                lease=service.lease,
                clock=clock,
                poll_interval=OUTBOX_POLL if self.relayed else QUEUE_POLL,
            )
            self.queue: Queue = self.outbox
            if service.queue_url is not None:
                from splice.queue.redis import RedisQueue

                self.queue = RedisQueue(service.queue_url, lease=service.lease)
                self.completions: Completions = RedisCompletions(
                    service.queue_url, self.read_completion
                )
            else:
                self.completions = Completions()
            self.instances = Instances(
                self.store, self.sealer, base_url=service.base_url(), clock=clock
            )
            self.intake = Intake(
                self.store, self.outbox, delivery_window=service.delivery_window, clock=clock
            )
            self.slots = Slots(self.store, lease=service.lease, clock=clock)
        except BaseException:
            self.store.close()
            raise
        self.worker: Worker | None = None
        self.scheduler: Scheduler | None = None
        self.relay: Relay | None = None
        self.retention: Retention | None = None
        self.recovery: Recovery | None = None
        self._sandbox: Any = None

    def read_completion(self, execution_id: str) -> Completion | None:
        """Read how the execution ended from the records; None while it has not ended."""
        return read_completion(self.store, self.blobs, execution_id)

    # -- roles ----------------------------------------------------------------------------

    def start_worker(
        self,
        *,
        concurrency: int | None = None,
        heartbeat: float | None = None,
        sandbox: Any = None,
    ) -> Worker:
        """Start this process's worker.

        Tests pass a running ``sandbox`` to share it. Otherwise a fork-server sandbox starts
        here and stops in :meth:`close`.
        """
        from splice.engine.supervisor import Supervisor

        service = self.settings.service
        if sandbox is None:
            from splice.sandbox.forkserver import ForkServerSandbox

            sandbox = self._sandbox = ForkServerSandbox(self.settings)
        supervisor = Supervisor(
            store=self.store, blobs=self.blobs, sandbox=sandbox, settings=self.settings
        )
        self.worker = Worker(
            store=self.store,
            queue=self.queue,
            instances=self.instances,
            supervisor=supervisor,
            slots=self.slots,
            completions=self.completions,
            concurrency=concurrency or service.worker_concurrency,
            lease=service.lease,
            heartbeat=heartbeat,
            name=self.name,
            clock=self.clock,
        )
        self.worker.start()
        return self.worker

    def start_scheduler(self) -> Scheduler:
        """Start the scheduler thread, ticking every SPLICE_SCHEDULE_INTERVAL seconds."""
        self.scheduler = Scheduler(
            self.store,
            self.intake,
            self.instances,
            interval=self.settings.service.schedule_interval,
            clock=self.clock,
        )
        self.scheduler.start()
        return self.scheduler

    def start_relay(self) -> Relay | None:
        """Start relaying the outbox to Redis; return None when the database is the queue."""
        if not self.relayed:
            return None
        self.relay = Relay(self.outbox, self.queue, name=f"relay-{self.name}")
        self.relay.start()
        return self.relay

    def start_recovery(self) -> Recovery:
        """Start the pass that queues again the executions a queue lost.

        Its interval and staleness limit are SPLICE_REQUEUE_AFTER seconds or twice the
        lease, whichever is longer.
        """
        self.recovery = Recovery(
            self.store,
            self.outbox,
            stale_after=max(self.settings.service.requeue_after, 2 * self.settings.service.lease),
            clock=self.clock,
        )
        self.recovery.start()
        return self.recovery

    def start_retention(self) -> Retention:
        """Start the thread that prunes executions past SPLICE_RETENTION_DAYS."""
        service = self.settings.service
        self.retention = Retention(
            self.store,
            self.blobs,
            retention=service.retention,
            delivery_window=service.delivery_window,
            clock=self.clock,
        )
        self.retention.start()
        return self.retention

    def listen_for_completions(self) -> None:
        """Start resolving synchronous webhook waiters from Redis, when Redis is the queue."""
        if isinstance(self.completions, RedisCompletions):
            self.completions.listen()

    # -- stopping -------------------------------------------------------------------------

    def close(self, *, drain: float | None = None) -> bool:
        """Stop every role and close the backends; return whether the worker drained.

        The worker drains first, for ``drain`` seconds or SPLICE_DRAIN_TIMEOUT.
        """
        drained = True
        if self.worker is not None:
            drain_time = self.settings.service.drain_timeout if drain is None else drain
            drained = self.worker.stop(drain=drain_time)
        for role in (self.scheduler, self.relay, self.retention, self.recovery):
            if role is not None:
                role.stop()
        self.completions.close()
        self.outbox.close()
        if self.queue is not self.outbox:
            self.queue.close()
        if self._sandbox is not None:
            self._sandbox.close()
        self.store.close()
        return drained
