"""Every kind of definition error: its message, line and column, step path and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from splice.definition import load_integration
from splice.errors import DefinitionError, Problem

HEADER = """\
key: test
name: Test
flows:
  main:
    trigger: {type: manual}
    steps:
"""
# A valid step, for definitions whose fault lies elsewhere.
LOG_STEP = """\
      - id: a
        action: log.write
        inputs: {message: hi}
"""


def problems_of(
    write_integration, definition: str, files: dict[str, str] | None = None
) -> list[Problem]:
    """Load the definition and return the problems of the DefinitionError it raises."""
    path = write_integration(definition, files)
    with pytest.raises(DefinitionError) as raised:
        load_integration(path)
    return raised.value.problems


def only_problem(
    write_integration, definition: str, files: dict[str, str] | None = None
) -> Problem:
    problems = problems_of(write_integration, definition, files)
    assert [str(p) for p in problems[1:]] == []
    return problems[0]


def test_yaml_syntax_error(write_integration):
    """A YAML syntax error names the position where the parser stopped."""
    problem = only_problem(write_integration, "key: test\nname: [unclosed\nflows: {}\n")
    assert problem.message == "invalid YAML: expected ',' or ']', but got ':'"
    assert (problem.line, problem.column) == (3, 6)
    assert problem.path == ""
    assert problem.fix == "fix the YAML syntax at this position"


def test_yaml_error_names_file(write_integration):
    """The problem names the definition file, so an editor can jump to it."""
    problem = only_problem(write_integration, "key: test\nname: [unclosed\nflows: {}\n")
    assert problem.file is not None
    assert Path(problem.file).name == "integration.yaml"


def test_duplicate_key(write_integration):
    """A key given twice in one mapping is an error at the second one, not a silent override."""
    problem = only_problem(write_integration, "key: test\nname: Test\nkey: other\nflows: {}\n")
    assert problem.message.startswith('duplicate key: found duplicate key "key"')
    assert (problem.line, problem.column) == (3, 1)
    assert problem.fix == "remove or rename one of the two entries"


def test_not_a_mapping(write_integration):
    """A definition that is a list is rejected with how the file must start."""
    problem = only_problem(write_integration, "- key: test\n")
    assert problem.message == "the definition must be a mapping with `key`, `name` and `flows`"
    assert (problem.line, problem.column) == (1, 1)
    assert problem.fix == "start the file with `key: my-integration`"


def test_unknown_top_level_key(write_integration):
    """An unknown top-level key points at the key itself."""
    problem = only_problem(
        write_integration,
        "key: test\nname: Test\ncolour: red\n" + HEADER.split("\n", 2)[2] + LOG_STEP,
    )
    assert problem.message == "unknown key 'colour'"
    assert (problem.line, problem.column) == (3, 1)
    assert problem.path == "colour"
    assert problem.fix == "remove it or check its spelling"


def test_unknown_step_key(write_integration):
    """An unknown key of a step names the step by index and id."""
    problem = only_problem(write_integration, HEADER + LOG_STEP + "        colour: red\n")
    assert problem.message == "unknown key 'colour'"
    assert (problem.line, problem.column) == (10, 9)
    assert problem.path == "flows.main.steps[0] (a).colour"
    assert problem.fix == "remove it or check its spelling"


@pytest.mark.parametrize("missing", ["key", "name", "flows"])
def test_missing_top_level_key(write_integration, missing):
    """Each of key, name and flows is required and named when missing."""
    lines = {
        "key": "key: test\n",
        "name": "name: Test\n",
        "flows": HEADER.split("\n", 2)[2] + LOG_STEP,
    }
    definition = "".join(text for key, text in lines.items() if key != missing)
    problem = only_problem(write_integration, definition)
    assert problem.message == f"missing required key {missing!r}"
    assert (problem.line, problem.column) == (1, 1)
    assert problem.path == ""
    assert problem.fix == f"add `{missing}:`"


def test_step_without_kind(write_integration):
    """A step with neither action, loop nor branch names the keys that make a step."""
    problem = only_problem(write_integration, HEADER + "      - id: a\n        inputs: {}\n")
    assert problem.message == "a step needs one of `action`, `loop` or `branch`"
    assert (problem.line, problem.column) == (7, 9)
    assert problem.path == "flows.main.steps[0] (a)"
    assert problem.fix == (
        "add `action: component.action`, `loop: ...` with `steps:`, or `branch:`"
    )


def test_unknown_action_suggests(write_integration):
    """A misspelt action gets a did-you-mean with the closest action name."""
    problem = only_problem(
        write_integration,
        HEADER + "      - id: a\n        action: log.wirte\n        inputs: {message: hi}\n",
    )
    assert problem.message == "unknown action 'log.wirte'"
    assert (problem.line, problem.column) == (8, 17)
    assert problem.path == "flows.main.steps[0] (a).action"
    assert problem.fix == "did you mean 'log.write'?"


def test_unknown_action_checks_inputs(write_integration):
    """The input expressions of a step with an unknown action are still checked."""
    problems = problems_of(
        write_integration,
        HEADER
        + "      - id: a\n        action: log.wirte\n"
        + '        inputs: {message: "{{ steps.nope }}"}\n',
    )
    messages = [p.message for p in problems]
    assert messages == [
        "unknown action 'log.wirte'",
        "expression '{{ steps.nope }}': no step 'nope'",
    ]
    assert problems[1].path == "flows.main.steps[0] (a).inputs.message"


def test_unknown_input(write_integration):
    """An input the action does not declare points at its key and lists the known inputs."""
    problem = only_problem(
        write_integration,
        HEADER + "      - id: a\n        action: json.parse\n"
        "        inputs: {content: '1', colour: red}\n",
    )
    assert problem.message == "json.parse has no input 'colour'"
    assert (problem.line, problem.column) == (9, 32)
    assert problem.path == "flows.main.steps[0] (a).inputs.colour"
    assert problem.fix == "known inputs: content"


def test_missing_required_input(write_integration):
    """A required input that a step leaves out is named with the step's inputs."""
    problem = only_problem(
        write_integration,
        HEADER + "      - id: a\n        action: http.request\n        inputs: {method: GET}\n",
    )
    assert problem.message == "http.request needs input 'url'"
    assert (problem.line, problem.column) == (9, 17)
    assert problem.path == "flows.main.steps[0] (a).inputs"
    assert problem.fix == "add `url:`"


