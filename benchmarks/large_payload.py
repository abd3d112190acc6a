"""Large payload: a 100 MB file read by one step and hashed by the next, end to end.

The flow has three steps: ``read`` (files.read, mode bytes), ``hash`` (code.run,
hashlib.sha256 of the bytes) and ``memory`` (code.run that returns the sandboxed child's
peak RSS, VmHWM from /proc/self/status). Each measurement runs in a fresh subprocess of
this script, so that the peak RSS of one cannot include another's:

- ``plain``: read the file and hash it in one process, the baseline;
- ``plain + write``: the same, then write the bytes to a new file, which is the extra
  I/O the engine does when it records a value larger than the spill threshold;
- ``splice``: ``LocalRun.run`` of the flow after one warm-up run on a 1 KiB file. The
  parent's peak is its VmHWM at the end, the template's is read from /proc/PID/status.

The payload is written once and then read from the page cache in every run.

Usage: .venv/bin/python benchmarks/large_payload.py [--quick] [--size-mb N]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import Checks, bench_settings, header, median, print_table, status_kib

AIM_MB_PER_SECOND = 200.0
AIM_PEAK_FACTOR = 3.0  # peak RSS per process, as a multiple of the payload size
MB = 1_000_000

HASH_SOURCE = """\
import hashlib

def run(context, data):
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
"""
MEMORY_SOURCE = """\
def run(context, hashed):
    with open("/proc/self/status") as status:
        fields = dict(line.split(":", 1) for line in status if ":" in line)
    return {**hashed, "child_hwm_kib": int(fields["VmHWM"].split()[0]),
            "child_pid_rss_kib": int(fields["VmRSS"].split()[0])}
