"""The FastAPI application: health, instances, executions and the webhook receiver."""

from __future__ import annotations

import base64
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Body, FastAPI, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select, text
from starlette.concurrency import run_in_threadpool

from splice.api.webhooks import error
from splice.api.webhooks import router as webhook_router
from splice.engine.values import decode
from splice.errors import NotFoundError, RequestError, SpliceError
from splice.service.control import cancel_execution, start_execution
from splice.service.instances import Instance
from splice.service.runtime import Runtime
from splice.store.records import ExecutionRecord, StepRunRecord
from splice.store.tables import executions

logger = logging.getLogger(__name__)

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
PREVIEW_LIMIT = 64 * 1024  # bytes of a recorded value shown inline in an execution's details


def create_app(runtime: Runtime) -> FastAPI:
    """Build the HTTP API and webhook receiver of one service process."""
    app = FastAPI(
        title="Splice",
        version=_version(),
        description="Instances, executions and webhooks of a Splice deployment.",
    )
    app.include_router(webhook_router(runtime), tags=["webhooks"])
    app.include_router(_health(runtime), tags=["health"])
    app.include_router(_instances(runtime), prefix="/api", tags=["instances"])
    app.include_router(_executions(runtime), prefix="/api", tags=["executions"])

    @app.exception_handler(RequestError)
    async def request_error(_: Any, failure: RequestError) -> JSONResponse:
        return error(failure.status, str(failure))

    @app.exception_handler(SpliceError)
    async def splice_error(request: Request, failure: SpliceError) -> JSONResponse:
        # Not the caller's fault (the records or the queue are down, a stored value is
        # unreadable), so the operator needs this line.
        logger.error(
            "%s %s failed: %s: %s",
            request.method,
            request.url.path,
            type(failure).__name__,
            failure,
        )
        return error(500, str(failure))

    return app


def _version() -> str:
    """Return the installed version of the splice package, or "0" when not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("splice")
    except PackageNotFoundError:
        return "0"


def _health(runtime: Runtime) -> APIRouter:
    """Build the /healthz and /readyz routes."""
    routes = APIRouter()

    @routes.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Report liveness: the process responds to HTTP."""
        return {"status": "ok"}

    @routes.get("/readyz")
    async def readyz() -> JSONResponse:
        """Report readiness: 200 when the records database and the queue respond, else 503."""
        checks = await run_in_threadpool(_checks, runtime)
        ready = all(check == "ok" for check in checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "unavailable", "checks": checks},
            status_code=200 if ready else 503,
        )

    return routes


def _checks(runtime: Runtime) -> dict[str, str]:
    """Check the records database and the queue; return "ok" or the error type for each."""
    checks: dict[str, str] = {}
    try:
        with runtime.store.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as failure:
        logger.warning("readiness check: the records database is unavailable: %s", failure)
        checks["database"] = f"unavailable: {type(failure).__name__}"
    if runtime.relayed:
        try:
            ping = getattr(runtime.queue, "ping", None)
            if ping is not None:
                ping()
            checks["queue"] = "ok"
        except Exception as failure:
            logger.warning("readiness check: the queue is unavailable: %s", failure)
            checks["queue"] = f"unavailable: {type(failure).__name__}"
    else:
        checks["queue"] = checks["database"]  # the database is the queue
    return checks


def instance_json(runtime: Runtime, instance: Instance, *, details: bool = False) -> dict[str, Any]:
    """Return the instance as JSON; ``details`` adds its webhooks, schedules and flows."""
    data: dict[str, Any] = {
        "id": instance.id,
        "customer": instance.customer,
        "integration": instance.integration_key,
        "integration_name": instance.integration_name,
        "version": instance.integration_version,
        "enabled": instance.enabled,
        "created_at": _iso(instance.created_at),
        "updated_at": _iso(instance.updated_at),
    }
    if details:
        data["webhooks"] = runtime.instances.webhooks(instance.id)
        data["schedules"] = {
            row["flow"]: {
                "cron": row["cron"],
                "timezone": row["timezone"],
                "catch_up": row["catch_up"],
                "last_fired": _iso(row["last_fired"]),
            }
            for row in runtime.instances.schedules(instance.id)
        }
        loaded = runtime.instances.load(instance.id)
        data["flows"] = {
            name: {"trigger": flow.trigger.type, "concurrency": flow.concurrency}
            for name, flow in loaded.integration.flows.items()
        }
    return data


