"""Helpers for testing integrations and components: invoke one action with fixture inputs."""

from __future__ import annotations

import logging
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from splice.components import find_action
from splice.engine.inputs import prepare_inputs
from splice.sdk import ActionContext


def make_context(
    *,
    config: Mapping[str, Any] | None = None,
    step: str = "step",
    scratch_dir: Path | None = None,
    working_dir: Path | None = None,
    sources: Mapping[str, str] | None = None,
) -> ActionContext:
    """Build an ActionContext outside of any execution, with a fresh scratch directory."""
    return ActionContext(
        execution_id=f"test-{uuid.uuid4().hex[:12]}",
        step=step,
        attempt=1,
        config=dict(config or {}),
        logger=logging.LoggerAdapter(logging.getLogger("splice.testing"), {}),
        scratch_dir=scratch_dir or Path(tempfile.mkdtemp(prefix="splice-test-")),
        working_dir=working_dir,
        sources=dict(sources or {}),
    )


def invoke_action(
    qualified_name: str, *, context: ActionContext | None = None, **inputs: Any
) -> Any:
    """Run the action named ``component.action`` with ``inputs`` as a step would."""
    action = find_action(qualified_name)
    if action is None:
        raise LookupError(f"no action named {qualified_name!r}")
    context = context or make_context()
    prepared = prepare_inputs(action, inputs, step=context.step)
    return action.function(context, **prepared)
