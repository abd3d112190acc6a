"""Runs one execution of a flow: steps in order, values in memory, every step run reported.

The runner lives in the sandboxed child. It never writes records itself: it hands each
finished step run to ``emit``, and the supervisor in the parent records them in batches.
"""

from __future__ import annotations

import contextlib
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from splice.components import find_action
from splice.components.code import CUSTOMER_FILENAMES
from splice.definition.expressions import Evaluator, compile_value
from splice.definition.model import ActionStep, BranchStep, Integration, LoopStep, Step
from splice.engine.events import (
    ErrorInfo,
    LogEvent,
    ProgressEvent,
    ResultEvent,
    StepRunEvent,
    StepStartEvent,
)
from splice.engine.inputs import prepare_inputs
from splice.engine.values import (
    MASK,
    Masker,
    Recorded,
    UnrecordableValue,
    decode,
    record_value,
    value_size,
)
from splice.errors import ExpressionError
from splice.sdk import ActionContext, ActionError

Emit = Callable[[Any], None]


@dataclass(frozen=True)
class RunSettings:
    """Limits the runner applies inside the child."""

    spill_threshold: int = 256 * 1024  # bytes; larger recorded values go to a file
    log_limit: int = 10 * 1024 * 1024  # bytes of log text per execution before truncation


class Stopped(BaseException):
    """Raised in the main thread when the supervisor requests that the execution stop now.

    A BaseException, so that customer code catching Exception does not swallow it.
    """

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        self.message = message
        super().__init__(message)


class _StepFailed(Exception):
    """A step failed under ``on_error: fail``; unwinds to the enclosing loop or the flow."""

    def __init__(self, path: str, error: ErrorInfo) -> None:
        self.path = path
        self.error = error
        super().__init__(f"{path}: {error.message}")


class StepLog:
    """The logger an action or customer code gets: lines go to the execution's log."""

    def __init__(self, runner: Runner, path: str) -> None:
        self._runner = runner
        self._path = path

    def _log(self, level: str, message: str, args: tuple[Any, ...]) -> None:
        text = str(message) % args if args else str(message)
        self._runner.log(self._path, level, text)

    def debug(self, message: str, *args: Any) -> None:
        self._log("debug", message, args)

    def info(self, message: str, *args: Any) -> None:
        self._log("info", message, args)

    def warning(self, message: str, *args: Any) -> None:
        self._log("warning", message, args)

    def error(self, message: str, *args: Any) -> None:
        self._log("error", message, args)

    def exception(self, message: str, *args: Any) -> None:
        self._log("error", f"{message}\n{traceback.format_exc()}", args)


