"""``{{ ... }}`` expressions in step inputs, evaluated in Jinja2's sandbox.

A string that is exactly one expression yields the expression's native value (a list stays
a list); any other string containing ``{{`` renders as text. Literals pass through as they are.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, nodes
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from splice.errors import ExpressionError

_WHOLE = re.compile(r"^\s*\{\{(?P<body>.*?)\}\}\s*$", re.DOTALL)

# Names an expression may start from.
ROOT_NAMES = ("config", "trigger", "steps", "item", "index", "loops", "execution")

Evaluator = Callable[[Mapping[str, Any]], Any]


class _Environment(ImmutableSandboxedEnvironment):
    """Sandboxed environment where ``a.b`` on a mapping means its key ``b`` first.

    Jinja2 tries the attribute first, so ``steps.items`` would find ``dict.items``;
    definitions name keys far more often than methods.
    """

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, Mapping):
            try:
                return obj[attribute]
            except KeyError:
                pass
            except TypeError:
                pass
        return super().getattr(obj, attribute)


ENVIRONMENT = _Environment(undefined=StrictUndefined, autoescape=False)


def is_expression(value: Any) -> bool:
    return isinstance(value, str) and "{{" in value


def expression_source(text: str) -> tuple[str, bool]:
    """Return the Jinja source to compile and whether it is one whole expression."""
    match = _WHOLE.match(text)
    if match and "{{" not in match.group("body"):
        return match.group("body").strip(), True
    return text, False


def check_syntax(text: str) -> str | None:
    """Return a syntax error message for the expression, or ``None`` when it parses."""
    source, whole = expression_source(text)
    try:
        if whole:
            ENVIRONMENT.parse("{{ " + source + " }}")
        else:
            ENVIRONMENT.parse(source)
    except TemplateSyntaxError as error:
        return error.message or str(error)
    return None


@dataclass(frozen=True)
class Reference:
    """A dotted reference an expression makes, such as ``steps.list`` or ``config.inbox``."""

    root: str
    name: str | None  # the first attribute or constant key after the root, when there is one


def references(text: str) -> list[Reference]:
    """List the root names and first keys an expression reads (for validation)."""
    source, whole = expression_source(text)
    tree = ENVIRONMENT.parse("{{ " + source + " }}" if whole else source)
    found: list[Reference] = []
    consumed: set[int] = set()
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        target = node.node  # type: ignore[attr-defined]
        if isinstance(target, nodes.Name) and target.ctx == "load":
            if isinstance(node, nodes.Getattr):
                key: str | None = node.attr
            else:
                key = _const_key(node.arg)  # type: ignore[attr-defined]
            found.append(Reference(target.name, key))
            consumed.add(id(target))
    for name in tree.find_all(nodes.Name):
        if name.ctx == "load" and id(name) not in consumed:
            found.append(Reference(name.name, None))
    return found


def _const_key(node: nodes.Node) -> str | None:
    if isinstance(node, nodes.Const) and isinstance(node.value, str):
        return node.value
    return None


def compile_value(value: Any, *, where: str = "") -> Evaluator:
    """Compile a literal or expression tree into a function of the scope."""
    if isinstance(value, str):
        return _compile_string(value, where)
    if isinstance(value, Mapping):
        parts = {key: compile_value(item, where=f"{where}.{key}") for key, item in value.items()}
        if all(getattr(part, "literal", False) for part in parts.values()):
            return _literal(value)
        return lambda scope: {key: part(scope) for key, part in parts.items()}
    if isinstance(value, list | tuple):
        items = [compile_value(item, where=f"{where}[{i}]") for i, item in enumerate(value)]
        if all(getattr(item, "literal", False) for item in items):
            return _literal(value)
        return lambda scope: [item(scope) for item in items]
    return _literal(value)


def _literal(value: Any) -> Evaluator:
    if isinstance(value, Mapping | list | tuple):
        # A fresh copy per evaluation, so an action that changes its input cannot change
        # the literal that the next iteration receives.
        import copy

        def evaluate(scope: Mapping[str, Any]) -> Any:
            return copy.deepcopy(value)
    else:

        def evaluate(scope: Mapping[str, Any]) -> Any:
            return value

    evaluate.literal = True  # type: ignore[attr-defined]
    return evaluate


def _compile_string(text: str, where: str) -> Evaluator:
    if "{{" not in text:
        return _literal(text)
    source, whole = expression_source(text)
    try:
        if whole:
            compiled = ENVIRONMENT.compile_expression(source, undefined_to_none=False)
            call: Callable[[Mapping[str, Any]], Any] = lambda scope: compiled(**scope)  # noqa: E731
        else:
            template = ENVIRONMENT.from_string(source)
            call = template.render
    except TemplateSyntaxError as error:
        raise ExpressionError(str(error.message), expression=text, where=where) from None

    def evaluate(scope: Mapping[str, Any]) -> Any:
        try:
            return call(scope)
        except UndefinedError as error:
            raise ExpressionError(
                f"{error.message}; check the names it uses exist at this point of the flow",
                expression=text,
                where=where,
            ) from None
        except SecurityError as error:
            raise ExpressionError(
                f"not allowed in the sandbox: {error}", expression=text, where=where
            ) from None
        except Exception as error:  # the expression's own arithmetic, filters, comparisons
            raise ExpressionError(
                f"{type(error).__name__}: {error}", expression=text, where=where
            ) from None

    return evaluate
