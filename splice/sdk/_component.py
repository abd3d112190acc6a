"""Components, actions and their declared inputs."""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

INPUT_TYPES = (
    "string",
    "integer",
    "number",
    "boolean",
    "list",
    "object",
    "bytes",
    "any",
    "connection",
)
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


@dataclass(frozen=True)
class Input:
    """Declaration of one action input.

    ``type`` is one of ``INPUT_TYPES`` or several joined by ``|`` (``"string|bytes"``).
    An input without a default and with ``required=True`` must be given by every step.
    """

    type: str = "any"
    required: bool = False
    default: Any = MISSING
    description: str = ""
    choices: tuple[Any, ...] | None = None

    def __post_init__(self) -> None:
        for name in self.types:
            if name not in INPUT_TYPES:
                raise ValueError(
                    f"unknown input type {name!r}; use one of {', '.join(INPUT_TYPES)}"
                )

    @functools.cached_property
    def types(self) -> tuple[str, ...]:
        return tuple(part.strip() for part in self.type.split("|"))


def type_matches(types: tuple[str, ...], value: Any) -> bool:
    """Tell whether ``value`` fits one of the declared input types (``None`` never does)."""
    return any(_fits(name, value) for name in types)


def _fits(name: str, value: Any) -> bool:
    if name == "any":
        return True
    if name == "boolean":
        return isinstance(value, bool)
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if name == "string":
        return isinstance(value, str)
    if name == "bytes":
        return isinstance(value, bytes | bytearray | memoryview)
    if name == "list":
        return isinstance(value, list | tuple)
    if name in ("object", "connection"):
        return isinstance(value, Mapping)
    return False


def describe_type(value: Any) -> str:
    """Name a runtime value's type in the vocabulary of input types."""
    for name in ("boolean", "integer", "number", "string", "bytes", "list", "object"):
        if _fits(name, value):
            return name
    return "null" if value is None else type(value).__name__


ActionFunction = Callable[..., Any]


@dataclass(frozen=True)
class Action:
    """One action of a component: a function plus the declaration of its inputs and output."""

    component: str
    name: str
    function: ActionFunction
    inputs: Mapping[str, Input]
    description: str = ""
    output: str = ""
    # Inputs whose values are not counted in the step's recorded input size and whose
    # expressions are evaluated lazily by the action itself (none of the built-ins need it yet).
    extra_inputs: bool = False

    @property
    def qualified_name(self) -> str:
        return f"{self.component}.{self.name}"

    def defaults(self) -> dict[str, Any]:
        return {
            key: spec.default for key, spec in self.inputs.items() if spec.default is not MISSING
        }


@dataclass
class Component:
    """A named package of actions (connection types and triggers come later).

    Declare actions with the :meth:`action` decorator::

        files = Component("files", description="Local folders")

        @files.action(inputs={"path": Input("string", required=True)})
        def read(context, *, path):
            ...
    """

    name: str
    description: str = ""
    actions: dict[str, Action] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(
                f"component name {self.name!r} is invalid: use lower-case letters, digits and _"
            )

    def action(
        self,
        *,
        name: str | None = None,
        inputs: Mapping[str, Input] | None = None,
        description: str = "",
        output: str = "",
        extra_inputs: bool = False,
    ) -> Callable[[ActionFunction], ActionFunction]:
        """Register the decorated function ``f(context, **inputs)`` as an action."""

        def register(function: ActionFunction) -> ActionFunction:
            action_name = name or function.__name__
            if not _NAME.match(action_name):
                raise ValueError(
                    f"action name {action_name!r} of component {self.name!r} is invalid: "
                    "use lower-case letters, digits and _"
                )
            declared = dict(inputs or {})
            _check_signature(function, declared, f"{self.name}.{action_name}", extra_inputs)
            self.actions[action_name] = Action(
                component=self.name,
                name=action_name,
                function=function,
                inputs=declared,
                description=description or (inspect.getdoc(function) or "").split("\n")[0],
                output=output,
                extra_inputs=extra_inputs,
            )
            return function

        return register


def _check_signature(
    function: ActionFunction, inputs: Mapping[str, Input], qualified: str, extra_inputs: bool
) -> None:
    """Reject an action whose function cannot take the inputs it declares."""
    parameters = inspect.signature(function).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    if extra_inputs and not accepts_any:
        raise TypeError(
            f"action {qualified} declares extra_inputs but its function has no **kwargs"
        )
    missing = [key for key in inputs if key not in parameters and not accepts_any]
    if missing:
        raise TypeError(
            f"action {qualified} declares inputs {missing} that its function does not accept; "
            "add them as keyword parameters"
        )
