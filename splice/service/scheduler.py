"""The scheduler: fires the due times of every enabled instance's schedule flows.

Each tick reads the schedules with the due time they last fired, and each
:class:`~splice.triggers.schedule.Schedule` returns the due time to fire now. After downtime its
catch-up policy decides. The scheduler fires that due time through :meth:`Intake.fire`,
which moves the last fired due time forward in the transaction that writes the execution.
Two schedulers that see the same due time race on that update, and exactly one of them wins.
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from typing import Any

from sqlalchemy import select

from splice.service.instances import Instances
from splice.service.intake import Intake
from splice.store import RecordStore
from splice.store.tables import instances, schedule_states
from splice.triggers.schedule import Schedule

logger = logging.getLogger(__name__)


class Scheduler:
    """A thread that fires due schedules every ``interval`` seconds."""

    def __init__(
        self,
        store: RecordStore,
        intake: Intake,
        instances_: Instances,
        *,
        interval: float = 1.0,
        clock: Any = time.time,
    ) -> None:
        self.store = store
        self.intake = intake
        self.instances = instances_
        self.interval = interval
        self.clock = clock
        self._schedules: dict[tuple[str, str], Schedule] = {}
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> list[str]:
        """Fire what is due now; return the ids of the executions this scheduler started."""
        now = datetime.datetime.fromtimestamp(self.clock(), datetime.UTC)
        query = (
            select(schedule_states)
            .join(instances, instances.c.id == schedule_states.c.instance_id)
            .where(instances.c.enabled)
        )
        with self.store.engine.connect() as connection:
            rows = connection.execute(query).all()
        started = []
        for row in rows:
            schedule = self._schedule(row.cron, row.timezone)
            last = row.last_fired.replace(tzinfo=datetime.UTC) if row.last_fired else None
            for due in schedule.due_times(last, now, row.catch_up):
                instance = self.instances.get(row.instance_id)
                if instance is None:
                    continue
                execution_id = self.intake.fire(
                    instance,
                    flow=row.flow,
                    due=due.astimezone(datetime.UTC).replace(tzinfo=None),
                    previous=row.last_fired,
                )
                if execution_id is not None:
                    logger.info(
                        "fired flow %s of instance %s due at %s: execution %s",
                        row.flow, row.instance_id, due.isoformat(), execution_id,
                    )  # fmt: skip
                    started.append(execution_id)
        return started

    def _schedule(self, cron: str, timezone: str) -> Schedule:
        """Return the parsed schedule for ``cron`` in ``timezone``, parsing it once."""
        key = (cron, timezone)
        schedule = self._schedules.get(key)
        if schedule is None:
            schedule = self._schedules[key] = Schedule(cron, timezone)
        return schedule

    def start(self) -> None:
        """Start ticking on a daemon thread."""
        self._thread = threading.Thread(target=self._loop, name="splice-scheduler", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.tick()
            except Exception as error:
                logger.warning("scheduler tick failed, retrying in %g s: %s", self.interval, error)
            self._stopping.wait(self.interval)

    def stop(self) -> None:
        """Stop the thread, waiting up to 5 s for a running tick."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
