"""Engine overhead per step, records included, against plain chained Python calls.

Runs three flows through ``LocalRun`` (a forked sandboxed child, step records committed
to SQLite by the parent) and compares the time per step run with calling the same
function the same number of times in this process:

- ``code_loop``: a loop of N iterations whose one step is ``code.run`` with inline
  source returning its argument + 1;
- ``json_loop``: the same loop whose step is ``json.render`` of the loop item;
- ``code_flat``: M ``code.run`` steps in a row, each taking the previous step's output.

The engine time is the wall time of ``LocalRun.run``, which returns after every record
is committed. ``--profile`` also runs the loop flow's Runner in this process under
cProfile (the child's side) and the whole execution under cProfile (the parent's side).

Usage: .venv/bin/python benchmarks/engine_overhead.py [--quick] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import io
import json
import pstats
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import Checks, bench_settings, header, median, print_table

from splice.components import find_action
from splice.local import LocalRun
from splice.testing import make_context

ADD_ONE = "def run(context, x):\n    return x + 1\n"
MAKE_ITEMS = "def run(context, n):\n    return list(range(n))\n"
AIM_MICROSECONDS = 50.0


def definitions(loop_size: int, flat_size: int) -> dict[str, dict[str, Any]]:
    """Build one integration per flow, so that no run loads another flow's definition.

    JSON is valid YAML, so the files are written as JSON.
    """
    items_step = {
        "id": "items",
        "action": "code.run",
        "inputs": {"source": MAKE_ITEMS, "args": {"n": loop_size}},
    }
    flat_steps = [
        {"id": "s0", "action": "code.run", "inputs": {"source": ADD_ONE, "args": {"x": 0}}}
    ]
    for index in range(1, flat_size):
        flat_steps.append(
            {
                "id": f"s{index}",
                "action": "code.run",
                "inputs": {"source": ADD_ONE, "args": {"x": f"{{{{ steps.s{index - 1} }}}}"}},
            }
        )
    flows = {
        "code_loop": {
            "trigger": {"type": "manual"},
            "steps": [
                items_step,
                {
                    "id": "each",
                    "loop": "{{ steps.items }}",
                    "steps": [
                        {
                            "id": "add",
                            "action": "code.run",
                            "inputs": {"source": ADD_ONE, "args": {"x": "{{ item }}"}},
                        },
                    ],
                },
            ],
        },
        "json_loop": {
            "trigger": {"type": "manual"},
            "steps": [
                items_step,
                {
                    "id": "each",
                    "loop": "{{ steps.items }}",
                    "steps": [
                        {
                            "id": "render",
                            "action": "json.render",
                            "inputs": {"value": "{{ item }}"},
                        },
                    ],
                },
            ],
        },
        "code_flat": {"trigger": {"type": "manual"}, "steps": flat_steps},
        "one_step": {
            "trigger": {"type": "manual"},
            "steps": [
                {"id": "s0", "action": "code.run", "inputs": {"source": ADD_ONE, "args": {"x": 0}}},
            ],
        },
    }
    return {
        name: {
            "key": f"engine-overhead-{name.replace('_', '-')}",
            "name": f"Benchmark {name}",
            "version": "1.0.0",
            "flows": {name: flow},
        }
        for name, flow in flows.items()
    }


def load_seconds(file: Path) -> float:
    """Median time of load_integration, which LocalRun.run calls on every run."""
    from splice.definition import load_integration

    timings = []
    for _ in range(3):
        started = time.perf_counter()
        load_integration(file)
        timings.append(time.perf_counter() - started)
    return median(timings)


def plain_seconds(flow: str, loop_size: int, flat_size: int, repeats: int) -> tuple[float, int]:
    """Time the same calls in this process and return the median seconds and the call count."""
    context = make_context()
    namespace: dict[str, Any] = {}
    exec(compile(ADD_ONE, "<add>", "exec"), namespace)
    add_one = namespace["run"]
    render = find_action("json.render").function
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        if flow == "code_loop":
            items = list(range(loop_size))
            results = [add_one(context, x=item) for item in items]
            calls = len(results)
        elif flow == "json_loop":
            items = list(range(loop_size))
            results = [render(context, value=item, indent=None, sort_keys=False) for item in items]
            calls = len(results)
        else:
            value = 0
            for _ in range(flat_size):
                value = add_one(context, x=value)
            calls = flat_size
        timings.append(time.perf_counter() - started)
    return median(timings), calls


def expected_step_runs(flow: str, loop_size: int, flat_size: int) -> int:
    if flow in ("code_loop", "json_loop"):
        return 1 + loop_size + 1  # the items step, one per iteration, the loop step
    if flow == "code_flat":
        return flat_size
    return 1


def recorded_span(database: Path, execution_id: str) -> tuple[int, float, float]:
    """Count the execution's step_runs rows and return the count, first start and last end.

    Times are seconds since the epoch, from the naive UTC datetimes the table stores.
    """
    with sqlite3.connect(database) as connection:
        count, first, last = connection.execute(
            "SELECT count(*), min(started_at), max(ended_at) FROM step_runs WHERE execution_id = ?",
            (execution_id,),
        ).fetchone()
    epoch = datetime.datetime(1970, 1, 1)
    return (
        count,
        (datetime.datetime.fromisoformat(first) - epoch).total_seconds(),
        (datetime.datetime.fromisoformat(last) - epoch).total_seconds(),
    )


def run_engine(
    local: LocalRun, file: Path, flow: str, repeats: int, checks: Checks, expected: int
) -> tuple[float, int, float, float]:
    """Run ``flow`` ``repeats`` times and return medians of: wall seconds, step runs,
    the child's seconds from the first step's start to the last step's end, and the
    parent's lag from that end until ``LocalRun.run`` returned."""
    timings, child_spans, parent_lags = [], [], []
    step_runs = 0
    database = local.settings.data_dir / "splice.db"
    for _ in range(repeats):
        started = time.perf_counter()
        wall_started = time.time()
        outcome = local.run(file, flow=flow)
        timings.append(time.perf_counter() - started)
        returned = wall_started + timings[-1]
        checks.expect(
            outcome.status == "succeeded",
            f"{flow}: execution {outcome.status}: {outcome.error_message}",
        )
        step_runs = outcome.step_runs
        checks.expect(
            step_runs == expected,
            f"{flow}: outcome reports {step_runs} step runs, expected {expected}",
        )
        rows, first_start, last_end = recorded_span(database, outcome.execution_id)
        checks.expect(
            rows == step_runs,
            f"{flow}: {rows} step_runs rows in the database, outcome says {step_runs}",
        )
        child_spans.append(last_end - first_start)
        parent_lags.append(returned - last_end)
    return median(timings), step_runs, median(child_spans), median(parent_lags)


