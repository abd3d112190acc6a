"""A worker's view of the engine: records created first, then Supervisor.run_execution.

Steps of the definitions here append their names to ``marks.txt`` in a folder granted with
write access, so a test can tell which steps ran.
"""

from __future__ import annotations

import datetime
import os
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from splice.blobs import LocalBlobStore
from splice.config import ConfigValues, resolve_config
from splice.definition import Integration, load_integration
from splice.engine.supervisor import Supervisor, new_execution_id
from splice.engine.values import encode
from splice.local import LocalRun
from splice.sandbox.forkserver import ForkServerSandbox
from splice.settings import Settings
from splice.store import RecordStore
from splice.store.records import now

STEPS_CODE = """\
import os
import time


def mark(context, *, name, value=None, sleep=0):
    with open(os.path.join(context.config["marks"], "marks.txt"), "a") as file:
        file.write(name + "\\n")
    if sleep:
        time.sleep(sleep)
        with open(os.path.join(context.config["marks"], "marks.txt"), "a") as file:
            file.write(name + " slept\\n")
    return value


def double(context, *, name, value):
    mark(context, name=name)
    return value * 2


def size(context, *, name, value):
    mark(context, name=name)
    return len(value)


def describe(context, *, trigger):
    import hashlib

    raw = trigger["raw"]
    body = trigger["body"]
    return {
        "type": trigger["type"],
        "method": trigger["method"],
        "headers": trigger["headers"],
        "query": trigger["query"],
        "body": body if len(raw) < 4096 else None,
        "body_length": len(body) if isinstance(body, (dict, list, str)) else None,
        "body_kind": trigger["body_kind"],
        "body_problem": trigger["body_problem"],
        "raw_type": type(raw).__name__,
        "raw_size": len(raw),
        "raw_sha256": hashlib.sha256(raw).hexdigest(),
        "scratch_files": sorted(os.listdir(".")),
    }
"""

CONFIG = """\
config:
  marks: {type: string, grant: write}
"""


def code_step(step_id: str, function: str, args: str, indent: int = 6) -> str:
    """Return a code.run step of steps.py in YAML, indented for a flow's steps list."""
    pad = " " * indent
    return (
        f"{pad}- id: {step_id}\n{pad}  action: code.run\n"
        f"{pad}  inputs: {{file: steps.py, function: {function}, args: {args}}}\n"
    )


def definition(steps: str, *, key: str = "resume", trigger: str = "{type: manual}") -> str:
    """Return a definition with the marks folder and one flow ``main`` with ``steps``."""
    return (
        f"key: {key}\nname: {key}\n{CONFIG}flows:\n  main:\n"
        f"    trigger: {trigger}\n    steps:\n{steps}"
    )


@dataclass
class Worker:
    """A supervisor on the session's sandbox with its store and blobs, as a worker has them."""

    supervisor: Supervisor
    store: RecordStore
    blobs: LocalBlobStore
    settings: Settings
    folder: Path  # contains the definition and steps.py
    marks: Path  # the folder steps write marks.txt into
    _integrations: dict[str, Integration] = field(default_factory=dict)

    def load(self, text: str, name: str = "integration.yaml") -> Integration:
        """Write the definition (with steps.py beside it) and load it."""
        (self.folder / "steps.py").write_text(STEPS_CODE, encoding="utf-8")
        path = self.folder / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return load_integration(path)

    def config(self, integration: Integration, *assignments: str) -> ConfigValues:
        return resolve_config(
            integration, assignments=[f"marks={self.marks}", *assignments], environ={}
        )

    def create(self, integration: Integration, *, status: str = "queued") -> str:
        """Create an execution record as the service does before queueing it."""
        execution_id = new_execution_id()
        self.store.create_execution(
            {
                "id": execution_id,
                "integration_key": integration.key,
                "integration_version": integration.version,
                "flow": "main",
                "trigger_type": "manual",
                "status": status,
                "created_at": now(),
                "definition_path": integration.source_path,
            }
        )
        return execution_id

    def run(self, integration: Integration, execution_id: str, **options: Any) -> Any:
        options.setdefault("trigger", None if "request" in options else {"type": "manual"})
        return self.supervisor.run_execution(
            execution_id,
            integration,
            flow="main",
            config=self.config(integration),
            **options,
        )

    def marked(self) -> list[str]:
        """The names the steps wrote to marks.txt, in order."""
        path = self.marks / "marks.txt"
        return path.read_text().splitlines() if path.exists() else []