def test_literal_of_wrong_type(write_integration):
    """A literal that does not fit the input's type names the type and the value."""
    problem = only_problem(
        write_integration,
        HEADER + "      - id: a\n"
        "        action: http.request\n"
        "        inputs:\n          url: http://127.0.0.1:9/\n"
        "          retries: three\n",
    )
    assert problem.message == "input 'retries' must be integer, got string 'three'"
    assert (problem.line, problem.column) == (11, 20)
    assert problem.path == "flows.main.steps[0] (a).inputs.retries"
    assert problem.fix == "give a integer value"


def test_bad_on_error(write_integration):
    """An on_error that is neither fail, continue nor a retry policy is one problem."""
    problem = only_problem(write_integration, HEADER + LOG_STEP + "        on_error: ignore\n")
    assert problem.message == "on_error 'ignore' is invalid"
    assert (problem.line, problem.column) == (10, 19)
    assert problem.path == "flows.main.steps[0] (a).on_error"
    assert problem.fix == (
        "use fail, continue, or a mapping such as {retry: {attempts: 3}, then: fail}"
    )


def test_bad_retry_attempts(write_integration):
    """A retry policy's field is located inside the policy, without pydantic's union name."""
    problem = only_problem(
        write_integration, HEADER + LOG_STEP + "        on_error: {retry: {attempts: 0}}\n"
    )
    assert problem.message == "Input should be greater than or equal to 1 (got 0)"
    assert (problem.line, problem.column) == (10, 38)
    assert problem.path == "flows.main.steps[0] (a).on_error.retry.attempts"
    assert problem.fix == "raise the value to the minimum"