def profile_child_side(file: Path, flow: str, limit: int) -> None:
    """Run the flow's Runner in this process under cProfile, emitting encoded events."""
    from splice.definition import load_integration
    from splice.engine import events
    from splice.engine.runner import Runner
    from splice.engine.values import Masker

    integration = load_integration(file)
    scratch = Path(tempfile.mkdtemp(prefix="splice-bench-profile-"))
    encoded: list[bytes] = []
    runner = Runner(
        integration=integration,
        flow=flow,
        execution_id="profile",
        config={},
        trigger={"type": "manual"},
        emit=lambda event: encoded.append(events.encoder.encode(event)),
        scratch_dir=scratch,
        masker=Masker([]),
    )
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.runcall(runner.run)
    elapsed = time.perf_counter() - started
    print(
        f"\n## child side, {flow}: Runner.run in process under cProfile, {elapsed:.2f} s "
        f"for {runner.step_runs} step runs ({len(encoded)} events)"
    )
    _print_profile(profiler, limit)


def profile_parent_side(local: LocalRun, file: Path, flow: str, limit: int) -> None:
    """Profile the supervisor's thread, and time the recorder thread's write_batch calls."""
    store = local.store
    original = store.write_batch
    spent = {"seconds": 0.0, "calls": 0, "rows": 0}

    def timed_write_batch(step_runs: Any, logs: Any, execution: Any = None) -> None:
        started = time.perf_counter()
        original(step_runs, logs, execution)
        spent["seconds"] += time.perf_counter() - started
        spent["calls"] += 1
        spent["rows"] += len(step_runs) + len(logs)

    store.write_batch = timed_write_batch  # type: ignore[method-assign]
    profiler = cProfile.Profile()
    started = time.perf_counter()
    outcome = profiler.runcall(local.run, file, flow=flow)
    elapsed = time.perf_counter() - started
    store.write_batch = original  # type: ignore[method-assign]
    print(
        f"\n## parent side, {flow}: supervisor thread under cProfile, {elapsed:.2f} s for "
        f"{outcome.step_runs} step runs; recorder thread: write_batch {spent['calls']} calls, "
        f"{spent['rows']} rows, {spent['seconds']:.2f} s "
        f"({spent['seconds'] / max(1, spent['rows']) * 1e6:.1f} µs per row)"
    )
    _print_profile(profiler, limit)


