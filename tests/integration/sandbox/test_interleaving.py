"""Two integrations interleaved on one template: each execution sees only its own data."""

from __future__ import annotations

import pytest

from .conftest import CodeRunner

CODE = """\
import os


def outcome(action):
    try:
        return action()
    except OSError as error:
        return type(error).__name__


def probe(context, *, number, other_folder):
    folder = context.config["folder"]
    found = {
        "label": context.config["label"],
        "number": number,
        "own_file": outcome(lambda: open(os.path.join(folder, "owner.txt")).read()),
        "other_folder": outcome(lambda: sorted(os.listdir(other_folder))),
        "leaked_environment": sorted(key for key in os.environ if key.startswith("LEAK_")),
        "leaked_files": sorted(name for name in os.listdir("/tmp") if name.startswith("leak-")),
        "leaked_scratch": sorted(os.listdir(".")),
    }
    os.environ["LEAK_" + context.config["label"]] = str(number)
    with open(f"/tmp/leak-{context.config['label']}-{number}", "w") as file:
        file.write("left behind")
    with open(f"leak-{number}", "w") as file:
        file.write("left behind")
    return found
"""

CONFIG = """\
  label: {type: string}
  folder: {type: string, grant: read}
"""
EXECUTIONS = 40


@pytest.fixture
def interleaved(runner_for, sandbox, tmp_path) -> list[tuple[str, int, dict]]:
    """Run alternating executions of integrations alpha and beta; return label, number, result."""
    runners: dict[str, CodeRunner] = {}
    folders = {}
    for label in ("alpha", "beta"):
        folders[label] = tmp_path / f"granted-{label}"
        folders[label].mkdir()
        (folders[label] / "owner.txt").write_text(label)
        runners[label] = runner_for(sandbox, CODE, key=label, config=CONFIG)
    other = {"alpha": "beta", "beta": "alpha"}
    results = []
    for number in range(EXECUTIONS):
        label = ("alpha", "beta")[number % 2]
        outcome = runners[label].run(
            "probe",
            assignments=(f"label={label}", f"folder={folders[label]}"),
            number=number,
            other_folder=str(folders[other[label]]),
        )
        assert "succeeded" == outcome.status, outcome.error_message
        results.append((label, number, outcome.result))
    return results


def test_own_inputs(interleaved):
    """Each execution gets its own config value and trigger input."""
    for label, number, found in interleaved:
        assert (label, number) == (found["label"], found["number"])


def test_own_granted_folder(interleaved):
    """Each execution reads its own granted folder."""
    for label, number, found in interleaved:
        assert label == found["own_file"], number


def test_other_folder_invisible(interleaved):
    """The other integration's granted folder does not exist inside the sandbox."""
    for _, number, found in interleaved:
        assert "FileNotFoundError" == found["other_folder"], number


def test_no_leaked_environment(interleaved):
    """No environment variable set by an earlier execution is visible."""
    for _, number, found in interleaved:
        assert [] == found["leaked_environment"], number


def test_no_leaked_files(interleaved):
    """No file left in /tmp or the scratch directory by an earlier execution is visible."""
    for _, number, found in interleaved:
        assert [] == found["leaked_files"], number
        assert [] == found["leaked_scratch"], number
