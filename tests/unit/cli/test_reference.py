"""The component reference in docs/ matches the actions' declarations."""

from __future__ import annotations

from pathlib import Path

from splice.cli.reference import render_markdown
from splice.components import builtin_components

DOCS = Path(__file__).parents[3] / "docs" / "components.md"


def test_components_doc_is_current() -> None:
    """docs/components.md equals `splice components --markdown`; regenerate it when not."""
    expected = render_markdown(builtin_components().values())
    assert expected == DOCS.read_text(encoding="utf-8")
