"""Start and cancel executions on request, for the CLI and the API alike."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from splice.definition.model import ManualTrigger
from splice.errors import ConflictError, NotFoundError
from splice.service.completions import TERMINAL
from splice.service.instances import Instances
from splice.service.intake import Accepted, Intake
from splice.store import RecordStore
from splice.store.records import now
from splice.store.tables import executions


def start_execution(
    instances: Instances, intake: Intake, reference: str, flow: str, value: Any
) -> Accepted:
    """Queue an execution of ``flow`` of an instance with ``value`` as its input.

    Any flow can be started this way, such as a schedule flow to try it out or a webhook
    flow with a prepared body. The trigger is ``{type: manual, body: value}``, as for
    `splice run --input`. Raises NotFoundError for an unknown instance or flow and
    ConflictError for a disabled instance.
    """
    instance = instances.require(reference)
    loaded = instances.load(instance.id)
    if flow not in loaded.integration.flows:
        raise NotFoundError(
            f"integration {instance.integration_key!r} has no flow {flow!r}; its flows: "
            f"{', '.join(loaded.integration.flows)}"
        )
    if not instance.enabled:
        raise ConflictError(
            f"instance {instance.id} ({instance.customer}/{instance.integration_key}) is "
            "disabled; enable it with `splice instances enable` first"
        )
    kind = "manual" if isinstance(loaded.integration.flows[flow].trigger, ManualTrigger) else "api"
    return intake.accept(
        instance,
        flow=flow,
        trigger_type=kind,
        trigger={"type": "manual", "body": value},
    )


def cancel_execution(store: RecordStore, execution_id: str) -> str:
    """Cancel an execution: at once when queued, through its worker when running.

    Returns the status after the request: ``cancelled``, or ``cancelling`` while its worker
    stops it. Raises NotFoundError for an unknown id and ConflictError for an execution
    that already ended.
    """
    moment = now()
    with store.begin() as connection:
        row = connection.execute(
            select(executions.c.id, executions.c.status).where(executions.c.id == execution_id)
        ).first()
        if row is None:
            raise NotFoundError(
                f"no execution {execution_id!r}; list ids with `splice executions list`"
            )
        if row.status in TERMINAL:
            raise ConflictError(
                f"execution {execution_id} already ended with status {row.status}, so there is "
                "nothing to cancel"
            )
        cancelled = connection.execute(
            update(executions)
            .where((executions.c.id == execution_id) & (executions.c.status == "queued"))
            .values(
                status="cancelled",
                cancel_requested=True,
                ended_at=moment,
                error_type="Cancelled",
                error_message="cancelled on request before it started",
            )
        ).rowcount
        if cancelled:
            return "cancelled"
        connection.execute(
            update(executions).where(executions.c.id == execution_id).values(cancel_requested=True)
        )
    return "cancelling"
