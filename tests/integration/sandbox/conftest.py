"""Fixtures for running misbehaving customer code: sandboxes with small limits and a runner.

Every case here runs inside the sandbox on this machine, so each one is bounded: small
limits, short timeouts, and loops that stop on their own.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from splice.engine.supervisor import ExecutionOutcome
from splice.local import LocalRun
from splice.sandbox.forkserver import ForkServerSandbox
from splice.settings import Settings

REPOSITORY_ROOT = Path(__file__).resolve().parents[3]
CODE_FILE = "hostile.py"
DISPATCH = """

def dispatch(context, *, function, args):
    return globals()[function](context, **args)
"""


def definition(key: str = "hostile", config: str = "", code_file: str = CODE_FILE) -> str:
    """Return a definition whose flow has one code.run step named ``act``.

    The step calls ``dispatch``, which calls the function and arguments that the manual
    trigger's payload names.
    """
    lines = [f"key: {key}", f"name: {key}"]
    if config:
        lines += ["config:", config.rstrip("\n")]
    lines += [
        "flows:",
        "  main:",
        "    trigger: {type: manual}",
        "    steps:",
        "      - id: act",
        "        action: code.run",
        f"        inputs: {{file: {code_file}, function: dispatch, "
        "args: {function: '{{ trigger.function }}', args: '{{ trigger.args }}'}}",
    ]
    return "\n".join(lines) + "\n"


class CodeRunner:
    """Runs functions of one customer code file through a LocalRun and the real sandbox."""

    def __init__(self, local: LocalRun, folder: Path, code: str, **options: Any) -> None:
        self.local = local
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CODE_FILE).write_text(code + DISPATCH, encoding="utf-8")
        self.path = folder / "integration.yaml"
        self.path.write_text(definition(**options), encoding="utf-8")

    def run(
        self, function: str, assignments: tuple[str, ...] = (), **args: Any
    ) -> ExecutionOutcome:
        trigger = {"type": "manual", "function": function, "args": args}
        return self.local.run(self.path, assignments=assignments, trigger=trigger, environ={})

    def step_run(self, outcome: ExecutionOutcome) -> Any:
        (run,) = self.local.store.step_runs(outcome.execution_id)
        return run

    def log_messages(self, outcome: ExecutionOutcome) -> list[str]:
        return [line["message"] for line in self.local.store.logs(outcome.execution_id)]


def start_sandbox(data_dir: Path, **environment: str) -> ForkServerSandbox:
    """Start a template of its own with the given SPLICE_SANDBOX_* settings."""
    settings = Settings.from_env({"SPLICE_DATA_DIR": str(data_dir), **environment})
    return ForkServerSandbox(settings)


def open_runner(
    sandbox: ForkServerSandbox,
    data_dir: Path,
    folder: Path,
    code: str,
    *,
    key: str = "hostile",
    config: str = "",
    **environment: str,
) -> tuple[CodeRunner, LocalRun]:
    """Open a LocalRun on ``sandbox``; ``environment`` contains SPLICE_* settings of the worker.

    The sandbox limits come from the sandbox's own settings, so they are not repeated here.
    """
    settings = Settings.from_env({"SPLICE_DATA_DIR": str(data_dir), **environment})
    local = LocalRun.open(settings, sandbox=sandbox)
    return CodeRunner(local, folder, code, key=key, config=config), local


@pytest.fixture
def runner_for(tmp_path: Path) -> Iterator[Callable[..., CodeRunner]]:
    """Open a CodeRunner on a given sandbox; its record store is closed afterwards."""
    opened: list[LocalRun] = []

    def make(
        sandbox: ForkServerSandbox,
        code: str,
        *,
        key: str = "hostile",
        config: str = "",
        **environment: str,
    ) -> CodeRunner:
        runner, local = open_runner(
            sandbox,
            tmp_path / "data",
            tmp_path / key,
            code,
            key=key,
            config=config,
            **environment,
        )
        opened.append(local)
        return runner

    yield make
    for local in opened:
        local.store.close()  # the sandbox belongs to its fixture, which closes it


def wait_for(condition: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> bool:
    """Poll ``condition`` until it is true or ``timeout`` seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def template_pid(sandbox: ForkServerSandbox) -> int:
    process = sandbox._process
    assert process is not None
    return process.pid


def execution_cgroups(sandbox: ForkServerSandbox) -> list[Path]:
    """The per-execution pids cgroups that still exist under this template's cgroup.

    The template removes one when the last process in it is gone; the spare child that
    waits for the next execution keeps one.
    """
    found: list[Path] = []
    for group in Path("/sys/fs/cgroup/pids").glob(f"**/splice-{template_pid(sandbox)}"):
        found += sorted(group.glob("exec-*"))
    return found


def resident_set_kib() -> tuple[int, int]:
    """Return this process's current and peak resident set size, in KiB."""
    fields: dict[str, int] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields["VmRSS"], fields["VmHWM"]


def reset_peak_rss() -> None:
    """Reset VmHWM to the current resident set size (Linux 4.0 and later)."""
    with open("/proc/self/clear_refs", "w") as file:
        file.write("5")


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
