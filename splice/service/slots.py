"""Concurrency slots: at most N executions of one flow of one instance run at once.

A flow with ``concurrency: N`` has N slot rows per instance. A worker takes a free slot
before it starts an execution, renews the slot's lease with the execution's, and frees it
when the execution ends. The slot of a worker that died comes free when its lease expires.
Taking a slot is one conditional UPDATE, so a burst of claims never overlaps the limit.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite

from splice.store import RecordStore
from splice.store.records import utc
from splice.store.tables import flow_slots

_INSERTS: dict[str, Any] = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


class Slots:
    """The concurrency slots of every flow with a ``concurrency`` limit, in the record store."""

    def __init__(self, store: RecordStore, *, lease: float, clock: Any = time.time) -> None:
        self.store = store
        self.lease = lease
        self.clock = clock

    def acquire(self, instance_id: str, flow: str, limit: int, execution_id: str) -> bool:
        """Acquire a slot for the execution, or renew the one it holds; False when none is free."""
        now = self.clock()
        table = flow_slots
        of_flow = (table.c.instance_id == instance_id) & (table.c.flow == flow)
        with self.store.begin() as connection:
            connection.execute(
                _INSERTS[connection.dialect.name](table)
                .values(
                    [
                        {"instance_id": instance_id, "flow": flow, "slot": slot}
                        for slot in range(limit)
                    ]
                )
                .on_conflict_do_nothing()
            )
            # An execution resumed after its worker died may still hold its slot.
            renewed = connection.execute(
                update(table)
                .where(of_flow & (table.c.slot < limit) & (table.c.execution_id == execution_id))
                .values(lease_until=utc(now + self.lease))
            ).rowcount
            if renewed:
                return True
            free = (
                select(table.c.slot)
                .where(of_flow & (table.c.slot < limit))
                .where(table.c.execution_id.is_(None) | (table.c.lease_until < utc(now)))
                .order_by(table.c.slot)
                .limit(1)
                .with_for_update(skip_locked=True)
                .scalar_subquery()
            )
            acquired = connection.execute(
                update(table)
                .where(of_flow & (table.c.slot == free))
                .values(execution_id=execution_id, lease_until=utc(now + self.lease))
            ).rowcount
        return acquired == 1

    def renew(self, execution_ids: Sequence[str]) -> None:
        """Extend the lease of every slot these executions hold."""
        if not execution_ids:
            return
        with self.store.begin() as connection:
            connection.execute(
                update(flow_slots)
                .where(flow_slots.c.execution_id.in_(list(execution_ids)))
                .values(lease_until=utc(self.clock() + self.lease))
            )

    def release(self, execution_id: str) -> int:
        """Free the slot the execution holds; return how many were freed (0 or 1)."""
        with self.store.begin() as connection:
            return int(
                connection.execute(
                    update(flow_slots)
                    .where(flow_slots.c.execution_id == execution_id)
                    .values(execution_id=None, lease_until=None)
                ).rowcount
            )

    def holders(self, instance_id: str, flow: str) -> list[str]:
        """Return the executions that hold a slot whose lease has not expired."""
        now = utc(self.clock())
        query = select(flow_slots.c.execution_id).where(
            (flow_slots.c.instance_id == instance_id)
            & (flow_slots.c.flow == flow)
            & flow_slots.c.execution_id.is_not(None)
            & (flow_slots.c.lease_until >= now)
        )
        with self.store.engine.connect() as connection:
            return [row[0] for row in connection.execute(query)]
