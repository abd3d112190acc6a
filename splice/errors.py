"""Exceptions raised by Splice, grouped by who must act on them.

    SpliceError
    ├── DefinitionError        the integration author: the definition is invalid
    ├── ConfigError            the person running it: a config value is missing or invalid
    │   └── SettingError       a SPLICE_* setting in the environment is invalid
    ├── ScheduleError          a cron or time zone is invalid (splice.triggers.schedule)
    ├── SignatureError         a webhook delivery's signature is invalid (.signatures)
    ├── UsageError             the person running it: a command-line value is invalid
    ├── ExecutionError         the integration author: the flow failed while running
    │   ├── StepError          one step failed (carries the step path and attempt)
    │   ├── ExpressionError    an ``{{ ... }}`` expression failed to evaluate
    │   └── ExecutionTimeout   the execution ran past its wall-clock limit
    └── OperatorError          the operator: the store, blob store or sandbox is broken
        ├── StoreError
        └── SandboxError

Every error message says what failed, on which value, and what to do next.
"""

from __future__ import annotations

from dataclasses import dataclass


class SpliceError(Exception):
    """Base of every error Splice raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One finding of definition validation, located as precisely as the source allows."""

    message: str
    file: str | None = None
    line: int | None = None  # 1-based
    column: int | None = None  # 1-based
    path: str = ""  # where in the definition, such as ``flows.sync.steps[1] (invoices)``
    fix: str = ""

    def __str__(self) -> str:
        where = self.file or "<definition>"
        if self.line is not None:
            where += f":{self.line}:{self.column or 1}"
        text = f"{where}: {self.path + ': ' if self.path else ''}{self.message}"
        if self.fix:
            text += f"\n  fix: {self.fix}"
        return text


class DefinitionError(SpliceError):
    """The integration definition is invalid; ``problems`` lists every finding."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        count = len(problems)
        heading = f"invalid integration definition ({count} problem{'s' if count != 1 else ''})"
        super().__init__(heading + "\n" + "\n".join(str(p) for p in problems))


class ConfigError(SpliceError):
    """A config value is missing or does not fit its config variable's type."""

    def __init__(self, message: str, *, variable: str, source: str = "", fix: str = "") -> None:
        self.variable = variable
        self.source = source
        self.fix = fix
        text = f"config variable {variable!r}"
        if source:
            text += f" (from {source})"
        text += f": {message}"
        if fix:
            text += f"; {fix}"
        super().__init__(text)


class SettingError(ConfigError):
    """A ``SPLICE_*`` setting in the environment is invalid (exit code 3, like config)."""

    def __init__(self, message: str, *, setting: str, fix: str = "") -> None:
        self.setting = setting
        SpliceError.__init__(self, f"setting {setting} (from the environment): {message}; {fix}")
        self.variable, self.source, self.fix = setting, "environment", fix


class UsageError(SpliceError):
    """A value given on the command line is invalid, such as an unknown execution id."""

    def __init__(self, message: str, *, option: str, value: str | None, fix: str = "") -> None:
        self.option = option
        self.value = value  # None when the option was not given
        self.fix = fix
        text = f"{option}: {message}" if value is None else f"{option} {value!r}: {message}"
        if fix:
            text += f"; {fix}"
        super().__init__(text)


class RequestError(SpliceError):
    """A request to the service (CLI or API) that cannot be done as asked; ``status`` is HTTP's."""

    status = 400


class NotFoundError(RequestError):
    """A request names an instance, flow or execution that does not exist."""

    status = 404


class ConflictError(RequestError):
    """A request conflicts with the current state, such as cancelling an ended execution."""

    status = 409


class ExecutionError(SpliceError):
    """The flow failed while running."""

    def __init__(self, message: str, *, execution_id: str | None = None) -> None:
        self.execution_id = execution_id
        super().__init__(message)


class StepError(ExecutionError):
    """One step failed; ``step`` is its path, such as ``invoices[3].post``."""

    def __init__(
        self,
        message: str,
        *,
        step: str,
        attempt: int = 1,
        error_type: str = "",
        traceback: str = "",
        execution_id: str | None = None,
    ) -> None:
        self.step = step
        self.attempt = attempt
        self.error_type = error_type
        self.traceback = traceback
        super().__init__(f"step {step!r} failed: {message}", execution_id=execution_id)


class ExpressionError(ExecutionError):
    """An ``{{ ... }}`` expression could not be evaluated."""

    def __init__(self, message: str, *, expression: str, where: str = "") -> None:
        self.expression = expression
        self.where = where
        prefix = f"{where}: " if where else ""
        super().__init__(f"{prefix}expression {expression!r} failed: {message}")


class ExecutionTimeout(ExecutionError):
    """The execution ran past its wall-clock limit and was stopped."""


class OperatorError(SpliceError):
    """Something the operator runs is broken; the definition is not at fault."""


class StoreError(OperatorError):
    """The records database could not be reached, migrated or written."""


class SandboxError(OperatorError):
    """The sandbox could not start or supervise an execution."""
