"""Config values: conversion per type, sources and their precedence, and their errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from splice.config import ConfigValues, environment_name, resolve_config
from splice.definition import Integration, load_integration_text
from splice.errors import ConfigError

DEFINITION = """\
key: test
name: Test
config:
  text: {type: string}
  count: {type: number}
  enabled: {type: boolean}
  tags: {type: list}
  options: {type: json}
  token: {type: secret}
  inbox: {type: string, required: true}
  region: {type: string, default: eu}
  accounting: {type: connection, connection: api_key}
  login: {type: connection, connection: basic}
  my-api: {type: connection, connection: bearer}
flows:
  main:
    trigger: {type: manual}
    steps:
      - id: a
        action: log.write
        inputs: {message: hi}
"""


@pytest.fixture
def integration() -> Integration:
    return load_integration_text(DEFINITION, base_dir=Path("."))


def resolve(integration: Integration, *assignments: str, **options: Any) -> ConfigValues:
    return resolve_config(integration, assignments=["inbox=/in", *assignments], **options)


def error_of(integration: Integration, *assignments: str, **options: Any) -> ConfigError:
    with pytest.raises(ConfigError) as raised:
        resolve(integration, *assignments, **options)
    return raised.value


@pytest.mark.parametrize(
    ("assignment", "name", "expected"),
    [
        ("text=hello world", "text", "hello world"),
        ("text=42", "text", "42"),
        ("count=42", "count", 42),
        ("count=-3.5", "count", -3.5),
        ("enabled=true", "enabled", True),
        ("enabled=No", "enabled", False),
        ("enabled=1", "enabled", True),
        ("tags=a, b ,c", "tags", ["a", "b", "c"]),
        ('tags=["a", 1]', "tags", ["a", 1]),
        ('options={"retries": [1, 2]}', "options", {"retries": [1, 2]}),
        ("options=7", "options", 7),
        ("token=s3cr3t-value", "token", "s3cr3t-value"),
    ],
)
def test_flag_conversion(integration, assignment, name, expected):
    """--config NAME=VALUE converts the text to the variable's type."""
    assert resolve(integration, assignment).values[name] == expected


def test_flag_int_type(integration):
    """A whole number becomes an int, not a float."""
    assert type(resolve(integration, "count=42").values["count"]) is int


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("count=abc", "'abc' is not a number"),
        ("count=true", "'true' is not a number"),
        ("count=nan", "'nan' is not a number"),
        ("count=inf", "'inf' is not a number"),
        ("enabled=maybe", "'maybe' is not a boolean"),
        ("options={bad", "invalid JSON at line 1 column 2"),
        ('tags=["a"', "invalid JSON at line 1 column 5"),
    ],
)
def test_flag_conversion_error(integration, assignment, message):
    """A value that does not convert names the variable, the source and the value."""
    error = error_of(integration, assignment)
    assert message in str(error)
    assert error.variable == assignment.split("=")[0]
    assert error.source == f"--config {assignment.split('=')[0]}"


def test_flag_without_equals(integration):
    """--config without = shows how to write it."""
    error = error_of(integration, "count")
    assert error.fix == "write --config name=value"


def test_default_used(integration):
    """A variable that no source sets takes its default."""
    assert resolve(integration).values["region"] == "eu"


def test_unset_optional_is_none(integration):
    """An optional variable without a default is None."""
    assert resolve(integration).values["text"] is None


def test_environment_names():
    """Environment names are upper-cased, with non-alphanumerics as _ and __ before a field."""
    assert [environment_name("inbox"), environment_name("my-api", "token")] == [
        "SPLICE_CONFIG_INBOX",
        "SPLICE_CONFIG_MY_API__TOKEN",
    ]


def test_environment_value(integration):
    """SPLICE_CONFIG_NAME sets a variable, converted like a flag."""
    values = resolve(integration, environ={"SPLICE_CONFIG_COUNT": "12"}).values
    assert values["count"] == 12


def test_environment_connection_field(integration):
    """SPLICE_CONFIG_NAME__FIELD sets one field of a connection."""
    values = resolve(integration, environ={"SPLICE_CONFIG_MY_API__TOKEN": "tok-123456"}).values
    assert values["my-api"] == {"type": "bearer", "token": "tok-123456"}


def test_environment_error_names_variable(integration):
    """An invalid environment value names the environment variable it came from."""
    error = error_of(integration, environ={"SPLICE_CONFIG_ENABLED": "perhaps"})
    assert error.source == "environment SPLICE_CONFIG_ENABLED"


def test_unrelated_environment_ignored(integration):
    """Environment variables of undeclared names are not read."""
    values = resolve(integration, environ={"SPLICE_CONFIG_OTHER": "x"}).values
    assert "other" not in values


def test_config_file(integration, tmp_path):
    """A YAML config file sets values with their native types, connections as mappings."""
    path = tmp_path / "config.yaml"
    path.write_text(
        "count: 3\nenabled: true\ntags: [x, y]\naccounting: {api_key: file-key-1, header: X-Key}\n"
    )
    values = resolve(integration, config_file=path).values
    assert values["count"] == 3
    assert values["enabled"] is True
    assert values["tags"] == ["x", "y"]
    assert values["accounting"] == {
        "type": "api_key",
        "header": "X-Key",
        "in": "header",
        "name": "api_key",
        "api_key": "file-key-1",
    }


