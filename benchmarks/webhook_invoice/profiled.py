"""Run the splice CLI with cProfile in every thread, and write the profiles when it exits.

``webhook_sync.py --profile`` starts ``splice serve`` through this file. Each thread gets a
profiler of its own when it starts (the main thread from the beginning). When the command
exits, after SIGTERM has stopped its roles, this writes one pstats file per thread group:

- ``PREFIX-main.prof``: the event loop, with HTTP requests and responses;
- ``PREFIX-threadpool.prof``: blocking work of the API, such as accepting a webhook;
- ``PREFIX-execution.prof``: the worker's execution threads, which drive the sandboxed
  children;
- ``PREFIX-claim.prof``: the worker's claim loop;
- ``PREFIX-other.prof``: every other thread.

The sandboxed children are separate processes, so their work does not show here; the step
runs' timestamps in the records cover it.

Usage: python benchmarks/webhook_invoice/profiled.py PREFIX serve [options]
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import threading

GROUPS = {
    "MainThread": "main",
    "AnyIO worker thread": "threadpool",
    "splice-execution": "execution",
    "splice-worker-claim": "claim",
}

_profiles: list[tuple[str, cProfile.Profile]] = []
_lock = threading.Lock()
_original_bootstrap = threading.Thread._bootstrap_inner  # type: ignore[attr-defined]


def _group(thread_name: str) -> str:
    for prefix, group in GROUPS.items():
        if thread_name.startswith(prefix):
            return group
    return "other"


def _profiled_bootstrap(self: threading.Thread) -> None:
    # Wrapping _bootstrap_inner rather than run() also covers Thread subclasses that
    # override run(), such as the worker threads that run_in_threadpool uses.
    profile = cProfile.Profile()
    with _lock:
        _profiles.append((_group(self.name), profile))
    profile.enable()
    try:
        _original_bootstrap(self)
    finally:
        profile.disable()


def write_profiles(prefix: str) -> None:
    """Write the combined stats of each thread group to PREFIX-GROUP.prof."""
    with _lock:
        profiles = list(_profiles)
    combined: dict[str, pstats.Stats] = {}
    for group, profile in profiles:
        # create_stats() disables only the calling thread's hook. The other threads have
        # ended or are idle by now, so their tables no longer change.
        profile.create_stats()
        if group in combined:
            combined[group].add(profile)
        else:
            combined[group] = pstats.Stats(profile)
    for group, stats in combined.items():
        stats.dump_stats(f"{prefix}-{group}.prof")


def main() -> None:
    prefix, arguments = sys.argv[1], sys.argv[2:]
    threading.Thread._bootstrap_inner = _profiled_bootstrap  # type: ignore[attr-defined]
    main_profile = cProfile.Profile()
    with _lock:
        _profiles.append(("main", main_profile))
    from splice.cli.main import main as splice_main

    sys.argv = ["splice", *arguments]
    main_profile.enable()
    try:
        splice_main()
    finally:
        # The command returns after SIGTERM once it has stopped its roles and their threads.
        main_profile.disable()
        write_profiles(prefix)


if __name__ == "__main__":
    main()
