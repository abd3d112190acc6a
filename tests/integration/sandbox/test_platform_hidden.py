"""Customer code that looks for or writes the platform's database, data, environment, source."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from splice.sandbox.forkserver import ForkServerSandbox

from .conftest import REPOSITORY_ROOT, CodeRunner, start_sandbox

MARKER = "SPLICE_TEST_MARKER"
MARKER_VALUE = "marker-7f3a9c"

CODE = """\
import errno
import os


def outcome(action):
    try:
        return action()
    except OSError as error:
        return errno.errorcode.get(error.errno, str(error.errno))


def look(context, *, database, data_dir, blob_dir, parent_pid):
    def read_database():
        with open(database, "rb") as file:
            return file.read(16).decode("latin-1")

    def environ_of(pid):
        with open(f"/proc/{pid}/environ", "rb") as file:
            return file.read().decode("latin-1")

    return {
        "environment": dict(os.environ),
        "database": outcome(read_database),
        "data_dir": outcome(lambda: sorted(os.listdir(data_dir))),
        "blob_dir": outcome(lambda: sorted(os.listdir(blob_dir))),
        "own_environ": outcome(lambda: environ_of(1)),
        "parent_environ": outcome(lambda: environ_of(parent_pid)),
        "processes": sorted(name for name in os.listdir("/proc") if name.isdigit()),
    }


def write(context, *, paths):
    def create(path):
        with open(path, "w") as file:
            file.write("written by customer code")
        return "written"

    return {path: outcome(lambda: create(path)) for path in paths}
"""


@pytest.fixture(scope="module")
def marked_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ForkServerSandbox]:
    """A template started while the worker's environment contains a marker variable."""
    os.environ[MARKER] = MARKER_VALUE
    try:
        sandbox = start_sandbox(tmp_path_factory.mktemp("marked"))
        yield sandbox
        sandbox.close()
    finally:
        del os.environ[MARKER]


@pytest.fixture
def looked(runner_for, marked_sandbox, tmp_path) -> tuple[CodeRunner, dict]:
    runner = runner_for(marked_sandbox, CODE)
    settings = runner.local.settings
    database = settings.database_url.removeprefix("sqlite:///")
    settings.blob_dir.mkdir(parents=True, exist_ok=True)
    (settings.blob_dir / "customer-a.bin").write_bytes(b"another customer's data")
    outcome = runner.run(
        "look",
        database=database,
        data_dir=str(settings.data_dir),
        blob_dir=str(settings.blob_dir),
        parent_pid=os.getpid(),
    )
    assert "succeeded" == outcome.status
    return runner, outcome.result


def test_marker_not_in_environment(looked):
    """A variable of the worker's environment is not in the child's environment."""
    _, found = looked
    assert MARKER not in found["environment"]


def test_environment_minimal(looked):
    """The child's environment holds only HOME, TMPDIR and PATH."""
    _, found = looked
    assert ["HOME", "PATH", "TMPDIR"] == sorted(found["environment"])


def test_marker_not_in_proc(looked):
    """The child's /proc/1/environ (itself) does not hold the worker's marker."""
    _, found = looked
    assert MARKER_VALUE not in found["own_environ"]


def test_worker_not_in_proc(looked):
    """The worker's /proc entry is not visible: the child has only its own pid namespace."""
    _, found = looked
    assert "ENOENT" == found["parent_environ"]
    assert ["1"] == found["processes"]


def test_database_invisible(looked):
    """The platform's SQLite file does not exist inside the sandbox."""
    _, found = looked
    assert "ENOENT" == found["database"]


def test_data_dir_invisible(looked):
    """The data directory shows only the path down to the scratch folders, nothing stored."""
    _, found = looked
    assert ["scratch"] == found["data_dir"]


def test_blob_dir_invisible(looked):
    """Stored blobs, here another customer's file, are not visible."""
    _, found = looked
    assert "ENOENT" == found["blob_dir"]


def test_writes_outside_scratch(runner_for, sandbox, tmp_path):
    """Writes to /usr, the data directory and the repository fail and change nothing on the host."""
    runner = runner_for(sandbox, CODE)
    settings = runner.local.settings
    targets = {
        "usr": "/usr/splice-test-written.txt",
        "data_dir": str(settings.data_dir / "written.txt"),
        "database": settings.database_url.removeprefix("sqlite:///"),
        "repository": str(REPOSITORY_ROOT / "splice-test-written.txt"),
        "package": str(REPOSITORY_ROOT / "splice" / "written.py"),
    }
    outcome = runner.run("write", paths=list(targets.values()))
    assert "succeeded" == outcome.status
    for name, path in targets.items():
        assert outcome.result[path] in ("EACCES", "EROFS", "ENOENT"), name
    for name in ("usr", "data_dir", "repository", "package"):
        assert Path(targets[name]).exists() is False, name
    assert b"written by customer code" not in Path(targets["database"]).read_bytes()
