"""Human-readable output of the CLI: progress, the step timeline, execution details."""

from __future__ import annotations

import datetime
import json
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from splice.engine.events import Event, ProgressEvent, StepRunEvent
from splice.engine.values import decode
from splice.store.records import ExecutionRecord, StepRunRecord

if TYPE_CHECKING:
    from splice.engine.supervisor import ExecutionOutcome

STATUS_STYLE = {"succeeded": "green", "failed": "red", "running": "yellow"}
SUMMARY_FAILURES = 10  # failed step runs listed after `splice run`; the rest are counted


def plural(count: int, noun: str) -> str:
    """Return ``1 step run`` or ``2 step runs``: the count and the noun in the right number."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def utc_text(moment: datetime.datetime | None, *, fraction: bool = False) -> str:
    """Format a stored timestamp (naive, in UTC) as ``2026-12-04 21:41:53Z``."""
    if moment is None:
        return "-"
    text = (
        moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if fraction else f"{moment:%Y-%m-%d %H:%M:%S}"
    )
    return text + "Z"


def utc_iso(moment: datetime.datetime | None) -> str | None:
    """Format a stored timestamp (naive, in UTC) as ISO 8601 with its ``+00:00`` offset."""
    if moment is None:
        return None
    return moment.replace(tzinfo=datetime.UTC).isoformat()


def format_size(size: int | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 0.001:
        return f"{seconds * 1_000_000:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds:.2f} s"


def to_json(value: Any) -> str:
    """Render a step value as JSON; bytes become ``{"base64": ...}``."""
    import base64

    def default(item: Any) -> Any:
        if isinstance(item, bytes | bytearray):
            return {"base64": base64.b64encode(bytes(item)).decode()}
        return str(item)

    return json.dumps(value, indent=2, ensure_ascii=False, default=default)


class LiveView:
    """Shows a progress bar per loop on stderr while an execution runs."""

    def __init__(self, console: Console, *, enabled: bool) -> None:
        self._progress = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[failed]} failed"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=not enabled,
        )
        self._tasks: dict[str, Any] = {}
        self.step_events: list[StepRunEvent] = []

    def __enter__(self) -> LiveView:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(None, None, None)

    def on_event(self, event: Event) -> None:
        if isinstance(event, StepRunEvent):
            self.step_events.append(event)
        elif isinstance(event, ProgressEvent):
            task = self._tasks.get(event.path)
            if task is None:
                task = self._progress.add_task(event.path, total=event.total, failed=0)
                self._tasks[event.path] = task
            self._progress.update(task, completed=event.done, failed=event.failed)


Row = tuple[str, str, str, str, str, str]


def timeline_rows(runs: Iterable[Any]) -> list[Row]:
    """Summarise step runs: top-level steps one by one, loop bodies as statistics per step."""
    rows: list[Row] = []
    inner: dict[str, list[Any]] = defaultdict(list)
    for run in runs:
        path = run.path
        if "[" in path:
            loop_path, _, rest = path.partition("[")
            step_name = rest.split("]", 1)[1].lstrip(".")
            inner[f"{loop_path}[*].{step_name}" if step_name else f"{loop_path}[*]"].append(run)
            continue
        rows.append(
            (
                path,
                run.kind if run.kind != "action" else (run.action or ""),
                run.status,
                format_duration(_duration(run)),
                format_size(run.input_size),
                format_size(_output_size(run)),
            )
        )
        if run.kind == "loop":
            rows.extend(_loop_rows(path, inner))
    return rows


def _loop_rows(loop_path: str, inner: dict[str, list[Any]]) -> list[Row]:
    rows: list[Row] = []
    # The iteration row `[*]` first, then the steps of the loop's body.
    keys = [k for k in inner if k == f"{loop_path}[*]" or k.startswith(f"{loop_path}[*].")]
    for key in sorted(keys, key=lambda k: k != f"{loop_path}[*]"):
        runs = inner.pop(key)
        durations = [_duration(run) for run in runs]
        failed = sum(1 for run in runs if run.status == "failed")
        status = f"{len(runs) - failed} ok" + (f", {failed} failed" if failed else "")
        median = statistics.median(durations)
        rows.append(
            (
                "  " + key.removeprefix(loop_path),
                runs[0].action or runs[0].kind,
                status,
                f"p50 {format_duration(median)} · max {format_duration(max(durations))}",
                format_size(sum(run.input_size for run in runs)),
                format_size(sum(_output_size(run) or 0 for run in runs)),
            )
        )
    return rows


def _duration(run: Any) -> float:
    if isinstance(run, StepRunEvent):
        return run.ended - run.started
    return float(run.duration)


def _output_size(run: Any) -> int | None:
    if isinstance(run, StepRunEvent):
        return run.output.size if run.output else None
    return int(run.output_size) if run.output_size is not None else None


def timeline_table(runs: Iterable[Any]) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("step", "action", "status", "duration", "in", "out"):
        table.add_column(
            column, justify="right" if column in ("in", "out") else "left", no_wrap=True
        )
    for row in timeline_rows(runs):
        style = "red" if "failed" in row[2] else None
        table.add_row(*(Text(cell) for cell in row), style=style)
    return table


@dataclass(frozen=True)
class Failure:
    """A failed step run, with the failed iteration around it whose item it was working on."""

    run: Any
    iteration: Any = None


# Step runs that only contain other steps: their failure repeats a failure inside them.
CONTAINER_KINDS = ("iteration", "branch")


def failed_runs(runs: Iterable[Any]) -> list[Failure]:
    """Return the failed step runs that hold the cause of each failure, in record order.

    A failed loop, or a failed iteration or branch around a failed step run, only repeats
    that step's error, so it is left out. The iteration's item is kept with the step's
    failure. A container with no failed step inside it is listed itself.
    """
    failed = [run for run in runs if run.status == "failed" and run.kind != "loop"]
    containers = {run.path: run for run in failed if run.kind in CONTAINER_KINDS}
    covered: set[str] = set()
    for run in failed:
        covered.update(outer.path for outer in _containers_around(run, containers))
    return [
        Failure(run, _iteration_around(run, containers))
        for run in failed
        if run.kind not in CONTAINER_KINDS or run.path not in covered
    ]


def _containers_around(run: Any, containers: dict[str, Any]) -> list[Any]:
    """Return the failed containers around ``run``, outermost first."""
    # Step ids contain no dots, so each dot of a path ends the path of an enclosing step.
    prefixes = [run.path[:index] for index, char in enumerate(run.path) if char == "."]
    return [containers[prefix] for prefix in prefixes if prefix in containers]


def _iteration_around(run: Any, containers: dict[str, Any]) -> Any:
    """Return the innermost failed iteration around ``run``, or None."""
    iterations = [o for o in _containers_around(run, containers) if o.kind == "iteration"]
    return iterations[-1] if iterations else None


def execution_table(records: Iterable[ExecutionRecord]) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in (
        "id",
        "integration",
        "flow",
        "status",
        "started",
        "duration",
        "steps",
        "continued failures",
    ):
        # The id is what the other commands take, so it is never cut or wrapped.
        table.add_column(column, no_wrap=column == "id")
    for record in records:
        table.add_row(
            Text(record.id),
            Text(record.integration_key),
            Text(record.flow),
            Text(record.status, style=STATUS_STYLE.get(record.status, "")),
            utc_text(record.started_at),
            format_duration(record.duration),
            str(record.step_runs),
            str(record.continued_failures),
        )
    return table


def describe_failure(failure: Failure | StepRunRecord) -> str:
    """Describe a failure as plain text: path, attempt and error, the item, the traceback."""
    if not isinstance(failure, Failure):
        failure = Failure(failure)
    run = failure.run
    text = f"{run.path} (attempt {run.attempt}): {run.error_type}: {run.error_message}"
    holder = run if run.item is not None else failure.iteration
    if holder is not None and holder.item is not None and holder.item_encoding:
        item = decode(holder.item, holder.item_encoding)
        text += f"\n    item: {json.dumps(item, ensure_ascii=False, default=str)[:300]}"
    if run.error_traceback:
        text += "\n" + "\n".join("    " + line for line in run.error_traceback.splitlines())
    return text


def failure_line(outcome: ExecutionOutcome) -> Text:
    """Return ``<step path> failed: <type>: <message>`` for a failed execution."""
    return Text.assemble(
        (f"{outcome.failed_step or 'execution'} failed:", "red"),
        f" {outcome.error_type}: {outcome.error_message}",
    )


def print_run_summary(
    console: Console,
    outcome: ExecutionOutcome,
    step_events: Sequence[StepRunEvent],
    step_runs: Sequence[StepRunRecord],
) -> None:
    """Print what ``splice run`` shows after the execution: timeline, outcome and failures."""
    console.print(timeline_table(step_events))
    style = "green" if outcome.status == "succeeded" else "red"
    console.print(
        f"[{style}]{outcome.status}[/] in {format_duration(outcome.duration)} · execution "
        f"{outcome.execution_id} · {plural(outcome.step_runs, 'step run')} · "
        f"{plural(outcome.continued_failures, 'continued failure')}"
    )
    if outcome.status != "succeeded":
        console.print(failure_line(outcome), soft_wrap=True)
    failures = failed_runs(step_runs)
    if not failures:
        return
    console.print(
        f"[yellow]{plural(len(failures), 'failed step run')}[/] "
        f"(see `splice executions show {escape(outcome.execution_id[:13])}`):"
    )
    for failure in failures[:SUMMARY_FAILURES]:
        first_line = describe_failure(failure).split("\n")[0]
        console.print("  " + first_line, markup=False, soft_wrap=True)
    if len(failures) > SUMMARY_FAILURES:
        console.print(f"  and {len(failures) - SUMMARY_FAILURES} more", markup=False)
