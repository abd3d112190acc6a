"""Runs one execution in a sandbox and records everything it reports (the parent's side)."""

from __future__ import annotations

import logging
import marshal
import os
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from splice.blobs import BlobStore
from splice.config import ConfigValues
from splice.definition.model import Integration
from splice.engine.checkpoints import FINAL_STATUSES, Progress, load_progress, mark_running
from splice.engine.events import (
    ErrorInfo,
    Event,
    LogEvent,
    ResultEvent,
    StepRunEvent,
    StepStartEvent,
)
from splice.engine.recorder import Recorder
from splice.engine.requests import WebhookRequest, reads_trigger_body
from splice.engine.staging import stage_checkpoints, stage_request
from splice.engine.values import MSGPACK, Recorded, decode
from splice.errors import ConfigError, DefinitionError, StoreError
from splice.packages import ensure_packages
from splice.sandbox import ExecutionRequest, Sandbox, SandboxedExecution
from splice.sandbox import spec as execution_spec
from splice.sandbox.spec import CANCELLED_MESSAGE
from splice.settings import Settings
from splice.store import RecordStore
from splice.store.records import ExecutionRecord, now

logger = logging.getLogger(__name__)

DEFINITION_CACHE_SIZE = 64  # integrations whose dumped definitions are kept


@dataclass(frozen=True)
class ExecutionOutcome:
    """The recorded end of an execution: status, result, error and counts."""

    execution_id: str
    status: str  # succeeded | failed | cancelled
    result: Any
    error_type: str | None
    error_message: str | None
    failed_step: str | None
    continued_failures: int
    step_runs: int  # every step run stored for the execution, earlier runs' included
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
    trigger: Mapping[str, Any]  # empty for a webhook request, which the child turns into one
    request: execution_spec.WebhookSpec | None
    scratch: Path
    working_dir: str | None
    grants: list[tuple[str, bool]]
    packages: Path | None
    progress: Progress
    checkpoints: dict[str, Recorded]