def test_invalid_step_id(write_integration):
    """A step id with capitals or dashes is rejected with the allowed characters."""
    problem = only_problem(write_integration, HEADER + LOG_STEP.replace("id: a", "id: Bad-Id"))
    assert problem.message == "step id 'Bad-Id' is invalid"
    assert (problem.line, problem.column) == (7, 13)
    assert problem.path == "flows.main.steps[0] (Bad-Id).id"
    assert problem.fix == (
        "start with a lower-case letter or _, then use lower-case letters, digits and _"
    )


def test_duplicate_step_id(write_integration):
    """Two steps of one flow with the same id: the second one is reported."""
    problem = only_problem(write_integration, HEADER + LOG_STEP + LOG_STEP)
    assert problem.message == "step id 'a' is used twice in this flow"
    assert (problem.line, problem.column) == (10, 13)
    assert problem.path == "flows.main.steps[1] (a).id"
    assert problem.fix == "give every step of a flow its own id"


def reference_problem(write_integration, steps: str) -> Problem:
    return only_problem(write_integration, HEADER + steps)


def test_reference_to_missing_step(write_integration):
    """A reference to a step that exists nowhere lists the steps visible there."""
    problem = reference_problem(
        write_integration,
        LOG_STEP + "      - id: b\n"
        "        action: log.write\n"
        "        inputs: {message: '{{ steps.nope }}'}\n",
    )
    assert problem.message == "expression '{{ steps.nope }}': no step 'nope'"
    assert (problem.line, problem.column) == (12, 27)
    assert problem.path == "flows.main.steps[1] (b).inputs.message"
    assert problem.fix == "steps visible here: a"


LATER_MESSAGE = (
    "step {name!r} has not run at this point (it comes later, or sits in another loop or branch)"
)


def test_reference_to_later_step(write_integration):
    """A reference to a step further down the flow is rejected."""
    problem = reference_problem(
        write_integration,
        "      - id: a\n        action: log.write\n"
        "        inputs: {message: '{{ steps.b }}'}\n" + LOG_STEP.replace("id: a", "id: b"),
    )
    assert problem.message == "expression '{{ steps.b }}': " + LATER_MESSAGE.format(name="b")
    assert (problem.line, problem.column) == (9, 27)
    assert problem.path == "flows.main.steps[0] (a).inputs.message"
    assert problem.fix == "reference only earlier steps of the same or an enclosing block"


def test_reference_into_other_loop(write_integration):
    """A step inside one loop cannot be read from outside it."""
    problem = reference_problem(
        write_integration,
        "      - id: each\n        loop: [1, 2]\n        steps:\n"
        "          - id: inner\n            action: log.write\n"
        "            inputs: {message: hi}\n"
        "      - id: other\n        loop: [3]\n        steps:\n"
        "          - id: reader\n            action: log.write\n"
        "            inputs: {message: '{{ steps.inner }}'}\n",
    )
    assert problem.message == "expression '{{ steps.inner }}': " + LATER_MESSAGE.format(
        name="inner"
    )
    assert (problem.line, problem.column) == (18, 31)
    assert problem.path == "flows.main.steps[1] (other).steps[0] (reader).inputs.message"


def test_undeclared_config_variable(write_integration):
    """config.NAME must be declared under config, and the declared names are listed."""
    definition = (
        "key: test\nname: Test\nconfig:\n  inbox: {type: string}\n"
        + HEADER.split("\n", 2)[2]
        + "      - id: a\n        action: log.write\n"
        "        inputs: {message: '{{ config.outbox }}'}\n"
    )
    problem = only_problem(write_integration, definition)
    assert problem.message == "expression '{{ config.outbox }}': no config variable 'outbox'"
    assert (problem.line, problem.column) == (11, 27)
    assert problem.path == "flows.main.steps[0] (a).inputs.message"
    assert problem.fix == "declare it under `config:` (declared: inbox)"


