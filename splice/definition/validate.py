"""Checks a definition's meaning after its shape: actions, inputs, references, code files."""

from __future__ import annotations

import ast
import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import TemplateSyntaxError, nodes

from splice.components import action_names, find_action
from splice.definition.expressions import (
    ENVIRONMENT,
    ROOT_NAMES,
    check_syntax,
    expression_source,
    is_expression,
    references,
)
from splice.definition.model import (
    ActionStep,
    BranchStep,
    ConfigVariable,
    Integration,
    LoopStep,
    ScheduleTrigger,
    Step,
    WebhookTrigger,
)
from splice.errors import Problem
from splice.sdk._component import describe_type, type_matches

Loc = list[str | int]

SYNTAX_FIX = (
    "check the brackets, quotes and operators of the expression; a filter is written `value | name`"
)


@dataclass
class Located:
    """A problem found at a path of the definition, located in the file by the loader."""

    loc: Loc
    message: str
    fix: str = ""
    on_key: bool = False
    # Set when the problem sits in another file than the definition (customer code).
    file: str | None = None
    line: int | None = None
    column: int | None = None


@dataclass
class _Scope:
    """Names an expression may reference at one point of a flow."""

    config: set[str]
    steps: set[str]
    loops: list[str] = field(default_factory=list)
    later: set[str] = field(default_factory=set)  # ids defined elsewhere in the flow


def validate_integration(
    integration: Integration, *, base_dir: Path
) -> tuple[list[Located | Problem], dict[str, str]]:
    """Return every problem of the integration and the code files its steps use."""
    problems: list[Located | Problem] = []
    sources: dict[str, str] = {}
    for name, variable in integration.config.items():
        problems.extend(_check_default(name, variable))
    config_names = set(integration.config)
    for flow_name, flow in integration.flows.items():
        loc: Loc = ["flows", flow_name]
        problems.extend(_check_trigger(flow.trigger, [*loc, "trigger"], integration))
        all_ids = _collect_ids(flow.steps, [*loc, "steps"], problems)
        scope = _Scope(config=config_names, steps=set(), later=set(all_ids))
        top_ids = _walk(flow.steps, [*loc, "steps"], scope, problems, sources, base_dir)
        if flow.result is not None:
            result_scope = _Scope(config=config_names, steps=top_ids, later=set(all_ids))
            problems.extend(_check_expression(flow.result, [*loc, "result"], result_scope))
    return problems, sources


def _check_trigger(trigger: Any, loc: Loc, integration: Integration) -> list[Located]:
    """Check what the trigger's shape cannot: a cron that never fires, the signing secret."""
    if isinstance(trigger, ScheduleTrigger) and "{{" not in trigger.cron:
        from splice.triggers.schedule import Schedule, ScheduleError

        try:
            Schedule(trigger.cron, trigger.timezone)
        except ScheduleError as error:
            message = str(error).removesuffix(f"; {error.fix}")
            return [Located([*loc, "cron"], message, error.fix)]
    if isinstance(trigger, WebhookTrigger) and trigger.signature is not None:
        name = trigger.signature.secret
        variable = integration.config.get(name)
        if variable is None or variable.type != "secret":
            found = "is not declared" if variable is None else f"is a {variable.type}"
            return [
                Located(
                    [*loc, "signature", "secret"],
                    f"the signing secret names config variable {name!r}, which {found}",
                    f"declare `{name}: {{type: secret, required: true}}` under `config:`",
                )
            ]
    return []


def _check_default(name: str, variable: ConfigVariable) -> list[Located]:
    if variable.default is None:
        return []
    expected: Any = {
        "string": str,
        "secret": str,
        "number": (int, float),
        "boolean": bool,
        "list": list,
        "connection": dict,
    }.get(variable.type)
    value = variable.default
    wrong = expected is not None and (
        not isinstance(value, expected) or (variable.type == "number" and isinstance(value, bool))
    )
    if wrong:
        return [
            Located(
                ["config", name, "default"],
                f"default {value!r} is {describe_type(value)}, not {variable.type}",
                f"give a {variable.type} default or change the type",
            )
        ]
    return []


def _collect_ids(steps: list[Step], loc: Loc, problems: list[Located | Problem]) -> set[str]:
    seen: dict[str, Loc] = {}
    for step, step_loc in _iterate(steps, loc):
        if step.id in seen:
            problems.append(
                Located(
                    [*step_loc, "id"],
                    f"step id {step.id!r} is used twice in this flow",
                    "give every step of a flow its own id",
                )
            )
        seen[step.id] = step_loc
    return set(seen)


