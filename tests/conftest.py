"""Fixtures shared by every test: settings in a temporary data folder, definitions on disk,
and a LocalRun that reuses one sandbox template for the whole session."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from splice.local import LocalRun
from splice.sandbox.forkserver import ForkServerSandbox
from splice.settings import Settings
from splice.store import RecordStore

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_DIR = REPOSITORY_ROOT / "examples" / "invoice-sync"

WriteIntegration = Callable[..., Path]
OpenLocal = Callable[..., LocalRun]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """The SPLICE_DATA_DIR of one test: records database, blobs and scratch space."""
    return tmp_path / "data"


@pytest.fixture
def settings(data_dir: Path) -> Settings:
    """Settings with every path under the test's own data folder."""
    return Settings.from_env({"SPLICE_DATA_DIR": str(data_dir)})


@pytest.fixture
def write_integration(tmp_path: Path) -> WriteIntegration:
    """Write a definition and its code files into a folder of tmp_path; return the definition.

    Texts are dedented, so tests can indent them with the code around them.
    """

    def write(
        definition: str, files: dict[str, str] | None = None, *, name: str = "integration.yaml"
    ) -> Path:
        folder = tmp_path / "integration"
        folder.mkdir(exist_ok=True)
        for file_name, text in (files or {}).items():
            (folder / file_name).write_text(textwrap.dedent(text), encoding="utf-8")
        path = folder / name
        path.write_text(textwrap.dedent(definition), encoding="utf-8")
        return path

    return write


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ForkServerSandbox]:
    """One sandbox template for the session; every execution still gets a fresh fork."""
    data_dir = tmp_path_factory.mktemp("sandbox")
    shared = ForkServerSandbox(Settings.from_env({"SPLICE_DATA_DIR": str(data_dir)}))
    yield shared
    shared.close()


@pytest.fixture
def open_local(data_dir: Path, sandbox: ForkServerSandbox) -> Iterator[OpenLocal]:
    """Open a LocalRun on the test's data folder, with extra SPLICE_* settings if given."""
    stores: list[RecordStore] = []

    def open_run(**environment: str) -> LocalRun:
        settings = Settings.from_env({"SPLICE_DATA_DIR": str(data_dir), **environment})
        store = RecordStore.open(settings.database_url)
        stores.append(store)
        return LocalRun(settings, sandbox, store)

    yield open_run
    for store in stores:
        store.close()


@pytest.fixture
def local(open_local: OpenLocal) -> LocalRun:
    """A LocalRun with default settings on the test's data folder."""
    return open_local()
