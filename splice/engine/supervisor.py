"""Runs one execution in a sandbox and records everything it reports (the parent's side)."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from splice.blobs import BlobStore
from splice.config import ConfigValues
from splice.definition.model import Integration
from splice.engine.events import (
    ErrorInfo,
    Event,
    LogEvent,
    ResultEvent,
    StepRunEvent,
    StepStartEvent,
)
from splice.engine.recorder import Recorder
from splice.engine.values import decode
from splice.errors import ConfigError
from splice.packages import ensure_packages
from splice.sandbox import ExecutionRequest, Sandbox
from splice.sandbox import spec as execution_spec
from splice.settings import Settings
from splice.store import RecordStore
from splice.store.records import now


@dataclass(frozen=True)
class ExecutionOutcome:
    """The recorded end of an execution: status, result, error and counts."""

    execution_id: str
    status: str  # succeeded | failed
    result: Any
    error_type: str | None
    error_message: str | None
    failed_step: str | None
    continued_failures: int
    step_runs: int
    duration: float  # seconds, from start to the last record committed


def new_execution_id() -> str:
    """Return a UUIDv7: the first 48 bits are the time in milliseconds, so ids sort by start."""
    millis = time.time_ns() // 1_000_000
    random_bits = int.from_bytes(os.urandom(10), "big")
    value = (millis << 80) | random_bits
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    return str(uuid.UUID(int=value))


@dataclass(frozen=True)
class _Launch:
    """Everything known about an execution when it is handed to the sandbox."""

    execution_id: str
    integration: Integration
    flow: str
    config: ConfigValues
    trigger: Mapping[str, Any]
    scratch: Path
    working_dir: str | None
    grants: list[tuple[str, bool]]
    packages: Path | None


def folder_grants(
    integration: Integration,
    config: ConfigValues,
    working_dir: str | None,
    *,
    protected: Sequence[Path] = (),
) -> list[tuple[str, bool]]:
    """Resolve the folders that config variables with ``grant:`` name, as absolute paths.

    The config values are rewritten to the absolute paths, which is where the folders
    appear inside the sandbox. Raise ConfigError for a path that is not a folder, or that
    contains or lies inside one of the ``protected`` folders (the platform's own).
    """
    grants: list[tuple[str, bool]] = []
    base = Path(working_dir or os.getcwd())
    for name, variable in integration.config.items():
        value = config.values.get(name)
        if variable.grant is None or value is None:
            continue
        paths = value if isinstance(value, list) else [value]
        resolved = []
        for path in paths:
            folder = (base / str(path)).resolve()
            if not folder.is_dir():
                raise ConfigError(
                    f"{str(path)!r} is not a folder, so it cannot be granted to the sandbox",
                    variable=name,
                    fix="give the path of an existing folder",
                )
            _check_not_protected(name, folder, protected)
            resolved.append(str(folder))
            grants.append((str(folder), variable.grant == "write"))
        config.values[name] = resolved if isinstance(value, list) else resolved[0]
    return grants


def _check_not_protected(name: str, folder: Path, protected: Sequence[Path]) -> None:
    for platform_folder in protected:
        own = platform_folder.resolve()
        if folder == own or folder in own.parents or own in folder.parents:
            raise ConfigError(
                f"{str(folder)!r} overlaps Splice's own folder {str(own)!r} (records, blobs "
                "or scratch), which executions must never see",
                variable=name,
                fix="grant a folder outside Splice's data directory",
            )


class Supervisor:
    """Starts executions in a sandbox, records their events, and returns their outcomes."""

    def __init__(
        self, *, store: RecordStore, blobs: BlobStore, sandbox: Sandbox, settings: Settings
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.sandbox = sandbox
        self.settings = settings
        # The integrations dumped so far, kept so their ids stay theirs. NOTE: one entry per
        # integration object, never evicted; a long-running service needs a bound here.
        self._dumps: dict[int, tuple[Integration, dict[str, Any]]] = {}

    def execute(
        self,
        integration: Integration,
        *,
        flow: str,
        config: ConfigValues,
        trigger: Mapping[str, Any],
        trigger_type: str = "manual",
        on_event: Callable[[Event], None] | None = None,
        working_dir: str | None = None,
    ) -> ExecutionOutcome:
        """Run one flow to its end; every record is committed when this returns."""
        execution_id = new_execution_id()
        self.store.create_execution(
            {
                "id": execution_id,
                "integration_key": integration.key,
                "integration_version": integration.version,
                "flow": flow,
                "trigger_type": trigger_type,
                "status": "running",
                "created_at": now(),
                "started_at": now(),
                "definition_path": integration.source_path,
            }
        )
        grants = folder_grants(integration, config, working_dir, protected=self._protected())
        packages = self._packages(integration)
        if packages is not None:
            grants.append((str(packages), False))
        scratch = self.settings.scratch_dir / execution_id
        scratch.mkdir(parents=True, mode=0o700)
        try:
            launch = _Launch(
                execution_id, integration, flow, config, trigger, scratch, working_dir, grants,
                packages,
            )  # fmt: skip
            result = self._run(launch, on_event)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return result

    def _run(self, launch: _Launch, on_event: Callable[[Event], None] | None) -> ExecutionOutcome:
        started = time.monotonic()
        execution_id, scratch = launch.execution_id, launch.scratch
        spec = execution_spec.ExecutionSpec(
            execution_id=execution_id,
            integration=self._definition(launch.integration),
            sources=dict(launch.integration.sources),
            flow=launch.flow,
            config=launch.config.values,
            trigger=dict(launch.trigger),
            secrets=launch.config.secrets,
            scratch_dir=str(scratch),
            spill_threshold=self.settings.spill_threshold,
            log_limit=self.settings.log_limit,
            working_dir=launch.working_dir,
            grants=launch.grants,
            timeout=self.settings.execution_timeout,
            packages_dir=str(launch.packages) if launch.packages is not None else None,
        )
        request = ExecutionRequest(
            execution_id=execution_id,
            spec=execution_spec.encoder.encode(spec),
            scratch_dir=scratch,
            timeout=self.settings.execution_timeout,
        )
        recorder = Recorder(
            store=self.store, blobs=self.blobs, execution_id=execution_id, scratch_dir=scratch
        )
        result: ResultEvent | None = None
        open_attempts: dict[str, StepStartEvent] = {}
        step_runs = 0
        for event in self.sandbox.start(request).events(idle=recorder.flush_if_due):
            if isinstance(event, StepStartEvent):
                open_attempts[event.path] = event
            elif isinstance(event, ResultEvent):
                result = event
            elif isinstance(event, StepRunEvent | LogEvent):
                if isinstance(event, StepRunEvent):
                    open_attempts.pop(event.path, None)
                    step_runs += 1
                recorder.add(event)
            if on_event is not None:
                on_event(event)
        assert result is not None  # a sandboxed execution always ends with a result
        if open_attempts and result.status == "failed":
            result = self._close_attempts(recorder, result, open_attempts)
            step_runs += len(open_attempts)
        # Counted here, since a child that was killed reports nothing itself.
        result = msgspec.structs.replace(result, step_runs=step_runs)
        final: dict[str, Any] = {
            "status": result.status,
            "ended_at": now(),
            "error_type": result.error.type if result.error else None,
            "error_message": result.error.message if result.error else None,
            "failed_step": result.failed_step,
            "step_runs": result.step_runs,
            "continued_failures": result.continued_failures,
        }
        value = self._result_value(recorder, result)
        recorder.finish(result, final)
        return ExecutionOutcome(
            execution_id=execution_id,
            status=result.status,
            result=value,
            error_type=result.error.type if result.error else None,
            error_message=result.error.message if result.error else None,
            failed_step=result.failed_step,
            continued_failures=result.continued_failures,
            step_runs=result.step_runs,
            duration=time.monotonic() - started,
        )

    @staticmethod
    def _close_attempts(
        recorder: Recorder, result: ResultEvent, open_attempts: dict[str, StepStartEvent]
    ) -> ResultEvent:
        """Record the attempts a killed child never finished as failed with its reason."""
        error = result.error or ErrorInfo("SandboxError", "the sandboxed child ended early")
        ended = time.time()
        for start in sorted(open_attempts.values(), key=lambda attempt: len(attempt.path)):
            recorder.add(
                StepRunEvent(
                    path=start.path, step_id=start.step_id, kind=start.kind, status="failed",
                    attempt=start.attempt, started=start.started, ended=ended,
                    action=start.action, error=error,
                )
            )  # fmt: skip
        deepest = max(open_attempts, key=len)
        return msgspec.structs.replace(result, failed_step=result.failed_step or deepest)

    def _definition(self, integration: Integration) -> dict[str, Any]:
        """Dump the definition for the child once per integration object, not per execution."""
        cached = self._dumps.get(id(integration))
        if cached is None or cached[0] is not integration:
            cached = (integration, integration.model_dump(mode="json", by_alias=True))
            self._dumps[id(integration)] = cached
        return cached[1]

    def _protected(self) -> list[Path]:
        """Folders of the platform that no grant may expose."""
        settings = self.settings
        folders = [
            settings.data_dir,
            settings.blob_dir,
            settings.scratch_dir,
            settings.packages_dir,
        ]
        database = self.store.database_file()
        if database is not None:
            folders.append(database.parent)  # the SQLite file and its -wal and -shm files
        return folders

    def _packages(self, integration: Integration) -> Path | None:
        """Install the integration's requirements once; return their folder, if any."""
        if not integration.requirements:
            return None
        return ensure_packages(
            integration.requirements,
            root=self.settings.packages_dir,
            pip_args=self.settings.pip_args,
            source=integration.source_path,
        )

    @staticmethod
    def _result_value(recorder: Recorder, result: ResultEvent) -> Any:
        recorded = result.result
        if recorded is None:
            return None
        if recorded.data is not None:
            return decode(recorded.data, recorded.encoding)
        assert recorded.file is not None
        data = (recorder._scratch_dir / recorded.file).read_bytes()
        return decode(data, recorded.encoding)