class Runner:
    """Runs the steps of one flow for one execution and reports each step run."""

    def __init__(
        self,
        *,
        integration: Integration,
        flow: str,
        execution_id: str,
        config: Mapping[str, Any],
        trigger: Mapping[str, Any],
        emit: Emit,
        scratch_dir: Path,
        masker: Masker,
        settings: RunSettings = RunSettings(),
        working_dir: Path | None = None,
        checkpoints: Mapping[str, Recorded] | None = None,
        attempts: Mapping[str, int] | None = None,
    ) -> None:
        self.integration = integration
        self.flow = integration.flows[flow]
        self.execution_id = execution_id
        self.config = config
        self.trigger = trigger
        self.scratch_dir = scratch_dir
        self.masker = masker
        self.settings = settings
        self.working_dir = working_dir
        self._emit = emit
        # Outputs of the steps an earlier run of this execution completed, by path. Each is
        # used once: a step that a retry of its loop iteration or branch reaches again runs.
        self._checkpoints = dict(checkpoints or {})
        self._attempts = dict(attempts or {})  # the last attempt recorded before, by path
        self._lock = threading.Lock()
        self._evaluators: dict[tuple[int, str], Evaluator] = {}
        self._resources: dict[str, Any] = {}
        # Step paths being attempted now, for recording them when the execution is stopped.
        self._running: dict[str, tuple[Step, str, int, float]] = {}
        self.active_path: str | None = None  # the step attempt that started last
        self._sources = integration.sources  # read once: pydantic private attributes are slow
        self._log_bytes = 0
        self.continued_failures = 0
        self.step_runs = 0
        self.current = threading.local()

    # -- the execution ------------------------------------------------------------------

    @property
    def resources(self) -> dict[str, Any]:
        """Objects the actions of this execution share, such as an HTTP client."""
        return self._resources

    def run(self) -> ResultEvent:
        """Run the flow to its end and return the result event (not emitted)."""
        scope: dict[str, Any] = {
            "config": self.config,
            "trigger": self.trigger,
            "steps": {},
            "loops": {},
            "execution": {"id": self.execution_id},
        }
        try:
            last = self._run_block(self.flow.steps, scope, "")
            result = last
            if self.flow.result is not None:
                result = self._evaluate(self.flow, "result", self.flow.result, scope)
            recorded = self._record(result)
        except Stopped as stop:
            return self._stopped(stop)
        except _StepFailed as failure:
            return self._result("failed", error=failure.error, failed_step=failure.path)
        except (ExpressionError, UnrecordableValue) as error:
            # The flow's result expression can quote a secret, as in steps.x[config.token].
            message = self.masker.text(str(error))
            return self._result("failed", error=ErrorInfo(type(error).__name__, message))
        finally:
            self._close_resources()
        return self._result("succeeded", result=recorded)

    def _stopped(self, stop: Stopped) -> ResultEvent:
        """Record every step that was running as failed with the stop's reason."""
        error = ErrorInfo(stop.kind, stop.message)
        ended = time.time()
        running = sorted(self._running.items(), key=lambda entry: len(entry[0]))
        for path, (step, kind, attempt, started) in running:
            self._step_run(step, path, kind, "failed", attempt, started, ended, error=error)
        failed_step = running[-1][0] if running else None
        return self._result("failed", error=error, failed_step=failed_step)

    def _result(self, status: str, **fields: Any) -> ResultEvent:
        return ResultEvent(
            status=status,
            continued_failures=self.continued_failures,
            step_runs=self.step_runs,
            **fields,
        )

    def _close_resources(self) -> None:
        for resource in self._resources.values():
            close = getattr(resource, "close", None)
            if callable(close):
                # A client that fails to close changes nothing about the execution's outcome.
                with contextlib.suppress(Exception):
                    close()

    def _run_block(self, steps: list[Step], scope: dict[str, Any], prefix: str) -> Any:
        output: Any = None
        for step in steps:
            output = self._run_step(step, scope, prefix + step.id)
            scope["steps"][step.id] = output
        return output

    def _run_step(self, step: Step, scope: dict[str, Any], path: str) -> Any:
        restored, output = self._restore(path)
        if restored:
            return output
        if isinstance(step, LoopStep):
            return self._run_loop(step, scope, path)
        if isinstance(step, BranchStep):
            return self._with_policy(
                step, path, "branch", lambda a: self._branch(step, scope, path)
            )
        assert isinstance(step, ActionStep)
        return self._with_policy(
            step, path, "action", lambda attempt: self._invoke(step, scope, path, attempt)
        )

    def _restore(self, path: str) -> tuple[bool, Any]:
        """Return (True, output) for a step completed by an earlier run, else (False, None).

        A completed loop or branch is restored whole, so the steps inside it never run.
        """
        recorded = self._checkpoints.pop(path, None)
        if recorded is None:
            return False, None
        data = recorded.data
        if data is None:
            assert recorded.file is not None
            staged = self.scratch_dir / recorded.file
            data = staged.read_bytes()
            staged.unlink()  # so it does not count against the scratch limit
        if self.masker and MASK.encode() in data:
            # The record has secrets masked, so it is not the value the next steps need.
            self.log(
                path,
                "info",
                "the step's recorded output has secrets masked, so the step runs again "
                "instead of resuming from it",
            )
            return False, None
        return True, decode(data, recorded.encoding)

    def _first_attempt(self, path: str) -> int:
        """Number the attempts of a step after those an earlier run recorded."""
        return self._attempts.pop(path, 0) + 1

    # -- error policy ---------------------------------------------------------------------

    def _with_policy(
        self,
        step: Step,
        path: str,
        kind: str,
        attempt_once: Callable[[int], tuple[Any, int]],
        *,
        item: Any = None,
        record_success: bool = True,
    ) -> Any:
        """Run ``attempt_once`` under the step's on_error policy and record each attempt."""
        attempt = self._first_attempt(path)
        while True:
            started = time.time()
            self._running[path] = (step, kind, attempt, started)
            self.active_path = path
            if record_success:  # an iteration reports only its failure, so no start either
                self._emit(StepStartEvent(path, step.id, kind, attempt, started, _action_of(step)))
            self.current.input_size = 0
            try:
                output, input_size = attempt_once(attempt)
            except (Exception, SystemExit) as exc:
                ended = time.time()
                del self._running[path]
                input_size = getattr(self.current, "input_size", 0)
                self.current.input_size = 0
                error = self._error_info(exc)
                retry = step.retry
                if retry is not None and attempt < retry.attempts and _retryable(exc):
                    self.log(
                        path,
                        "warning",
                        f"attempt {attempt} failed, retrying: {error.type}: {error.message}",
                    )
                    self._step_run(
                        step,
                        path,
                        kind,
                        "failed",
                        attempt,
                        started,
                        ended,
                        error=error,
                        input_size=input_size,
                    )
                    time.sleep(retry.delay_before(attempt + 1))
                    attempt += 1
                    continue
                continued = step.final_policy == "continue"
                failed_item = self._record(item) if kind == "iteration" else None
                if kind != "iteration":  # an iteration's failure repeats its step's
                    level, suffix = ("warning", "; continuing") if continued else ("error", "")
                    self.log(path, level, f"failed: {error.type}: {error.message}{suffix}")
                self._step_run(
                    step, path, kind, "failed", attempt, started, ended,
                    error=error, continued=continued, item=failed_item, input_size=input_size,
                )  # fmt: skip
                if not continued:
                    raise _StepFailed(getattr(exc, "path", path), error) from None
                with self._lock:
                    self.continued_failures += 1
                if kind == "iteration":
                    return _Continued(error, getattr(exc, "path", path))
                return None
            del self._running[path]
            if record_success:
                try:
                    recorded = self._record(output)
                except UnrecordableValue as exc:
                    error = ErrorInfo(type(exc).__name__, self.masker.text(str(exc)))
                    self._step_run(
                        step, path, kind, "failed", attempt, started, time.time(),
                        error=error, input_size=input_size,
                    )  # fmt: skip
                    raise _StepFailed(path, error) from None
                self._step_run(
                    step,
                    path,
                    kind,
                    "succeeded",
                    attempt,
                    started,
                    time.time(),
                    input_size=input_size,
                    output=recorded,
                )
            return output

    def _step_run(
        self,
        step: Step,
        path: str,
        kind: str,
        status: str,
        attempt: int,
        started: float,
        ended: float,
        **fields: Any,
    ) -> None:
        with self._lock:
            self.step_runs += 1
        action = step.action if isinstance(step, ActionStep) else None
        self._emit(
            StepRunEvent(
                path=path,
                step_id=step.id,
                kind=kind,
                status=status,
                attempt=attempt,
                started=started,
                ended=ended,
                action=action,
                **fields,
            )
        )

    def _record(self, value: Any) -> Recorded:
        return record_value(
            value,
            masker=self.masker,
            threshold=self.settings.spill_threshold,
            scratch_dir=self.scratch_dir,
        )

    def _error_info(self, exc: BaseException) -> ErrorInfo:
        if isinstance(exc, _StepFailed):
            return exc.error
        if isinstance(exc, SystemExit):
            exc = RuntimeError(
                f"the code called sys.exit({exc.code!r}); return a value or raise an exception "
                "to end a step"
            ).with_traceback(exc.__traceback__)
        message = self.masker.text(str(exc)) if self.masker else str(exc)
        if isinstance(exc, ActionError | ExpressionError):
            return ErrorInfo(type(exc).__name__, message)
        trace = _customer_traceback(exc)
        return ErrorInfo(type(exc).__name__, message, self.masker.text(trace))

    # -- actions --------------------------------------------------------------------------

    def _invoke(
        self, step: ActionStep, scope: dict[str, Any], path: str, attempt: int
    ) -> tuple[Any, int]:
        action = find_action(step.action)
        if action is None:  # validation rejects this; a definition built by hand may not
            raise ActionError(f"unknown action {step.action!r}", retryable=False)
        values = self._evaluate(step, "inputs", step.inputs, scope, where=f"{path}.inputs")
        self.current.input_size = input_size = value_size(values)
        prepared = prepare_inputs(action, values, step=path)
        context = ActionContext(
            execution_id=self.execution_id,
            step=path,
            attempt=attempt,
            config=self.config,
            logger=StepLog(self, path),
            scratch_dir=self.scratch_dir,
            working_dir=self.working_dir,
            sources=self._sources,
            resources=self._resources,
        )
        self.current.path = path
        try:
            output = action.function(context, **prepared)
        finally:
            self.current.path = None
        return output, input_size

    def _evaluate(
        self, owner: Any, field: str, value: Any, scope: Mapping[str, Any], where: str = ""
    ) -> Any:
        key = (id(owner), field)
        evaluator = self._evaluators.get(key)
        if evaluator is None:
            evaluator = compile_value(value, where=where or field)
            self._evaluators[key] = evaluator
        return evaluator(scope)

    # -- control steps --------------------------------------------------------------------

    def _branch(self, step: BranchStep, scope: dict[str, Any], path: str) -> tuple[Any, int]:
        for index, case in enumerate(step.branch):
            if self._evaluate(case, "when", case.when, scope, where=f"{path}.branch[{index}]"):
                return self._run_block(case.steps, _nested(scope), f"{path}."), 0
        if step.else_:
            return self._run_block(step.else_, _nested(scope), f"{path}."), 0
        return None, 0

    def _run_loop(self, step: LoopStep, scope: dict[str, Any], path: str) -> Any:
        started = time.time()
        try:
            items = self._evaluate(step, "loop", step.loop, scope, where=f"{path}.loop")
            if (
                isinstance(items, Mapping)
                or not hasattr(items, "__iter__")
                or isinstance(items, str | bytes)
            ):
                raise ActionError(
                    f"loop of step {path!r} needs a list but the expression gave "
                    f"{type(items).__name__}; loop over a list such as steps.list.files",
                    retryable=False,
                )
            items = list(items)
        except Exception as exc:
            return self._with_policy(step, path, "loop", _raise(exc))
        total = len(items)
        attempt = self._first_attempt(path)
        self._running[path] = (step, "loop", attempt, started)
        self._emit(StepStartEvent(path, step.id, "loop", attempt, started))
        self._emit(ProgressEvent(path, total, 0, 0))
        results: list[Any] = [None] * total
        errors: list[dict[str, Any]] = []
        tracker = _Progress(self, path, total)

        def iterate(index: int) -> None:
            outcome = self._iteration(step, scope, path, index, items[index])
            if isinstance(outcome, _Continued):
                errors.append(
                    {
                        "index": index,
                        "item": items[index],
                        "step": outcome.path,
                        "error": outcome.error.message,
                    }
                )
                tracker.advance(failed=True)
            else:
                results[index] = outcome
                tracker.advance(failed=False)

        try:
            self._iterate_all(step, total, iterate)
        except _StepFailed as failure:
            del self._running[path]
            self._step_run(
                step, path, "loop", "failed", attempt, started, time.time(), error=failure.error
            )
            raise
        del self._running[path]
        errors.sort(key=lambda entry: entry["index"])
        output = {
            "results": results,
            "errors": errors,
            "succeeded": total - len(errors),
            "failed": len(errors),
        }
        self._step_run(
            step,
            path,
            "loop",
            "succeeded",
            attempt,
            started,
            time.time(),
            input_size=value_size(items),
            output=self._record(output),
        )
        return output

    def _iterate_all(self, step: LoopStep, total: int, iterate: Callable[[int], None]) -> None:
        if step.concurrency == 1 or total < 2:
            for index in range(total):
                iterate(index)
            return
        pool = ThreadPoolExecutor(step.concurrency, thread_name_prefix=f"loop-{step.id}")
        futures = [pool.submit(iterate, index) for index in range(total)]
        failure: _StepFailed | None = None
        try:
            for future in futures:
                if future.cancelled():  # skipped after an earlier failure; result() would raise
                    continue
                try:
                    future.result()
                except _StepFailed as error:
                    failure = failure or error
                    for pending in futures:
                        pending.cancel()
        except BaseException:
            # Stopped: leave the running iterations behind, the child exits after reporting.
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
        if failure is not None:
            raise failure

    def _iteration(
        self, step: LoopStep, scope: dict[str, Any], path: str, index: int, item: Any
    ) -> Any:
        iteration_path = f"{path}[{index}]"

        def attempt_once(attempt: int) -> tuple[Any, int]:
            inner = _nested(scope)
            inner["item"], inner["index"] = item, index
            inner["loops"] = {**scope["loops"], step.id: {"item": item, "index": index}}
            last = self._run_block(step.steps, inner, f"{iteration_path}.")
            if step.result is not None:
                last = self._evaluate(
                    step, "result", step.result, inner, where=f"{iteration_path}.result"
                )
            return last, 0

        return self._with_policy(
            step, iteration_path, "iteration", attempt_once, item=item, record_success=False
        )

    # -- logs -----------------------------------------------------------------------------

    def log(self, path: str | None, level: str, message: str) -> None:
        """Send one log line, masked and within the execution's log volume limit."""
        limit = self.settings.log_limit
        with self._lock:
            if self._log_bytes > limit:
                return
            self._log_bytes += len(message)
            if self._log_bytes > limit:
                message = f"[log volume limit of {limit} bytes reached; later lines are dropped]"
                level = "warning"
        if self.masker:
            message = self.masker.text(message)
        self._emit(LogEvent(path, level, time.time(), message))


