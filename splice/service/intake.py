"""Accept triggers: write an execution record and its queue entry in one transaction.

Whatever starts an execution (a webhook, a schedule, a manual start) comes through here, so
no queue entry exists without its record and no record without its entry. A webhook
delivery id and a schedule's due time are claimed in the same transaction, which makes a
repeated delivery and a due time seen by two schedulers start one execution.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from splice.engine.supervisor import new_execution_id
from splice.engine.values import decode, encode
from splice.errors import StoreError
from splice.queue.database import DatabaseQueue
from splice.service.instances import Instance
from splice.store import RecordStore
from splice.store.records import utc
from splice.store.tables import executions, schedule_states, webhook_deliveries

_INSERTS: dict[str, Any] = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


@dataclass(frozen=True)
class Accepted:
    """The execution a trigger started, or the one a repeated delivery started first."""

    execution_id: str
    duplicate: bool = False  # a repeated webhook delivery: nothing new was started


@dataclass(frozen=True)
class StoredRequest:
    """A webhook request as kept with its execution: the body inline or in the blob store."""

    method: str
    headers: list[tuple[str, str]]
    query_string: bytes
    body: bytes | None = None
    body_blob: str | None = None


def encode_trigger(trigger: Mapping[str, Any] | None, request: StoredRequest | None) -> bytes:
    """Encode the webhook request, if given, else the trigger mapping, for the record."""
    if request is not None:
        return encode(
            {
                "request": {
                    "method": request.method,
                    "headers": [list(pair) for pair in request.headers],
                    "query_string": request.query_string,
                    "body": request.body,
                }
            }
        )
    return encode({"trigger": dict(trigger or {})})


def decode_trigger(
    data: bytes | None, body_blob: str | None
) -> tuple[dict[str, Any] | None, StoredRequest | None]:
    """Return the trigger mapping or the webhook request stored with an execution."""
    if data is None:
        return {}, None
    stored = decode(data)
    if "request" in stored:
        raw = stored["request"]
        return None, StoredRequest(
            method=raw["method"],
            headers=[(name, value) for name, value in raw["headers"]],
            query_string=raw["query_string"],
            body=raw["body"],
            body_blob=body_blob,
        )
    return stored["trigger"], None


class Intake:
    """Writes accepted executions and their entries in the outbox (the database queue)."""

    def __init__(
        self,
        store: RecordStore,
        outbox: DatabaseQueue,
        *,
        delivery_window: float,
        clock: Any = time.time,
    ) -> None:
        self.store = store
        self.outbox = outbox
        self.delivery_window = delivery_window
        self.clock = clock

    def accept(
        self,
        instance: Instance,
        *,
        flow: str,
        trigger_type: str,
        integration_version: str | None = None,
        trigger: Mapping[str, Any] | None = None,
        request: StoredRequest | None = None,
        delivery_id: str | None = None,
        execution_id: str | None = None,
    ) -> Accepted:
        """Record a new execution of ``flow`` and queue it, unless the delivery was seen.

        ``execution_id`` may be chosen by the caller beforehand (a webhook stores a large
        body under it, and a synchronous one starts waiting for it, before it is accepted).
        """
        execution_id = execution_id or new_execution_id()
        moment = utc(self.clock())
        try:
            with self.store.begin() as connection:
                if delivery_id is not None:
                    first = self._claim_delivery(
                        connection, instance.id, flow, delivery_id, execution_id, moment
                    )
                    if first is not None:
                        return Accepted(first, duplicate=True)
                self._insert(
                    connection, instance, execution_id, flow, trigger_type, moment,
                    encode_trigger(trigger, request),
                    request.body_blob if request is not None else None,
                    integration_version or instance.integration_version,
                )  # fmt: skip
        except SQLAlchemyError as error:
            raise StoreError(
                f"failed to record the {trigger_type} execution of flow {flow!r} of instance "
                f"{instance.id}: {error}. Check that the records database is reachable and retry."
            ) from error
        self.outbox.notify()  # committed: a relay or worker of this process claims it now
        return Accepted(execution_id)

    def fire(
        self,
        instance: Instance,
        *,
        flow: str,
        due: datetime.datetime,
        previous: datetime.datetime | None,
    ) -> str | None:
        """Fire one due time of a schedule flow; None when another scheduler fired it first.

        ``due`` and ``previous`` (the last fired due time this scheduler read) are naive UTC.
        """
        execution_id = new_execution_id()
        moment = utc(self.clock())
        condition = (schedule_states.c.instance_id == instance.id) & (
            schedule_states.c.flow == flow
        )
        condition &= (
            schedule_states.c.last_fired.is_(None)
            if previous is None
            else schedule_states.c.last_fired == previous
        )
        trigger = {
            "type": "schedule",
            "scheduled_for": due.replace(tzinfo=datetime.UTC).isoformat(),
            "fired_at": moment.replace(tzinfo=datetime.UTC).isoformat(),
        }
        try:
            with self.store.begin() as connection:
                moved = connection.execute(
                    update(schedule_states).where(condition).values(last_fired=due)
                ).rowcount
                if moved != 1:
                    return None
                self._insert(
                    connection, instance, execution_id, flow, "schedule", moment,
                    encode_trigger(trigger, None), None, instance.integration_version,
                )  # fmt: skip
        except SQLAlchemyError as error:
            raise StoreError(
                f"failed to fire the schedule of flow {flow!r} of instance {instance.id} "
                f"due at {due.isoformat()}Z: {error}. The scheduler retries on its next tick."
            ) from error
        self.outbox.notify()
        return execution_id

    def _insert(
        self,
        connection: Connection,
        instance: Instance,
        execution_id: str,
        flow: str,
        trigger_type: str,
        moment: datetime.datetime,
        trigger: bytes,
        trigger_blob: str | None,
        version: str | None,
    ) -> None:
        """Insert a queued execution record and its outbox entry on ``connection``."""
        connection.execute(
            insert(executions).values(
                id=execution_id,
                integration_key=instance.integration_key,
                integration_version=version,
                flow=flow,
                trigger_type=trigger_type,
                status="queued",
                created_at=moment,
                definition_path=instance.definition_path,
                instance_id=instance.id,
                customer_id=instance.customer_id,
                trigger=trigger,
                trigger_blob=trigger_blob,
                step_runs=0,
                continued_failures=0,
                resumes=0,
                cancel_requested=False,
            )
        )
        self.outbox.enqueue_in(connection, execution_id)

    def _claim_delivery(
        self,
        connection: Connection,
        instance_id: str,
        flow: str,
        delivery_id: str,
        execution_id: str,
        moment: datetime.datetime,
    ) -> str | None:
        """Claim the delivery id for ``execution_id``; return the first execution if seen.

        Concurrent claims of one id wait for each other on the row's key (PostgreSQL) or the
        write lock (SQLite), so exactly one inserts and the others find its row.
        """
        table = webhook_deliveries
        key = (
            (table.c.instance_id == instance_id)
            & (table.c.flow == flow)
            & (table.c.delivery_id == delivery_id)
        )
        inserted = connection.execute(
            _INSERTS[connection.dialect.name](table)
            .values(
                instance_id=instance_id,
                flow=flow,
                delivery_id=delivery_id,
                execution_id=execution_id,
                received_at=moment,
            )
            .on_conflict_do_nothing()
            .returning(table.c.execution_id)
        ).scalar()
        if inserted is not None:
            return None
        row = connection.execute(select(table.c.execution_id, table.c.received_at).where(key)).one()
        window_start = moment - datetime.timedelta(seconds=self.delivery_window)
        if row.received_at >= window_start:
            return str(row.execution_id)
        # Seen before the window: a new delivery that happens to reuse the id.
        moved = connection.execute(
            update(table)
            .where(key & (table.c.received_at == row.received_at))
            .values(execution_id=execution_id, received_at=moment)
        ).rowcount
        if moved == 1:
            return None
        return str(connection.execute(select(table.c.execution_id).where(key)).scalar_one())
