"""Check evaluated step inputs against an action's declarations."""

from __future__ import annotations

from typing import Any

from splice.sdk import MISSING, Action, ActionError
from splice.sdk._component import describe_type, type_matches


def prepare_inputs(action: Action, values: dict[str, Any], *, step: str) -> dict[str, Any]:
    """Apply defaults and check types; raise ActionError naming the input at fault."""
    prepared = dict(values)
    for key, spec in action.inputs.items():
        value = prepared.get(key, MISSING)
        if value is MISSING or value is None:
            if spec.default is not MISSING:
                default = spec.default
                # A fresh container per step, so an action that changes it changes no other.
                prepared[key] = default.copy() if isinstance(default, dict | list) else default
                continue
            if spec.required:
                raise ActionError(
                    f"input {key!r} of {action.qualified_name} is required but "
                    f"{'missing' if value is MISSING else 'null'}; give it a value in "
                    f"the inputs of step {step!r}",
                    retryable=False,
                )
            prepared[key] = None
            continue
        if not type_matches(spec.types, value):
            raise ActionError(
                f"input {key!r} of {action.qualified_name} must be {spec.type} but got "
                f"{describe_type(value)} {_preview(value)}; fix the value or expression "
                f"given in step {step!r}",
                retryable=False,
            )
        if spec.choices is not None and value not in spec.choices:
            choices = ", ".join(repr(c) for c in spec.choices)
            raise ActionError(
                f"input {key!r} of {action.qualified_name} is {value!r}; use one of {choices}",
                retryable=False,
            )
    if not action.extra_inputs and any(key not in action.inputs for key in values):
        unknown = sorted(set(prepared) - set(action.inputs))
        if unknown:
            raise ActionError(
                f"{action.qualified_name} has no input {unknown[0]!r}; "
                f"known inputs: {', '.join(action.inputs) or 'none'}",
                retryable=False,
            )
    return prepared


def _preview(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
