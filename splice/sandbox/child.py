"""The sandboxed child: receives an ExecutionSpec, runs the flow, streams events, exits."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from splice.components.code import COMPILED_RESOURCE
from splice.definition.model import Integration
from splice.engine import events
from splice.engine.events import ErrorInfo, ResultEvent
from splice.engine.requests import webhook_trigger
from splice.engine.runner import Runner, RunSettings, Stopped
from splice.engine.values import Masker
from splice.sandbox import linux
from splice.sandbox import spec as execution_spec
from splice.sandbox.channel import FrameWriter, receive_frame, send_frame
from splice.sandbox.confinement import ConfinementError, Plan, Stage, enter
from splice.sandbox.spec import CANCEL_FRAME, CANCELLED_MESSAGE, STOP_FRAME

OUTPUT_DRAIN_WAIT = 0.2  # seconds to wait for the last output of descriptors 1 and 2
PR_SET_PDEATHSIG = 1  # prctl option: the signal this process gets when its parent dies


class _PrintCapture(io.TextIOBase):
    """Sends what customer code prints to the execution's log, one line per record."""

    def __init__(self, runner: Runner, level: str) -> None:
        self._runner = runner
        self._level = level
        self._partial = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._partial += text
        while "\n" in self._partial:
            line, self._partial = self._partial.split("\n", 1)
            self._runner.log(getattr(self._runner.current, "path", None), self._level, line)
        if len(self._partial) > 64 * 1024:  # a long line without a newline: send it in pieces
            self.flush()
        return len(text)

    def flush(self) -> None:
        if self._partial:
            line, self._partial = self._partial, ""
            self._runner.log(getattr(self._runner.current, "path", None), self._level, line)


class _OutputLog:
    """Turns what is written to file descriptors 1 and 2 (subprocesses, C code) into log lines.

    Without it the child would write to the supervisor's own output, past the log limit.
    The frame writer's thread reads the pipe and feeds it here.
    """

    CHUNK = 64 * 1024

    def __init__(self) -> None:
        self.runner: Runner | None = None
        self._pending = b""
        read, write = os.pipe()
        os.dup2(write, 1)
        os.dup2(write, 2)
        os.close(write)
        self.read_fd = read

    def feed(self, data: bytes) -> None:
        self._pending += data
        *lines, self._pending = self._pending.split(b"\n")
        if len(self._pending) > self.CHUNK:  # a long line without a newline: log it in pieces
            lines.append(self._pending)
            self._pending = b""
        for line in lines:
            self._log(line)

    def release(self) -> None:
        """Point descriptors 1 and 2 at /dev/null, so the pipe reaches its end."""
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
        os.close(null)

    def finish(self) -> None:
        if self._pending:
            self._log(self._pending)
            self._pending = b""

    def _log(self, line: bytes) -> None:
        if self.runner is not None:
            # The step that started last is the best guess at who wrote the line.
            self.runner.log(self.runner.active_path, "info", line.decode("utf-8", "replace"))


WARM_UP = {
    "key": "warm-up",
    "name": "Warm-up",
    "flows": {
        "main": {
            "trigger": {"type": "manual"},
            "steps": [
                {"id": "code", "action": "code.run",
                 "inputs": {"source": "def run(context, *, value):\n    return value\n",
                            "args": {"value": "{{ config.value }}"}}},
                {"id": "render", "action": "json.render", "inputs": {"value": "{{ steps.code }}"}},
            ],
        }
    },
}  # fmt: skip


def warm_up(scratch_dir: Path) -> None:
    """Run a small flow in this process, so its first real execution runs on warm pages.

    A spare child does this while it waits: the pages of the interpreter that every
    execution touches are copied from the template now, instead of on the request's path.
    """
    integration = Integration.model_validate(WARM_UP)

    def encode(event: Any) -> None:
        events.encoder.encode(event)

    runner = Runner(
        integration=integration, flow="main", execution_id="warm-up", config={"value": 1},
        trigger={}, emit=encode, scratch_dir=scratch_dir,
        masker=Masker([]),
    )  # fmt: skip
    runner.run()
    # The first thread of a process costs far more than the next ones, because the C
    # library sets up its stack cache. Pay for it here: this thread ends before confinement.
    thread = threading.Thread(target=int)
    thread.start()
    thread.join()