def step_run_row(
    execution_id: str,
    sequence: int,
    path: str,
    *,
    status: str = "succeeded",
    kind: str = "action",
    attempt: int = 1,
    value: Any = None,
    output_blob: str | None = None,
    encoding: str = "msgpack",
    size: int | None = None,
) -> dict[str, Any]:
    """Return a step_runs row as a dead worker would have committed it."""
    moment = now()
    row: dict[str, Any] = {
        "execution_id": execution_id,
        "sequence": sequence,
        "path": path,
        "step_id": path.rsplit(".", 1)[-1].split("[", 1)[0],
        "kind": kind,
        "action": "code.run" if kind == "action" else None,
        "status": status,
        "attempt": attempt,
        "started_at": moment - datetime.timedelta(seconds=1),
        "ended_at": moment,
        "input_size": 0,
        "continued": False,
    }
    if status == "succeeded" and output_blob is None:
        data = encode(value)
        row.update(output=data, output_encoding="msgpack", output_size=len(data))
    elif output_blob is not None:
        row.update(output_blob=output_blob, output_encoding=encoding, output_size=size)
    else:
        row.update(error_type="ConnectionError", error_message="attempt failed")
    return row


def log_row(execution_id: str, sequence: int, message: str) -> dict[str, Any]:
    return {
        "execution_id": execution_id,
        "sequence": sequence,
        "step_path": None,
        "level": "info",
        "time": now(),
        "message": message,
    }


@pytest.fixture
def make_worker(
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    data_dir: Path,
    sandbox: ForkServerSandbox,
) -> Iterator[Callable[..., Worker]]:
    """Open a Worker on the session's sandbox; ``environment`` contains SPLICE_* settings."""
    stores: list[RecordStore] = []

    def make(**environment: str) -> Worker:
        settings = Settings.from_env({"SPLICE_DATA_DIR": str(data_dir), **environment})
        store = RecordStore.open(settings.database_url)
        stores.append(store)
        local = LocalRun(settings, sandbox, store)
        folder = tmp_path / "integration"
        # Outside tmp_path, which contains the SQLite file of ``database_url`` and so is
        # one of Splice's own folders that no grant may expose.
        marks = tmp_path_factory.mktemp("marks")
        marks.chmod(0o777)  # the sandbox user writes here
        folder.mkdir(exist_ok=True)
        blobs = local.supervisor.blobs
        assert isinstance(blobs, LocalBlobStore)
        return Worker(local.supervisor, store, blobs, settings, folder, marks)

    yield make
    for store in stores:
        store.close()


@pytest.fixture
def worker(make_worker: Callable[..., Worker]) -> Worker:
    """A Worker on SQLite under the test's data folder."""
    return make_worker()


@pytest.fixture
def any_database_worker(make_worker: Callable[..., Worker], database_url: str) -> Worker:
    """A Worker whose records are on SQLite, then on PostgreSQL."""
    return make_worker(SPLICE_DATABASE_URL=database_url)


def process_gone(pid: int) -> bool:
    """Tell whether a process has exited (a zombie that no one reaped counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            state = file.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def child_pids(pid: int) -> list[int]:
    """The direct children of a process, from /proc (Linux 3.5 and later)."""
    found: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as file:
            found += [int(number) for number in file.read().split()]
    return found


def wait_for(condition: Callable[[], bool], timeout: float = 30.0, interval: float = 0.02) -> bool:
    """Poll ``condition`` until it is true or ``timeout`` seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True
