"""Expressions: native values, text rendering, key lookup and the sandbox's refusals."""

from __future__ import annotations

from typing import Any

import pytest

from splice.definition.expressions import compile_value
from splice.errors import ExpressionError

SCOPE: dict[str, Any] = {
    "config": {"inbox": "/data/in", "limit": 3},
    "trigger": {"body": {"ids": [1, 2, 3]}},
    "steps": {
        "list": {"files": [{"name": "a.xml"}, {"name": "b.xml"}], "count": 2},
        "items": ["first", "second"],
        "total": {"amount": 12.5, "keys": "not the method"},
    },
    "loops": {},
    "execution": {"id": "e-1"},
}


def evaluate(value: Any) -> Any:
    return compile_value(value, where="test")(SCOPE)


def test_whole_expression_keeps_list():
    """A string that is one expression gives the value itself: a list stays a list."""
    assert evaluate("{{ steps.list.files }}") == [{"name": "a.xml"}, {"name": "b.xml"}]


def test_whole_expression_keeps_int():
    """An integer stays an integer, not the text '2'."""
    value = evaluate("{{ steps.list.count }}")
    assert type(value) is int
    assert value == 2


def test_whole_expression_with_spaces():
    """Blanks around the braces do not turn the expression into text."""
    assert evaluate("  {{ trigger.body.ids }}\n") == [1, 2, 3]


def test_computed_expression_keeps_type():
    """An expression with operators keeps the type of its result."""
    assert evaluate("{{ config.limit * 2 }}") == 6


def test_filter_keeps_type():
    """A filtered expression returns the filter's value."""
    assert evaluate("{{ steps.list.files | length }}") == 2


def test_mixed_string_renders_text():
    """Text around an expression renders the whole string as text."""
    assert evaluate("{{ config.inbox }}/{{ steps.list.count }} files") == "/data/in/2 files"


def test_nested_inputs():
    """Expressions inside dicts and lists are evaluated in place; literals pass through."""
    value = evaluate(
        {
            "path": "{{ config.inbox }}",
            "ids": ["{{ trigger.body.ids }}", 7],
            "plain": {"keep": True},
        }
    )
    assert value == {"path": "/data/in", "ids": [[1, 2, 3], 7], "plain": {"keep": True}}


def test_literal_copied_per_evaluation():
    """A literal dict is copied for each evaluation, so changing one leaves the next intact."""
    evaluator = compile_value({"tags": ["a"]})
    first = evaluator(SCOPE)
    first["tags"].append("changed")
    assert evaluator(SCOPE) == {"tags": ["a"]}


def test_mapping_key_before_method():
    """steps.items is the step named items, not dict.items."""
    assert evaluate("{{ steps.items }}") == ["first", "second"]


def test_mapping_key_keys():
    """A key named keys wins over the dict method in a nested mapping too."""
    assert evaluate("{{ steps.total.keys }}") == "not the method"


def test_index_access():
    """Indexing a list works as in Python."""
    assert evaluate("{{ steps.list.files[1].name }}") == "b.xml"


def test_undefined_name_message():
    """An unknown name fails with the name and a hint, not a silent empty value."""
    with pytest.raises(ExpressionError) as raised:
        evaluate("{{ stepz.list }}")
    assert str(raised.value) == (
        "test: expression '{{ stepz.list }}' failed: 'stepz' is "
        "undefined; check the names it uses exist at this point of "
        "the flow"
    )


def test_undefined_whole_expression():
    """A whole expression naming an undefined variable fails instead of returning Undefined."""
    with pytest.raises(ExpressionError) as raised:
        evaluate("{{ missing }}")
    assert "'missing' is undefined" in str(raised.value)


def test_undefined_key():
    """A missing key of a step's output names the key."""
    with pytest.raises(ExpressionError) as raised:
        evaluate("{{ steps.list.nope }}")
    assert "has no attribute 'nope'" in str(raised.value)


def test_undefined_in_text():
    """An undefined name inside text fails too, instead of rendering as empty."""
    with pytest.raises(ExpressionError):
        evaluate("file {{ missing }}.xml")


def test_error_keeps_expression():
    """The error carries the expression and where it was evaluated."""
    with pytest.raises(ExpressionError) as raised:
        evaluate("{{ 1 / 0 }}")
    assert (raised.value.expression, raised.value.where) == ("{{ 1 / 0 }}", "test")


def test_syntax_error_at_compile():
    """A syntax error is raised when the expression is compiled."""
    with pytest.raises(ExpressionError):
        compile_value("{{ steps. }}")


@pytest.mark.parametrize(
    "expression",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ config.__init__.__globals__ }}",
        "{{ lipsum.__globals__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ joiner.__init__.__globals__ }}",
        "{{ namespace.__init__.__globals__ }}",
        "{{ steps.list.__class__ }}",
        "{{ steps.items.__class__.__subclasses__() }}",
        "{{ range.__globals__ }}",
        "{{ range.__code__ }}",
        "{{ dict.__init__ }}",
        "{{ (1).__class__.__base__ }}",
        "x {{ ''.__class__ }}",
        "{{ config.inbox.format.__globals__ }}",
    ],
)
def test_sandbox_rejects(expression):
    """Reaching Python internals through attributes fails with ExpressionError."""
    with pytest.raises(ExpressionError):
        evaluate(expression)


def test_range_bounded():
    """Jinja2's sandbox refuses a range of 10**9 items instead of building it."""
    with pytest.raises(ExpressionError) as raised:
        evaluate("{{ range(10**9) | list | length }}")
    assert "Range too big" in str(raised.value)


def test_range_small_allowed():
    """A small range still works."""
    assert evaluate("{{ range(3) | list }}") == [0, 1, 2]


@pytest.mark.parametrize(
    "expression",
    ["{{ 'a' * 10**9 }}", "{{ [0] * 10**9 }}", "{{ 10**9 * 'ab' }}", "{{ 10 ** 100000 }}"],
)
def test_operators_bounded(expression):
    """Repetition and powers that would build huge values fail at once."""
    with pytest.raises(ExpressionError) as raised:
        evaluate(expression)
    assert "exceeds the limit" in str(raised.value)


def test_operators_small_allowed():
    """Ordinary arithmetic and repetition are unaffected by the bounds."""
    assert [evaluate("{{ 'ab' * 3 }}"), evaluate("{{ 2 ** 10 }}"), evaluate("{{ 1.5 * 2 }}")] == [
        "ababab",
        1024,
        3.0,
    ]


def test_no_mutation():
    """The immutable sandbox refuses to change a step's output in place."""
    with pytest.raises(ExpressionError):
        evaluate("{{ steps.items.append('x') }}")
