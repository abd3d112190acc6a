"""Code-native definitions: a Python module that builds the model produces the YAML's model."""

from __future__ import annotations

import pytest

from splice.definition import load_integration
from splice.errors import DefinitionError

YAML_DEFINITION = """\
key: orders
name: Orders
version: "2.0.0"
config:
  inbox: {type: string, required: true}
  api: {type: connection, connection: bearer}
flows:
  sync:
    trigger: {type: schedule, cron: "0 6 * * 1-5", timezone: Europe/Berlin}
    result: "{{ steps.summary }}"
    steps:
      - id: list
        action: files.list
        inputs: {path: "{{ config.inbox }}", pattern: "*.json"}
      - id: each
        loop: "{{ steps.list.files }}"
        concurrency: 4
        on_error: continue
        steps:
          - id: check
            branch:
              - when: "{{ item.size > 0 }}"
                steps:
                  - id: read
                    action: files.read
                    inputs: {path: "{{ item.path }}", mode: text}
            else:
              - id: note
                action: log.write
                inputs: {message: "empty {{ item.name }}"}
      - id: summary
        action: code.run
        on_error: {retry: {attempts: 2, delay: 0.5}, then: fail}
        inputs: {file: summarize.py, args: {loop: "{{ steps.each }}"}}
  manual:
    trigger: {type: manual}
    steps:
      - id: hello
        action: log.write
        inputs: {message: hello}
"""

PYTHON_DEFINITION = """\
from splice.definition import (
    ActionStep, BranchCase, BranchStep, ConfigVariable, Flow, Integration, LoopStep,
    ManualTrigger, Retry, RetryPolicy, ScheduleTrigger,
)

integration = Integration(
    key="orders",
    name="Orders",
    version="2.0.0",
    config={
        "inbox": ConfigVariable(type="string", required=True),
        "api": ConfigVariable(type="connection", connection="bearer"),
    },
    flows={
        "sync": Flow(
            trigger=ScheduleTrigger(type="schedule", cron="0 6 * * 1-5",
                                    timezone="Europe/Berlin"),
            result="{{ steps.summary }}",
            steps=[
                ActionStep(id="list", action="files.list",
                           inputs={"path": "{{ config.inbox }}", "pattern": "*.json"}),
                LoopStep(
                    id="each", loop="{{ steps.list.files }}", concurrency=4,
                    on_error="continue",
                    steps=[
                        BranchStep(
                            id="check",
                            branch=[BranchCase(when="{{ item.size > 0 }}", steps=[
                                ActionStep(id="read", action="files.read",
                                           inputs={"path": "{{ item.path }}", "mode": "text"}),
                            ])],
                            else_=[ActionStep(id="note", action="log.write",
                                              inputs={"message": "empty {{ item.name }}"})],
                        ),
                    ],
                ),
                ActionStep(
                    id="summary", action="code.run",
                    on_error=RetryPolicy(retry=Retry(attempts=2, delay=0.5), then="fail"),
                    inputs={"file": "summarize.py", "args": {"loop": "{{ steps.each }}"}},
                ),
            ],
        ),
        "manual": Flow(
            trigger=ManualTrigger(type="manual"),
            steps=[ActionStep(id="hello", action="log.write", inputs={"message": "hello"})],
        ),
    },
)
"""

SUMMARIZE = "def run(context, *, loop):\n    return loop['succeeded']\n"


def test_python_equals_yaml(write_integration):
    """The Python module and the YAML file give the same model."""
    from_yaml = load_integration(write_integration(YAML_DEFINITION, {"summarize.py": SUMMARIZE}))
    from_python = load_integration(write_integration(PYTHON_DEFINITION, name="integration.py"))
    assert from_yaml.model_dump() == from_python.model_dump()


def test_python_loads_sources(write_integration):
    """A code-native definition loads the code files its steps use, as YAML does."""
    write_integration("", {"summarize.py": SUMMARIZE}, name="unused.yaml")
    integration = load_integration(write_integration(PYTHON_DEFINITION, name="integration.py"))
    assert integration.sources == {"summarize.py": SUMMARIZE}


def test_python_semantic_error(write_integration):
    """A code-native definition is validated like YAML: an unknown action names its step."""
    source = PYTHON_DEFINITION.replace(
        'action="log.write", inputs={"message": "hello"}',
        'action="log.wirte", inputs={"message": "hello"}',
    )
    path = write_integration(source, {"summarize.py": SUMMARIZE}, name="integration.py")
    with pytest.raises(DefinitionError) as raised:
        load_integration(path)
    paths = [(p.path, p.message, p.fix) for p in raised.value.problems]
    assert paths == [
        (
            "flows.manual.steps[0] (hello).action",
            "unknown action 'log.wirte'",
            "did you mean 'log.write'?",
        )
    ]


def test_python_error_in_else(write_integration):
    """A problem inside a branch's else names every step id on its path and has no line."""
    source = PYTHON_DEFINITION.replace(
        'ActionStep(id="note", action="log.write"',
        'ActionStep(id="note", action="log.wirte"',
    )
    assert source != PYTHON_DEFINITION
    path = write_integration(source, {"summarize.py": SUMMARIZE}, name="integration.py")
    with pytest.raises(DefinitionError) as raised:
        load_integration(path)
    problem = raised.value.problems[0]
    expected_path = "flows.sync.steps[1] (each).steps[0] (check).else[0] (note).action"
    assert expected_path == problem.path
    assert (None, None) == (problem.line, problem.column)
    assert str(path) == problem.file


def test_python_model_error(write_integration):
    """A model error raised while the module runs becomes a DefinitionError with its path."""
    source = PYTHON_DEFINITION.replace('id="hello"', 'id="Hello"')
    path = write_integration(source, {"summarize.py": SUMMARIZE}, name="integration.py")
    with pytest.raises(DefinitionError) as raised:
        load_integration(path)
    assert [p.message for p in raised.value.problems] == ["step id 'Hello' is invalid"]


def test_python_without_integration(write_integration):
    """A module without a top-level `integration` names what to assign."""
    path = write_integration("x = 1\n", name="integration.py")
    with pytest.raises(DefinitionError) as raised:
        load_integration(path)
    problem = raised.value.problems[0]
    assert problem.fix == "assign `integration = Integration(key=..., name=..., flows={...})`"