def test_config_file_wrong_type(integration, tmp_path):
    """A file value of the wrong type names the file."""
    path = tmp_path / "config.yaml"
    path.write_text("count: three\n")
    error = error_of(integration, config_file=path)
    assert error.source == f"config file {str(path)!r}"
    assert error.variable == "count"


def test_config_file_not_mapping(integration, tmp_path):
    """A config file must be a mapping."""
    path = tmp_path / "config.yaml"
    path.write_text("- count\n")
    error = error_of(integration, config_file=path)
    assert error.fix == "write one `name: value` line per variable"


def test_config_file_invalid_yaml(integration, tmp_path):
    """An unreadable config file is a ConfigError, not a YAML traceback."""
    path = tmp_path / "config.yaml"
    path.write_text("count: [1,\n")
    error = error_of(integration, config_file=path)
    assert "cannot read it" in str(error)


@pytest.mark.parametrize(
    ("file", "environ", "flag", "expected"),
    [
        (None, None, None, "eu"),
        ("from-file", None, None, "from-file"),
        ("from-file", "from-env", None, "from-env"),
        ("from-file", "from-env", "from-flag", "from-flag"),
        (None, None, "from-flag", "from-flag"),
    ],
)
def test_precedence(integration, tmp_path, file, environ, flag, expected):
    """A flag beats the environment, which beats the file, which beats the default."""
    path = tmp_path / "config.yaml"
    path.write_text(f"region: {file}\n" if file else "")
    values = resolve(
        integration,
        *([f"region={flag}"] if flag else []),
        config_file=path,
        environ={"SPLICE_CONFIG_REGION": environ} if environ else {},
    ).values
    assert values["region"] == expected


def test_connection_fields_merge(integration, tmp_path):
    """Connection fields from several sources merge, the later source winning per field."""
    path = tmp_path / "config.yaml"
    path.write_text("login: {username: file-user, password: file-pass}\n")
    values = resolve(
        integration,
        "login.password=flag-pass",
        config_file=path,
        environ={"SPLICE_CONFIG_LOGIN__USERNAME": "env-user"},
    ).values
    assert values["login"] == {"type": "basic", "username": "env-user", "password": "flag-pass"}


def test_unknown_variable_flag(integration):
    """A flag for an undeclared variable lists the declared ones."""
    error = error_of(integration, "colour=red")
    assert error.variable == "colour"
    assert error.fix.startswith("use one of: text, count, enabled")


def test_unknown_variable_file(integration, tmp_path):
    """A file key for an undeclared variable names the file."""
    path = tmp_path / "config.yaml"
    path.write_text("colour: red\n")
    error = error_of(integration, config_file=path)
    assert (error.variable, error.source) == ("colour", f"config file {str(path)!r}")


def test_missing_required(integration):
    """A required variable that no source sets names every way to set it."""
    with pytest.raises(ConfigError) as raised:
        resolve_config(integration, assignments=[], environ={})
    assert str(raised.value) == (
        "config variable 'inbox': required but not set; set it with "
        "--config inbox=VALUE, SPLICE_CONFIG_INBOX or --config-file"
    )


def test_missing_required_without_environment(integration):
    """Where no environment is read (splice deploy), the hint leaves SPLICE_CONFIG_* out."""
    with pytest.raises(ConfigError) as raised:
        resolve_config(integration, assignments=[])
    assert str(raised.value) == (
        "config variable 'inbox': required but not set; set it with "
        "--config inbox=VALUE or --config-file"
    )


def test_connection_unknown_field(integration):
    """A field the connection type does not have lists its fields."""
    error = error_of(integration, "accounting.token=abcdef")
    assert error.variable == "accounting.token"
    assert error.fix == "its fields: api_key, header, in, name"


def test_connection_missing_field(integration):
    """A connection given partly names the missing field and its environment variable."""
    error = error_of(integration, "login.username=someone")
    assert error.variable == "login.password"
    assert error.fix == (
        "set it with --config login.password=VALUE or SPLICE_CONFIG_LOGIN__PASSWORD"
    )


def test_field_of_plain_variable(integration):
    """Only connections have fields."""
    error = error_of(integration, "text.field=1")
    assert error.fix == "write --config text=VALUE"


def test_connection_as_json(integration):
    """A connection may be given whole as a JSON object."""
    values = resolve(integration, 'my-api={"token": "json-token"}').values
    assert values["my-api"] == {"type": "bearer", "token": "json-token"}


def test_connection_not_object(integration):
    """A connection given as a JSON scalar is rejected."""
    error = error_of(integration, "my-api=[1]")
    assert error.fix == "set fields with --config my-api.FIELD=VALUE"


@pytest.mark.parametrize(
    "assignment", ["token=abc", "accounting.api_key=abc", "login.username=u", "my-api.token=x"]
)
def test_short_secret_rejected(integration, assignment):
    """A secret shorter than 4 characters cannot be masked safely and is rejected."""
    extra = ["login.password=ab"] if assignment.startswith("login") else []
    error = error_of(integration, assignment, *extra)
    assert "at least 4 characters" in str(error)


def test_secrets_collected(integration):
    """Secret values and the secret fields of connections are listed for masking."""
    resolved = resolve(
        integration,
        "token=secret-1",
        "accounting.api_key=key-22",
        "login.username=visible-user",
        "login.password=pass-333",
    )
    assert sorted(resolved.secrets) == ["key-22", "pass-333", "secret-1"]
