"""The webhook receiver: one URL per webhook flow of each instance, any method, any body.

The body is read as a stream. It stays in memory up to the spill threshold and goes to a
file beyond it, which then moves to the blob store under the execution's prefix, so a large
body is never kept whole in memory. The signature is checked over the exact bytes received.
Then the execution and its queue entry are written in one transaction, and the receiver
responds: 202 with the execution id, or for a synchronous flow the execution's own response.
"""

from __future__ import annotations

import asyncio
import json
import logging
import mmap
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from splice.definition.model import WebhookTrigger
from splice.engine.supervisor import new_execution_id
from splice.errors import ConfigError
from splice.service.completions import Completion
from splice.service.intake import StoredRequest
from splice.service.runtime import Runtime
from splice.triggers.bodies import join_headers, parse_body
from splice.triggers.signatures import SignatureError, verify

logger = logging.getLogger(__name__)

# Headers of a flow's response that the server sets itself.
_HOP_BY_HOP = frozenset(
    ("connection", "content-length", "transfer-encoding", "keep-alive", "upgrade", "te")
)
POLL_INTERVAL = 0.5  # seconds between reads of the records while a sync webhook waits
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


def error(status: int, message: str, **extra: Any) -> JSONResponse:
    """Return a JSON error response ``{"error": message, **extra}`` with ``status``."""
    return JSONResponse({"error": message, **extra}, status_code=status)


@dataclass
class _Body:
    """A received body: in memory when small, else a file awaiting the blob store."""

    size: int = 0
    data: bytes | None = None
    file: Path | None = None

    def view(self) -> Any:
        """Return the body's bytes for a signature check, mapping a spilled file into memory.

        The caller closes a returned ``mmap.mmap``.
        """
        if self.file is None:
            return self.data or b""
        if self.size == 0:
            return b""
        with open(self.file, "rb") as handle:
            return mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)

    def discard(self) -> None:
        """Delete the spilled file, if any."""
        if self.file is not None:
            self.file.unlink(missing_ok=True)


class _TooLarge(Exception):
    """The body exceeds SPLICE_WEBHOOK_MAX_BODY."""


