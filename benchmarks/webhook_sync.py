"""Synchronous webhook: one UBL invoice in, the mapped record out, against n8n and a floor.

The job is that of the reference chain of the n8n harness. Receive a UBL invoice, parse it,
and compute its line count and line total in customer code. Map it to
``{invoice_id, supplier, total, currency, lines}``, POST that to a receiver on 127.0.0.1, and
respond with the mapped JSON. Splice runs it as the ``invoice`` flow of
``benchmarks/webhook_invoice/integration.yaml`` (``trigger: {type: webhook, sync: true}``).

Every system is driven by the harness's own load client, ``load.py``, with the same invoice:
a correctness check first, 20 warm-up requests, ``--seq-runs`` sequential runs of
``--seq-n`` requests on one keep-alive connection, then ``--clients`` keep-alive clients
for ``--conc-seconds``. The systems, in this order:

- ``floor``: ``webhook_invoice/floor.py``, plain Python on uvicorn doing the same parse,
  compute, POST and response in process, with nothing queued, sandboxed or recorded;
- ``embedded``: ``splice serve`` (SQLite, the database queue, the local blob folder);
- ``scaled``: ``splice api`` + ``splice worker`` + ``splice scheduler`` on a PostgreSQL
  database of its own and a redis-server of its own on a free port, blobs in a shared local
  folder;
- ``n8n``: the harness's ``run.sh``, which installs n8n when missing, starts it per
  configuration, checks it and measures it with the same load client.

Splice and the floor post to ``webhook_invoice/receiver.py``. After the measurements, every
request sent to Splice must have one execution recorded as succeeded with four succeeded
step runs. Timestamps of those records split the sequential latency into stages.

Usage: .venv/bin/python benchmarks/webhook_sync.py [--quick] [--only floor,embedded,...]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import itertools
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import Checks, header, median, print_table

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks" / "webhook_invoice"
INVOICE = ROOT / "examples" / "invoice-sync" / "invoices" / "base-example.xml"
DEFAULT_HARNESS = ROOT.parent / "shared" / "peers" / "n8n"
PYTHON = sys.executable
SPLICE = str(Path(sys.executable).with_name("splice"))
SYSTEMS = ("floor", "embedded", "scaled", "n8n")
# Steps of the invoice flow, in order; every execution must have one succeeded run of each.
STEPS = ("parse", "totals", "post", "answer")
CONTENT_TYPE = "application/xml"
WARM_UP = 20
AIM_P50_MS, AIM_P99_MS, AIM_RATE = 10.0, 30.0, 250.0
STOP_GRACE = 30.0  # seconds a process gets after SIGTERM before SIGKILL
LEFTOVER_GRACE = 3.0  # seconds its child processes get to exit after it did


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def utc_now() -> datetime.datetime:
    """Return the current time as naive UTC, the form that execution records store."""
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)


# -- processes -------------------------------------------------------------------------------


def children(pid: int) -> set[int]:
    """Return the children of every thread of a process (each thread lists its own)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found.update(int(child) for child in (task / "children").read_text().split())
    return found


def descendants(pid: int) -> list[int]:
    found, pending = [], [pid]
    while pending:
        for child in children(pending.pop()):
            found.append(child)
            pending.append(child)
    return found


