"""Config values of an integration: gathered from defaults, a file, the environment and flags.

Later sources win: defaults, then ``--config-file``, then ``SPLICE_CONFIG_*`` environment
variables, then ``--config NAME=VALUE``. A connection's fields are set one by one as
``NAME.FIELD=VALUE`` (environment: ``SPLICE_CONFIG_NAME__FIELD``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from splice.definition.model import (
    CONNECTION_DEFAULTS,
    CONNECTION_FIELDS,
    CONNECTION_REQUIRED,
    ConfigVariable,
    Integration,
)
from splice.errors import ConfigError

MIN_SECRET_LENGTH = 4  # shorter values cannot be masked without masking ordinary text


@dataclass
class ConfigValues:
    """Resolved config values, and the secret strings to mask wherever they appear."""

    values: dict[str, Any] = field(default_factory=dict)
    secrets: list[str] = field(default_factory=list)


def environment_name(variable: str, field_name: str | None = None) -> str:
    """``SPLICE_CONFIG_<NAME>`` or ``SPLICE_CONFIG_<NAME>__<FIELD>``, upper-cased."""
    name = "SPLICE_CONFIG_" + re.sub(r"[^A-Za-z0-9]", "_", variable).upper()
    if field_name is not None:
        name += "__" + re.sub(r"[^A-Za-z0-9]", "_", field_name).upper()
    return name


def resolve_config(
    integration: Integration,
    *,
    assignments: Iterable[str] = (),
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> ConfigValues:
    """Gather, convert and check every config value; raise ConfigError naming the source.

    ``environ`` contains the SPLICE_CONFIG_* variables to read, and None reads none (splice deploy,
    whose instances must not depend on the environment of the host that deployed them).
    """
    declared = integration.config
    raw: dict[str, tuple[Any, str]] = {}
    fields: dict[str, dict[str, tuple[Any, str]]] = {}
    if config_file is not None:
        _from_file(config_file, declared, raw, fields)
    _from_environment(environ or {}, declared, raw, fields)
    for assignment in assignments:
        _from_assignment(assignment, declared, raw, fields)
    resolved = ConfigValues()
    for name, variable in declared.items():
        value = _value_of(
            name, variable, raw.get(name), fields.get(name, {}), environment=environ is not None
        )
        resolved.values[name] = value
        resolved.secrets.extend(_secrets_of(name, variable, value))
    return resolved


def _from_file(
    path: Path,
    declared: Mapping[str, ConfigVariable],
    raw: dict[str, Any],
    fields: dict[str, dict[str, Any]],
) -> None:
    source = f"config file {str(path)!r}"
    try:
        data = YAML(typ="safe").load(path.read_text(encoding="utf-8-sig"))
    except (OSError, YAMLError) as error:
        raise ConfigError(
            f"cannot read it: {error}",
            variable="*",
            source=source,
            fix="give a YAML or JSON mapping of NAME: VALUE",
        ) from None
    if data is None:
        return
    if not isinstance(data, dict):
        raise ConfigError(
            "the file must hold a mapping of NAME: VALUE",
            variable="*",
            source=source,
            fix="write one `name: value` line per variable",
        )
    for name, value in data.items():
        _check_declared(str(name), declared, source)
        if declared[name].type == "connection" and isinstance(value, dict):
            for field_name, field_value in value.items():
                fields.setdefault(name, {})[str(field_name)] = (field_value, source)
        else:
            raw[name] = (value, source)


def _from_environment(
    environ: Mapping[str, str],
    declared: Mapping[str, ConfigVariable],
    raw: dict[str, Any],
    fields: dict[str, dict[str, Any]],
) -> None:
    for name, variable in declared.items():
        if variable.type == "connection":
            assert variable.connection is not None
            for field_name in CONNECTION_FIELDS[variable.connection]:
                env_name = environment_name(name, field_name)
                if env_name in environ:
                    fields.setdefault(name, {})[field_name] = (
                        environ[env_name],
                        f"environment {env_name}",
                    )
            continue
        env_name = environment_name(name)
        if env_name in environ:
            raw[name] = (environ[env_name], f"environment {env_name}")


def _from_assignment(
    assignment: str,
    declared: Mapping[str, ConfigVariable],
    raw: dict[str, Any],
    fields: dict[str, dict[str, Any]],
) -> None:
    name, equals, value = assignment.partition("=")
    if not equals:
        raise ConfigError(
            f"{assignment!r} is not NAME=VALUE",
            variable=name,
            source="--config",
            fix="write --config name=value",
        )
    name = name.strip()
    variable_name, dot, field_name = name.partition(".")
    _check_declared(variable_name, declared, "--config")
    source = f"--config {name}"
    if dot:
        if declared[variable_name].type != "connection":
            raise ConfigError(
                f"only connections have fields, but {variable_name!r} is a "
                f"{declared[variable_name].type}",
                variable=name,
                source=source,
                fix=f"write --config {variable_name}=VALUE",
            )
        fields.setdefault(variable_name, {})[field_name] = (value, source)
    else:
        raw[variable_name] = (value, source)


def _check_declared(name: str, declared: Mapping[str, ConfigVariable], source: str) -> None:
    if name not in declared:
        known = ", ".join(declared) or "none"
        raise ConfigError(
            "the integration declares no such config variable",
            variable=name,
            source=source,
            fix=f"use one of: {known}",
        )


def _value_of(
    name: str,
    variable: ConfigVariable,
    given: tuple[Any, str] | None,
    fields: Mapping[str, tuple[Any, str]],
    *,
    environment: bool = True,
) -> Any:
    if variable.type == "connection":
        return _connection(name, variable, given, fields)
    if given is None:
        if variable.required and variable.default is None:
            # Name the environment variable only where the environment is read.
            sources = f", {environment_name(name)}" if environment else ""
            raise ConfigError(
                "required but not set",
                variable=name,
                fix=f"set it with --config {name}=VALUE{sources} or --config-file",
            )
        return variable.default
    value, source = given
    return convert(name, variable.type, value, source)


def convert(name: str, kind: str, value: Any, source: str) -> Any:
    """Convert a value (text from a flag or the environment, or a parsed file value)."""
    if not isinstance(value, str) or kind in ("string", "secret"):
        return _check_native(name, kind, value, source)
    text = value.strip()
    if kind == "number":
        try:
            number = int(text) if re.fullmatch(r"[+-]?\d+", text) else float(text)
            if not math.isfinite(number):  # nan and inf parse as floats but are no JSON
                raise ValueError(text)
            return number
        except ValueError:
            raise ConfigError(
                f"{value!r} is not a number",
                variable=name,
                source=source,
                fix="give digits such as 42 or 3.5",
            ) from None
    if kind == "boolean":
        lowered = text.lower()
        if lowered in ("true", "yes", "1", "on"):
            return True
        if lowered in ("false", "no", "0", "off"):
            return False
        raise ConfigError(
            f"{value!r} is not a boolean", variable=name, source=source, fix="give true or false"
        )
    if kind == "list":
        if text.startswith("["):
            return _check_native(name, kind, _json(name, text, source), source)
        return [part.strip() for part in text.split(",") if part.strip()]
    if kind == "json":
        return _json(name, text, source)
    return value


def _json(name: str, text: str, source: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(
            f"invalid JSON at line {error.lineno} column {error.colno}: {error.msg}",
            variable=name,
            source=source,
            fix="quote the value as JSON",
        ) from None


def _check_native(name: str, kind: str, value: Any, source: str) -> Any:
    expected: Any = {
        "string": str,
        "secret": str,
        "number": (int, float),
        "boolean": bool,
        "list": list,
    }.get(kind)
    if expected is None:
        return value
    if not isinstance(value, expected) or (kind == "number" and isinstance(value, bool)):
        raise ConfigError(
            f"{value!r} is not a {kind}", variable=name, source=source, fix=f"give a {kind} value"
        )
    return value


def _connection(
    name: str,
    variable: ConfigVariable,
    given: tuple[Any, str] | None,
    fields: Mapping[str, tuple[Any, str]],
) -> dict[str, Any] | None:
    kind = variable.connection
    assert kind is not None
    known = CONNECTION_FIELDS[kind]
    collected: dict[str, Any] = dict(CONNECTION_DEFAULTS.get(kind, {}))
    if given is not None:
        value, source = given
        parsed = _json(name, value, source) if isinstance(value, str) else value
        if not isinstance(parsed, dict):
            raise ConfigError(
                "a connection must be an object of fields",
                variable=name,
                source=source,
                fix=f"set fields with --config {name}.FIELD=VALUE",
            )
        fields = {**{k: (v, source) for k, v in parsed.items()}, **fields}
    for field_name, (value, source) in fields.items():
        if field_name not in known:
            raise ConfigError(
                f"connection type {kind!r} has no field {field_name!r}",
                variable=f"{name}.{field_name}",
                source=source,
                fix=f"its fields: {', '.join(known)}",
            )
        collected[field_name] = value if isinstance(value, str) else str(value)
    missing = [f for f in CONNECTION_REQUIRED[kind] if not collected.get(f)]
    if missing and (variable.required or len(collected) > len(CONNECTION_DEFAULTS.get(kind, {}))):
        field_name = missing[0]
        raise ConfigError(
            f"field {field_name!r} of this {kind} connection is not set",
            variable=f"{name}.{field_name}",
            fix=f"set it with --config {name}.{field_name}=VALUE or "
            f"{environment_name(name, field_name)}",
        )
    if missing:
        return None
    return {"type": kind, **collected}


def _secrets_of(name: str, variable: ConfigVariable, value: Any) -> list[str]:
    if value is None:
        return []
    if variable.type == "secret":
        candidates = [(name, value)]
    elif variable.type == "connection":
        assert variable.connection is not None
        secret_fields = [
            f for f, secret in CONNECTION_FIELDS[variable.connection].items() if secret
        ]
        candidates = [(f"{name}.{f}", value[f]) for f in secret_fields if value.get(f)]
    else:
        return []
    for label, secret in candidates:
        if len(secret) < MIN_SECRET_LENGTH:
            raise ConfigError(
                f"secret values must be at least {MIN_SECRET_LENGTH} characters long, so they "
                "can be masked in records without masking ordinary text",
                variable=label,
                fix="use the real, longer secret",
            )
    return [secret for _, secret in candidates]