def _print_profile(profiler: cProfile.Profile, limit: int) -> None:
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.strip_dirs().sort_stats("tottime").print_stats(limit)
    lines = text.getvalue().splitlines()
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    print("\n".join(lines[start:]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 2,000 loop iterations, 50 flat steps, one repeat",
    )
    parser.add_argument("--loop-size", type=int, default=20_000, help="loop iterations")
    parser.add_argument("--flat-size", type=int, default=300, help="steps of the flat flow")
    parser.add_argument("--repeats", type=int, default=3, help="runs per flow; the median counts")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also print cProfile tables of the child's and parent's sides",
    )
    options = parser.parse_args()
    if options.quick:
        options.loop_size, options.flat_size, options.repeats = 2_000, 50, 1

    header("Engine overhead per step run, records included")
    print(
        f"loop iterations: {options.loop_size}, flat steps: {options.flat_size}, "
        f"repeats: {options.repeats} (median)"
    )
    checks = Checks()
    with tempfile.TemporaryDirectory(prefix="splice-bench-") as temporary:
        folder = Path(temporary)
        files = {}
        for name, integration in definitions(options.loop_size, options.flat_size).items():
            files[name] = folder / f"{name}.yaml"
            files[name].write_text(json.dumps(integration, indent=1))
        with LocalRun.open(bench_settings(folder / "data")) as local:
            local.run(files["one_step"])  # warm-up: creates the database, forks once
            fixed, _, _, _ = run_engine(local, files["one_step"], "one_step", 5, checks, 1)
            rows = []
            for flow in ("code_loop", "json_loop", "code_flat"):
                expected = expected_step_runs(flow, options.loop_size, options.flat_size)
                engine, step_runs, child_span, parent_lag = run_engine(
                    local, files[flow], flow, options.repeats, checks, expected
                )
                load = load_seconds(files[flow])
                plain, calls = plain_seconds(flow, options.loop_size, options.flat_size, 5)
                engine_us = engine / step_runs * 1e6
                marginal_us = (engine - fixed) / max(1, step_runs - 1) * 1e6
                plain_us = plain / calls * 1e6
                rows.append(
                    [
                        flow,
                        step_runs,
                        f"{engine:.3f}",
                        f"{load * 1000:.1f}",
                        f"{engine_us:.1f}",
                        f"{marginal_us:.1f}",
                        f"{child_span / step_runs * 1e6:.1f}",
                        f"{parent_lag * 1000:.0f}",
                        f"{plain_us:.2f}",
                        f"{engine_us - plain_us:.1f}",
                        f"{engine_us / plain_us:.0f}×",
                        "yes" if engine_us < AIM_MICROSECONDS else "no",
                    ]
                )
            print(
                f"\nfixed cost of a one-step execution (load, fork, records): "
                f"{fixed * 1000:.1f} ms (median of 5)\n"
            )
            print_table(
                [
                    "flow",
                    "step runs",
                    "engine s",
                    "of which load ms",
                    "engine µs/step",
                    "marginal µs/step",
                    "child µs/step",
                    "parent lag ms",
                    "plain µs/call",
                    "overhead µs",
                    "ratio",
                    f"< {AIM_MICROSECONDS:.0f} µs",
                ],
                rows,
            )
            print(
                "\nmarginal µs/step = (engine time - one-step execution time) / (step runs - 1);"
                "\n'of which load ms' is load_integration of the flow's file, timed apart;"
                "\nchild µs/step = first step start to last step end (from the records) / step "
                "runs;\nparent lag = from the last step's end until LocalRun.run returned "
                "(records still being decoded and committed)"
            )
            if options.profile:
                profile_child_side(files["code_loop"], "code_loop", 30)
                profile_parent_side(local, files["code_loop"], "code_loop", 30)
    return checks.exit_code()


if __name__ == "__main__":
    sys.exit(main())
