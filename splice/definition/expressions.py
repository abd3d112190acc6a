"""``{{ ... }}`` expressions in step inputs, evaluated in Jinja2's sandbox.

A string that is exactly one expression yields the expression's native value (a list stays
a list); any other string containing ``{{`` renders as text. Literals pass through as they are.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, Undefined, nodes
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from splice.errors import ExpressionError

_WHOLE = re.compile(r"^\s*\{\{(?P<body>.*?)\}\}\s*$", re.DOTALL)
# A plain dotted path such as ``steps.list.files``: evaluated without a Jinja2 context,
# because building one costs more than the rest of a trivial step.
_PATH = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z][A-Za-z0-9_]*)*$")

# Names an expression may start from.
ROOT_NAMES = ("config", "trigger", "steps", "item", "index", "loops", "execution")

Evaluator = Callable[[Mapping[str, Any]], Any]

# Bounds on what one operator may build. Jinja2's sandbox bounds range() to 100,000 items
# but not ``'x' * n`` or ``n ** m``, which could take the whole execution's memory or CPU.
MAX_REPEAT_LENGTH = 1_000_000  # items or characters that ``*`` may build from a sequence
MAX_POWER_BITS = 4096  # bits of an integer that ``**`` may build


class _Environment(ImmutableSandboxedEnvironment):
    """Sandboxed environment where ``a.b`` on a mapping means its key ``b`` first.

    Jinja2 tries the attribute first, so ``steps.items`` would find ``dict.items``;
    definitions name keys far more often than methods.
    """

    intercepted_binops = frozenset(["*", "**"])

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            _check_repeat(left, right)
        elif operator == "**":
            _check_power(left, right)
        return super().call_binop(context, operator, left, right)

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, Mapping):
            try:
                return obj[attribute]
            except KeyError:
                pass
            except TypeError:
                pass
        return super().getattr(obj, attribute)


def _check_repeat(left: Any, right: Any) -> None:
    for sequence, count in ((left, right), (right, left)):
        repeats = isinstance(sequence, str | bytes | list | tuple) and isinstance(count, int)
        if repeats and len(sequence) * count > MAX_REPEAT_LENGTH:
            raise OverflowError(
                f"repeating a sequence of {len(sequence)} items {count} times exceeds "
                f"the limit of {MAX_REPEAT_LENGTH} items"
            )


def _check_power(base: Any, exponent: Any) -> None:
    integers = isinstance(base, int) and isinstance(exponent, int)
    if integers and abs(base) > 1 and exponent * math.log2(abs(base)) > MAX_POWER_BITS:
        raise OverflowError(
            f"{base} ** {exponent} exceeds the limit of {MAX_POWER_BITS} bits for an integer"
        )


ENVIRONMENT = _Environment(undefined=StrictUndefined, autoescape=False)
# lipsum() generates placeholder text, of any length it is asked for; no definition needs it.
del ENVIRONMENT.globals["lipsum"]
# NOTE: filters such as center() or indent() can still build large strings; the execution's
# wall-clock limit (SPLICE_EXECUTION_TIMEOUT) is what bounds them.


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
    if whole and _PATH.match(source):
        return _compile_path(source, text, where)
    try:
        if whole:
            compiled = ENVIRONMENT.compile_expression(source, undefined_to_none=False)
            call: Callable[[Mapping[str, Any]], Any] = lambda scope: compiled(**scope)  # noqa: E731
        else:
            template = ENVIRONMENT.from_string(source)
            call = template.render
    except TemplateSyntaxError as error:
        raise ExpressionError(str(error.message), expression=text, where=where) from None

    return _guarded(call, text, where)


def _guarded(call: Callable[[Mapping[str, Any]], Any], text: str, where: str) -> Evaluator:
    """Wrap an evaluation so every failure becomes an ExpressionError naming the expression."""

    def evaluate(scope: Mapping[str, Any]) -> Any:
        try:
            value = call(scope)
            _fail_if_undefined(value)
            return value
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


def _fail_if_undefined(value: Any, depth: int = 3) -> None:
    """Raise the undefined error of a value built by the expression, such as ``[missing]``.

    A whole expression returns an undefined value instead of raising its error, also
    inside the lists and dicts it builds, which the first few levels here catch.
    """
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    if depth == 0:
        return
    if type(value) is list or type(value) is tuple:
        for item in value:
            _fail_if_undefined(item, depth - 1)
    elif type(value) is dict:
        for item in value.values():
            _fail_if_undefined(item, depth - 1)


def _compile_path(source: str, text: str, where: str) -> Evaluator:
    """Evaluate a dotted path the way Jinja2's sandbox would, without building a context."""
    root, *names = source.split(".")
    sandbox_getattr = ENVIRONMENT.getattr
    fallback: list[Evaluator] = []

    def slow(scope: Mapping[str, Any]) -> Any:
        if not fallback:
            compiled = ENVIRONMENT.compile_expression(source, undefined_to_none=False)
            fallback.append(_guarded(lambda s: compiled(**s), text, where))
        return fallback[0](scope)

    def evaluate(scope: Mapping[str, Any]) -> Any:
        if root not in scope:
            return slow(scope)  # a Jinja2 global, or an undefined name with Jinja2's message
        value = scope[root]
        for name in names:
            if type(value) is dict and name in value:
                value = value[name]
                continue
            value = sandbox_getattr(value, name)  # applies the sandbox's attribute rules
            if isinstance(value, Undefined):
                return slow(scope)
        return value

    return evaluate
