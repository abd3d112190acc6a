"""Invoice throughput: the invoice-sync example over many invoice files, end to end.

Copies the UBL files of examples/invoice-sync/invoices into a temporary inbox until it
contains ``--invoices`` files (500 by default, each with a unique name), starts the example
accounting API on a free port of 127.0.0.1, and measures:

- ``plain``: the same work in this process without Splice, as the baseline: the
  ``xml.parse`` action function called directly, ``map_invoice.run``, and an httpx POST
  on one client;
- ``splice``: ``LocalRun.run`` of the example's ``sync`` flow, which returns after every
  step run is committed to SQLite;
- ``splice c=4``: the same flow with ``concurrency: 4`` on the invoice loop.

Each run checks that the API stored one record per invoice and that the database contains
3 step runs per invoice plus the list, loop and summary steps.

Usage: .venv/bin/python benchmarks/invoice_throughput.py [--quick] [--profile]
"""

from __future__ import annotations

import argparse
import importlib.util
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
from common import (
    Checks,
    bench_settings,
    children_of,
    cpu_seconds,
    header,
    median,
    percentile,
    print_table,
    wait_for_reaped_children,
)

from splice.components import find_action
from splice.engine.inputs import prepare_inputs
from splice.local import LocalRun
from splice.testing import make_context

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "invoice-sync"
AIM_PER_SECOND = 250.0
NAMESPACES = {
    "cac": "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2",
    "cbc": "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2",
}
FORCE_LIST = [
    "cac:InvoiceLine",
    "cac:CreditNoteLine",
    "cac:TaxTotal",
    "cac:PaymentMeans",
    "cac:PartyTaxScheme",
    "cac:PartyLegalEntity",
]


class AccountingServer:
    """The example accounting API in a child process on a free port of 127.0.0.1."""

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(EXAMPLE / "accounting_server.py"),
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                f"--api-key={api_key}",  # one argument: a random key may start with "-"
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if not line.startswith("listening on http://127.0.0.1:"):
            self.process.kill()
            raise RuntimeError(f"the accounting server printed {line!r} instead of its address")
        self.url = line.removeprefix("listening on ")

    def stored(self) -> int:
        response = httpx.get(f"{self.url}/invoices", headers={"X-API-Key": self.api_key})
        response.raise_for_status()
        return len(response.json())

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def fill_inbox(inbox: Path, count: int) -> None:
    sources = sorted((EXAMPLE / "invoices").glob("*.xml"))
    inbox.mkdir()
    for index in range(count):
        source = sources[index % len(sources)]
        shutil.copyfile(source, inbox / f"{index:05d}-{source.name}")


def copy_example(folder: Path, concurrency: int) -> Path:
    """Copy the example definition and its code files, with the loop's concurrency set."""
    folder.mkdir()
    text = (EXAMPLE / "integration.yaml").read_text()
    if concurrency != 1:
        marker = "        on_error: continue\n"
        if marker not in text:
            raise RuntimeError(
                "examples/invoice-sync/integration.yaml changed: no "
                "'on_error: continue' line in the loop to add concurrency to"
            )
        text = text.replace(marker, marker + f"        concurrency: {concurrency}\n", 1)
    (folder / "integration.yaml").write_text(text)
    for name in ("map_invoice.py", "summarize.py"):
        shutil.copyfile(EXAMPLE / name, folder / name)
    return folder / "integration.yaml"


