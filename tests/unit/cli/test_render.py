"""The CLI's human-readable output: timeline rows, failure lists, tables and the run summary."""

from __future__ import annotations

import datetime
import io
from types import SimpleNamespace
from typing import Any

from rich.console import Console

from splice.cli.render import (
    SUMMARY_FAILURES,
    describe_failure,
    execution_table,
    failed_runs,
    plural,
    print_run_summary,
    timeline_rows,
    utc_iso,
    utc_text,
)
from splice.engine.supervisor import ExecutionOutcome
from splice.engine.values import MSGPACK, encode

EXECUTION_ID = "01a24301-a5b6-7c8d-9e0f-a1b2c3d4e5f6"
STARTED = datetime.datetime(2026, 12, 4, 21, 41, 53, 250000)


def step_run(path: str, kind: str = "action", status: str = "succeeded", **fields: Any) -> Any:
    """Return a stand-in for a StepRunRecord with the fields the renderer reads."""
    values: dict[str, Any] = {
        "path": path,
        "kind": kind,
        "action": "code.run" if kind == "action" else None,
        "status": status,
        "attempt": 1,
        "duration": 0.002,
        "input_size": 10,
        "output_size": 20,
        "error_type": "ValueError" if status == "failed" else None,
        "error_message": f"bad [secret] in {path}" if status == "failed" else None,
        "error_traceback": None,
        "item": None,
        "item_encoding": None,
    }
    values.update(fields)
    return SimpleNamespace(**values)


def failed_loop(items: int) -> list[Any]:
    """Return the records of a loop whose every iteration failed in its `work` step."""
    runs: list[Any] = []
    for index in range(items):
        runs.append(step_run(f"items[{index}].work", status="failed"))
        runs.append(
            step_run(
                f"items[{index}]",
                kind="iteration",
                status="failed",
                item=encode({"name": f"file{index}.xml"}),
                item_encoding=MSGPACK,
            )
        )
    runs.append(step_run("items", kind="loop"))
    return runs


def outcome(status: str = "succeeded", **fields: Any) -> ExecutionOutcome:
    values: dict[str, Any] = {
        "execution_id": EXECUTION_ID,
        "status": status,
        "result": None,
        "error_type": None,
        "error_message": None,
        "failed_step": None,
        "continued_failures": 0,
        "step_runs": 1,
        "duration": 0.01,
    }
    values.update(fields)
    return ExecutionOutcome(**values)


def render(renderable: Any, width: int = 80) -> str:
    console = Console(file=io.StringIO(), width=width, highlight=False)
    console.print(renderable)
    assert isinstance(console.file, io.StringIO)
    return console.file.getvalue()


def test_plural_counts() -> None:
    """plural uses the singular for exactly one."""
    assert ["0 step runs", "1 step run", "2 step runs"] == [
        plural(count, "step run") for count in (0, 1, 2)
    ]


def test_utc_formats() -> None:
    """Stored naive UTC times are printed with Z, and in ISO 8601 with +00:00."""
    assert "2026-12-04 21:41:53Z" == utc_text(STARTED)
    assert "2026-12-04 21:41:53.250Z" == utc_text(STARTED, fraction=True)
    assert "2026-12-04T21:41:53.250000+00:00" == utc_iso(STARTED)
    assert (None, "-") == (utc_iso(None), utc_text(None))


def test_timeline_iteration_row() -> None:
    """A loop's iterations are summarised as `[*]` before the steps of its body."""
    rows = timeline_rows([*failed_loop(3)[:-1], step_run("items", kind="loop")])
    assert ["items", "  [*]", "  [*].work"] == [row[0] for row in rows]
    assert "iteration" == rows[1][1]
    assert "0 ok, 3 failed" == rows[1][2]


def test_failed_runs_skip_iterations() -> None:
    """A failed iteration around a failed step is not listed again, but its item is kept."""
    failures = failed_runs(failed_loop(2))
    assert ["items[0].work", "items[1].work"] == [failure.run.path for failure in failures]
    assert '    item: {"name": "file0.xml"}' == describe_failure(failures[0]).split("\n")[1]


def test_failed_iteration_alone_listed() -> None:
    """An iteration that failed with no failed step inside it is still listed."""
    runs = [step_run("items[0].work"), step_run("items[0]", kind="iteration", status="failed")]
    assert ["items[0]"] == [failure.run.path for failure in failed_runs(runs)]


def test_failed_branch_in_iteration() -> None:
    """A failed branch is listed only when no step inside it failed, with its loop's item."""
    runs = [
        step_run("items[0].check.read", status="failed"),
        step_run("items[0].check", kind="branch", status="failed"),
        step_run("items[1].check", kind="branch", status="failed"),
        step_run(
            "items[0]", kind="iteration", status="failed", item=encode(1), item_encoding=MSGPACK
        ),
        step_run(
            "items[1]", kind="iteration", status="failed", item=encode(2), item_encoding=MSGPACK
        ),
    ]
    failures = failed_runs(runs)
    assert ["items[0].check.read", "items[1].check"] == [f.run.path for f in failures]
    assert ["items[0]", "items[1]"] == [f.iteration.path for f in failures]


def test_execution_table_keeps_id() -> None:
    """The execution id is printed whole, even at 80 columns."""
    record = SimpleNamespace(
        id=EXECUTION_ID,
        integration_key="invoice-sync",
        flow="sync",
        status="failed",
        started_at=STARTED,
        duration=0.5,
        step_runs=25,
        continued_failures=12,
    )
    assert EXECUTION_ID in render(execution_table([record]))


def test_summary_keeps_brackets() -> None:
    """The failure line after a run prints an error message's [brackets] as they are."""
    failed = outcome(
        "failed",
        error_type="ValueError",
        error_message="customer bug with secret [secret]",
        failed_step="boom",
    )
    runs = [step_run("boom", status="failed", error_message="customer bug with secret [secret]")]
    console = Console(file=io.StringIO(), width=200, highlight=False)
    print_run_summary(console, failed, [], runs)
    assert isinstance(console.file, io.StringIO)
    lines = console.file.getvalue().splitlines()
    assert "boom failed: ValueError: customer bug with secret [secret]" in lines
    assert "1 failed step run (see `splice executions show 01a24301-a5b6`):" in lines


def test_summary_counts_each_failure_once() -> None:
    """The summary counts a failed item once and counts the ones it does not list."""
    items = SUMMARY_FAILURES + 3
    console = Console(file=io.StringIO(), width=200, highlight=False)
    print_run_summary(console, outcome(continued_failures=items), [], failed_loop(items))
    assert isinstance(console.file, io.StringIO)
    text = console.file.getvalue()
    assert f"{items} failed step runs (see" in text
    assert text.count("  items[") == SUMMARY_FAILURES
    assert text.endswith("  and 3 more\n")
