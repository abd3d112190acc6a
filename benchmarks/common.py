"""Helpers shared by the benchmarks: machine description, tables, process memory, settings."""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from splice.settings import Settings


def machine() -> str:
    """Describe the CPU model, cores, kernel and Python of this machine in one line."""
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = os.cpu_count()
    return (
        f"{model}, {cores} cores, Linux {platform.release()}, "
        f"Python {platform.python_version()} ({sys.executable})"
    )


def revision() -> str:
    """Name the commit of the checkout and whether splice/ has uncommitted changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        changes = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "splice"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return commit + (" with uncommitted changes in splice/" if changes else "")


def header(title: str) -> None:
    print(f"# {title}")
    print(f"machine: {machine()}")
    print(f"revision: {revision()}")
    print(f"date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print rows as a Markdown table, so the output can go into RESULTS.md as it is."""
    cells = [[str(value) for value in row] for row in rows]
    widths = [max(len(headers[i]), *(len(row[i]) for row in cells)) for i in range(len(headers))]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |")
    print("| " + " | ".join("-" * w for w in widths) + " |")
    for row in cells:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")


def bench_settings(data_dir: Path) -> Settings:
    """Settings whose database, blobs and scratch space all live under ``data_dir``."""
    return Settings.from_env({"SPLICE_DATA_DIR": str(data_dir)})


def status_kib(pid: int | str, field: str) -> int:
    """Read a ``/proc/PID/status`` field such as VmHWM or VmRSS, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(f"{field} not found in /proc/{pid}/status")


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


class Checks:
    """Collector of correctness checks. The benchmark exits non-zero when one failed."""

    def __init__(self) -> None:
        self.failures: list[str] = []

    def expect(self, condition: bool, message: str) -> None:
        if not condition:
            self.failures.append(message)
            print(f"CHECK FAILED: {message}", file=sys.stderr)

    def exit_code(self) -> int:
        if self.failures:
            print(f"{len(self.failures)} correctness checks failed", file=sys.stderr)
            return 1
        print("all correctness checks passed")
        return 0


def cpu_seconds(pid: int | str, *, reaped_children: bool = False) -> float:
    """Read a process's user + system CPU seconds from /proc/PID/stat.

    With ``reaped_children`` it reads the CPU time of its children that exited and were
    waited for instead, which is how a forked execution's CPU shows on the template.
    """
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state) of proc(5): utime, stime, cutime, cstime are 14 to 17.
    first = 13 if reaped_children else 11
    return (int(fields[first]) + int(fields[first + 1])) / os.sysconf("SC_CLK_TCK")


def children_of(pid: int) -> set[int] | None:
    """Return the pids of a process's children, from /proc/PID/task/PID/children (Linux 3.5+)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return None
    return {int(child) for child in text.split()}


def wait_for_reaped_children(pid: int, earlier: set[int], timeout: float = 5.0) -> bool:
    """Wait until the children ``pid`` had earlier are reaped, so their CPU is in its cutime.

    The sandbox template always keeps a spare child, so this waits for the earlier ones
    only (the child that ran the execution was the spare before it). Returns False when
    /proc cannot tell, or they remain after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = children_of(pid)
        if current is None:
            return False
        if not current & earlier:
            return True
        time.sleep(0.005)
    return False