def compile_sources(sources: Mapping[str, str]) -> dict[str, bytes]:
    """Compile customer code files for the child, marshalled; skip those that do not compile.

    The child then loads code objects instead of compiling each file in every execution,
    which takes a few milliseconds per file. A file with a syntax error is compiled, and
    reported, in the child.
    """
    compiled = {}
    for name, text in sources.items():
        try:
            compiled[name] = marshal.dumps(compile(text, name, "exec"))
        except (SyntaxError, ValueError):
            continue
    return compiled


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
    """Starts executions in a sandbox, records their events, and returns their outcomes.

    One supervisor may run several executions at once, each from its own thread.
    """

    def __init__(
        self, *, store: RecordStore, blobs: BlobStore, sandbox: Sandbox, settings: Settings
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.sandbox = sandbox
        self.settings = settings
        # The latest integrations dumped for the child, by identity. Each entry keeps its
        # integration alive, so that no other object can take over its id meanwhile.
        self._dumps: OrderedDict[int, tuple[Integration, dict[str, Any], dict[str, bytes]]] = (
            OrderedDict()
        )
        self._dumps_lock = threading.Lock()
        # Removes scratch folders of ended executions; Python joins it at exit.
        self._cleaner = ThreadPoolExecutor(1, thread_name_prefix="splice-scratch-cleanup")

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
        """Create an execution record and run one flow to its end.

        Every record is committed when this returns.
        """
        started = time.monotonic()
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
        # A record created here has no earlier run to resume from, so nothing is read back.
        return self._run_from(
            execution_id, integration, flow, config, trigger, None, on_event, None,
            working_dir, Progress(), started,
        )  # fmt: skip

    def run_execution(
        self,
        execution_id: str,
        integration: Integration,
        *,
        flow: str,
        config: ConfigValues,
        trigger: Mapping[str, Any] | None = None,
        request: WebhookRequest | None = None,
        on_event: Callable[[Event], None] | None = None,
        cancel: threading.Event | None = None,
        working_dir: str | None = None,
    ) -> ExecutionOutcome:
        """Run an execution whose record exists, resuming from the steps it completed before.

        Give the trigger mapping, or a webhook request that the sandboxed child turns into
        one. Setting ``cancel`` from another thread stops the execution, which is then
        recorded as cancelled. An execution whose record is already final is not run again:
        its recorded outcome is returned. Every record is committed when this returns.

        A ConfigError or DefinitionError (a folder grant, the requirements) is recorded as
        the execution's failure and raised. A StoreError or SandboxError is raised with
        the record left as it was, for another attempt to take it over.
        """
        if (trigger is None) == (request is None):
            given = "both" if trigger is not None else "neither"
            raise ValueError(
                f"run_execution of {execution_id} needs exactly one of trigger and request, "
                f"but got {given}"
            )
        started = time.monotonic()
        record = self.store.get_execution(execution_id)
        if record is None or record.id != execution_id:
            raise StoreError(
                f"execution {execution_id} has no record; create its record before running it"
            )
        if record.status in FINAL_STATUSES:
            logger.info("execution %s is already %s; not run again", execution_id, record.status)
            return self._recorded_outcome(record)
        progress = load_progress(self.store, execution_id)
        if cancel is not None and cancel.is_set():
            return self._end_early(execution_id, progress, started, "cancelled", _cancelled())
        if record.status != "running":  # a worker may have marked it when it took it
            mark_running(self.store, execution_id)
        return self._run_from(
            execution_id, integration, flow, config, trigger, request, on_event, cancel,
            working_dir, progress, started,
        )  # fmt: skip

    def _run_from(
        self,
        execution_id: str,
        integration: Integration,
        flow: str,
        config: ConfigValues,
        trigger: Mapping[str, Any] | None,
        request: WebhookRequest | None,
        on_event: Callable[[Event], None] | None,
        cancel: threading.Event | None,
        working_dir: str | None,
        progress: Progress,
        started: float,
    ) -> ExecutionOutcome:
        """Run a running execution on from ``progress``, in a fresh scratch directory."""
        scratch = self._new_scratch(execution_id)
        try:
            launch = self._prepare(
                execution_id, integration, flow, config, trigger, request, scratch,
                working_dir, progress, started,
            )  # fmt: skip
            return self._run(launch, on_event, cancel, started)
        finally:
            # Every record is committed by now, so the removal (a millisecond or more for a
            # scratch folder with files) need not delay the caller.
            self._cleaner.submit(shutil.rmtree, scratch, ignore_errors=True)

    def _new_scratch(self, execution_id: str) -> Path:
        """Create the execution's scratch directory, emptying one that a dead worker left."""
        scratch = self.settings.scratch_dir / execution_id
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True, mode=0o700)
        return scratch

    def _prepare(
        self,
        execution_id: str,
        integration: Integration,
        flow: str,
        config: ConfigValues,
        trigger: Mapping[str, Any] | None,
        request: WebhookRequest | None,
        scratch: Path,
        working_dir: str | None,
        progress: Progress,
        started: float,
    ) -> _Launch:
        """Resolve grants and requirements, and stage blobs into the scratch directory."""
        try:
            grants = folder_grants(integration, config, working_dir, protected=self._protected())
            packages = self._packages(integration)
        except (ConfigError, DefinitionError) as error:
            failure = ErrorInfo(type(error).__name__, str(error))
            self._end_early(execution_id, progress, started, "failed", failure)
            raise
        if packages is not None:
            grants.append((str(packages), False))
        checkpoints = stage_checkpoints(self.blobs, progress.checkpoints, scratch)
        webhook = stage_request(self.blobs, request, scratch) if request is not None else None
        return _Launch(
            execution_id, integration, flow, config, trigger or {}, webhook, scratch,
            working_dir, grants, packages, progress, checkpoints,
        )  # fmt: skip

    def _run(
        self,
        launch: _Launch,
        on_event: Callable[[Event], None] | None,
        cancel: threading.Event | None,
        started: float,
    ) -> ExecutionOutcome:
        execution_id, progress = launch.execution_id, launch.progress
        recorder = Recorder(
            store=self.store,
            blobs=self.blobs,
            execution_id=execution_id,
            scratch_dir=launch.scratch,
            step_sequence=progress.step_sequence,
            log_sequence=progress.log_sequence,
        )
        if progress.resumed:
            self._log_resume(recorder, launch, on_event)
        if cancel is not None and cancel.is_set():
            recorder.flush()
            return self._end_early(execution_id, progress, started, "cancelled", _cancelled())
        execution = self.sandbox.start(self._request(launch))
        watch = _CancelWatch(execution, cancel)

        def idle() -> None:
            recorder.flush_if_due()
            watch.check()

        result: ResultEvent | None = None
        open_attempts: dict[str, StepStartEvent] = {}
        step_runs = progress.step_runs
        try:
            for event in execution.events(idle=idle):
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
                watch.check()
        except BaseException:
            # A store that failed, or a callback that raised: nothing would stop the child
            # at its deadline any more.
            execution.kill("the supervisor stopped reading the execution's events")
            raise
        assert result is not None  # a sandboxed execution always ends with a result
        status = result.status
        if watch.requested and result.status == "failed":
            status = "cancelled"
            if result.error is None or result.error.type != "Cancelled":
                result = msgspec.structs.replace(result, error=_cancelled())
        if open_attempts and result.status == "failed":
            result = self._close_attempts(recorder, result, open_attempts)
            step_runs += len(open_attempts)
        # Counted here, since a child that was killed reports nothing itself.
        result = msgspec.structs.replace(
            result,
            step_runs=step_runs,
            continued_failures=result.continued_failures + progress.continued_failures,
        )
        return self._finish(recorder, launch, result, status, started)

    def _request(self, launch: _Launch) -> ExecutionRequest:
        definition, compiled = self._definition(launch.integration)
        spec = execution_spec.ExecutionSpec(
            execution_id=launch.execution_id,
            integration=definition,
            compiled=compiled,
            sources=dict(launch.integration.sources),
            flow=launch.flow,
            config=launch.config.values,
            trigger=dict(launch.trigger),
            secrets=launch.config.secrets,
            scratch_dir=str(launch.scratch),
            spill_threshold=self.settings.spill_threshold,
            log_limit=self.settings.log_limit,
            working_dir=launch.working_dir,
            grants=launch.grants,
            timeout=self.settings.execution_timeout,
            packages_dir=str(launch.packages) if launch.packages is not None else None,
            request=(
                msgspec.structs.replace(
                    launch.request,
                    parse_body=reads_trigger_body(definition["flows"][launch.flow]),
                )
                if launch.request is not None
                else None
            ),
            checkpoints=launch.checkpoints,
            attempts=launch.progress.attempts,
        )
        return ExecutionRequest(
            execution_id=launch.execution_id,
            spec=execution_spec.encoder.encode(spec),
            scratch_dir=launch.scratch,
            timeout=self.settings.execution_timeout,
        )

    @staticmethod
    def _log_resume(
        recorder: Recorder, launch: _Launch, on_event: Callable[[Event], None] | None
    ) -> None:
        complete = len(launch.checkpoints)
        logger.info(
            "resuming execution %s: %d steps already complete",
            launch.execution_id,
            complete,
            extra={"execution_id": launch.execution_id},
        )
        steps = "step" if complete == 1 else "steps"
        event = LogEvent(
            None,
            "info",
            time.time(),
            f"resumed from checkpoint: {complete} {steps} already complete",
        )
        recorder.add(event)
        if on_event is not None:
            on_event(event)

    def _finish(
        self,
        recorder: Recorder,
        launch: _Launch,
        result: ResultEvent,
        status: str,
        started: float,
    ) -> ExecutionOutcome:
        """Commit the execution's final state with the rest of its records."""
        error = result.error
        final: dict[str, Any] = {
            "status": status,
            "ended_at": now(),
            "error_type": error.type if error else None,
            "error_message": error.message if error else None,
            "failed_step": result.failed_step,
            "step_runs": result.step_runs,
            "continued_failures": result.continued_failures,
        }
        value = self._result_value(launch.scratch, result)
        recorder.finish(result, final)
        return ExecutionOutcome(
            execution_id=launch.execution_id,
            status=status,
            result=value,
            error_type=error.type if error else None,
            error_message=error.message if error else None,
            failed_step=result.failed_step,
            continued_failures=result.continued_failures,
            step_runs=result.step_runs,
            duration=time.monotonic() - started,
        )

    def _end_early(
        self, execution_id: str, progress: Progress, started: float, status: str, error: ErrorInfo
    ) -> ExecutionOutcome:
        """Record the end of an execution whose sandbox never started."""
        values = {
            "status": status,
            "ended_at": now(),
            "error_type": error.type,
            "error_message": error.message,
            "step_runs": progress.step_runs,
            "continued_failures": progress.continued_failures,
        }
        self.store.write_batch([], [], (execution_id, values))
        return ExecutionOutcome(
            execution_id=execution_id,
            status=status,
            result=None,
            error_type=error.type,
            error_message=error.message,
            failed_step=None,
            continued_failures=progress.continued_failures,
            step_runs=progress.step_runs,
            duration=time.monotonic() - started,
        )

    def _recorded_outcome(self, record: ExecutionRecord) -> ExecutionOutcome:
        """Return the outcome of an execution whose final state is already recorded."""
        value = None
        if record.result is not None:
            value = decode(record.result, record.result_encoding or MSGPACK)
        elif record.result_blob is not None:
            value = decode(
                self.blobs.read_bytes(record.result_blob), record.result_encoding or MSGPACK
            )
        return ExecutionOutcome(
            execution_id=record.id,
            status=record.status,
            result=value,
            error_type=record.error_type,
            error_message=record.error_message,
            failed_step=record.failed_step,
            continued_failures=record.continued_failures,
            step_runs=record.step_runs,
            duration=record.duration or 0.0,
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

    def _definition(self, integration: Integration) -> tuple[dict[str, Any], dict[str, bytes]]:
        """Dump the definition and compile its code files once per integration object."""
        key = id(integration)
        with self._dumps_lock:
            cached = self._dumps.get(key)
            if cached is not None and cached[0] is integration:
                self._dumps.move_to_end(key)
                return cached[1], cached[2]
        dump = integration.model_dump(mode="json", by_alias=True)
        compiled = compile_sources(integration.sources)
        with self._dumps_lock:
            self._dumps[key] = (integration, dump, compiled)
            self._dumps.move_to_end(key)
            while len(self._dumps) > DEFINITION_CACHE_SIZE:
                self._dumps.popitem(last=False)
        return dump, compiled

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
    def _result_value(scratch: Path, result: ResultEvent) -> Any:
        recorded = result.result
        if recorded is None:
            return None
        if recorded.data is not None:
            return decode(recorded.data, recorded.encoding)
        assert recorded.file is not None
        data = (scratch / recorded.file).read_bytes()
        return decode(data, recorded.encoding)


class _CancelWatch:
    """Stops an execution once its cancel event is set; checked from the reading thread."""

    def __init__(self, execution: SandboxedExecution, cancel: threading.Event | None) -> None:
        self._execution = execution
        self._cancel = cancel
        self.requested = False

    def check(self) -> None:
        if self._cancel is None or self.requested or not self._cancel.is_set():
            return
        self.requested = True
        logger.info(
            "cancelling execution %s on request",
            self._execution.execution_id,
            extra={"execution_id": self._execution.execution_id},
        )
        self._execution.cancel(CANCELLED_MESSAGE)


def _cancelled() -> ErrorInfo:
    return ErrorInfo("Cancelled", CANCELLED_MESSAGE)
