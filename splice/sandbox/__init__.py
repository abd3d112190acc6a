"""Sandboxes run an execution's steps in a child process and stream its events back.

``Sandbox`` is the interface the supervisor uses; ``ForkServerSandbox`` forks each execution
from a pre-warmed template process. Confinement (namespaces, seccomp, Landlock, limits)
builds on this interface.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from splice.engine.events import Event


@dataclass(frozen=True)
class ExecutionRequest:
    """The description of one execution that a sandbox starts."""

    execution_id: str
    spec: bytes  # an encoded ExecutionSpec, decoded by the child
    scratch_dir: Path  # created by the caller; the child's working directory
    timeout: float  # seconds of wall-clock time before the execution is killed


class SandboxedExecution(Protocol):
    execution_id: str

    def events(self, idle: Callable[[], None] | None = None) -> Iterator[Event]:
        """Yield the execution's events; the last one is always a ResultEvent.

        ``idle`` is called at least every half second while no event arrives.
        """
        ...

    def kill(self, reason: str) -> None:
        """Stop the execution now; ``events`` then ends with a failed result naming ``reason``."""
        ...

    def cancel(self, message: str) -> None:
        """Stop the execution as its deadline does; it ends failed with the error Cancelled.

        The child first records the steps it is running as failed with ``message``.
        """
        ...


class Sandbox(Protocol):
    def start(self, request: ExecutionRequest) -> SandboxedExecution: ...

    def close(self) -> None: ...
