"""The log component: write a message to the execution's log."""

from __future__ import annotations

import json
from typing import Any

from splice.sdk import ActionContext, Component, Input

component = Component("log", description="Write messages to the execution's log")

LEVELS = ("debug", "info", "warning", "error")


@component.action(
    inputs={
        "message": Input("string", required=True, description="Text of the log record"),
        "level": Input("string", default="info", choices=LEVELS, description="Log level"),
        "data": Input("any", description="A value appended to the message as compact JSON"),
    },
    description="Write a message, and optionally a value, to the execution's log",
    output="null",
)
def write(context: ActionContext, *, message: str, level: str, data: Any) -> None:
    """Write ``message`` at ``level``; ``data``, when given, follows it as JSON."""
    emit = getattr(context.logger, level)
    if data is None:
        emit("%s", message)
        return None
    # default=repr keeps a value that JSON cannot encode (bytes, a date) loggable.
    emit("%s %s", message, json.dumps(data, ensure_ascii=False, default=repr))
    return None
