"""The embedded default in one process (record store, blob folder, sandbox) for ``splice run``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from rich.console import Console

from splice.blobs.local import LocalBlobStore
from splice.config import resolve_config
from splice.definition import Integration, load_integration
from splice.engine.supervisor import ExecutionOutcome, Supervisor
from splice.sandbox.forkserver import ForkServerSandbox
from splice.settings import Settings
from splice.store import RecordStore


@contextlib.contextmanager
def open_store(settings: Settings | None = None) -> Iterator[RecordStore]:
    settings = settings or Settings.from_env()
    store = RecordStore.open(settings.database_url)
    try:
        yield store
    finally:
        store.close()


class LocalRun:
    """Everything ``splice run`` needs, opened once and closed together."""

    def __init__(self, settings: Settings, sandbox: ForkServerSandbox, store: RecordStore) -> None:
        self.settings = settings
        self.sandbox = sandbox
        self.store = store
        self._loaded: dict[Path, tuple[tuple[Any, ...], Integration]] = {}
        self.supervisor = Supervisor(
            store=store,
            blobs=LocalBlobStore(settings.blob_dir),
            sandbox=sandbox,
            settings=settings,
        )

    @classmethod
    def open(
        cls, settings: Settings | None = None, *, sandbox: ForkServerSandbox | None = None
    ) -> LocalRun:
        settings = settings or Settings.from_env()
        sandbox = sandbox or ForkServerSandbox(settings)  # imports in its own process meanwhile
        try:
            store = RecordStore.open(settings.database_url)
        except BaseException:
            sandbox.close()
            raise
        return cls(settings, sandbox, store)

    def __enter__(self) -> LocalRun:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.sandbox.close()
        self.store.close()

    def _load(self, file: Path) -> Integration:
        """Load a definition, reusing the last load while it and its code files are unchanged."""
        path = Path(file).resolve()
        cached = self._loaded.get(path)
        if cached is not None and cached[0] == _stamp(path, cached[1]):
            return cached[1]
        integration = load_integration(file)
        self._loaded[path] = (_stamp(path, integration), integration)
        return integration

    def run(
        self,
        file: Path,
        *,
        flow: str | None = None,
        assignments: Sequence[str] = (),
        config_file: Path | None = None,
        trigger: dict[str, Any] | None = None,
        environ: dict[str, str] | None = None,
        quiet: bool = True,
        console: Console | None = None,
    ) -> ExecutionOutcome:
        """Load, configure and run one flow of the integration in ``file``."""
        import os

        from splice.errors import UsageError

        integration = self._load(file)
        try:
            flow_name, _ = integration.flow(flow)
        except KeyError as error:
            raise UsageError(str(error.args[0]), option="--flow", value=flow) from None
        config = resolve_config(
            integration,
            assignments=assignments,
            config_file=config_file,
            environ=os.environ if environ is None else environ,
        )
        if console is None or quiet:
            return self.supervisor.execute(
                integration,
                flow=flow_name,
                config=config,
                trigger=trigger or {"type": "manual"},
                working_dir=os.getcwd(),
            )
        from splice.cli.render import LiveView, print_run_summary

        with LiveView(console, enabled=console.is_terminal) as view:
            outcome = self.supervisor.execute(
                integration,
                flow=flow_name,
                config=config,
                trigger=trigger or {"type": "manual"},
                on_event=view.on_event,
                working_dir=os.getcwd(),
            )
        print_run_summary(
            console, outcome, view.step_events, self.store.step_runs(outcome.execution_id)
        )
        return outcome


def _stamp(path: Path, integration: Integration) -> tuple[Any, ...]:
    """Modification times and sizes of a definition and the code files it uses."""
    files = [path, *(path.parent / name for name in sorted(integration.sources))]
    stamps: list[Any] = []
    for file in files:
        try:
            status = file.stat()
        except OSError:
            return ()
        stamps.append((str(file), status.st_mtime_ns, status.st_size))
    return tuple(stamps)
