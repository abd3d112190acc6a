"""Load an integration definition from YAML or a Python module, with located errors."""

from __future__ import annotations

import datetime
import importlib.util
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError

from splice.definition.model import Integration
from splice.definition.validate import Located, validate_integration
from splice.errors import DefinitionError, Problem


def load_integration(path: str | Path) -> Integration:
    """Load, validate and return the integration defined in a ``.yaml``/``.yml`` or ``.py`` file.

    Raises DefinitionError listing every problem, each with file, line, column and fix.
    """
    path = Path(path)
    if not path.is_file():
        raise DefinitionError(
            [Problem(f"file {str(path)!r} not found", fix="check the path to the definition")]
        )
    if path.suffix == ".py":
        integration = _load_python(path)
        problems, sources = validate_integration(integration, base_dir=path.parent)
        if problems:
            # A plain dump has no positions, but it lets each path name its step ids.
            dump = integration.model_dump(by_alias=True)
            raise DefinitionError([_locate(p, path, dump) for p in problems])
    else:
        integration, sources = _load_yaml(_read_text(path), path, path.parent)
    integration._source_path = str(path)
    integration._sources = sources
    return integration


def load_integration_text(text: str, *, name: str = "<definition>", base_dir: Path) -> Integration:
    """Load a YAML definition given as text, resolving code files against ``base_dir``."""
    integration, sources = _load_yaml(text, Path(name), base_dir)
    integration._source_path = name
    integration._sources = sources
    return integration


def _load_yaml(text: str, path: Path, base_dir: Path) -> tuple[Integration, dict[str, str]]:
    """Parse with the fast C parser; when anything is wrong, parse again to locate it."""
    try:
        data = YAML(typ="safe").load(text)
        if isinstance(data, dict):
            integration = Integration.model_validate(_plain(data))
            problems, sources = validate_integration(integration, base_dir=base_dir)
            if not problems:
                return integration, sources
    except Exception:  # the round-trip pass below reports it with its position
        pass
    document = _parse_yaml(text, path)
    integration = _validate_model(document, path)
    problems, sources = validate_integration(integration, base_dir=base_dir)
    if problems:
        raise DefinitionError([_locate(p, path, document) for p in problems])
    return integration, sources


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise DefinitionError(
            [Problem(f"not valid UTF-8 at byte {error.start}", file=str(path), fix="save as UTF-8")]
        ) from None


def _parse_yaml(text: str, path: Path) -> Any:
    yaml = YAML(typ="rt")
    try:
        document = yaml.load(text)
    except DuplicateKeyError as error:
        mark = error.problem_mark
        raise DefinitionError(
            [
                Problem(
                    f"duplicate key: {error.problem}",
                    file=str(path),
                    line=mark.line + 1 if mark else None,
                    column=mark.column + 1 if mark else None,
                    fix="remove or rename one of the two entries",
                )
            ]
        ) from None
    except MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        raise DefinitionError(
            [
                Problem(
                    f"invalid YAML: {error.problem or error.context}",
                    file=str(path),
                    line=mark.line + 1 if mark else None,
                    column=mark.column + 1 if mark else None,
                    fix="fix the YAML syntax at this position",
                )
            ]
        ) from None
    if not isinstance(document, CommentedMap):
        raise DefinitionError(
            [
                Problem(
                    "the definition must be a mapping with `key`, `name` and `flows`",
                    file=str(path),
                    line=1,
                    column=1,
                    fix="start the file with `key: my-integration`",
                )
            ]
        )
    return document


