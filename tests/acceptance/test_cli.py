"""The splice CLI as a user runs it: a subprocess against the example accounting server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.acceptance.conftest import Server
from tests.conftest import EXAMPLE_DIR

SPLICE = Path(sys.executable).parent / "splice"
DEFINITION = EXAMPLE_DIR / "integration.yaml"
INVOICES = EXAMPLE_DIR / "invoices"
COMMAND_TIMEOUT = 120.0  # seconds for one splice command

SIMPLE = """\
key: simple
name: Simple
config:
  greeting: {type: string, required: true}
flows:
  main:
    trigger: {type: manual}
    steps:
      - id: echo
        action: code.run
        inputs: {file: steps.py, function: echo, args: {body: "{{ trigger.body }}"}}
  broken:
    trigger: {type: manual}
    steps:
      - id: divide
        action: code.run
        inputs: {file: steps.py, function: divide}
  brackets:
    trigger: {type: manual}
    steps:
      - id: raise_brackets
        action: code.run
        inputs: {file: steps.py, function: raise_brackets}
"""
STEPS = """\
def echo(context, *, body):
    return {"body": body, "greeting": context.config["greeting"]}


def divide(context):
    return 1 / 0


def raise_brackets(context):
    raise ValueError("customer bug with secret [secret]")
