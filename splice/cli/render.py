"""Human-readable output of the CLI: progress, the step timeline, execution details."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from splice.engine.events import Event, ProgressEvent, StepRunEvent
from splice.engine.values import decode
from splice.store.records import ExecutionRecord, StepRunRecord

STATUS_STYLE = {"succeeded": "green", "failed": "red", "running": "yellow"}


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
            TextColumn("{task.description}"),
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
            step_name = rest.split("]", 1)[1].lstrip(".") or "(iteration)"
            inner[f"{loop_path}[*].{step_name}"].append(run)
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
    for key in [k for k in inner if k.startswith(f"{loop_path}[*].")]:
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
        table.add_column(column, justify="right" if column in ("in", "out") else "left")
    for path, action, status, duration, size_in, size_out in timeline_rows(runs):
        style = "red" if "failed" in status else None
        table.add_row(path, action, status, duration, size_in, size_out, style=style)
    return table


def failed_runs(runs: Iterable[Any]) -> list[Any]:
    """Return the failed step runs of actions and iterations (a failed loop only repeats them)."""
    return [run for run in runs if run.status == "failed" and run.kind != "loop"]


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
        table.add_column(column)
    for record in records:
        style = STATUS_STYLE.get(record.status)
        started = record.started_at.strftime("%Y-%m-%d %H:%M:%S") if record.started_at else "-"
        table.add_row(
            record.id,
            record.integration_key,
            record.flow,
            f"[{style}]{record.status}[/]" if style else record.status,
            started,
            format_duration(record.duration),
            str(record.step_runs),
            str(record.continued_failures),
        )
    return table


def describe_failure(run: StepRunRecord) -> str:
    text = f"{run.path} (attempt {run.attempt}): {run.error_type}: {run.error_message}"
    if run.item is not None and run.item_encoding:
        item = decode(run.item, run.item_encoding)
        text += f"\n    item: {json.dumps(item, ensure_ascii=False, default=str)[:300]}"
    if run.error_traceback:
        text += "\n" + "\n".join("    " + line for line in run.error_traceback.splitlines())
    return text