def _iterate(steps: list[Step], loc: Loc) -> Iterable[tuple[Step, Loc]]:
    for index, step in enumerate(steps):
        step_loc = [*loc, index]
        yield step, step_loc
        if isinstance(step, LoopStep):
            yield from _iterate(step.steps, [*step_loc, "steps"])
        elif isinstance(step, BranchStep):
            for case_index, case in enumerate(step.branch):
                yield from _iterate(case.steps, [*step_loc, "branch", case_index, "steps"])
            yield from _iterate(step.else_, [*step_loc, "else_"])


def _walk(
    steps: list[Step],
    loc: Loc,
    scope: _Scope,
    problems: list[Located | Problem],
    sources: dict[str, str],
    base_dir: Path,
) -> set[str]:
    """Check each step in order; return the ids visible after the last one."""
    visible = set(scope.steps)
    for index, step in enumerate(steps):
        step_loc = [*loc, index]
        here = _Scope(scope.config, set(visible), scope.loops, scope.later)
        if isinstance(step, ActionStep):
            problems.extend(_check_action_step(step, step_loc, here, sources, base_dir))
        elif isinstance(step, LoopStep):
            _check_loop(step, step_loc, here, problems, sources, base_dir)
        elif isinstance(step, BranchStep):
            for case_index, case in enumerate(step.branch):
                case_loc = [*step_loc, "branch", case_index]
                problems.extend(_check_expression(case.when, [*case_loc, "when"], here))
                _walk(case.steps, [*case_loc, "steps"], here, problems, sources, base_dir)
            _walk(step.else_, [*step_loc, "else_"], here, problems, sources, base_dir)
        visible.add(step.id)
    return visible


def _check_loop(
    step: LoopStep,
    loc: Loc,
    scope: _Scope,
    problems: list[Located | Problem],
    sources: dict[str, str],
    base_dir: Path,
) -> None:
    if isinstance(step.loop, str):
        if is_expression(step.loop):
            problems.extend(_check_expression(step.loop, [*loc, "loop"], scope))
        else:
            problems.append(
                Located(
                    [*loc, "loop"],
                    f"loop {step.loop!r} is neither a list nor an expression",
                    "give a list, or an expression such as '{{ steps.list.files }}'",
                )
            )
    inner = _Scope(scope.config, scope.steps, [*scope.loops, step.id], scope.later)
    body_ids = _walk(step.steps, [*loc, "steps"], inner, problems, sources, base_dir)
    if step.result is not None:
        result_scope = _Scope(scope.config, body_ids, inner.loops, scope.later)
        problems.extend(_check_expression(step.result, [*loc, "result"], result_scope))


def _check_action_step(
    step: ActionStep, loc: Loc, scope: _Scope, sources: dict[str, str], base_dir: Path
) -> list[Located | Problem]:
    action = find_action(step.action)
    if action is None:
        close = difflib.get_close_matches(step.action, action_names(), n=1)
        hint = f"did you mean {close[0]!r}?" if close else "see the component reference"
        unknown: list[Located | Problem] = [
            Located([*loc, "action"], f"unknown action {step.action!r}", hint)
        ]
        # The inputs cannot be checked against the action, but their expressions can.
        unknown.extend(_check_expressions_in(step.inputs, [*loc, "inputs"], scope))
        return unknown
    problems: list[Located | Problem] = []
    for key, value in step.inputs.items():
        input_loc = [*loc, "inputs", key]
        spec = action.inputs.get(key)
        if spec is None and not action.extra_inputs:
            known = ", ".join(action.inputs) or "none"
            problems.append(
                Located(
                    input_loc,
                    f"{step.action} has no input {key!r}",
                    f"known inputs: {known}",
                    on_key=True,
                )
            )
            continue
        problems.extend(_check_expressions_in(value, input_loc, scope))
        if spec is not None and not _contains_expression(value) and value is not None:
            if not type_matches(spec.types, value):
                problems.append(
                    Located(
                        input_loc,
                        f"input {key!r} must be {spec.type}, got {describe_type(value)} {value!r}",
                        f"give a {spec.type} value",
                    )
                )
            elif spec.choices is not None and value not in spec.choices:
                allowed = ", ".join(repr(choice) for choice in spec.choices)
                problems.append(Located(input_loc, f"{value!r} is not allowed", f"use {allowed}"))
    for key, spec in action.inputs.items():
        if spec.required and key not in step.inputs:
            problems.append(
                Located([*loc, "inputs"], f"{step.action} needs input {key!r}", f"add `{key}:`")
            )
    if step.action == "code.run":
        problems.extend(_check_code(step, loc, sources, base_dir))
    return problems


def _contains_expression(value: Any) -> bool:
    if isinstance(value, str):
        return "{{" in value
    if isinstance(value, dict):
        return any(_contains_expression(v) for v in value.values())
    if isinstance(value, list):
        return any(_contains_expression(v) for v in value)
    return False