"""
BRACKETS_ERROR = "raise_brackets failed: ValueError: customer bug with secret [secret]"


@pytest.fixture
def splice(data_dir: Path, tmp_path: Path):
    """Run splice with SPLICE_DATA_DIR in the test's folder and return the finished process."""

    def run(*arguments: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        environment = {
            key: value for key, value in os.environ.items() if not key.startswith("SPLICE_")
        }
        environment.update({"SPLICE_DATA_DIR": str(data_dir), "COLUMNS": "200"})
        return subprocess.run(
            [str(SPLICE), *arguments],
            capture_output=True,
            text=True,
            input=input,
            env=environment,
            cwd=tmp_path,
            timeout=COMMAND_TIMEOUT,
        )

    return run


def run_demo(splice, server: Server, inbox: Path, *extra: str):
    return splice(
        "run",
        str(DEFINITION),
        "--flow",
        "sync",
        "--config",
        f"inbox={inbox}",
        "--config",
        f"accounting_url={server.url}",
        "--config",
        f"accounting.api_key={server.api_key}",
        *extra,
    )


def copy_inbox(tmp_path: Path) -> Path:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for invoice in INVOICES.glob("*.xml"):
        shutil.copy(invoice, inbox / invoice.name)
    return inbox


def test_run_demo(splice, server):
    """The demo integration posts every invoice; stdout is only the JSON result.

    The step timeline and the outcome go to stderr.
    """
    completed = run_demo(splice, server, INVOICES)
    result = json.loads(completed.stdout)
    assert completed.returncode == 0, completed.stderr
    assert (result["processed"], result["failed"], result["failed_files"]) == (12, 0, [])
    assert len(server.stored()) == 12
    assert "[*].post" in completed.stderr
    assert "succeeded in" in completed.stderr


def test_run_bad_documents(splice, server, tmp_path):
    """A malformed XML file and an <Order/> fail alone; the other invoices are posted."""
    inbox = copy_inbox(tmp_path)
    (inbox / "broken.xml").write_text("<Invoice><cbc:ID>1</Invoice")
    (inbox / "order.xml").write_text("<Order/>")
    completed = run_demo(splice, server, inbox)
    result = json.loads(completed.stdout)
    assert completed.returncode == 0, completed.stderr
    assert sorted(entry["file"] for entry in result["failed_files"]) == ["broken.xml", "order.xml"]
    assert len(server.stored()) == 12


def test_run_unusual_names(splice, server, tmp_path):
    """File names with spaces, non-ASCII characters and an upper-case .XML are read."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    names = ["base example.xml", "faktura Ærø ü.xml", "CREDIT NOTE.XML"]
    sources = ["base-example.xml", "Norwegian-example-1.xml", "base-creditnote-correction.xml"]
    for name, source in zip(names, sources, strict=True):
        shutil.copy(INVOICES / source, inbox / name)
    completed = run_demo(splice, server, inbox)
    result = json.loads(completed.stdout)
    assert completed.returncode == 0, completed.stderr
    assert (result["processed"], result["failed"]) == (3, 0)
    posted = sorted(entry["invoice"]["source_file"] for entry in server.stored())
    assert posted == sorted(names)


def test_validate_ok(splice):
    """splice validate exits 0 for the demo integration."""
    completed = splice("validate", str(DEFINITION))
    assert completed.returncode == 0, completed.stderr
    assert "valid" in completed.stderr


def test_validate_invalid(splice, tmp_path):
    """An invalid definition exits 3 and names file:line:column on stderr."""
    folder = tmp_path / "example"
    shutil.copytree(EXAMPLE_DIR, folder, ignore=shutil.ignore_patterns("invoices"))
    path = folder / "integration.yaml"
    text = DEFINITION.read_text().replace("action: xml.parse", "action: xml.prase")
    path.write_text(text)
    line = text[: text.index("xml.prase")].count("\n") + 1
    column = text.index("xml.prase") - text.rindex("\n", 0, text.index("xml.prase"))
    completed = splice("validate", str(path))
    assert completed.returncode == 3
    assert (
        f"{path}:{line}:{column}: flows.sync.steps[1] (invoices).steps[0] (parse).action: "
        "unknown action 'xml.prase'"
    ) in completed.stderr
    assert "fix: did you mean 'xml.parse'?" in completed.stderr


def write_simple(tmp_path: Path) -> Path:
    folder = tmp_path / "simple"
    folder.mkdir()
    (folder / "steps.py").write_text(STEPS)
    path = folder / "integration.yaml"
    path.write_text(SIMPLE)
    return path


def test_run_missing_config(splice, tmp_path):
    """A missing required config value exits 3 and names the variable."""
    completed = splice("run", str(write_simple(tmp_path)), "--flow", "main")
    assert completed.returncode == 3
    assert "config variable 'greeting': required but not set" in completed.stderr
    assert completed.stdout == ""


def test_run_failing_flow(splice, tmp_path):
    """A failing flow exits 1 and names the failed step."""
    completed = splice(
        "run", str(write_simple(tmp_path)), "--flow", "broken", "--config", "greeting=hi"
    )
    assert completed.returncode == 1
    assert "ZeroDivisionError" in completed.stderr


def test_input_from_stdin(splice, tmp_path):
    """--input - reads JSON from standard input into trigger.body."""
    completed = splice(
        "run",
        str(write_simple(tmp_path)),
        "--flow",
        "main",
        "--config",
        "greeting=hello",
        "--input",
        "-",
        input='{"id": 7, "tags": ["a"]}',
    )
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout) == {"body": {"id": 7, "tags": ["a"]}, "greeting": "hello"}


def test_verbose_traceback(splice, tmp_path):
    """-v shows the Python traceback of a CLI error, and without -v none is shown."""
    path = tmp_path / "missing.yaml"
    quiet = splice("run", str(path))
    verbose = splice("-v", "run", str(path))
    assert (quiet.returncode, verbose.returncode) == (3, 3)
    assert "Traceback" not in quiet.stderr
    assert "Traceback (most recent call last)" in verbose.stderr


def last_execution(splice) -> dict:
    listed = splice("executions", "list", "--json")
    return json.loads(listed.stdout.splitlines()[0])


def test_executions_list(splice, tmp_path):
    """executions list shows each execution with its status, newest first."""
    path = write_simple(tmp_path)
    splice("run", str(path), "--flow", "main", "--config", "greeting=hi")
    splice("run", str(path), "--flow", "broken", "--config", "greeting=hi")
    listed = splice("executions", "list", "--json")
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert listed.returncode == 0
    assert [(row["flow"], row["status"]) for row in rows] == [
        ("broken", "failed"),
        ("main", "succeeded"),
    ]
    table = splice("executions", "list")
    assert rows[0]["id"][:8] in table.stdout


def test_executions_show(splice, server, tmp_path):
    """executions show prints the timeline, statuses, sizes and each failed item's error."""
    inbox = copy_inbox(tmp_path)
    (inbox / "order.xml").write_text("<Order/>")
    run_demo(splice, server, inbox)
    execution = last_execution(splice)
    shown = splice("executions", "show", execution["id"])
    assert shown.returncode == 0, shown.stderr
    assert "status succeeded" in shown.stdout
    assert "[*].post" in shown.stdout
    assert "KiB" in shown.stdout
    assert '"name": "order.xml"' in shown.stdout
    assert "root element 'Order'" in shown.stdout


def test_executions_show_unknown(splice):
    """An unknown execution id exits 2 with how to list ids."""
    shown = splice("executions", "show", "0000000000")
    assert shown.returncode == 2
    assert "splice executions list" in shown.stderr


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (("executions", "show", "nonexistent"), "error: EXECUTION_ID 'nonexistent': no execution"),
        (("logs", "nonexistent"), "error: EXECUTION_ID 'nonexistent': no execution"),
        (("run", "{definition}", "--flow", "nope"), "error: --flow 'nope': integration 'simple'"),
        (("run", "{definition}"), "error: --flow: integration 'simple' has flows"),
        (
            ("run", "{definition}", "--flow", "main", "--input", "/nonexistent"),
            "error: --input '/nonexistent': file not found",
        ),
    ],
)
def test_invalid_command_line_value(splice, tmp_path, arguments, expected):
    """An unknown execution id, flow or --input file exits 2 and names the option."""
    definition = str(write_simple(tmp_path))
    completed = splice(*(argument.format(definition=definition) for argument in arguments))
    assert completed.returncode == 2, completed.stderr
    assert expected in completed.stderr
    assert "config variable" not in completed.stderr


