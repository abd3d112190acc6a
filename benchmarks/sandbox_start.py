"""Sandbox start: from request to the first line of customer code and back.

Runs a trivial code step in a fully confined child forked from the warm template, and
compares it with spawning a fresh interpreter that imports the same libraries.

    .venv/bin/python benchmarks/sandbox_start.py [--quick]

Measures, in one run:
- latency with requests 25 ms apart (the template has its spare child ready): the time
  from ``sandbox.start`` to the first line of customer code, and to the result back;
- throughput with requests back to back, from one and from two threads;
- the same latency through the supervisor, with the execution's records in SQLite;
- the baseline: ``python -c`` importing json, httpx, lxml, jinja2 and pydantic.
Aims: p50 under 3 ms and p99 under 10 ms with full confinement, and at least 300 trivial
isolated executions per second.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import bench_settings, header, median, percentile, print_table

from splice.blobs.local import LocalBlobStore
from splice.config import ConfigValues
from splice.definition import load_integration_text
from splice.engine.events import ResultEvent
from splice.engine.supervisor import Supervisor
from splice.engine.values import decode
from splice.sandbox import ExecutionRequest
from splice.sandbox import spec as execution_spec
from splice.sandbox.forkserver import ForkServerSandbox
from splice.store import RecordStore

DEFINITION = """
key: trivial
name: Trivial
flows:
  main:
    trigger: {type: manual}
    steps:
      - id: first_line
        action: code.run
        inputs:
          source: |
            import time
            def run(context):
                return time.monotonic()
"""
BASELINE = "import json, httpx, lxml.etree, jinja2, pydantic; print(1)"


class Runner:
    """Starts trivial executions directly on the sandbox, as the supervisor would."""

    def __init__(self, sandbox: ForkServerSandbox, scratch_root: Path) -> None:
        self.sandbox = sandbox
        self.scratch_root = scratch_root
        integration = load_integration_text(DEFINITION, base_dir=scratch_root)
        self.dump = integration.model_dump(mode="json", by_alias=True)
        self.count = 0
        self.lock = threading.Lock()

    def once(self) -> tuple[float, float]:
        """Run one execution; return seconds to the first line of code and to the result."""
        with self.lock:
            self.count += 1
            execution_id = f"bench-{self.count}"
        scratch = self.scratch_root / execution_id
        scratch.mkdir(mode=0o700)
        spec = execution_spec.ExecutionSpec(
            execution_id=execution_id, integration=self.dump, sources={}, flow="main",
            config={}, trigger={}, secrets=[], scratch_dir=str(scratch),
            spill_threshold=1 << 18, log_limit=1 << 20, timeout=30.0,
        )  # fmt: skip
        request = ExecutionRequest(execution_id, execution_spec.encoder.encode(spec), scratch, 30)
        started = time.monotonic()
        result = None
        for event in self.sandbox.start(request).events():
            if isinstance(event, ResultEvent):
                result = event
        ended = time.monotonic()
        if result is None or result.status != "succeeded" or result.result is None:
            raise SystemExit(f"execution {execution_id} failed: {result}")
        first_line = decode(result.result.data or b"", result.result.encoding)
        return first_line - started, ended - started


def spaced(runner: Runner, count: int) -> tuple[list[float], list[float]]:
    to_code, round_trip = [], []
    for _ in range(count):
        time.sleep(0.025)
        code, total = runner.once()
        to_code.append(code * 1000)
        round_trip.append(total * 1000)
    return to_code, round_trip


def throughput(runner: Runner, seconds: float, threads: int) -> float:
    done = [0] * threads
    stop = time.monotonic() + seconds

    def work(slot: int) -> None:
        while time.monotonic() < stop:
            runner.once()
            done[slot] += 1

    workers = [threading.Thread(target=work, args=(slot,)) for slot in range(threads)]
    started = time.monotonic()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(done) / (time.monotonic() - started)


def supervised(folder: Path, sandbox: ForkServerSandbox, count: int) -> list[float]:
    settings = bench_settings(folder / "supervised")
    store = RecordStore.open(settings.database_url)
    supervisor = Supervisor(
        store=store, blobs=LocalBlobStore(settings.blob_dir), sandbox=sandbox, settings=settings
    )
    integration = load_integration_text(DEFINITION, base_dir=folder)
    times = []
    for _ in range(count):
        time.sleep(0.025)
        started = time.monotonic()
        outcome = supervisor.execute(integration, flow="main", config=ConfigValues(), trigger={})
        times.append((time.monotonic() - started) * 1000)
        if outcome.status != "succeeded":
            raise SystemExit(f"supervised execution failed: {outcome.error_message}")
    store.close()
    return times


def baseline(count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.monotonic()
        subprocess.run([sys.executable, "-c", BASELINE], check=True, capture_output=True)
        times.append((time.monotonic() - started) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer executions, for a smoke run")
    options = parser.parse_args()
    count, seconds, fresh = (60, 1.0, 5) if options.quick else (400, 3.0, 30)
    header("Sandbox start: request to the first line of customer code and back")
    with tempfile.TemporaryDirectory(prefix="splice-bench-") as temporary:
        folder = Path(temporary)
        settings = bench_settings(folder / "data")
        sandbox = ForkServerSandbox(settings)
        try:
            runner = Runner(sandbox, settings.scratch_dir)
            runner.once()  # waits for the template, warms it
            print(f"protections active: {', '.join(sandbox.protections['active'])}")
            print(f"protections missing: {', '.join(sandbox.protections['missing']) or 'none'}")
            to_code, round_trip = spaced(runner, count)
            one = throughput(runner, seconds, 1)
            two = throughput(runner, seconds, 2)
            with_records = supervised(folder, sandbox, count // 2)
        finally:
            sandbox.close()
    fresh_times = baseline(fresh)
    rows = [
        ["sandbox: request to first line of code", f"{median(to_code):.2f}",
         f"{percentile(to_code, 0.99):.2f}"],
        ["sandbox: request to result back", f"{median(round_trip):.2f}",
         f"{percentile(round_trip, 0.99):.2f}"],
        ["supervisor: with records in SQLite", f"{median(with_records):.2f}",
         f"{percentile(with_records, 0.99):.2f}"],
        ["baseline: fresh python -c with the same imports", f"{median(fresh_times):.2f}",
         f"{percentile(fresh_times, 0.99):.2f}"],
    ]  # fmt: skip
    print()
    print_table(["measure", "p50 ms", "p99 ms"], rows)
    ratio = median(fresh_times) / median(round_trip)
    print(f"\nfresh interpreter / sandbox round trip (p50): {ratio:.1f}×")
    print(f"throughput, back to back: {one:.0f} executions/s (1 thread), {two:.0f}/s (2 threads)")
    print(f"aims: p50 < 3 ms: {'yes' if median(round_trip) < 3 else 'no'}; "
          f"p99 < 10 ms: {'yes' if percentile(round_trip, 0.99) < 10 else 'no'}; "
          f">= 300/s: {'yes' if max(one, two) >= 300 else 'no'}")  # fmt: skip


if __name__ == "__main__":
    main()
