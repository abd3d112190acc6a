"""Customer code that runs past a limit: time, memory, processes, CPU, files, scratch, logs.

Each case ends with the execution failed for a stated reason (or the excess dropped),
and the next execution from the same template succeeds.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from splice.sandbox.forkserver import ForkServerSandbox

from .conftest import (
    execution_cgroups,
    reset_peak_rss,
    resident_set_kib,
    start_sandbox,
    wait_for,
)

MIB = 1024 * 1024

CODE = """\
import os
import sys
import time


def fine(context):
    return "fine"


def spin(context, *, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pass
    return "spun"


def sleep(context, *, seconds):
    time.sleep(seconds)
    return "slept"


def swallow_stop(context, *, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            time.sleep(0.05)
        except BaseException:
            pass
    return "outlived the stop"


def allocate(context, *, block, blocks):
    kept = []
    for index in range(blocks):
        kept.append(bytes([index % 256]) * block)
    return len(kept)


def fork_bomb(context, *, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.fork()
        except OSError:
            time.sleep(0.01)
    os._exit(0)


def large_result(context, *, size):
    return "r" * size


def fill_scratch(context, *, files, size, then_sleep):
    for index in range(files):
        with open(f"filler-{index}", "wb") as file:
            file.write(b"s" * size)
    time.sleep(then_sleep)
    return files * size


def print_lines(context, *, lines, width):
    line = "p" * width
    for _ in range(lines):
        print(line)
    return lines


def print_one_line(context, *, size):
    sys.stdout.write("q" * size)
    return size
"""


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ForkServerSandbox]:
    """A template with small memory, process, file and scratch limits."""
    sandbox = start_sandbox(
        tmp_path_factory.mktemp("tight"),
        SPLICE_SANDBOX_MEMORY=str(256 * MIB),
        SPLICE_SANDBOX_PROCESSES="8",
        SPLICE_SANDBOX_FILE_SIZE=str(1 * MIB),
        SPLICE_SANDBOX_SCRATCH_SIZE=str(2 * MIB),
    )
    yield sandbox
    sandbox.close()


@pytest.fixture(scope="module")
def cpu_limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ForkServerSandbox]:
    """A template whose children get one second of CPU time."""
    sandbox = start_sandbox(tmp_path_factory.mktemp("cpu"), SPLICE_SANDBOX_CPU_SECONDS="1")
    yield sandbox
    sandbox.close()


def assert_next_succeeds(runner) -> None:
    outcome = runner.run("fine")
    assert ("succeeded", "fine") == (outcome.status, outcome.result)


# -- wall-clock time --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("function", "seconds"), [("spin", 20), ("sleep", 30)], ids=["busy-loop", "sleep"]
)
def test_timeout_stops_step(runner_for, sandbox, function, seconds):
    """A busy loop or a sleep past SPLICE_EXECUTION_TIMEOUT fails with ExecutionTimeout."""
    runner = runner_for(sandbox, CODE, SPLICE_EXECUTION_TIMEOUT="1")
    outcome = runner.run(function, seconds=seconds)
    run = runner.step_run(outcome)
    assert "failed" == outcome.status
    assert "ExecutionTimeout" == outcome.error_type
    assert outcome.duration < 8
    assert ("act", "failed", "ExecutionTimeout") == (run.path, run.status, run.error_type)
    assert_next_succeeds(runner)


def test_timeout_stop_swallowed(runner_for, sandbox):
    """Code that catches the stop is killed after the grace period, still ExecutionTimeout."""
    runner = runner_for(sandbox, CODE, SPLICE_EXECUTION_TIMEOUT="1")
    outcome = runner.run("swallow_stop", seconds=20)
    assert "failed" == outcome.status
    assert "ExecutionTimeout" == outcome.error_type
    assert outcome.duration < 8
    assert_next_succeeds(runner)


# -- memory and processes -------------------------------------------------------------


def test_memory_limit(runner_for, tight):
    """Allocating without bound ends the execution with a reason naming the memory limit."""
    runner = runner_for(tight, CODE, SPLICE_EXECUTION_TIMEOUT="20")
    outcome = runner.run("allocate", block=16 * MIB, blocks=64)
    assert "failed" == outcome.status
    assert "SandboxError" == outcome.error_type
    assert "memory limit of 268435456 bytes" in (outcome.error_message or "")
    assert "SPLICE_SANDBOX_MEMORY" in (outcome.error_message or "")
    assert_next_succeeds(runner)


def test_memory_kill_records_step(runner_for, tight):
    """The step the killed child was running is recorded as failed, with the reason."""
    runner = runner_for(tight, CODE, SPLICE_EXECUTION_TIMEOUT="20")
    outcome = runner.run("allocate", block=16 * MIB, blocks=64)
    runs = runner.local.store.step_runs(outcome.execution_id)
    failed = [run for run in runs if run.status == "failed"]
    assert outcome.failed_step is not None
    assert [outcome.failed_step] == [run.path for run in failed]
    assert "memory limit" in (failed[0].error_message or "")
    assert len(runs) == outcome.step_runs


def test_fork_bomb_contained(runner_for, tight):
    """Forking without bound hits the process limit; the timeout ends it, the host can fork."""
    runner = runner_for(tight, CODE, SPLICE_EXECUTION_TIMEOUT="2")
    outcome = runner.run("fork_bomb", seconds=30)
    assert "failed" == outcome.status
    assert "ExecutionTimeout" == outcome.error_type
    assert outcome.duration < 10
    assert wait_for(lambda: len(execution_cgroups(tight)) <= 1)
    assert 0 == subprocess.run(["/bin/true"], check=False, timeout=10).returncode
    assert_next_succeeds(runner)


# -- CPU time -------------------------------------------------------------------------


def test_cpu_limit(runner_for, cpu_limited):
    """A busy loop past SPLICE_SANDBOX_CPU_SECONDS fails with a reason naming the CPU limit."""
    runner = runner_for(cpu_limited, CODE, SPLICE_EXECUTION_TIMEOUT="30")
    outcome = runner.run("spin", seconds=20)
    assert "failed" == outcome.status
    assert "SandboxError" == outcome.error_type
    assert "CPU time limit of 1 s" in (outcome.error_message or "")
    assert outcome.duration < 10
    assert_next_succeeds(runner)


# -- files and scratch space ------------------------------------------------------------


def test_result_over_file_size(runner_for, tight):
    """A result larger than SPLICE_SANDBOX_FILE_SIZE fails clearly and is never truncated."""
    runner = runner_for(tight, CODE, SPLICE_EXECUTION_TIMEOUT="20")
    outcome = runner.run("large_result", size=2 * MIB)
    assert "failed" == outcome.status
    assert outcome.result is None
    assert "UnrecordableValue" == outcome.error_type
    assert "act" == outcome.failed_step
    assert "SPLICE_SANDBOX_FILE_SIZE" in (outcome.error_message or "")
    assert_next_succeeds(runner)


def test_scratch_limit_while_running(runner_for, tight):
    """Many files in the scratch directory end a running execution, naming the scratch limit."""
    runner = runner_for(tight, CODE, SPLICE_EXECUTION_TIMEOUT="20")
    outcome = runner.run("fill_scratch", files=64, size=64 * 1024, then_sleep=10)
    assert "failed" == outcome.status
    assert "ScratchLimitExceeded" == outcome.error_type
    assert "SPLICE_SANDBOX_SCRATCH_SIZE" in (outcome.error_message or "")
    assert outcome.duration < 8
    assert_next_succeeds(runner)


def test_scratch_limit_at_end(runner_for, tight):
    """An execution that fills its scratch directory and ends at once still fails the limit."""
    runner = runner_for(tight, CODE, SPLICE_EXECUTION_TIMEOUT="20")
    outcome = runner.run("fill_scratch", files=64, size=64 * 1024, then_sleep=0)
    assert "failed" == outcome.status
    assert "ScratchLimitExceeded" == outcome.error_type
    assert_next_succeeds(runner)


# -- log volume -----------------------------------------------------------------------

LOG_LIMIT = 1 * MIB
TRUNCATION_MARKER = f"[log volume limit of {LOG_LIMIT} bytes reached; later lines are dropped]"


def test_print_100_mb(runner_for, sandbox):
    """Printing 100 MB keeps the log within SPLICE_LOG_LIMIT and the worker's memory bounded."""
    runner = runner_for(sandbox, CODE, SPLICE_LOG_LIMIT=str(LOG_LIMIT))
    resident_before, _ = resident_set_kib()
    reset_peak_rss()
    outcome = runner.run("print_lines", lines=100_000, width=1023)
    _, peak = resident_set_kib()
    messages = runner.log_messages(outcome)
    assert "succeeded" == outcome.status
    assert TRUNCATION_MARKER == messages[-1]
    assert sum(len(message) for message in messages[:-1]) <= LOG_LIMIT
    assert peak - resident_before < 64 * 1024
    assert_next_succeeds(runner)


def test_print_20_mb_line(runner_for, sandbox):
    """One 20 MB line without a newline is dropped at the log limit, with the marker."""
    runner = runner_for(sandbox, CODE, SPLICE_LOG_LIMIT=str(LOG_LIMIT))
    resident_before, _ = resident_set_kib()
    reset_peak_rss()
    outcome = runner.run("print_one_line", size=20 * MIB)
    _, peak = resident_set_kib()
    messages = runner.log_messages(outcome)
    assert "succeeded" == outcome.status
    assert TRUNCATION_MARKER in messages
    assert sum(len(message) for message in messages) <= LOG_LIMIT + len(TRUNCATION_MARKER)
    assert peak - resident_before < 64 * 1024
    assert_next_succeeds(runner)
