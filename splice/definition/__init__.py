"""Integration definitions: the model, its YAML and Python loaders, and expressions."""

from typing import TYPE_CHECKING, Any

from splice.definition.model import (
    ActionStep,
    BranchCase,
    BranchStep,
    ConfigVariable,
    Flow,
    Integration,
    LoopStep,
    ManualTrigger,
    Retry,
    RetryPolicy,
    ScheduleTrigger,
    WebhookTrigger,
)

__all__ = [
    "ActionStep",
    "BranchCase",
    "BranchStep",
    "ConfigVariable",
    "Flow",
    "Integration",
    "LoopStep",
    "ManualTrigger",
    "Retry",
    "RetryPolicy",
    "ScheduleTrigger",
    "WebhookTrigger",
    "load_integration",
    "load_integration_text",
]

if TYPE_CHECKING:
    from splice.definition.loader import load_integration, load_integration_text


def __getattr__(name: str) -> Any:
    # The loaders (and the YAML library behind them) load on first use, so that the
    # sandbox template, which only needs the model, stays smaller.
    if name in ("load_integration", "load_integration_text"):
        from splice.definition import loader

        return getattr(loader, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
