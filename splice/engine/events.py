"""What a running execution streams to its supervisor, one frame per event.

Every event is a tagged msgspec struct; the supervisor decodes frames into exactly these
types and rejects anything else, because the child that sends them runs customer code.
"""

from __future__ import annotations

import msgspec

from splice.engine.values import Recorded


class ErrorInfo(msgspec.Struct, array_like=True, omit_defaults=True):
    type: str
    message: str
    traceback: str = ""


class StepStartEvent(msgspec.Struct, tag="start", array_like=True, omit_defaults=True):
    """An attempt of a step (or loop iteration) began; its StepRunEvent follows when it ends.

    The supervisor records a started attempt whose end never came (the child was killed)
    as failed with the execution's reason.
    """

    path: str
    step_id: str
    kind: str
    attempt: int
    started: float
    action: str | None = None


class StepRunEvent(msgspec.Struct, tag="step", array_like=True, omit_defaults=True):
    """One attempt of one step (or one loop iteration) finished."""

    path: str  # ``invoices[3].post``
    step_id: str
    kind: str  # action | loop | branch | iteration
    status: str  # succeeded | failed | skipped
    attempt: int
    started: float  # seconds since the epoch
    ended: float
    action: str | None = None
    input_size: int = 0
    output: Recorded | None = None
    error: ErrorInfo | None = None
    continued: bool = False  # failed, and the flow went on under on_error: continue
    item: Recorded | None = None  # the loop item of a failed iteration


class LogEvent(msgspec.Struct, tag="log", array_like=True):
    path: str | None
    level: str
    time: float
    message: str


class ProgressEvent(msgspec.Struct, tag="progress", array_like=True):
    """A loop started (``done`` 0) or finished an item."""

    path: str
    total: int
    done: int
    failed: int


class ResultEvent(msgspec.Struct, tag="result", array_like=True, omit_defaults=True):
    """The execution ended; always the last event of a child that ended on its own."""

    status: str  # succeeded | failed
    result: Recorded | None = None
    error: ErrorInfo | None = None
    failed_step: str | None = None
    continued_failures: int = 0
    step_runs: int = 0


Event = StepStartEvent | StepRunEvent | LogEvent | ProgressEvent | ResultEvent

encoder = msgspec.msgpack.Encoder()
decoder = msgspec.msgpack.Decoder(Event)