def load_mapper() -> ModuleType:
    spec = importlib.util.spec_from_file_location("map_invoice", EXAMPLE / "map_invoice.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_plain(inbox: Path, server: AccountingServer, threads: int) -> tuple[float, list[float]]:
    """Parse, map and post every file in this process and return total and per-item seconds.

    With ``threads`` > 1 the files are spread over a thread pool sharing one client, as the
    engine's loop with ``concurrency`` shares one client between its threads.
    """
    mapper = load_mapper()
    parse = find_action("xml.parse")
    assert parse is not None
    context = make_context()
    run_id = secrets.token_hex(8)
    started = time.perf_counter()
    with httpx.Client(headers={"User-Agent": "splice-benchmark"}) as client:

        def process(file: Path) -> float:
            item_started = time.perf_counter()
            inputs = prepare_inputs(
                parse,
                {"path": str(file), "namespaces": NAMESPACES, "force_list": FORCE_LIST},
                step="parse",
            )
            document = parse.function(context, **inputs)
            record = mapper.run(context, document=document, source_file=file.name)
            response = client.post(
                f"{server.url}/invoices",
                json=record,
                headers={
                    "X-API-Key": server.api_key,
                    "Idempotency-Key": f"plain-{run_id}:{file.name}",
                },
            )
            response.raise_for_status()
            return time.perf_counter() - item_started

        files = sorted(inbox.glob("*.xml"))
        if threads == 1:
            per_item = [process(file) for file in files]
        else:
            with ThreadPoolExecutor(threads) as pool:
                per_item = list(pool.map(process, files))
    return time.perf_counter() - started, per_item


def run_splice(
    local: LocalRun,
    file: Path,
    inbox: Path,
    server: AccountingServer,
    invoices: int,
    checks: Checks,
    label: str,
) -> tuple[float, dict[str, list[float]]]:
    """Run the sync flow once and return wall seconds and per-item and per-step durations.

    The returned mapping also contains CPU seconds per invoice under ``cpu PROCESS`` keys.
    """
    assignments = [
        f"inbox={inbox}",
        f"accounting_url={server.url}",
        f"accounting.api_key={server.api_key}",
    ]
    before = server.stored()
    template_pid = local.sandbox._process.pid  # type: ignore[union-attr]
    cpu_before = cpu_snapshot(server, template_pid)
    # The template forks its next spare child right after each request; wait for it, so
    # the child that runs this execution is the one in this set.
    spare: set[int] = set()
    deadline = time.monotonic() + 5
    while not spare and time.monotonic() < deadline:
        spare = children_of(template_pid) or set()
        time.sleep(0.005)
    started = time.perf_counter()
    outcome = local.run(file, flow="sync", assignments=assignments, environ={})
    elapsed = time.perf_counter() - started
    checks.expect(
        wait_for_reaped_children(template_pid, spare),
        f"{label}: the sandboxed child was not reaped, so its CPU time is missing",
    )
    cpu = {
        name: (after - cpu_before[name]) / invoices
        for name, after in cpu_snapshot(server, template_pid).items()
    }
    stored = server.stored() - before
    checks.expect(
        outcome.status == "succeeded",
        f"{label}: execution {outcome.status}: {outcome.error_message}",
    )
    checks.expect(
        outcome.continued_failures == 0, f"{label}: {outcome.continued_failures} invoices failed"
    )
    checks.expect(stored == invoices, f"{label}: the API stored {stored} of {invoices} records")
    expected_runs = 3 * invoices + 3  # parse, map, post per invoice; list, loop, summary
    checks.expect(
        outcome.step_runs == expected_runs,
        f"{label}: outcome reports {outcome.step_runs} step runs, expected {expected_runs}",
    )
    records = local.store.step_runs(outcome.execution_id)
    checks.expect(
        len(records) == expected_runs,
        f"{label}: {len(records)} step_runs rows, expected {expected_runs}",
    )
    checks.expect(
        all(r.status == "succeeded" for r in records), f"{label}: some step runs did not succeed"
    )
    by_step = durations(records)
    for name, seconds in cpu.items():
        by_step[f"cpu {name}"] = [seconds]
    return elapsed, by_step


def cpu_snapshot(server: AccountingServer, template_pid: int | None) -> dict[str, float]:
    """CPU seconds so far of this process, the API server and the reaped sandboxed children."""
    snapshot = {"this process": cpu_seconds("self"), "API server": cpu_seconds(server.process.pid)}
    if template_pid is not None:
        snapshot["sandboxed child"] = cpu_seconds(template_pid, reaped_children=True)
    return snapshot


def durations(records: list[Any]) -> dict[str, list[float]]:
    """Seconds per step id, and per iteration ('item': first start to last end)."""
    by_step: dict[str, list[float]] = defaultdict(list)
    spans: dict[str, list[Any]] = {}
    for record in records:
        seconds = (record.ended_at - record.started_at).total_seconds()
        by_step[record.step_id].append(seconds)
        if "[" in record.path:
            iteration = record.path.split(".", 1)[0]
            span = spans.setdefault(iteration, [record.started_at, record.ended_at])
            span[0] = min(span[0], record.started_at)
            span[1] = max(span[1], record.ended_at)
    by_step["item"] = [(end - start).total_seconds() for start, end in spans.values()]
    return by_step


def profile_child_side(file: Path, inbox: Path, server: AccountingServer) -> None:
    """Run the flow's Runner in this process under cProfile (the sandboxed child's work)."""
    import cProfile
    import io
    import pstats

    from splice.config import resolve_config
    from splice.definition import load_integration
    from splice.engine import events
    from splice.engine.runner import Runner
    from splice.engine.values import Masker

    integration = load_integration(file)
    config = resolve_config(
        integration,
        assignments=[
            f"inbox={inbox}",
            f"accounting_url={server.url}",
            f"accounting.api_key={server.api_key}",
        ],
        config_file=None,
        environ={},
    )
    scratch = Path(tempfile.mkdtemp(prefix="splice-bench-profile-"))
    runner = Runner(
        integration=integration,
        flow="sync",
        execution_id="profile",
        config=config.values,
        trigger={"type": "manual"},
        emit=lambda event: events.encoder.encode(event),
        scratch_dir=scratch,
        masker=Masker(config.secrets),
    )
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.runcall(runner.run)
    elapsed = time.perf_counter() - started
    shutil.rmtree(scratch, ignore_errors=True)
    print(
        f"\n## child side: Runner.run of the sync flow in process under cProfile, "
        f"{elapsed:.2f} s, {runner.step_runs} step runs"
    )
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text).strip_dirs()
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(30)
    print(text.getvalue())