def router(runtime: Runtime) -> APIRouter:
    """Build the routes of the webhook receiver, ``/webhooks/{token}`` for every method."""
    routes = APIRouter()
    settings = runtime.settings
    service = settings.service
    incoming = settings.scratch_dir / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)

    async def read_body(request: Request) -> _Body:
        """Read the body as a stream, spilling to a file past the threshold; raise _TooLarge."""
        limit = service.max_body
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise _TooLarge
        body = _Body()
        chunks: list[bytes] = []
        handle = None
        try:
            async for chunk in request.stream():
                if not chunk:
                    continue
                body.size += len(chunk)
                if body.size > limit:
                    raise _TooLarge
                if handle is None and body.size <= settings.spill_threshold:
                    chunks.append(chunk)
                    continue
                if handle is None:
                    descriptor, name = tempfile.mkstemp(dir=incoming, prefix="body-")
                    handle = os.fdopen(descriptor, "wb")
                    body.file = Path(name)
                    for buffered in chunks:
                        handle.write(buffered)
                    chunks = []
                await run_in_threadpool(handle.write, chunk)
        except BaseException:
            if handle is not None:
                handle.close()
            body.discard()
            raise
        if handle is not None:
            handle.close()
        else:
            body.data = b"".join(chunks)
        return body

    def accept(
        token: str, request_line: tuple[str, list[tuple[str, str]], bytes], body: _Body
    ) -> Any:
        """Verify the request and record its execution and queue entry.

        Runs on a worker thread. Returns an error response, or a tuple of the Accepted
        execution, the completion future of a synchronous flow (else None) and its timeout.
        """
        method, headers, query = request_line
        endpoint = runtime.instances.endpoint(token)
        if endpoint is None:
            return error(404, "no webhook has this URL; check the URL `splice deploy` printed")
        loaded = runtime.instances.load(endpoint.instance_id)
        instance = loaded.instance
        if not instance.enabled:
            return error(
                409,
                f"instance {instance.id} ({instance.customer}/{instance.integration_key}) is "
                "disabled, so its webhooks start nothing; enable it with `splice instances "
                "enable`",
            )
        flow = loaded.integration.flows.get(endpoint.flow)
        if flow is None or not isinstance(flow.trigger, WebhookTrigger):
            return error(404, f"flow {endpoint.flow!r} is no longer a webhook flow")
        trigger = flow.trigger
        joined = join_headers(headers)
        if trigger.signature is not None:
            secret = loaded.config.values.get(trigger.signature.secret)
            view = body.view()
            try:
                verify(
                    trigger.signature,
                    secret=secret or "",
                    headers=joined,
                    body=view,
                    now=runtime.clock(),
                )
            except SignatureError as failure:
                logger.info(
                    "webhook of instance %s flow %s rejected: %s",
                    instance.id,
                    endpoint.flow,
                    failure,
                )
                return error(401, str(failure), reason=str(failure.reason))
            except ConfigError as failure:
                logger.error(
                    "webhook of instance %s flow %s cannot check signatures: %s",
                    instance.id,
                    endpoint.flow,
                    failure,
                )
                return error(500, str(failure))
            finally:
                if isinstance(view, mmap.mmap):
                    view.close()
        delivery_id = None
        if trigger.delivery_id is not None:
            delivery_id, problem = _delivery_id(trigger, joined, body)
            if problem is not None and trigger.delivery_id.required:
                logger.info(
                    "webhook of instance %s flow %s rejected: %s",
                    instance.id,
                    endpoint.flow,
                    problem,
                )
                return error(400, problem)
        execution_id = new_execution_id()
        body_blob = None
        if body.file is not None:
            body_blob = runtime.blobs.put_file(body.file, f"executions/{execution_id}/request-body")
            body.file = None
        stored = StoredRequest(
            method=method, headers=headers, query_string=query, body=body.data, body_blob=body_blob
        )
        waiter = runtime.completions.wait_for(execution_id) if trigger.sync else None
        try:
            accepted = runtime.intake.accept(
                instance,
                flow=endpoint.flow,
                trigger_type="webhook",
                request=stored,
                delivery_id=delivery_id,
                execution_id=execution_id,
            )
        except BaseException:
            # Nothing was recorded, so no worker would ever resolve the waiter.
            if waiter is not None:
                runtime.completions.forget(execution_id, waiter)
            raise
        if accepted.duplicate:
            if body_blob is not None:
                runtime.blobs.delete_prefix(f"executions/{execution_id}")
            if waiter is not None:
                runtime.completions.forget(execution_id, waiter)
                waiter = runtime.completions.wait_for(accepted.execution_id)
                finished = runtime.read_completion(accepted.execution_id)
                if finished is not None:
                    runtime.completions.resolve(finished)
        timeout = trigger.sync_timeout or service.sync_timeout
        return accepted, waiter, timeout

    async def receive(token: str, request: Request) -> Response:
        """Start the webhook flow this URL belongs to with the request as its trigger."""
        try:
            body = await read_body(request)
        except _TooLarge:
            logger.info("webhook rejected: body larger than %d bytes", service.max_body)
            return error(
                413,
                f"the body is larger than the limit of {service.max_body} bytes; the limit is "
                "SPLICE_WEBHOOK_MAX_BODY",
                limit=service.max_body,
            )
        request_line = (
            request.method,
            [
                (name.decode("latin-1"), value.decode("latin-1"))
                for name, value in request.scope["headers"]
            ],
            request.scope.get("query_string", b""),
        )
        try:
            outcome = await run_in_threadpool(accept, token, request_line, body)
        finally:
            body.discard()
        if isinstance(outcome, Response):
            return outcome

        accepted, waiter, timeout = outcome
        extra = {"duplicate": True} if accepted.duplicate else {}
        # The id in a header as well, for HEAD requests, whose responses carry no body.
        id_header = {"X-Splice-Execution-Id": accepted.execution_id}
        if waiter is None:
            return JSONResponse(
                {"execution_id": accepted.execution_id, **extra},
                status_code=202,
                headers=id_header,
            )
        try:
            completion = await wait_for_completion(runtime, accepted.execution_id, waiter, timeout)
        finally:
            # Also when the client disconnects and the wait is cancelled.
            runtime.completions.forget(accepted.execution_id, waiter)
        if completion is None:
            return JSONResponse(
                {
                    "execution_id": accepted.execution_id,
                    "status": "running",
                    "detail": f"still running after {timeout:g} s; look it up at "
                    f"/api/executions/{accepted.execution_id}",
                    **extra,
                },
                status_code=202,
                headers=id_header,
            )
        if completion.from_store:
            completion = (
                await run_in_threadpool(runtime.read_completion, completion.execution_id)
                or completion
            )
        return sync_response(completion)

    # One route per method, so each operation in the OpenAPI document has its own id.
    for method in METHODS:
        routes.add_api_route(
            "/webhooks/{token}",
            receive,
            methods=[method],
            operation_id=f"receive_webhook_{method.lower()}",
        )
    return routes


