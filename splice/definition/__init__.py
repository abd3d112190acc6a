"""Integration definitions: the model, its YAML and Python loaders, and expressions."""

from splice.definition.loader import load_integration, load_integration_text
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
