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
from splice.definition import load_integration
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
        self.supervisor = Supervisor(
            store=store,
            blobs=LocalBlobStore(settings.blob_dir),
            sandbox=sandbox,
            settings=settings,
        )

    @classmethod
    def open(cls, settings: Settings | None = None) -> LocalRun:
        settings = settings or Settings.from_env()
        sandbox = ForkServerSandbox()  # starts importing in its own process right away
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

        from splice.errors import ConfigError

        integration = load_integration(file)
        try:
            flow_name, _ = integration.flow(flow)
        except KeyError as error:
            raise ConfigError(str(error.args[0]), variable="--flow") from None
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
        from splice.cli.render import LiveView, describe_failure, format_duration, timeline_table

        with LiveView(console, enabled=console.is_terminal) as view:
            outcome = self.supervisor.execute(
                integration,
                flow=flow_name,
                config=config,
                trigger=trigger or {"type": "manual"},
                on_event=view.on_event,
                working_dir=os.getcwd(),
            )
        console.print(timeline_table(view.step_events))
        style = "green" if outcome.status == "succeeded" else "red"
        console.print(
            f"[{style}]{outcome.status}[/] in {format_duration(outcome.duration)} · execution "
            f"{outcome.execution_id} · {outcome.step_runs} step runs · "
            f"{outcome.continued_failures} continued failures"
        )
        if outcome.status != "succeeded":
            console.print(
                f"[red]{outcome.failed_step or 'execution'} failed:[/] "
                f"{outcome.error_type}: {outcome.error_message}",
                soft_wrap=True,
            )
        failures = [
            run
            for run in self.store.step_runs(outcome.execution_id)
            if run.status == "failed" and run.kind in ("iteration", "action")
        ]
        if failures:
            console.print(
                f"[yellow]{len(failures)} failed step runs[/] "
                f"(see `splice executions show {outcome.execution_id[:13]}`):"
            )
            for run in failures[:10]:
                console.print(
                    "  " + describe_failure(run).split("\n")[0], markup=False, soft_wrap=True
                )
        return outcome
