"""The built-in components, looked up by name."""

from __future__ import annotations

import importlib
from functools import cache

from splice.sdk import Action, Component

# Module of each built-in component; each module defines a ``component`` attribute.
BUILTIN_MODULES = {
    "http": "splice.components.http",
    "code": "splice.components.code",
    "xml": "splice.components.xml",
    "json": "splice.components.json",
    "csv": "splice.components.csv",
    "files": "splice.components.files",
    "s3": "splice.components.s3",
    "log": "splice.components.log",
    "webhook": "splice.components.webhook",
}


@cache
def builtin_components() -> dict[str, Component]:
    """Import every built-in component module and return the components by name."""
    found: dict[str, Component] = {}
    for name, module_name in BUILTIN_MODULES.items():
        component = importlib.import_module(module_name).component
        found[name] = component
    return found


def find_action(qualified_name: str) -> Action | None:
    """Return the action named ``component.action``, or ``None`` when there is none."""
    component_name, _, action_name = qualified_name.partition(".")
    component = builtin_components().get(component_name)
    if component is None:
        return None
    return component.actions.get(action_name)


def action_names() -> list[str]:
    """List every qualified action name, for error messages that suggest one."""
    return sorted(
        f"{component.name}.{action}"
        for component in builtin_components().values()
        for action in component.actions
    )
