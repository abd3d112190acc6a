"""The component reference, rendered from the actions' own declarations."""

from __future__ import annotations

import json
from collections.abc import Iterable

from splice.sdk import MISSING, Component

HEADER = """# Components

Generated from the action declarations by `splice components --markdown`; do not edit by
hand. An input marked required must be given by every step that uses the action; the
others take their default. Types: string, integer, number, boolean, list, object, bytes,
any, connection (an object from a connection config variable); `a|b` accepts either.
"""


def render_markdown(components: Iterable[Component]) -> str:
    parts = [HEADER]
    for component in components:
        parts.append(f"\n## {component.name}\n\n{component.description}\n")
        for action in component.actions.values():
            parts.append(f"\n### `{action.qualified_name}`\n\n{action.description}\n")
            if action.inputs:
                parts.append("\n| input | type | default | meaning |\n| --- | --- | --- | --- |\n")
                for name, spec in action.inputs.items():
                    default = _default(spec.default, spec.required)
                    meaning = spec.description.replace("|", "\\|")
                    if spec.choices:
                        meaning += " (one of " + ", ".join(f"`{c}`" for c in spec.choices) + ")"
                    kind = spec.type.replace("|", "\\|")
                    parts.append(f"| `{name}` | {kind} | {default} | {meaning} |\n")
            if action.output:
                parts.append(f"\nOutput: {action.output}\n")
    return "".join(parts)


def _default(value: object, required: bool) -> str:
    if required:
        return "required"
    if value is MISSING or value is None:
        return ""
    return f"`{json.dumps(value)}`"