def _check_expressions_in(value: Any, loc: Loc, scope: _Scope) -> list[Located]:
    if isinstance(value, str):
        return _check_expression(value, loc, scope) if "{{" in value else []
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _check_expressions_in(v, [*loc, k], scope)]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _check_expressions_in(v, [*loc, i], scope)]
    return []


def _check_expression(text: str, loc: Loc, scope: _Scope) -> list[Located]:
    error = check_syntax(text)
    if error is not None:
        return [Located(loc, f"invalid expression {text!r}: {error}", SYNTAX_FIX)]
    try:
        found = references(text)
        assigned = _assigned_names(text)
    except TemplateSyntaxError as syntax:  # pragma: no cover - check_syntax caught it
        return [Located(loc, f"invalid expression {text!r}: {syntax.message}")]
    problems: list[Located] = []
    for ref in found:
        problem = _check_reference(ref.root, ref.name, scope, assigned)
        if problem:
            problems.append(Located(loc, f"expression {text!r}: {problem[0]}", problem[1]))
    return problems


def _assigned_names(text: str) -> set[str]:
    source, whole = expression_source(text)
    tree = ENVIRONMENT.parse("{{ " + source + " }}" if whole else source)
    return {name.name for name in tree.find_all(nodes.Name) if name.ctx in ("store", "param")}


def _check_reference(
    root: str, name: str | None, scope: _Scope, assigned: set[str]
) -> tuple[str, str] | None:
    if root in assigned or root in ENVIRONMENT.globals:
        return None
    if root not in ROOT_NAMES:
        return (f"unknown name {root!r}", f"expressions start from {', '.join(ROOT_NAMES)}")
    if root in ("item", "index") and not scope.loops:
        return (f"{root!r} exists only inside a loop", "move the step into a loop's steps")
    if root == "config" and name is not None and name not in scope.config:
        declared = ", ".join(sorted(scope.config)) or "none"
        return (
            f"no config variable {name!r}",
            f"declare it under `config:` (declared: {declared})",
        )
    if root == "loops" and name is not None and name not in scope.loops:
        return (f"no enclosing loop {name!r}", "loops.<id> reaches only loops around this step")
    if root == "steps" and name is not None and name not in scope.steps:
        if name in scope.later:
            return (
                f"step {name!r} has not run at this point (it comes later, or sits in "
                "another loop or branch)",
                "reference only earlier steps of the same or an enclosing block",
            )
        known = ", ".join(sorted(scope.steps)) or "none yet"
        return (f"no step {name!r}", f"steps visible here: {known}")
    return None


def _check_code(
    step: ActionStep, loc: Loc, sources: dict[str, str], base_dir: Path
) -> list[Located | Problem]:
    file, source = step.inputs.get("file"), step.inputs.get("source")
    if (file is None) == (source is None):
        return [
            Located(
                [*loc, "inputs"],
                "code.run needs exactly one of `file` or `source`",
                "give `file: name.py` (next to the definition) or inline `source:`",
            )
        ]
    function = step.inputs.get("function", "run")
    if source is not None:
        if not isinstance(source, str) or "{{" in source:
            return [Located([*loc, "inputs", "source"], "`source` must be literal Python code")]
        return _check_python(source, f"<{step.id}>", function, loc)
    if not isinstance(file, str) or "{{" in file:
        return [
            Located(
                [*loc, "inputs", "file"],
                "`file` must be a literal relative path",
                "name the .py file next to the definition",
            )
        ]
    resolved = (base_dir / file).resolve()
    if not resolved.is_relative_to(base_dir.resolve()):
        return [
            Located(
                [*loc, "inputs", "file"],
                f"code file {file!r} is outside the definition's folder",
                "keep customer code next to the definition",
            )
        ]
    if not resolved.is_file():
        folder = str(base_dir.resolve())
        return [
            Located(
                [*loc, "inputs", "file"],
                f"code file {file!r} not found in {folder!r}",
                f"`file` is relative to the definition's folder {folder!r}; check the name, "
                "or move the file there",
            )
        ]
    text = resolved.read_text(encoding="utf-8-sig")
    problems = _check_python(text, str(resolved), function, loc)
    sources[file] = text
    return problems


def _check_python(text: str, filename: str, function: Any, loc: Loc) -> list[Located | Problem]:
    try:
        tree = ast.parse(text, filename=filename)
    except SyntaxError as error:
        return [
            Located(
                loc,
                f"invalid Python: {error.msg}",
                "fix the syntax error in the code",
                file=filename,
                line=error.lineno,
                column=error.offset,
            )
        ]
    defined = {
        node.name for node in tree.body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }
    if function not in defined:
        return [
            Located(
                [*loc, "inputs"],
                f"code in {filename!r} defines no top-level function {function!r}",
                f"add `def {function}(context, **args):`",
            )
        ]
    return []