def _instances(runtime: Runtime) -> APIRouter:
    """Build the /api/instances routes."""
    routes = APIRouter()

    @routes.get("/instances")
    async def list_instances(
        customer: str | None = None, integration: str | None = None
    ) -> list[dict[str, Any]]:
        """List every instance, optionally of one customer or one integration."""

        def find() -> list[dict[str, Any]]:
            found = runtime.instances.find(customer=customer, integration=integration)
            return [instance_json(runtime, instance) for instance in found]

        return await run_in_threadpool(find)

    @routes.get("/instances/{reference:path}/webhooks")
    async def instance_webhooks(reference: str) -> dict[str, str]:
        """Return the URL of each webhook flow of the instance."""
        instance = await run_in_threadpool(runtime.instances.require, reference)
        return await run_in_threadpool(runtime.instances.webhooks, instance.id)

    @routes.post("/instances/{reference:path}/disable")
    async def disable(reference: str) -> dict[str, Any]:
        """Stop the instance's webhooks and schedules from starting executions."""
        return await run_in_threadpool(_set_enabled, runtime, reference, False)

    @routes.post("/instances/{reference:path}/enable")
    async def enable(reference: str) -> dict[str, Any]:
        """Let the instance's webhooks and schedules start executions again."""
        return await run_in_threadpool(_set_enabled, runtime, reference, True)

    @routes.post("/instances/{reference:path}/flows/{flow}/executions", status_code=202)
    async def start(
        reference: str, flow: str, payload: Annotated[Any, Body()] = None
    ) -> dict[str, Any]:
        """Start a flow of the instance with ``{"input": ...}`` as its trigger's body."""
        value = payload.get("input") if isinstance(payload, dict) else payload
        accepted = await run_in_threadpool(
            start_execution, runtime.instances, runtime.intake, reference, flow, value
        )
        return {"execution_id": accepted.execution_id}

    @routes.get("/instances/{reference:path}")
    async def show_instance(reference: str) -> dict[str, Any]:
        """Show one instance with its webhooks, schedules and flows.

        The reference is an instance id, a unique prefix of one, or CUSTOMER/INTEGRATION.
        """

        def show() -> dict[str, Any]:
            return instance_json(runtime, runtime.instances.require(reference), details=True)

        return await run_in_threadpool(show)

    return routes


def _set_enabled(runtime: Runtime, reference: str, enabled: bool) -> dict[str, Any]:
    """Enable or disable the instance; return it as JSON."""
    instance = runtime.instances.require(reference)
    runtime.instances.set_enabled(instance.id, enabled)
    return instance_json(runtime, runtime.instances.require(instance.id))