def tree_cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU seconds of a process itself, and of its descendants (live ones and reaped ones)."""
    own = children = 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    for member in (pid, *descendants(pid)):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # proc(5) fields 14 to 17 (utime, stime, cutime, cstime) are 11 to 14 here.
        values = [int(value) / ticks for value in fields[11:15]]
        if member == pid:
            own += values[0] + values[1]
            children += values[2] + values[3]
        else:
            children += sum(values)
    return own, children


class Process:
    """A child process of this benchmark, with its output in a log file, stopped by PID."""

    def __init__(self, name: str, command: Sequence[str], *, env: dict[str, str], log_dir: Path):
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        with open(self.log_path, "wb") as output:
            self.popen = subprocess.Popen(
                list(command),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                # In a session of its own, Ctrl-C reaches only this script, which stops it.
                start_new_session=True,
            )
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self) -> list[int]:
        """Stop with SIGTERM, then SIGKILL after STOP_GRACE; return descendants left behind."""
        if not self.alive():
            return []
        family = descendants(self.pid)
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            log(f"{self.name} (PID {self.pid}) still runs {STOP_GRACE:g} s after SIGTERM: SIGKILL")
            self.popen.kill()
            self.popen.wait()
        # Give children a moment to notice that their parent is gone and exit by themselves.
        deadline = time.monotonic() + LEFTOVER_GRACE
        leftovers = family
        while leftovers and time.monotonic() < deadline:
            time.sleep(0.1)
            leftovers = [pid for pid in leftovers if Path(f"/proc/{pid}").exists()]
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return leftovers


class Processes:
    """The processes of one system, stopped in reverse order of starting.

    A Splice process that does not exit with status 0 after SIGTERM, or leaves processes
    behind, adds a line to ``warnings``: a finding about the service, not a failed check.
    """

    def __init__(self, log_dir: Path, warnings: list[str]) -> None:
        self.log_dir = log_dir
        self.warnings = warnings
        self.started: list[Process] = []
        self.judged: set[str] = set()

    def start(
        self, name: str, command: Sequence[str], env: dict[str, str], *, judged: bool = False
    ) -> Process:
        """Start a process; ``judged`` ones must exit cleanly on SIGTERM (see the class)."""
        process = Process(name, command, env=env, log_dir=self.log_dir)
        self.started.append(process)
        if judged:
            self.judged.add(name)
        return process

    def stop_all(self) -> None:
        while self.started:
            process = self.started.pop()
            leftovers = process.stop()
            status = process.popen.returncode
            if process.name not in self.judged:
                continue
            if status != 0:
                self.warnings.append(f"{process.name} exited with status {status} after SIGTERM")
            if leftovers:
                self.warnings.append(
                    f"{process.name} left processes {leftovers} running after it exited; "
                    "the benchmark killed them"
                )


def wait_for_http(url: str, process: Process, timeout: float = 60.0) -> None:
    """Poll a GET URL until it returns 200; raise when the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if not process.alive():
            raise RuntimeError(f"{process.name} exited during start:\n{process.log_tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not respond within {timeout:g} s:\n{process.log_tail()}")
        time.sleep(0.1)