def test_quiet_failure_line(splice, tmp_path):
    """run -q still prints the failed step and its error on stderr, brackets included."""
    completed = splice(
        "run", "-q", str(write_simple(tmp_path)), "--flow", "brackets", "--config", "greeting=hi"
    )
    assert completed.returncode == 1
    assert completed.stdout.strip() == "null"
    assert completed.stderr.strip() == BRACKETS_ERROR


def test_show_keeps_brackets(splice, tmp_path):
    """executions show prints an error message with [brackets] as it is."""
    splice("run", str(write_simple(tmp_path)), "--flow", "brackets", "--config", "greeting=hi")
    shown = splice("executions", "show", last_execution(splice)["id"])
    assert shown.returncode == 0, shown.stderr
    assert "error ValueError: customer bug with secret [secret]\n" in shown.stdout


def test_timestamps_in_utc(splice, tmp_path):
    """Tables print times with a Z, and --json gives ISO 8601 with the +00:00 offset."""
    splice("run", str(write_simple(tmp_path)), "--flow", "main", "--config", "greeting=hi")
    execution = last_execution(splice)
    assert execution["started_at"].endswith("+00:00")
    table = splice("executions", "list")
    started = execution["started_at"][:19].replace("T", " ") + "Z"
    assert started in table.stdout
    logs = splice("logs", execution["id"])
    assert logs.returncode == 0, logs.stderr
    assert all(line[23] == "Z" for line in logs.stdout.splitlines())


def test_list_piped_keeps_ids(splice, tmp_path, data_dir):
    """executions list written to a pipe with no COLUMNS prints whole ids."""
    splice("run", str(write_simple(tmp_path)), "--flow", "main", "--config", "greeting=hi")
    execution = last_execution(splice)
    environment = {key: value for key, value in os.environ.items() if key != "COLUMNS"}
    environment["SPLICE_DATA_DIR"] = str(data_dir)
    table = subprocess.run(
        [str(SPLICE), "executions", "list"],
        capture_output=True,
        text=True,
        env=environment,
        timeout=COMMAND_TIMEOUT,
    )
    assert table.returncode == 0, table.stderr
    assert execution["id"] in table.stdout


def test_validate_wording(splice, tmp_path):
    """validate names the key once, with no version, and counts steps in the singular."""
    completed = splice("validate", str(write_simple(tmp_path)))
    assert completed.returncode == 0, completed.stderr
    expected = "valid: simple — flows: main (1 step), broken (1 step), brackets (1 step)"
    assert expected == completed.stderr.strip()


def test_logs(splice, server):
    """splice logs prints each line with its step path."""
    run_demo(splice, server, INVOICES)
    execution = last_execution(splice)
    logs = splice("logs", execution["id"])
    assert logs.returncode == 0, logs.stderr
    assert "invoices[0].map: mapped invoice" in logs.stdout
    assert "summary: documents processed: 12, failed: 0" in logs.stdout