def _executions(runtime: Runtime) -> APIRouter:
    """Build the /api/executions routes."""
    routes = APIRouter()

    @routes.get("/executions")
    async def list_executions(
        status: str | None = Query(None, description=" | ".join(STATUSES)),
        instance: str | None = Query(
            None, description="an instance id, a unique prefix of one, or CUSTOMER/INTEGRATION"
        ),
        customer: str | None = None,
        integration: str | None = None,
        flow: str | None = None,
        limit: int = Query(50, ge=1, le=1000),
    ) -> list[dict[str, Any]]:
        """List executions, newest first, by status, instance, customer, integration or flow."""
        if status is not None and status not in STATUSES:
            raise RequestError(f"status {status!r} is invalid; use one of {', '.join(STATUSES)}")

        def find() -> list[dict[str, Any]]:
            query = select(executions).order_by(executions.c.created_at.desc()).limit(limit)
            filters = {
                "status": status,
                "instance_id": runtime.instances.require(instance).id if instance else None,
                "customer_id": _customer_id(runtime, customer) if customer else None,
                "integration_key": integration,
                "flow": flow,
            }
            for column, value in filters.items():
                if value is not None:
                    query = query.where(executions.c[column] == value)
            with runtime.store.engine.connect() as connection:
                rows = connection.execute(query).all()
            return [execution_json(ExecutionRecord(**row._mapping)) for row in rows]

        return await run_in_threadpool(find)

    @routes.get("/executions/{execution_id}")
    async def show_execution(execution_id: str) -> dict[str, Any]:
        """Show one execution with its step runs; values up to 64 KiB are shown inline."""

        def show() -> dict[str, Any]:
            record = runtime.store.get_execution(execution_id)
            if record is None:
                raise NotFoundError(
                    f"no execution {execution_id!r}; list ids with GET /api/executions"
                )
            data = execution_json(record)
            data["result"] = _preview(record.result, record.result_encoding, record.result_blob)
            data["step_runs"] = [step_run_json(run) for run in runtime.store.step_runs(record.id)]
            return data

        return await run_in_threadpool(show)

    @routes.get("/executions/{execution_id}/logs")
    async def execution_logs(execution_id: str) -> list[dict[str, Any]]:
        """List the execution's log lines in order."""

        def read() -> list[dict[str, Any]]:
            record = runtime.store.get_execution(execution_id)
            if record is None:
                raise NotFoundError(
                    f"no execution {execution_id!r}; list ids with GET /api/executions"
                )
            return [
                {
                    "time": _iso(line["time"]),
                    "level": line["level"],
                    "step": line["step_path"],
                    "message": line["message"],
                }
                for line in runtime.store.logs(record.id)
            ]

        return await run_in_threadpool(read)

    @routes.post("/executions/{execution_id}/cancel", status_code=202)
    async def cancel(execution_id: str) -> dict[str, Any]:
        """Cancel a queued execution at once, or ask its worker to stop a running one."""

        def request() -> dict[str, Any]:
            record = runtime.store.get_execution(execution_id)
            if record is None:
                raise NotFoundError(
                    f"no execution {execution_id!r}; list ids with GET /api/executions"
                )
            status = cancel_execution(runtime.store, record.id)
            if runtime.worker is not None:
                runtime.worker.cancel(record.id)
            if status == "cancelled":
                finished = runtime.read_completion(record.id)
                if finished is not None:
                    runtime.completions.resolve(finished)
            return {"execution_id": record.id, "status": status}

        return await run_in_threadpool(request)

    return routes


def _customer_id(runtime: Runtime, name: str) -> str:
    """Return the customer's id, or "-", which matches no execution, for an unknown name."""
    from splice.store.tables import customers

    with runtime.store.engine.connect() as connection:
        found = connection.execute(select(customers.c.id).where(customers.c.name == name)).scalar()
    return str(found) if found is not None else "-"


def _iso(moment: Any) -> str | None:
    """Format a naive UTC datetime as ISO 8601 with a Z suffix; None stays None."""
    return moment.isoformat() + "Z" if moment is not None else None


def execution_json(record: ExecutionRecord) -> dict[str, Any]:
    """Return the execution's summary fields as JSON."""
    return {
        "id": record.id,
        "instance_id": record.instance_id,
        "customer_id": record.customer_id,
        "integration": record.integration_key,
        "version": record.integration_version,
        "flow": record.flow,
        "trigger_type": record.trigger_type,
        "status": record.status,
        "created_at": _iso(record.created_at),
        "started_at": _iso(record.started_at),
        "ended_at": _iso(record.ended_at),
        "duration": record.duration,
        "error_type": record.error_type,
        "error_message": record.error_message,
        "failed_step": record.failed_step,
        "step_runs": record.step_runs,
        "resumes": record.resumes,
        "worker": record.worker,
    }


def step_run_json(run: StepRunRecord) -> dict[str, Any]:
    """Return the step run as JSON, with a preview of its output."""
    return {
        "sequence": run.sequence,
        "path": run.path,
        "step": run.step_id,
        "kind": run.kind,
        "action": run.action,
        "status": run.status,
        "attempt": run.attempt,
        "started_at": _iso(run.started_at),
        "ended_at": _iso(run.ended_at),
        "duration": run.duration,
        "input_size": run.input_size,
        "output_size": run.output_size,
        "output": _preview(run.output, run.output_encoding, run.output_blob),
        "error": {"type": run.error_type, "message": run.error_message} if run.error_type else None,
    }


def _preview(data: bytes | None, encoding: str | None, blob: str | None) -> Any:
    """Decode a recorded value for JSON when inline and small, else describe where it is.

    A blob becomes ``{"blob": key}``, a value over PREVIEW_LIMIT ``{"size": n, "note": ...}``
    and bytes ``{"base64": ...}``.
    """
    if blob is not None:
        return {"blob": blob}
    if data is None:
        return None
    if len(data) > PREVIEW_LIMIT:
        return {"size": len(data), "note": "larger than the 64 KiB shown inline"}
    value = decode(data, encoding or "msgpack")
    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode()}
    return value