def _plain(node: Any) -> Any:
    """Turn ruamel's nodes (round-trip or safe) into plain Python values."""
    if isinstance(node, dict):
        return {str(key): _plain(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_plain(item) for item in node]
    if isinstance(node, bool):
        return bool(node)
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    if isinstance(node, datetime.date | datetime.datetime):
        return node.isoformat()
    return node


def _validate_model(document: Any, path: Path) -> Integration:
    try:
        return Integration.model_validate(_plain(document))
    except ValidationError as error:
        problems = _problems_from_pydantic(error)
        raise DefinitionError([_locate(p, path, document) for p in problems]) from None


# Tags that pydantic puts in an error's location after a step or a trigger, to name the
# member of the union it tried; they are not keys of the definition.
_STEP_TAGS = ("action", "loop", "branch")
_TRIGGER_TAGS = ("manual", "webhook", "schedule")


def _problems_from_pydantic(error: ValidationError) -> list[Located]:
    problems: list[Located] = []
    for details in error.errors(include_url=False):
        problem = _problem_from_pydantic(details)
        if problem is not None and problem not in problems:
            problems.append(problem)
    return problems


def _definition_loc(loc: Sequence[str | int]) -> list[str | int]:
    """Drop the union tags from a pydantic location, keeping keys named like them."""
    kept: list[str | int] = []
    for index, part in enumerate(loc):
        previous = loc[index - 1] if index else None
        if isinstance(previous, int) and part in _STEP_TAGS:
            continue
        if previous == "trigger" and part in _TRIGGER_TAGS:
            continue
        kept.append(part)
    return kept


def _problem_from_pydantic(error: ErrorDetails) -> Located | None:
    loc = _definition_loc(error["loc"])
    kind = error["type"]
    value = error.get("input")
    if "on_error" in loc:
        loc, problem = _on_error_problem(loc, kind, value)
        if problem is not None or not loc:
            return problem
    if kind == "extra_forbidden":
        return Located(
            loc, f"unknown key {loc[-1]!r}", "remove it or check its spelling", on_key=True
        )
    if kind == "missing":
        return Located(loc[:-1], f"missing required key {loc[-1]!r}", f"add `{loc[-1]}:`")
    if kind == "string_pattern_mismatch":
        return _pattern_problem(loc, value)
    message = error["msg"]
    fix = _fix_for(kind)
    if message.startswith("Value error, "):
        # Model validators write "what is wrong; what to do".
        message, _, fix = message[len("Value error, ") :].partition("; ")
    if not isinstance(value, dict | list) and repr(value) not in message:
        message += f" (got {value!r})"
    return Located(loc, message, fix)


def _on_error_problem(
    loc: list[str | int], kind: str, value: Any
) -> tuple[list[str | int], Located | None]:
    """Turn the errors of the ``on_error`` union into one problem, or a located one.

    Returns the location to go on with (empty when the error is to be dropped) and the
    problem when it is already complete.
    """
    position = loc.index("on_error")
    member = loc[position + 1] if len(loc) > position + 1 else None
    if isinstance(member, str) and member.startswith("literal["):
        if isinstance(value, dict):
            return [], None  # a mapping: the RetryPolicy errors say what is wrong with it
        return loc, Located(
            loc[: position + 1],
            f"on_error {value!r} is invalid",
            "use fail, continue, or a mapping such as {retry: {attempts: 3}, then: fail}",
        )
    if member == "RetryPolicy":
        if kind == "model_type":
            return [], None  # not a mapping: the literal error covers it
        return loc[: position + 1] + loc[position + 2 :], None
    return loc, None


def _pattern_problem(loc: list[str | int], value: Any) -> Located:
    if loc and loc[-1] == "id":
        return Located(
            loc,
            f"step id {value!r} is invalid",
            "start with a lower-case letter or _, then use lower-case letters, digits and _",
        )
    return Located(
        loc,
        f"{loc[-1] if loc else 'value'} {value!r} is invalid",
        "start with a lower-case letter or digit, then use lower-case letters, digits, _ and -",
    )


def _fix_for(kind: str) -> str:
    return {
        "literal_error": "use one of the allowed values",
        "string_pattern_mismatch": "use lower-case letters, digits, _ (and - in keys)",
        "step_kind": "add `action: component.action`, `loop: ...` with `steps:`, or `branch:`",
        "too_short": "add at least one entry",
        "greater_than_equal": "raise the value to the minimum",
        "less_than_equal": "lower the value to the maximum",
    }.get(kind, "")


def _locate(problem: Located | Problem, path: Path, document: Any) -> Problem:
    if isinstance(problem, Problem):
        return problem
    line, column = _position(document, problem.loc, on_key=problem.on_key)
    if problem.file is not None:  # found in another file, such as a customer code file
        line, column = problem.line, problem.column
    return Problem(
        problem.message,
        file=problem.file or str(path),
        line=line,
        column=column,
        path=_describe(document, problem.loc),
        fix=problem.fix,
    )


def _position(
    document: Any, loc: Sequence[str | int], *, on_key: bool
) -> tuple[int | None, int | None]:
    """Walk the YAML tree along ``loc`` and return the 1-based position of the deepest node.

    Returns no position for a document that is not a parsed YAML tree (a Python definition).
    """
    if not isinstance(document, CommentedMap):
        return None, None
    node = document
    line, column = 0, 0
    for index, part in enumerate(loc):
        last = index == len(loc) - 1
        if isinstance(node, CommentedMap) and part in node:
            line, column = node.lc.key(part) if (last and on_key) else node.lc.value(part)
            node = node[part]
        elif isinstance(node, CommentedMap) and part == "else_" and "else" in node:
            line, column = node.lc.value("else")
            node = node["else"]
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and part < len(node):
            line, column = node.lc.item(part)
            node = node[part]
        else:
            break
    return line + 1, column + 1


def _describe(document: Any, loc: Iterable[str | int]) -> str:
    """Render a location as ``flows.sync.steps[1] (invoices).inputs``."""
    text = ""
    node = document
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            if isinstance(node, dict) and isinstance(node.get("id"), str):
                text += f" ({node['id']})"
        else:
            key = "else" if part == "else_" else str(part)
            text += ("." if text else "") + key
            node = node.get(key) if isinstance(node, dict) else None
    return text


def _load_python(path: Path) -> Integration:
    """Import a code-native definition: a module with a top-level ``integration`` object."""
    module_name = f"splice_definition_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise DefinitionError([Problem("cannot import this file as Python", file=str(path))])
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except ValidationError as error:
        problems = _problems_from_pydantic(error)
        raise DefinitionError([_locate(p, path, None) for p in problems]) from None
    finally:
        sys.modules.pop(module_name, None)
    integration = getattr(module, "integration", None)
    if not isinstance(integration, Integration):
        raise DefinitionError(
            [
                Problem(
                    "the module defines no top-level `integration` of type "
                    "splice.definition.Integration",
                    file=str(path),
                    fix="assign `integration = Integration(key=..., name=..., flows={...})`",
                )
            ]
        )
    return integration