def run_child(sock: socket.socket, plan: Plan, stage: Stage) -> int:
    """Run one execution over ``sock`` and return the process exit code."""
    spec = execution_spec.decoder.decode(receive_frame(sock))
    try:
        grants = [(path, writable) for path, writable in spec.grants]
        enter(plan, stage, scratch_dir=spec.scratch_dir, grants=grants)
    except ConfinementError as error:
        failure = ResultEvent(
            "failed",
            error=ErrorInfo("SandboxError", f"the sandbox could not confine the child: {error}"),
        )
        send_frame(sock, events.encoder.encode(failure))
        return 0
    # Set after the drop of privileges, which clears it. The template kills its children
    # when the supervisor's process dies; this covers the template's own death.
    with contextlib.suppress(OSError):
        linux.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    _enter(spec, private_tmp=plan.available["private-root"])
    _stop_on_sigterm(spec.timeout, sock)
    output = _OutputLog()
    writer = FrameWriter(sock, watch=output.read_fd, on_data=output.feed)

    def emit(event: Any) -> None:
        writer.send(events.encoder.encode(event))

    result = _run(spec, emit, output)
    sys.stdout.flush()
    sys.stderr.flush()
    output.release()
    # A process the code started may still hold the pipe open; do not wait for it long.
    writer.drain_watched(OUTPUT_DRAIN_WAIT)
    output.finish()
    emit(result)
    writer.close()
    return 0


def _stop_on_sigterm(timeout: float, sock: socket.socket) -> None:
    """Turn the supervisor's SIGTERM at the deadline or on cancel into Stopped in the main thread.

    A SIGTERM that customer code sends to itself finds no stop frame and is ignored.
    """

    def stop(signum: int, frame: object) -> None:
        try:
            request = sock.recv(64, socket.MSG_DONTWAIT)
        except OSError:
            request = b""
        if request.endswith(CANCEL_FRAME):
            kind, message = "Cancelled", CANCELLED_MESSAGE
        elif request.endswith(STOP_FRAME):
            kind = "ExecutionTimeout"
            message = (
                f"the execution ran past its wall-clock limit of {timeout:g} s and was stopped; "
                "raise the limit with SPLICE_EXECUTION_TIMEOUT or make the flow faster"
            )
        else:
            return
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # stop once; the supervisor then kills
        raise Stopped(kind, message)

    signal.signal(signal.SIGTERM, stop)


def _enter(spec: execution_spec.ExecutionSpec, *, private_tmp: bool) -> None:
    """Switch to the execution's scratch directory and environment."""
    scratch = Path(spec.scratch_dir)
    os.chdir(scratch)
    tmp = Path("/tmp") if private_tmp else scratch / "tmp"
    tmp.mkdir(exist_ok=True)
    os.environ.clear()
    os.environ.update({"HOME": str(scratch), "TMPDIR": str(tmp), "PATH": "/usr/bin:/bin"})
    os.environ.update(spec.environment)
    tempfile.tempdir = str(tmp)
    if spec.packages_dir:
        sys.path.insert(0, spec.packages_dir)  # the integration's requirements come first


def _run(spec: execution_spec.ExecutionSpec, emit: Any, output: _OutputLog) -> ResultEvent:
    try:
        integration = Integration.model_validate(spec.integration)
        integration._sources = dict(spec.sources)
        runner = Runner(
            integration=integration,
            flow=spec.flow,
            execution_id=spec.execution_id,
            config=spec.config,
            trigger=_trigger(spec),
            emit=emit,
            scratch_dir=Path(spec.scratch_dir),
            masker=Masker(spec.secrets),
            settings=RunSettings(spill_threshold=spec.spill_threshold, log_limit=spec.log_limit),
            working_dir=Path(spec.working_dir) if spec.working_dir else None,
            checkpoints=spec.checkpoints,
            attempts=spec.attempts,
        )
    except Exception as error:  # a spec the child cannot use is a platform fault
        return ResultEvent(
            "failed", error=ErrorInfo(type(error).__name__, f"invalid spec: {error}")
        )
    runner.resources[COMPILED_RESOURCE] = spec.compiled
    stdout, stderr = sys.stdout, sys.stderr
    sys.stdout = _PrintCapture(runner, "info")
    sys.stderr = _PrintCapture(runner, "warning")
    output.runner = runner
    try:
        return runner.run()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout, sys.stderr = stdout, stderr


def _trigger(spec: execution_spec.ExecutionSpec) -> dict[str, Any]:
    """Return the trigger mapping: as given, or built here from the webhook request."""
    request = spec.request
    if request is None:
        return spec.trigger
    body = request.body
    if request.body_file is not None:
        # Staged by the supervisor; deleted once read, so it does not count against the
        # scratch limit for the rest of the execution.
        path = Path(spec.scratch_dir) / request.body_file
        body = path.read_bytes()
        path.unlink()
    return webhook_trigger(
        method=request.method,
        headers=request.headers,
        query_string=request.query_string,
        body=body,
        parse=request.parse_body,
    )