"""


def definition() -> dict[str, Any]:
    """Build the benchmark integration. JSON is valid YAML, so it is written as JSON."""
    return {
        "key": "large-payload",
        "name": "Large payload benchmark",
        "version": "1.0.0",
        "config": {
            "folder": {
                "type": "string",
                "required": True,
                "grant": "read",
                "description": "folder of the file to hash, granted to the sandbox",
            },
            "name": {"type": "string", "required": True, "description": "the file's name"},
        },
        "flows": {
            "hash": {
                "trigger": {"type": "manual"},
                "steps": [
                    {
                        "id": "read",
                        "action": "files.read",
                        "inputs": {
                            "path": "{{ config.folder }}/{{ config.name }}",
                            "mode": "bytes",
                        },
                    },
                    {
                        "id": "hash",
                        "action": "code.run",
                        "inputs": {"source": HASH_SOURCE, "args": {"data": "{{ steps.read }}"}},
                    },
                    {
                        "id": "memory",
                        "action": "code.run",
                        "inputs": {"source": MEMORY_SOURCE, "args": {"hashed": "{{ steps.hash }}"}},
                    },
                ],
            }
        },
    }


def write_payload(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as file:
        remaining = size
        while remaining:
            chunk = os.urandom(min(remaining, 4 * 1024 * 1024))
            digest.update(chunk)
            file.write(chunk)
            remaining -= len(chunk)
    return digest.hexdigest()


# -- measurements, each run in a subprocess of this script -----------------------------------


def measure_plain(payload: Path, write_copy: bool) -> dict[str, Any]:
    start_rss = status_kib("self", "VmRSS")
    started = time.perf_counter()
    data = payload.read_bytes()
    sha256 = hashlib.sha256(data).hexdigest()
    if write_copy:
        copy = payload.with_name("plain-copy")
        copy.write_bytes(data)
        copy.unlink()
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "sha256": sha256,
        "start_rss_kib": start_rss,
        "parent_hwm_kib": status_kib("self", "VmHWM"),
    }


def measure_splice(payload: Path, folder: Path) -> dict[str, Any]:
    from splice.local import LocalRun

    file = folder / "integration.yaml"
    file.write_text(json.dumps(definition(), indent=1))
    (folder / "small").mkdir(parents=True)
    small = folder / "small" / "small.bin"
    small.write_bytes(b"x" * 1024)
    with LocalRun.open(bench_settings(folder / "data")) as local:
        warm = local.run(
            file, assignments=[f"folder={small.parent}", f"name={small.name}"], environ={}
        )
        if warm.status != "succeeded":
            raise RuntimeError(f"warm-up execution {warm.status}: {warm.error_message}")
        start_rss = status_kib("self", "VmRSS")
        started = time.perf_counter()
        outcome = local.run(
            file, assignments=[f"folder={payload.parent}", f"name={payload.name}"], environ={}
        )
        seconds = time.perf_counter() - started
        template_pid = local.sandbox._process.pid  # type: ignore[union-attr]
        records = local.store.step_runs(outcome.execution_id)
        steps = {
            r.step_id: {
                "ms": (r.ended_at - r.started_at).total_seconds() * 1000,
                "status": r.status,
                "output_blob": r.output_blob,
                "output_size": r.output_size,
            }
            for r in records
        }
        blob = steps.get("read", {}).get("output_blob")
        blob_size = local.supervisor.blobs.path(blob).stat().st_size if blob else None
        return {
            "seconds": seconds,
            "status": outcome.status,
            "error": outcome.error_message,
            "result": outcome.result,
            "step_runs": outcome.step_runs,
            "rows": len(records),
            "steps": steps,
            "blob_size": blob_size,
            "start_rss_kib": start_rss,
            "parent_hwm_kib": status_kib("self", "VmHWM"),
            "template_hwm_kib": status_kib(template_pid, "VmHWM"),
            "template_rss_kib": status_kib(template_pid, "VmRSS"),
        }


def run_measurement(kind: str, payload: Path, folder: Path) -> dict[str, Any]:
    folder.mkdir()
    completed = subprocess.run(
        [sys.executable, __file__, "--measure", kind, str(payload), str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"measurement {kind} failed:\n{completed.stderr}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


# -- the report ----------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 20 MB, one run each")
    parser.add_argument("--size-mb", type=int, default=100, help="payload size in MB (10^6 B)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per measurement")
    parser.add_argument(
        "--measure", nargs=3, metavar=("KIND", "PAYLOAD", "FOLDER"), help=argparse.SUPPRESS
    )
    options = parser.parse_args()
    if options.measure:
        kind, payload, folder = options.measure
        if kind == "splice":
            result = measure_splice(Path(payload), Path(folder))
        else:
            result = measure_plain(Path(payload), write_copy=kind == "plain-write")
        print(json.dumps(result))
        return 0
    if options.quick:
        options.size_mb, options.repeats = 20, 1

    header("Large payload: read and hash one file through two steps")
    size = options.size_mb * MB
    print(f"payload: {options.size_mb} MB, runs per measurement: {options.repeats}")
    checks = Checks()
    with tempfile.TemporaryDirectory(prefix="splice-bench-") as temporary:
        folder = Path(temporary)
        # Apart from each run's data folder, since a grant may not contain Splice's own files.
        (folder / "input").mkdir()
        payload = folder / "input" / "payload.bin"
        expected = write_payload(payload, size)
        results: dict[str, list[dict[str, Any]]] = {"plain": [], "plain-write": [], "splice": []}
        for repeat in range(options.repeats):
            for kind in results:
                results[kind].append(run_measurement(kind, payload, folder / f"{kind}-{repeat}"))
        for run in results["plain"] + results["plain-write"]:
            checks.expect(
                run["sha256"] == expected, "plain: the sha256 does not match the payload's"
            )
        for run in results["splice"]:
            check_splice(run, expected, size, checks)
        print_report(results, size)
    return checks.exit_code()


def check_splice(run: dict[str, Any], expected: str, size: int, checks: Checks) -> None:
    checks.expect(
        run["status"] == "succeeded", f"splice: execution {run['status']}: {run['error']}"
    )
    result = run["result"] or {}
    checks.expect(result.get("sha256") == expected, "splice: the hash step gave a wrong sha256")
    checks.expect(
        result.get("size") == size,
        f"splice: the hash step saw {result.get('size')} bytes, expected {size}",
    )
    checks.expect(
        run["step_runs"] == 3 and run["rows"] == 3,
        f"splice: {run['step_runs']} step runs, {run['rows']} rows, expected 3",
    )
    checks.expect(
        run["blob_size"] == size,
        f"splice: the read step's recorded blob has {run['blob_size']} bytes, expected {size}",
    )


def print_report(results: dict[str, list[dict[str, Any]]], size: int) -> None:
    plain_rate = size / MB / median([r["seconds"] for r in results["plain"]])
    aim_kib = AIM_PEAK_FACTOR * size / 1024
    rows = []
    for kind, runs in results.items():
        seconds = median([r["seconds"] for r in runs])
        rate = size / MB / seconds
        # (process, its peak, its RSS before the payload: a child starts as a template copy)
        peaks = [
            ("parent", lambda r: r["parent_hwm_kib"], lambda r: r["start_rss_kib"]),
            ("template", lambda r: r["template_hwm_kib"], lambda r: r["template_rss_kib"]),
            ("child", lambda r: r["result"]["child_hwm_kib"], lambda r: r["template_rss_kib"]),
        ]
        for process, peak_of, start_of in peaks:
            if kind != "splice" and process != "parent":
                continue
            hwm = max(peak_of(r) for r in runs)
            growth = max(peak_of(r) - start_of(r) for r in runs)
            # Speed cells go on the measure's first row (its parent process) only.
            speed = ["", "", "", "", ""]
            if process == "parent":
                speed = [
                    kind,
                    " / ".join(f"{r['seconds']:.3f}" for r in runs),
                    f"{rate:.0f}",
                    f"{plain_rate / rate:.2f}×",
                    "yes" if rate >= AIM_MB_PER_SECOND else "no",
                ]
            memory = [
                process,
                f"{hwm / 1024:.0f}",
                f"{growth / 1024:.0f}",
                f"{hwm * 1024 / size:.2f}×",
                "yes" if hwm <= aim_kib else "no",
            ]
            rows.append(speed + memory)
    print()
    print_table(
        [
            "measure",
            "seconds (each run)",
            "MB/s",
            "slowdown vs plain",
            f">= {AIM_MB_PER_SECOND:.0f} MB/s",
            "process",
            "peak RSS MiB",
            "peak - start MiB",
            "peak / payload",
            f"<= {AIM_PEAK_FACTOR:.0f}×",
        ],
        rows,
    )
    last = results["splice"][-1]
    print(
        "\nsplice step runs (last run), ms from step records: "
        + ", ".join(f"{step} {info['ms']:.0f}" for step, info in last["steps"].items())
    )
    print(
        "peak - start: the peak minus the process's RSS before the payload run (for the "
        "child, minus the template's RSS,\nwhich the child starts with)"
    )


if __name__ == "__main__":
    sys.exit(main())
