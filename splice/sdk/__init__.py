"""The public SDK: what integration and component authors import.

Everything here is stable; names starting with an underscore are not.
"""

from splice.sdk._component import INPUT_TYPES, MISSING, Action, Component, Input
from splice.sdk._context import ActionContext, ActionError

__all__ = [
    "INPUT_TYPES",
    "MISSING",
    "Action",
    "ActionContext",
    "ActionError",
    "Component",
    "Input",
]