def test_item_outside_loop(write_integration):
    """item exists only inside a loop's steps."""
    problem = reference_problem(
        write_integration,
        "      - id: a\n        action: log.write\n        inputs: {message: '{{ item }}'}\n",
    )
    assert problem.message == "expression '{{ item }}': 'item' exists only inside a loop"
    assert (problem.line, problem.column) == (9, 27)
    assert problem.fix == "move the step into a loop's steps"


def test_loops_not_enclosing(write_integration):
    """loops.ID reaches only the loops around the step."""
    problem = reference_problem(
        write_integration,
        "      - id: each\n        loop: [1]\n        steps:\n"
        "          - id: inner\n            action: log.write\n"
        "            inputs: {message: '{{ loops.other.index }}'}\n",
    )
    assert problem.message == "expression '{{ loops.other.index }}': no enclosing loop 'other'"
    assert (problem.line, problem.column) == (12, 31)
    assert problem.path == "flows.main.steps[0] (each).steps[0] (inner).inputs.message"
    assert problem.fix == "loops.<id> reaches only loops around this step"


def test_invalid_expression_syntax(write_integration):
    """An expression that does not parse is reported before anything runs."""
    problem = reference_problem(
        write_integration,
        "      - id: a\n        action: log.write\n        inputs: {message: '{{ steps. }}'}\n",
    )
    assert problem.message == "invalid expression '{{ steps. }}': expected name or number"
    assert (problem.line, problem.column) == (9, 27)
    assert problem.path == "flows.main.steps[0] (a).inputs.message"
    assert problem.fix.startswith("check the brackets, quotes and operators of the expression")


CODE_STEP = "      - id: a\n        action: code.run\n        inputs: {{file: {file}}}\n"


def test_code_file_missing(write_integration):
    """code.run names a file that does not exist next to the definition."""
    problem = only_problem(write_integration, HEADER + CODE_STEP.format(file="nope.py"))
    assert problem.message.startswith("code file 'nope.py' not found in ")
    assert (problem.line, problem.column) == (9, 24)
    assert problem.path == "flows.main.steps[0] (a).inputs.file"
    assert problem.file is not None
    folder = str(Path(problem.file).parent.resolve())
    assert problem.fix.startswith(f"`file` is relative to the definition's folder {folder!r}")


def test_code_file_outside_folder(write_integration, tmp_path):
    """code.run may not reach out of the definition's folder, even to a file that exists."""
    (tmp_path / "outside.py").write_text("def run(context):\n    return 1\n")
    problem = only_problem(write_integration, HEADER + CODE_STEP.format(file="../outside.py"))
    assert problem.message == "code file '../outside.py' is outside the definition's folder"
    assert (problem.line, problem.column) == (9, 24)
    assert problem.path == "flows.main.steps[0] (a).inputs.file"
    assert problem.fix == "keep customer code next to the definition"


def test_code_syntax_error(write_integration):
    """A syntax error in customer code is located in the .py file, with the step's path."""
    problem = only_problem(
        write_integration,
        HEADER + CODE_STEP.format(file="bad.py"),
        {"bad.py": "def run(context):\n    total = (1 +\n"},
    )
    assert problem.message == "invalid Python: '(' was never closed"
    assert Path(problem.file or "").name == "bad.py"
    assert (problem.line, problem.column) == (2, 13)
    assert problem.path == "flows.main.steps[0] (a)"
    assert problem.fix == "fix the syntax error in the code"


def test_code_without_run(write_integration):
    """Customer code must define the function the step calls."""
    problem = only_problem(
        write_integration,
        HEADER + CODE_STEP.format(file="norun.py"),
        {"norun.py": "def other(context):\n    return 1\n"},
    )
    assert problem.message.endswith("norun.py' defines no top-level function 'run'")
    assert (problem.line, problem.column) == (9, 17)
    assert problem.path == "flows.main.steps[0] (a).inputs"
    assert problem.fix == "add `def run(context, **args):`"