def read_first_line(process: Process, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = process.log_path.read_text(errors="replace").splitlines()
        if lines:
            return lines[0]
        if not process.alive():
            break
        time.sleep(0.05)
    raise RuntimeError(f"{process.name} printed nothing:\n{process.log_tail()}")


# -- the load client -------------------------------------------------------------------------


@dataclass
class Options:
    seq_n: int
    seq_runs: int
    clients: int
    conc_seconds: float
    quiet_wait: float
    harness: Path
    n8n_configs: str
    postgres: str
    workers: int
    keep: bool
    profile: bool


@dataclass
class Measured:
    """Results of load.py for one system, and the number of requests it sent."""

    name: str
    verified: bool = False
    seq: list[dict[str, Any]] = field(default_factory=list)
    conc: dict[str, Any] | None = None
    sent: int = 0
    seq_windows: list[tuple[datetime.datetime, datetime.datetime]] = field(default_factory=list)
    # Per request of the conc run: CPU ms of each process itself and of its child processes.
    cpu_ms: dict[str, tuple[float, float]] = field(default_factory=dict)


class Load:
    """Runs the harness's load.py against one URL and counts the requests it sends."""

    def __init__(self, options: Options, receiver: str, out_dir: Path, checks: Checks) -> None:
        self.options = options
        self.script = options.harness / "load.py"
        self.receiver = receiver
        self.out_dir = out_dir
        self.checks = checks

    def run(self, measured: Measured, mode: str, url: str, *extra: str) -> dict[str, Any]:
        out = self.out_dir / f"{measured.name}-{mode}-{len(list(self.out_dir.iterdir()))}.json"
        command = [
            PYTHON, str(self.script), mode, "--url", url, "--ctype", CONTENT_TYPE,
            "--xml", str(INVOICE), "--receiver", self.receiver, "--out", str(out), *extra,
        ]  # fmt: skip
        completed = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        if not out.exists():
            raise RuntimeError(
                f"load.py {mode} wrote no result (exit {completed.returncode}):\n{completed.stderr}"
            )
        result: dict[str, Any] = json.loads(out.read_text())
        if mode == "verify":
            measured.sent += 1
        else:
            measured.sent += sum(result.get("statuses", {}).values())
        return result

    def measure(self, measured: Measured, url: str, pid: int, watched: Watched) -> None:
        """Verify, warm up, run the sequential runs and the concurrent run.

        ``pid`` is the process whose tree load.py samples for memory. ``watched`` names every
        process started for this system: their CPU time per request of the concurrent run is
        reported, and the CPU left over on the machine is what "other" jobs used.
        """
        options = self.options
        verify = self.run(measured, "verify", url)
        measured.verified = bool(verify["response_ok"] and verify["receiver_ok"])
        self.checks.expect(
            measured.verified,
            f"{measured.name}: the response or the posted record is wrong: got "
            f"{verify['response']!r} (HTTP {verify['status']}), receiver saw "
            f"{verify['receiver_last']!r} in {verify['receiver_new_posts']} posts; expected "
            f"{verify['expected']!r}",
        )
        if not measured.verified:
            return
        sampled = ["--pid", str(pid), "--receiver-pid", str(watched["receiver"])]
        self.run(measured, "seq", url, "--n", str(WARM_UP))
        for run in range(1, options.seq_runs + 1):
            log(f"{measured.name}: sequential run {run}/{options.seq_runs} of {options.seq_n}")
            wait_for_quiet(watched, options.quiet_wait)
            started = utc_now()
            with CpuWindow(watched) as window:
                result = self.run(measured, "seq", url, "--n", str(options.seq_n), *sampled)
            measured.seq_windows.append((started, utc_now()))
            result["other_pct"] = window.other_percent()
            measured.seq.append(result)
            self.expect_all_ok(measured, result)
        log(f"{measured.name}: {options.clients} clients for {options.conc_seconds:g} s")
        wait_for_quiet(watched, options.quiet_wait)
        with CpuWindow(watched) as window:
            conc = self.run(
                measured, "conc", url, "--clients", str(options.clients),
                "--duration", str(options.conc_seconds), *sampled,
            )  # fmt: skip
        conc["other_pct"] = window.other_percent()
        measured.conc = conc
        requests = sum(conc.get("statuses", {}).values())
        for name, (own, children) in window.process_seconds.items():
            measured.cpu_ms[name] = (own * 1000 / requests, children * 1000 / requests)
        self.expect_all_ok(measured, conc)

    def expect_all_ok(self, measured: Measured, result: dict[str, Any]) -> None:
        self.checks.expect(
            result.get("errors", 0) == 0,
            f"{measured.name} {result['kind']}: {result.get('errors')} requests failed or got a "
            f"wrong response; statuses {result.get('statuses')}",
        )


# A watched process by its PID (with its child processes), or a group of processes by a
# function that lists their PIDs now (own CPU only), such as a database's server backends.
Watched = dict[str, int | Callable[[], list[int]]]


class CpuWindow:
    """CPU seconds used during a ``with`` block by each watched process and by everything else.

    "Everything else" is the machine's busy time minus the watched processes (with their
    child processes, reaped ones included) and minus this script with its children, such as
    load.py. load.py's own figure would count a sandboxed child that exited, or a worker
    outside the process tree it samples, as another job's CPU.
    """

    def __init__(self, watched: Watched) -> None:
        self.watched = watched
        self.process_seconds: dict[str, tuple[float, float]] = {}
        self.other_seconds = 0.0
        self.wall_seconds = 0.0

    def __enter__(self) -> CpuWindow:
        self._start = self._snapshot()
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.wall_seconds = time.perf_counter() - self._started
        machine, processes, script = self._snapshot()
        for name, now in processes.items():
            before = self._start[1][name]
            if isinstance(now, dict):  # a group: PIDs that started meanwhile count in full
                assert isinstance(before, dict)
                group = sum(seconds - before.get(pid, 0.0) for pid, seconds in now.items())
                self.process_seconds[name] = (group, 0.0)
            else:
                assert isinstance(before, tuple)
                self.process_seconds[name] = (now[0] - before[0], now[1] - before[1])
        watched = sum(own + children for own, children in self.process_seconds.values())
        self.other_seconds = (machine - self._start[0]) - watched - (script - self._start[2])

    def other_percent(self) -> int:
        """CPU that other jobs used, in % of one core (the machine has 100 % per core)."""
        # Clock ticks make a quiet machine's figure slightly negative at times.
        return max(0, round(100 * self.other_seconds / self.wall_seconds))

    def _snapshot(
        self,
    ) -> tuple[float, dict[str, tuple[float, float] | dict[int, float]], float]:
        times = os.times()
        script = times.user + times.system + times.children_user + times.children_system
        processes: dict[str, tuple[float, float] | dict[int, float]] = {}
        for name, target in self.watched.items():
            if isinstance(target, int):
                processes[name] = tree_cpu_seconds(target)
            else:
                processes[name] = {pid: tree_cpu_seconds(pid)[0] for pid in target()}
        return machine_busy_seconds(), processes, script


def machine_busy_seconds() -> float:
    """Return the CPU seconds all cores spent busy since boot, from /proc/stat."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def wait_for_quiet(watched: Watched, limit: float, threshold: float = 15.0) -> None:
    """Wait up to ``limit`` seconds until other jobs use under ``threshold`` % CPU for 1 s."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        with CpuWindow(watched) as window:
            time.sleep(1.0)
        if window.other_percent() < threshold:
            return


# -- the systems -----------------------------------------------------------------------------


class Bench:
    def __init__(self, options: Options, folder: Path, checks: Checks) -> None:
        self.options = options
        self.folder = folder
        self.checks = checks
        self.logs = folder / "logs"
        self.logs.mkdir()
        self.warnings: list[str] = []
        loads = folder / "load"
        loads.mkdir()
        self.receiver_processes = Processes(self.logs, self.warnings)
        self.receiver = self.receiver_processes.start(
            "receiver", [PYTHON, str(BENCH / "receiver.py"), "0"], env=dict(os.environ)
        )
        self.receiver_url = read_first_line(self.receiver).removeprefix("listening on ")
        self.load = Load(options, self.receiver_url, loads, checks)

    def close(self) -> None:
        self.receiver_processes.stop_all()

    def floor(self) -> Measured:
        measured = Measured("floor")
        processes = Processes(self.logs, self.warnings)
        port = free_port()
        try:
            server = processes.start(
                "floor",
                [PYTHON, str(BENCH / "floor.py"), "--port", str(port),
                 "--receiver-url", f"{self.receiver_url}/invoices"],
                env=dict(os.environ),
            )  # fmt: skip
            url = f"http://127.0.0.1:{port}/invoice"
            wait_for_http(url, server)
            watched: Watched = {"floor server": server.pid, "receiver": self.receiver.pid}
            self.load.measure(measured, url, server.pid, watched)
        finally:
            processes.stop_all()
        return measured

    def splice_env(self, data_dir: Path, port: int, **extra: str) -> dict[str, str]:
        from cryptography.fernet import Fernet

        env = {name: value for name, value in os.environ.items() if not name.startswith("SPLICE_")}
        env.update(
            SPLICE_DATA_DIR=str(data_dir),
            SPLICE_HOST="127.0.0.1",
            SPLICE_PORT=str(port),
            SPLICE_MASTER_KEY=Fernet.generate_key().decode(),
            **extra,
        )
        return env

    def deploy(self, env: dict[str, str]) -> tuple[str, str]:
        """Deploy the benchmark integration; return the instance id and the webhook URL."""
        completed = subprocess.run(
            [SPLICE, "deploy", str(BENCH / "integration.yaml"), "--customer", "benchmark",
             "--config", f"receiver_url={self.receiver_url}/invoices", "--json"],
            env=env, capture_output=True, text=True, cwd=ROOT,
        )  # fmt: skip
        if completed.returncode != 0:
            raise RuntimeError(
                f"splice deploy failed ({completed.returncode}):\n{completed.stderr}"
            )
        deployment = json.loads(completed.stdout)
        return deployment["instance_id"], deployment["webhooks"]["invoice"]

    def embedded(self) -> tuple[Measured, Records]:
        measured = Measured("embedded")
        data_dir = self.folder / "embedded"
        port = free_port()
        env = self.splice_env(data_dir, port)
        processes = Processes(self.logs, self.warnings)
        try:
            instance_id, url = self.deploy(env)
            command = [SPLICE, "serve"]
            if self.options.profile:
                command = [PYTHON, str(BENCH / "profiled.py"), str(self.folder / "serve"), "serve"]
            serve = processes.start("splice-serve", command, env, judged=True)
            wait_for_http(f"http://127.0.0.1:{port}/healthz", serve)
            watched: Watched = {"splice serve": serve.pid, "receiver": self.receiver.pid}
            self.load.measure(measured, url, serve.pid, watched)
        finally:
            processes.stop_all()
        database_url = f"sqlite:///{data_dir / 'splice.db'}"
        return measured, read_records(database_url, instance_id)

    def scaled(self) -> tuple[Measured, Records]:
        measured = Measured("scaled")
        data_dir = self.folder / "scaled"
        port = free_port()
        database = f"splice_bench_{secrets.token_hex(4)}"
        database_url = f"{self.options.postgres.rstrip('/')}/{database}"
        processes = Processes(self.logs, self.warnings)
        create_database(self.options.postgres, database)
        backends = PostgresBackends(self.options.postgres, database)
        try:
            redis_port = free_port()
            redis = start_redis(processes, self.folder / "redis", redis_port)
            env = self.splice_env(
                data_dir,
                port,
                SPLICE_DATABASE_URL=database_url,
                SPLICE_QUEUE_URL=f"redis://127.0.0.1:{redis_port}/0",
            )
            # Deploying first also migrates the new database before the roles start.
            instance_id, url = self.deploy(env)
            watched: Watched = {
                "redis-server": redis.pid,
                "receiver": self.receiver.pid,
                "PostgreSQL backends": backends.pids,
            }
            for index in range(self.options.workers):
                worker = processes.start(
                    f"splice-worker-{index + 1}", [SPLICE, "worker"], env, judged=True
                )
                watched[f"splice worker {index + 1}"] = worker.pid
            scheduler = processes.start("splice-scheduler", [SPLICE, "scheduler"], env, judged=True)
            api = processes.start("splice-api", [SPLICE, "api"], env, judged=True)
            watched.update({"splice api": api.pid, "splice scheduler": scheduler.pid})
            wait_for_http(f"http://127.0.0.1:{port}/healthz", api)
            self.load.measure(measured, url, api.pid, watched)
        finally:
            processes.stop_all()
            backends.close()
        try:
            records = read_records(database_url, instance_id)
        finally:
            if not self.options.keep:
                drop_database(self.options.postgres, database)
        return measured, records

    def n8n(self) -> list[Measured]:
        """Run the harness's run.sh and read its results."""
        options = self.options
        results = self.folder / "n8n"
        env = dict(os.environ)
        env.update(
            CONFIGS=options.n8n_configs,
            SEQ_N=str(options.seq_n),
            SEQ_RUNS=str(options.seq_runs),
            CONC_CLIENTS=str(options.clients),
            CONC_SECONDS=f"{options.conc_seconds:g}",
            # No large-body measurements: a blank list, because an empty value means "5 50".
            PAYLOAD_MIB=" ",
            QUIET_WAIT=f"{options.quiet_wait:g}",
            RESULTS=str(results),
            PYTHON=PYTHON,
        )
        log(f"n8n: bash {options.harness / 'run.sh'} (installs n8n first when missing)")
        with open(self.logs / "n8n-run.log", "wb") as output:
            completed = subprocess.run(
                ["bash", str(options.harness / "run.sh")],
                env=env, stdout=output, stderr=subprocess.STDOUT, cwd=options.harness,
            )  # fmt: skip
        self.checks.expect(
            completed.returncode == 0,
            f"the n8n harness exited with {completed.returncode}; see {self.logs / 'n8n-run.log'}",
        )
        measured = []
        for config in options.n8n_configs.split():
            for path, label in (
                ("invoice", "6 nodes, text/plain"),
                ("invoice-xml", "5 nodes, application/xml"),
            ):
                measured.append(
                    read_n8n(results, config, path, f"n8n {config}, {label}", self.checks)
                )
        return measured


def read_n8n(results: Path, config: str, path: str, name: str, checks: Checks) -> Measured:
    measured = Measured(name)
    verify_file = results / f"{config}__{path}__verify.json"
    if verify_file.exists():
        verify = json.loads(verify_file.read_text())
        measured.verified = bool(verify["response_ok"] and verify["receiver_ok"])
    checks.expect(measured.verified, f"{name}: the harness's verification failed or did not run")
    run = 1
    while (results / f"{config}__{path}__seq{run}.json").exists():
        measured.seq.append(json.loads((results / f"{config}__{path}__seq{run}.json").read_text()))
        run += 1
    conc_file = results / f"{config}__{path}__conc.json"
    if conc_file.exists():
        measured.conc = json.loads(conc_file.read_text())
    return measured


# -- backends of the scaled-out mode ---------------------------------------------------------


def create_database(server_url: str, name: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(f"{server_url.rstrip('/')}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()


class PostgresBackends:
    """Lists the PIDs of the PostgreSQL server processes connected to one database."""

    def __init__(self, server_url: str, database: str) -> None:
        from sqlalchemy import create_engine

        # Connected to the postgres database, so that this connection is not listed.
        self.engine = create_engine(f"{server_url.rstrip('/')}/postgres", pool_size=1)
        self.database = database

    def pids(self) -> list[int]:
        from sqlalchemy import text

        query = text("SELECT pid FROM pg_stat_activity WHERE datname = :name")
        with self.engine.connect() as connection:
            return [int(row[0]) for row in connection.execute(query, {"name": self.database})]

    def close(self) -> None:
        self.engine.dispose()


def drop_database(server_url: str, name: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(f"{server_url.rstrip('/')}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()


def start_redis(processes: Processes, directory: Path, port: int) -> Process:
    """Start a redis-server of this benchmark's own, with the append-only file on (everysec)."""
    import redis

    directory.mkdir()
    server = processes.start(
        "redis-server",
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--dir", str(directory),
         "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
         "--daemonize", "no"],
        env=dict(os.environ),
    )  # fmt: skip
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
    deadline = time.monotonic() + 15
    try:
        while True:
            try:
                client.ping()
                return server
            except redis.ConnectionError:
                if not server.alive() or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"redis-server did not start:\n{server.log_tail()}"
                    ) from None
                time.sleep(0.05)
    finally:
        client.close()


# -- records ---------------------------------------------------------------------------------


@dataclass
class Records:
    """The executions of one instance and their step runs, read after the run."""

    statuses: Counter[str]
    step_statuses: Counter[str]
    steps_per_execution: Counter[int]
    stages: list[dict[str, float]]  # seconds per stage, one mapping per execution
    created: list[datetime.datetime]


def read_records(database_url: str, instance_id: str) -> Records:
    """Read every execution of the instance, its status and the timings of its step runs."""
    from sqlalchemy import create_engine, select

    from splice.store.tables import executions, step_runs

    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                select(
                    executions.c.id,
                    executions.c.status,
                    executions.c.created_at,
                    executions.c.started_at,
                    executions.c.ended_at,
                ).where(executions.c.instance_id == instance_id)
            ).all()
            steps = connection.execute(
                select(
                    step_runs.c.execution_id,
                    step_runs.c.step_id,
                    step_runs.c.status,
                    step_runs.c.started_at,
                    step_runs.c.ended_at,
                )
                .where(step_runs.c.execution_id.in_(select(executions.c.id).where(
                    executions.c.instance_id == instance_id)))
                .order_by(step_runs.c.execution_id, step_runs.c.sequence)
            ).all()  # fmt: skip
    finally:
        engine.dispose()
    by_execution: dict[str, list[Any]] = defaultdict(list)
    for step in steps:
        by_execution[step.execution_id].append(step)
    stages = [stage_seconds(row, by_execution[row.id]) for row in rows]
    return Records(
        statuses=Counter(row.status for row in rows),
        step_statuses=Counter(step.status for step in steps),
        steps_per_execution=Counter(len(by_execution[row.id]) for row in rows),
        stages=[stage for stage in stages if stage],
        created=[row.created_at for row in rows],
    )


def stage_seconds(execution: Any, steps: list[Any]) -> dict[str, float]:
    """Split one execution's recorded time into stages, from its timestamps."""
    if execution.started_at is None or execution.ended_at is None or not steps:
        return {}

    def seconds(start: datetime.datetime, end: datetime.datetime) -> float:
        return (end - start).total_seconds()

    stages = {
        "created": execution.created_at.timestamp(),  # for selecting by time, not a stage
        "queued: accepted to worker start": seconds(execution.created_at, execution.started_at),
        "worker start to first step": seconds(execution.started_at, steps[0].started_at),
    }
    for step in steps:
        stages[f"step {step.step_id}"] = seconds(step.started_at, step.ended_at)
    stages["between steps"] = sum(
        seconds(before.ended_at, after.started_at) for before, after in itertools.pairwise(steps)
    )
    stages["last step to execution end"] = seconds(steps[-1].ended_at, execution.ended_at)
    stages["accepted to execution end"] = seconds(execution.created_at, execution.ended_at)
    return stages


def check_records(name: str, measured: Measured, records: Records, checks: Checks) -> None:
    executions = sum(records.statuses.values())
    print(
        f"- {name}: {measured.sent} requests sent, {executions} executions recorded "
        f"({dict(records.statuses)}), step runs {dict(records.step_statuses)}"
    )
    checks.expect(
        executions == measured.sent,
        f"{name}: {executions} executions recorded for {measured.sent} requests sent",
    )
    checks.expect(
        records.statuses.get("succeeded", 0) == executions,
        f"{name}: not every execution succeeded: {dict(records.statuses)}",
    )
    checks.expect(
        records.step_statuses.get("succeeded", 0) == len(STEPS) * executions,
        f"{name}: expected {len(STEPS) * executions} succeeded step runs, "
        f"found {dict(records.step_statuses)}",
    )
    checks.expect(
        set(records.steps_per_execution) == {len(STEPS)},
        f"{name}: step runs per execution {dict(records.steps_per_execution)}, "
        f"expected {len(STEPS)} each",
    )


# -- reporting -------------------------------------------------------------------------------


def runs(values: Sequence[float | None], digits: int = 1) -> str:
    return " / ".join("-" if value is None else f"{value:.{digits}f}" for value in values)


def middle(values: Sequence[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return median(present) if present else None


def other_percent(result: dict[str, Any]) -> float | None:
    """Return the CPU % other jobs used: this script's figure, else the one of load.py."""
    value = result.get("other_pct", result.get("cpu_other_pct"))
    return None if value is None else float(value)


def ratio(value: float | None, baseline: float | None) -> str:
    if value is None or not baseline:
        return "-"
    return f"{value / baseline:.2f}×"


def yes_no(condition: bool | None) -> str:
    if condition is None:
        return "-"
    return "yes" if condition else "no"


def report_sequential(
    systems: list[Measured], floor: Measured | None, n8n: Measured | None
) -> None:
    def p50(measured: Measured | None) -> float | None:
        return middle([run.get("p50_ms") for run in measured.seq]) if measured else None

    rows = []
    for measured in systems:
        p50s = [run.get("p50_ms") for run in measured.seq]
        p99s = [run.get("p99_ms") for run in measured.seq]
        if not p50s:
            rows.append([measured.name, "-", "-", "-", "-", "-", "-", "-"])
            continue
        worst_p50, worst_p99 = middle(p50s), middle(p99s)
        rows.append([
            measured.name,
            runs(p50s),
            runs(p99s),
            ratio(worst_p50, p50(floor)),
            ratio(worst_p50, p50(n8n)),
            runs([other_percent(run) for run in measured.seq], 0),
            yes_no(worst_p50 < AIM_P50_MS if worst_p50 is not None else None),
            yes_no(worst_p99 < AIM_P99_MS if worst_p99 is not None else None),
        ])  # fmt: skip
    print_table(
        ["system", "p50 ms", "p99 ms", "p50 ÷ floor", "p50 ÷ n8n", "other CPU %",
         f"p50 < {AIM_P50_MS:g} ms", f"p99 < {AIM_P99_MS:g} ms"],
        rows,
    )  # fmt: skip


def report_concurrent(
    systems: list[Measured], floor: Measured | None, n8n: Measured | None
) -> None:
    def rate(measured: Measured | None) -> float | None:
        return measured.conc.get("rps") if measured and measured.conc else None

    rows = []
    for measured in systems:
        conc = measured.conc
        if not conc:
            rows.append([measured.name, "-", "-", "-", "-", "-", "-", "-"])
            continue
        rows.append([
            measured.name,
            f"{conc['rps']:.1f}",
            f"{conc.get('p50_ms', 0):.1f}",
            f"{conc.get('p99_ms', 0):.1f}",
            ratio(conc["rps"], rate(floor)),
            ratio(conc["rps"], rate(n8n)),
            runs([other_percent(conc)], 0),
            yes_no(conc["rps"] >= AIM_RATE),
        ])  # fmt: skip
    print_table(
        ["system", "executions/s", "p50 ms", "p99 ms", "rate ÷ floor", "rate ÷ n8n",
         "other CPU %", f">= {AIM_RATE:g}/s"],
        rows,
    )  # fmt: skip


def report_cpu(systems: list[Measured]) -> None:
    rows = []
    for measured in systems:
        for process, (own, children) in measured.cpu_ms.items():
            rows.append([measured.name, process, f"{own:.2f}", f"{children:.2f}"])
    if rows:
        print_table(["system", "process", "CPU ms per request", "its child processes"], rows)


def report_stages(name: str, measured: Measured, records: Records) -> None:
    """Print median seconds per stage of the executions of the sequential runs."""
    selected = [
        stage
        for stage in records.stages
        if any(
            start.timestamp() <= stage["created"] <= end.timestamp()
            for start, end in measured.seq_windows
        )
    ]
    if not selected:
        return
    names = [key for key in selected[0] if key != "created"]
    rows = [[key, f"{median([stage[key] for stage in selected]) * 1000:.2f}"] for key in names]
    latency = middle([run.get("p50_ms") for run in measured.seq])
    total = median([stage["accepted to execution end"] for stage in selected]) * 1000
    if latency is not None:
        rows.append(["client latency p50 minus accepted-to-end (HTTP, intake, response)",
                     f"{latency - total:.2f}"])  # fmt: skip
    print(
        f"\n{name}: median ms per stage over the {len(selected)} executions of the sequential runs"
    )
    print_table(["stage", "median ms"], rows)


def report_profiles(prefix: Path) -> None:
    """Print the heaviest functions of the profiled splice serve, per thread group."""
    import io
    import pstats

    titles = {
        "main": "event loop thread: HTTP requests and responses",
        "threadpool": "API thread pool: accepting webhooks (records and queue entries)",
        "execution": "execution threads: driving the sandboxed children and recording",
        "claim": "claim thread: taking entries from the queue",
    }
    for group, title in titles.items():
        path = Path(f"{prefix}-{group}.prof")
        if not path.exists():
            print(f"\nno profile of the {group} threads was written")
            continue
        text = io.StringIO()
        stats = pstats.Stats(str(path), stream=text)
        stats.sort_stats("tottime").print_stats(15)
        stats.sort_stats("cumulative").print_stats(30)
        print(f"\n## Profile of splice serve, {title}\n```")
        print(text.getvalue().strip())
        print("```")


# -- main ------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 50 sequential requests, one run, 5 s of concurrent load",
    )
    parser.add_argument(
        "--only",
        default=",".join(SYSTEMS),
        help=f"comma-separated systems to run, of {', '.join(SYSTEMS)} [all]",
    )
    parser.add_argument("--seq-n", type=int, default=300, help="requests per sequential run [300]")
    parser.add_argument("--seq-runs", type=int, default=2, help="sequential runs per system [2]")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients [8]")
    parser.add_argument(
        "--conc-seconds", type=float, default=20.0, help="seconds of the concurrent run [20]"
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=15.0,
        help="seconds load.py waits, before each measurement, for other jobs on "
        "the machine to drop below 15%% CPU [15]",
    )
    parser.add_argument(
        "--harness",
        type=Path,
        default=DEFAULT_HARNESS,
        help=f"the n8n peer harness folder (load.py, run.sh) [{DEFAULT_HARNESS}]",
    )
    parser.add_argument(
        "--n8n-configs",
        default="runners-off",
        help="the harness's CONFIGS, space-separated [runners-off]",
    )
    parser.add_argument(
        "--postgres",
        default="postgresql+psycopg://postgres@127.0.0.1:5432",
        help="PostgreSQL server URL without a database; the benchmark creates "
        "and drops a database of its own there",
    )
    parser.add_argument("--workers", type=int, default=1, help="splice worker processes [1]")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="run splice serve under cProfile (every thread) and print where its time goes; "
        "its figures are then slower than without",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary folder and the PostgreSQL database"
    )
    return parser


def parse_options() -> tuple[Options, list[str]]:
    parser = build_parser()
    args = parser.parse_args()
    if args.quick:
        args.seq_n, args.seq_runs, args.conc_seconds, args.quiet_wait = 50, 1, 5.0, 0.0
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(only) - set(SYSTEMS))
    if unknown:
        parser.error(f"unknown systems {unknown} in --only; choose from {', '.join(SYSTEMS)}")
    if not (args.harness / "load.py").exists():
        parser.error(f"{args.harness / 'load.py'} not found; point --harness at the n8n harness")
    options = Options(
        seq_n=args.seq_n, seq_runs=args.seq_runs, clients=args.clients,
        conc_seconds=args.conc_seconds, quiet_wait=args.quiet_wait, harness=args.harness,
        n8n_configs=args.n8n_configs, postgres=args.postgres, workers=args.workers,
        keep=args.keep, profile=args.profile,
    )  # fmt: skip
    return options, only


def main() -> int:
    options, only = parse_options()
    header("Synchronous webhook: the n8n reference invoice job")
    print(
        f"invoice: {INVOICE.relative_to(ROOT)} ({INVOICE.stat().st_size} bytes), "
        f"Content-Type {CONTENT_TYPE}; sequential: {options.seq_runs} × {options.seq_n} "
        f"requests on one keep-alive connection after {WARM_UP} warm-up requests; concurrent: "
        f"{options.clients} clients for {options.conc_seconds:g} s; load client: "
        f"{options.harness / 'load.py'}"
    )
    checks = Checks()
    folder = Path(tempfile.mkdtemp(prefix="splice-bench-webhook-"))
    measured: dict[str, Measured] = {}
    records: dict[str, Records] = {}
    bench = Bench(options, folder, checks)
    try:
        if "floor" in only:
            log("floor: plain Python on uvicorn")
            measured["floor"] = bench.floor()
        if "embedded" in only:
            log("embedded: splice serve")
            measured["embedded"], records["embedded"] = bench.embedded()
        if "scaled" in only:
            log(f"scaled: splice api + {options.workers} worker(s) + scheduler, PostgreSQL, Redis")
            measured["scaled"], records["scaled"] = bench.scaled()
    finally:
        bench.close()
    n8n_rows: list[Measured] = bench.n8n() if "n8n" in only else []
    rows = [measured[name] for name in ("floor", "embedded", "scaled") if name in measured]
    rows += n8n_rows
    labels = {"floor": "plain Python floor (uvicorn, in process)",
              "embedded": "splice serve (embedded)"
              + (" under cProfile" if options.profile else ""),
              "scaled": f"splice api + {options.workers} worker (PostgreSQL, Redis)"}  # fmt: skip
    for row in rows:
        row.name = labels.get(row.name, row.name)
    reference = n8n_rows[0] if n8n_rows else None

    print(f"\n## Sequential latency, one keep-alive client ({options.seq_runs} runs shown a / b)")
    report_sequential(rows, measured.get("floor"), reference)
    print(f"\n## Throughput, {options.clients} keep-alive clients for {options.conc_seconds:g} s")
    report_concurrent(rows, measured.get("floor"), reference)
    print("\n## CPU per request during the concurrent run")
    report_cpu(rows)
    print("\n## Records")
    for name, found in records.items():
        check_records(measured[name].name, measured[name], found, checks)
    for name, found in records.items():
        report_stages(measured[name].name, measured[name], found)
    if options.profile:
        report_profiles(folder / "serve")
    for warning in bench.warnings:
        print(f"- WARNING: {warning}")
    print(f"\nlogs and raw results: {folder}" if options.keep else "")
    if not options.keep:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
    return checks.exit_code()


if __name__ == "__main__":
    sys.exit(main())
