"""A service worker as a process of its own, for tests that kill it: ``python worker_process.py``.

It reads its settings from SPLICE_* variables and runs a worker with the concurrency given as
its first argument, 2 by default. It prints ``ready`` once the worker has started. SIGTERM
drains it and exits 1 if executions were still running after 30 s. SIGKILL leaves its leases
behind.
"""

from __future__ import annotations

import signal
import sys
import threading

from splice.service.runtime import Runtime
from splice.settings import Settings


def main() -> None:
    runtime = Runtime(Settings.from_env())
    runtime.start_relay()
    runtime.start_worker(concurrency=int(sys.argv[1]) if len(sys.argv) > 1 else 2)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("ready", flush=True)
    stop.wait()
    drained = runtime.close(drain=30)
    sys.exit(0 if drained else 1)


if __name__ == "__main__":
    main()