def test_connection_without_type(write_integration):
    """A connection config variable must name its connection type."""
    definition = (
        "key: test\nname: Test\nconfig:\n  accounting:\n    type: connection\n"
        + HEADER.split("\n", 2)[2]
        + LOG_STEP
    )
    problem = only_problem(write_integration, definition)
    assert problem.message == "a connection config variable needs `connection:` naming its type"
    assert (problem.line, problem.column) == (5, 5)
    assert problem.path == "config.accounting"
    assert problem.fix.startswith("add `connection:` with one of api_key, bearer, basic")


def schedule_problem(write_integration, trigger: str) -> Problem:
    return only_problem(write_integration, HEADER.replace("{type: manual}", trigger) + LOG_STEP)


def test_unknown_time_zone(write_integration):
    """A schedule's time zone must be an IANA name."""
    problem = schedule_problem(
        write_integration, "{type: schedule, cron: '0 6 * * *', timezone: Mars/Olympus}"
    )
    assert problem.message == "unknown time zone 'Mars/Olympus'"
    assert (problem.line, problem.column) == (5, 60)
    assert problem.path == "flows.main.trigger.timezone"
    assert problem.fix == "use an IANA name such as 'Europe/Berlin'"


def test_cron_field_count(write_integration):
    """A cron expression needs exactly five fields."""
    problem = schedule_problem(write_integration, "{type: schedule, cron: '0 6 * *'}")
    assert problem.message == "cron '0 6 * *' has 4 fields instead of five"
    assert (problem.line, problem.column) == (5, 37)
    assert problem.path == "flows.main.trigger.cron"
    assert problem.fix == "write minute hour day month weekday, such as '0 6 * * 1-5'"


@pytest.mark.parametrize(
    ("cron", "name", "field"),
    [
        ("61 6 * * *", "minute", "61"),
        ("0 24 * * *", "hour", "24"),
        ("0 6 0 * *", "day", "0"),
        ("0 6 * 13 *", "month", "13"),
        ("0 6 * * 8", "weekday", "8"),
        ("0 6 * * mon-funday", "weekday", "mon-funday"),
        ("*/0 * * * *", "minute", "*/0"),
        ("a b c d e", "minute", "a"),
    ],
)
def test_cron_field_invalid(write_integration, cron, name, field):
    """A cron field outside its range fails at load time, not at the first scheduled run."""
    problem = schedule_problem(write_integration, f"{{type: schedule, cron: '{cron}'}}")
    assert problem.message == f"cron {cron!r} has an invalid {name} field {field!r}"
    assert problem.path == "flows.main.trigger.cron"


@pytest.mark.parametrize(
    "cron", ["0 6 * * 1-5", "*/15 0-23 1,15 jan-dec sun", "5 4 * * 7", "0 9 1-31/2 * MON"]
)
def test_cron_valid(write_integration, cron):
    """Usual cron expressions load."""
    trigger = f"{{type: schedule, cron: '{cron}'}}"
    path = write_integration(HEADER.replace("{type: manual}", trigger) + LOG_STEP)
    assert load_integration(path).flows["main"].trigger.cron == cron  # type: ignore[union-attr]


def test_every_problem_reported(write_integration):
    """Validation lists every problem of a definition, not only the first."""
    problems = problems_of(
        write_integration,
        HEADER + "      - id: a\n        action: log.wirte\n"
        "      - id: b\n        action: log.write\n"
        "        inputs: {message: '{{ item }}'}\n",
    )
    assert [p.path for p in problems] == [
        "flows.main.steps[0] (a).action",
        "flows.main.steps[1] (b).inputs.message",
    ]


def test_error_text_has_position(write_integration):
    """The exception's text starts each problem with file:line:column, as editors expect."""
    path = write_integration(HEADER + LOG_STEP + "        colour: red\n")
    with pytest.raises(DefinitionError) as raised:
        load_integration(path)
    assert f"{path}:10:9: flows.main.steps[0] (a).colour: unknown key 'colour'" in str(raised.value)
