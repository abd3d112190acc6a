"""Webhook requests handed to an execution, and the ``trigger`` mapping built from one.

The service passes a WebhookRequest to ``Supervisor.run_execution``. The sandboxed child,
not the supervisor, parses the body and builds the trigger, so customer-controlled bytes
are never parsed in the worker's process.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from splice.triggers.bodies import ParsedBody, build_trigger, parse_body


@dataclass(frozen=True)
class WebhookRequest:
    """A webhook request as received: small bodies inline, large ones in the blob store.

    Give at most one of ``body`` and ``body_blob``; with neither, the body is empty.
    """

    method: str
    headers: list[tuple[str, str]]  # as received, in order
    query_string: bytes
    body: bytes | None = None
    body_blob: str | None = None  # a key in the blob store

    def __post_init__(self) -> None:
        if self.body is not None and self.body_blob is not None:
            raise ValueError(
                f"a webhook request has either an inline body or a body blob, but got "
                f"{len(self.body)} bytes inline and the blob {self.body_blob!r}; pass one"
            )


def webhook_trigger(
    *,
    method: str,
    headers: Iterable[tuple[str, str]],
    query_string: bytes,
    body: bytes,
    parse: bool = True,
) -> dict[str, Any]:
    """Build the trigger mapping of a webhook execution; ``trigger.raw`` is the body's bytes.

    The body is parsed by the first Content-Type header. Bodies that are empty or not
    valid in their declared format get the kinds ``empty`` and ``invalid``, never an error.
    """
    headers = list(headers)
    content_type = next((value for name, value in headers if name.lower() == "content-type"), None)
    # Unparsed, the body's fields hold placeholders that no expression of the flow reads.
    parsed = parse_body(content_type, body) if parse else ParsedBody(kind="binary")
    trigger = build_trigger(
        method=method, headers=headers, query_string=query_string, parsed=parsed, raw=body
    )
    return {"type": "webhook", **trigger}


# Trigger fields that a flow may read without the parsed body.
_UNPARSED_FIELDS = ("raw", "method", "headers", "query", "type")
_TRIGGER_USE = re.compile(r"\btrigger\b(?:\.(\w+))?")


def reads_trigger_body(flow: Mapping[str, Any]) -> bool:
    """Tell whether a flow (its definition as dumped) may read the parsed body of its trigger.

    Conservative: any mention of ``trigger`` other than ``trigger.raw``, ``.method``,
    ``.headers``, ``.query`` or ``.type`` in the flow's steps or result counts as reading
    it, such as ``trigger.body`` or the whole ``trigger`` handed to customer code.
    """
    return any(
        match.group(1) not in _UNPARSED_FIELDS
        for text in _strings([flow.get("steps"), flow.get("result")])
        for match in _TRIGGER_USE.finditer(text)
    )


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)