async def wait_for_completion(
    runtime: Runtime, execution_id: str, waiter: Any, timeout: float
) -> Completion | None:
    """Wait for the execution's completion; return None after ``timeout`` seconds.

    A worker of this process, or one reached through Redis, resolves ``waiter`` at once.
    The records are also read every POLL_INTERVAL seconds, for workers that no message
    reaches: other processes on the database queue, or a message lost while Redis
    restarted.
    """
    future = asyncio.wrap_future(waiter)
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            return None
        try:
            return await asyncio.wait_for(asyncio.shield(future), min(POLL_INTERVAL, remaining))
        except TimeoutError:
            found = await run_in_threadpool(runtime.read_completion, execution_id)
            if found is not None:
                return found


def _delivery_id(
    trigger: WebhookTrigger, headers: dict[str, str], body: _Body
) -> tuple[str | None, str | None]:
    """Read the delivery id from the header or body field the trigger names.

    Returns the id (cut to 200 characters) and None, or None and why it is missing.
    """
    assert trigger.delivery_id is not None
    where = trigger.delivery_id
    if where.header is not None:
        value = headers.get(where.header.lower())
        if not value:
            return None, (
                f"the delivery id header {where.header} is missing; this webhook needs it to "
                "recognise repeated deliveries"
            )
        return value[:200], None
    assert where.body is not None
    if body.data is None:
        return None, (
            f"the delivery id field {where.body} cannot be read from a body of {body.size} "
            "bytes (fields are read from bodies kept in memory only); send the id in a header"
        )
    parsed = parse_body(headers.get("content-type"), body.data)
    found: Any = parsed.body
    for part in where.body.split("."):
        found = found.get(part) if isinstance(found, dict) else None
    if found is None or isinstance(found, dict | list):
        return None, f"the body has no delivery id at {where.body}; this webhook needs one there"
    return str(found)[:200], None


def sync_response(completion: Completion) -> Response:
    """Build the response of a synchronous webhook from how its execution ended.

    A failed or cancelled execution gets 500 with its error. A succeeded one gets the output
    of its webhook.respond step, else its result as JSON or bytes.
    """
    if completion.status != "succeeded":
        return JSONResponse(
            {
                "execution_id": completion.execution_id,
                "status": completion.status,
                "error": {
                    "type": completion.error_type,
                    "message": completion.error_message,
                    "step": completion.failed_step,
                },
            },
            status_code=500,
        )
    headers = {"X-Splice-Execution-Id": completion.execution_id}
    response = completion.response
    if response is None:
        if isinstance(completion.result, bytes):
            return Response(completion.result, 200, headers, media_type="application/octet-stream")
        return Response(_json(completion.result), 200, headers, media_type="application/json")
    for name, value in (response.get("headers") or {}).items():
        if name.lower() not in _HOP_BY_HOP and name.lower() != "content-type":
            headers[name] = value
    body = response.get("body")
    content_type = response.get("content_type")
    if not isinstance(body, bytes | str):
        body = _json(body)
    return Response(body, int(response.get("status", 200)), headers, media_type=content_type)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