def cpu_row(label: str, cpu_runs: dict[str, list[float]]) -> list[str]:
    def cell(name: str) -> str:
        runs = cpu_runs.get(name)
        return " / ".join(f"{value * 1000:.2f}" for value in runs) if runs else "-"

    return [label, cell("this process"), cell("sandboxed child"), cell("API server")]


def summarize(
    label: str, invoices: int, wall: list[float], per_item: list[list[float]], plain_wall: float
) -> list[Any]:
    seconds = median(wall)
    rate = invoices / seconds
    items = [value for run in per_item for value in run]
    return [
        label,
        invoices,
        " / ".join(f"{w:.2f}" for w in wall),
        f"{rate:.0f}",
        f"{percentile(items, 0.5) * 1000:.2f}",
        f"{percentile(items, 0.99) * 1000:.2f}",
        f"{(invoices / plain_wall) / rate:.2f}×",
        "yes" if rate >= AIM_PER_SECOND else "no",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 60 invoices, one run")
    parser.add_argument("--invoices", type=int, default=500, help="invoice files in the inbox")
    parser.add_argument("--repeats", type=int, default=2, help="runs per variant")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also print a cProfile table of the flow's Runner in process",
    )
    options = parser.parse_args()
    if options.quick:
        options.invoices, options.repeats = 60, 1

    header("Invoice throughput, end to end")
    print(f"invoices: {options.invoices}, runs per variant: {options.repeats}")
    checks = Checks()
    server = AccountingServer(secrets.token_urlsafe(24))
    try:
        with tempfile.TemporaryDirectory(prefix="splice-bench-") as temporary:
            folder = Path(temporary)
            inbox = folder / "inbox"
            fill_inbox(inbox, options.invoices)
            sequential = copy_example(folder / "sequential", 1)
            concurrent = copy_example(folder / "concurrent", 4)
            rows, cpu_rows = [], []
            baseline = 0.0
            for label, threads in (("plain Python", 1), ("plain 4 threads", 4)):
                plain_wall, plain_items = [], []
                cpu_runs: dict[str, list[float]] = defaultdict(list)
                for _ in range(options.repeats):
                    before = server.stored()
                    cpu_before = cpu_snapshot(server, None)
                    wall, items = run_plain(inbox, server, threads)
                    for name, after in cpu_snapshot(server, None).items():
                        cpu_runs[name].append((after - cpu_before[name]) / options.invoices)
                    stored = server.stored() - before
                    checks.expect(
                        stored == options.invoices,
                        f"{label}: the API stored {stored} of {options.invoices} records",
                    )
                    plain_wall.append(wall)
                    plain_items.append(items)
                cpu_rows.append(cpu_row(label, cpu_runs))
                baseline = baseline or median(plain_wall)
                rows.append(summarize(label, options.invoices, plain_wall, plain_items, baseline))
            step_rows = []
            with LocalRun.open(bench_settings(folder / "data")) as local:
                for label, file in (("splice", sequential), ("splice c=4", concurrent)):
                    walls, items, steps, cpu_runs = [], [], defaultdict(list), defaultdict(list)
                    for _ in range(options.repeats):
                        wall, by_step = run_splice(
                            local, file, inbox, server, options.invoices, checks, label
                        )
                        walls.append(wall)
                        items.append(by_step["item"])
                        for step in ("parse", "map", "post"):
                            steps[step].extend(by_step[step])
                        for key, value in by_step.items():
                            if key.startswith("cpu "):
                                cpu_runs[key.removeprefix("cpu ")].extend(value)
                    cpu_rows.append(cpu_row(label, cpu_runs))
                    rows.append(summarize(label, options.invoices, walls, items, baseline))
                    step_rows.append(
                        [label]
                        + [
                            f"{percentile(steps[s], 0.5) * 1000:.2f}"
                            for s in ("parse", "map", "post")
                        ]
                    )
            print()
            print_table(
                [
                    "variant",
                    "invoices",
                    "wall s (each run)",
                    "invoices/s",
                    "p50 ms/item",
                    "p99 ms/item",
                    "slowdown vs plain (1 thread)",
                    f">= {AIM_PER_SECOND:.0f}/s",
                ],
                rows,
            )
            print(
                "\nper-item times of splice runs come from step records (first start to last "
                "end of an iteration); plain ones are timed in process"
            )
            print(
                "\nCPU ms per invoice (user + system, mean over each run; 'this process' is the "
                "supervisor and recorder for splice runs):"
            )
            print_table(["variant", "this process", "sandboxed child", "API server"], cpu_rows)
            print("\np50 ms per step run, from step records:")
            print_table(["variant", "parse", "map", "post"], step_rows)
            if options.profile:
                profile_child_side(sequential, inbox, server)
    finally:
        server.stop()
    return checks.exit_code()


if __name__ == "__main__":
    sys.exit(main())
