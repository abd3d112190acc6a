"""The webhook component: set the HTTP response of a synchronous webhook flow."""

from __future__ import annotations

from typing import Any

from splice.sdk import ActionContext, ActionError, Component, Input

component = Component("webhook", description="Answer the caller of a synchronous webhook flow")

# The status codes a respond step may set. A failed execution responds with 500 by itself.
MAX_STATUS, MIN_STATUS = 599, 200


@component.action(
    inputs={
        "status": Input("integer", default=200, description="HTTP status code of the response"),
        "headers": Input("object", default={}, description="Response headers, name to value"),
        "body": Input(
            "any",
            description=(
                "The answer's body: a string or bytes are sent as they are, any other value as JSON"
            ),
        ),
        "content_type": Input(
            "string",
            description=(
                "Content-Type of the answer; by default application/json for values, "
                "text/plain for strings and application/octet-stream for bytes"
            ),
        ),
    },
    description=(
        "Set the HTTP answer of a synchronous webhook flow (`sync: true`). The flow goes on "
        "to its end; the caller gets this answer once the execution succeeds"
    ),
    output="object",
)
def respond(
    context: ActionContext,
    *,
    status: int,
    headers: dict[str, Any],
    body: Any,
    content_type: str | None,
) -> dict[str, Any]:
    """Return the HTTP response as a value; the webhook receiver sends it when the execution ends.

    Raises ActionError for a status outside MIN_STATUS to MAX_STATUS.
    """
    if not MIN_STATUS <= status <= MAX_STATUS:
        raise ActionError(
            f"status {status} is invalid for a webhook response; use a code from "
            f"{MIN_STATUS} to {MAX_STATUS} (a failed execution responds with 500 by itself)"
        )
    response_headers = {str(name): str(value) for name, value in headers.items()}
    if content_type is None:
        if isinstance(body, bytes):
            content_type = "application/octet-stream"
        elif isinstance(body, str):
            content_type = "text/plain; charset=utf-8"
        else:
            content_type = "application/json"
    return {
        "status": status,
        "headers": response_headers,
        "content_type": content_type,
        "body": body,
    }
