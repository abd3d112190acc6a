"""The view of an execution that an action gets: ids, config, logger, scratch space."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


class ActionError(Exception):
    """An expected failure of an action: the message is shown and recorded without a traceback.

    Raise it with a message that names the value at fault and what to do, for example
    ``ActionError("HTTP 404 from https://api.example.com/x: check the URL input")``.
    Set ``retryable=False`` to stop a step's retry policy from trying again.
    """

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        self.retryable = retryable
        super().__init__(message)


class StepLogger(Protocol):
    def debug(self, message: str, *args: Any) -> None: ...
    def info(self, message: str, *args: Any) -> None: ...
    def warning(self, message: str, *args: Any) -> None: ...
    def error(self, message: str, *args: Any) -> None: ...


@dataclass
class ActionContext:
    """The execution an action runs in: ids, config, a logger, scratch space and sources.

    ``config`` contains the instance's config values, secrets and connections included.
    Secret values are masked in whatever an action returns or logs before it is recorded.
    """

    execution_id: str
    step: str  # the step path, such as ``invoices[3].post``
    attempt: int
    config: Mapping[str, Any]
    logger: logging.LoggerAdapter[logging.Logger] | StepLogger
    scratch_dir: Path
    # Folder that relative file paths in inputs and config values are taken from: the
    # directory `splice run` was started in. None where relative paths have no meaning.
    working_dir: Path | None = None
    sources: Mapping[str, str] = field(default_factory=dict)
    # Objects an action keeps for the rest of this execution, such as an HTTP client.
    resources: dict[str, Any] = field(default_factory=dict)

    @property
    def idempotency_key(self) -> str:
        """A key stable across retries and resumptions of this step in this execution."""
        return f"{self.execution_id}:{self.step}"
