"""The description of one execution that the supervisor sends to the sandboxed child."""

from __future__ import annotations

from typing import Any

import msgspec

from splice.engine.values import Recorded

# Frames the supervisor sends on an execution's socket before its SIGTERM, saying why the
# child must stop: the deadline passed, or someone cancelled the execution.
STOP_FRAME = b"stop"
CANCEL_FRAME = b"cancel"
CANCELLED_MESSAGE = "the execution was cancelled on request"

# Sent on the template's control socket: fork nothing more, exit once every child has.
RETIRE_MESSAGE = b"retire"


class WebhookSpec(msgspec.Struct, array_like=True, omit_defaults=True):
    """A webhook request, from which the child builds the ``trigger`` mapping."""

    method: str
    headers: list[tuple[str, str]]  # as received, in order
    query_string: bytes
    body: bytes = b""  # the body inline, when ``body_file`` is None
    body_file: str | None = None  # or a file in the scratch directory holding it
    # False when no step of the flow reads trigger.body, body_kind or body_problem.
    parse_body: bool = True


class ExecutionSpec(msgspec.Struct, omit_defaults=True):
    execution_id: str
    integration: dict[str, Any]  # Integration.model_dump(by_alias=True)
    sources: dict[str, str]  # customer code files by relative path
    flow: str
    config: dict[str, Any]
    trigger: dict[str, Any]  # empty when ``request`` is given
    secrets: list[str]  # values to mask in everything recorded
    scratch_dir: str
    spill_threshold: int
    log_limit: int
    environment: dict[str, str] = {}
    working_dir: str | None = None  # where relative file paths are taken from
    grants: list[tuple[str, bool]] = []  # host folders bound in: (path, writable)
    timeout: float = 0.0  # the wall-clock limit, in seconds, for the stop message
    packages_dir: str | None = None  # the integration's installed requirements
    request: WebhookSpec | None = None  # a webhook request to build the trigger from
    # Step outputs committed by an earlier run of this execution, by step path. A file
    # named in one is in the scratch directory, and the child deletes it once read.
    checkpoints: dict[str, Recorded] = {}
    # The highest attempt recorded so far for each step path that is not a checkpoint.
    attempts: dict[str, int] = {}
    # Code objects of the customer code files, compiled once by the supervisor (marshal).
    compiled: dict[str, bytes] = {}


encoder = msgspec.msgpack.Encoder()
decoder = msgspec.msgpack.Decoder(ExecutionSpec)