@dataclass(frozen=True)
class _Continued:
    """Marks a failure that the flow went past under ``on_error: continue``."""

    error: ErrorInfo
    path: str


class _Progress:
    """Reports a loop's progress at most every ``interval`` seconds, and at its end."""

    interval = 0.1

    def __init__(self, runner: Runner, path: str, total: int) -> None:
        self._runner, self._path, self._total = runner, path, total
        self._done = self._failed = 0
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def advance(self, *, failed: bool) -> None:
        with self._lock:
            self._done += 1
            self._failed += failed
            moment = time.monotonic()
            if self._done < self._total and moment - self._last < self.interval:
                return
            self._last = moment
            event = ProgressEvent(self._path, self._total, self._done, self._failed)
        self._runner._emit(event)


def _nested(scope: dict[str, Any]) -> dict[str, Any]:
    """Copy a scope for a block, whose step ids stay inside it while outer steps stay visible."""
    inner = dict(scope)
    inner["steps"] = dict(scope["steps"])
    return inner


def _raise(error: Exception) -> Callable[[int], tuple[Any, int]]:
    def attempt_once(attempt: int) -> tuple[Any, int]:
        raise error

    return attempt_once


def _action_of(step: Step) -> str | None:
    return step.action if isinstance(step, ActionStep) else None


def _retryable(exc: BaseException) -> bool:
    """Tell whether another attempt could succeed (bad input or expressions never do)."""
    if isinstance(exc, ActionError):
        return exc.retryable
    return not isinstance(exc, ExpressionError | UnrecordableValue)


def _customer_traceback(exc: BaseException) -> str:
    """Format the traceback, keeping only customer code frames when there are any."""
    frames = traceback.extract_tb(exc.__traceback__)
    customer = [frame for frame in frames if frame.filename in CUSTOMER_FILENAMES]
    lines = traceback.format_list(customer or frames)
    return (
        "Traceback (most recent call last):\n"
        + "".join(lines)
        + "".join(traceback.format_exception_only(type(exc), exc))
    )
