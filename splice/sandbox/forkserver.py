"""A Sandbox that forks every execution from a pre-warmed template process."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future
from itertools import count
from pathlib import Path
from typing import Any

import msgspec

from splice.engine import events
from splice.engine.events import ErrorInfo, Event, ResultEvent
from splice.errors import SandboxError
from splice.sandbox import ExecutionRequest
from splice.sandbox.channel import HEADER, ChannelError, FrameReader
from splice.sandbox.spec import CANCEL_FRAME, RETIRE_MESSAGE, STOP_FRAME
from splice.settings import SandboxSettings, Settings

logger = logging.getLogger(__name__)

START_TIMEOUT = 60.0  # seconds for the template to import what executions need
EXIT_WAIT = 2.0  # seconds to wait for a child's exit code after its channel closed
SCRATCH_CHECK_INTERVAL = 0.5  # seconds between checks of an execution's scratch usage
STOP_GRACE = 2.0  # seconds a child gets to record its running steps after SIGTERM
CLOSE_WAIT = 5.0  # seconds close() waits for running executions before stopping them


Started = Future[tuple[int, Future[tuple[int, str | None]]]]


class ForkServerSandbox:
    """Starts a template process once and forks one child per execution from it.

    ``start`` may be called from several threads at once. One lock guards the template,
    its control socket and the tables of pending requests, and each request is sent while
    it is held, so a request always goes to the template whose table waits for its reply.
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings.from_env()
        self.protections: dict[str, list[str]] = {}
        self.details: dict[str, str] = {}
        self._forks = 0
        self._lock = threading.Lock()
        self._ids = count(1)
        self._started: dict[str, Started] = {}
        self._exits: dict[int, Future[tuple[int, str | None]]] = {}
        self._process: subprocess.Popen[bytes] | None = None
        # Replaced templates, with their control sockets, until their last children exit.
        self._retired: list[tuple[subprocess.Popen[bytes], socket.socket]] = []
        self._control: socket.socket | None = None
        self._ready = False
        # The template imports in its own process while this one goes on; the first
        # execution waits for it to be ready.
        self._spawn_template()

    # -- the template ---------------------------------------------------------------------

    def _spawn_template(self) -> None:
        parent_end, template_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        environment = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
        sandbox = self.settings.sandbox
        config = {
            "limits": {
                "cpu_seconds": sandbox.cpu_seconds,
                "memory_bytes": sandbox.memory,
                "processes": sandbox.processes,
                "open_files": sandbox.open_files,
                "file_size": sandbox.file_size,
            },
            "scratch_root": str(self.settings.scratch_dir),
            "uid": sandbox.uid,
            "disable": list(sandbox.disable),
        }
        self.settings.scratch_dir.mkdir(parents=True, exist_ok=True)
        self._forks = 0
        # Each template gets its own table of pending requests, so the dispatch thread of a
        # replaced template fails only the requests that template was sent.
        self._started = {}
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-I",
                "-m",
                "splice.sandbox.template",
                str(template_end.fileno()),
                json.dumps(config),
            ],
            pass_fds=[template_end.fileno()],
            env=environment,
            close_fds=True,
        )
        template_end.close()
        self._control = parent_end
        self._ready = False

    def _await_ready(self) -> None:
        assert self._control is not None and self._process is not None
        parent_end = self._control
        parent_end.settimeout(START_TIMEOUT)
        try:
            ready = msgspec.msgpack.decode(parent_end.recv(4096))
        except (TimeoutError, OSError, msgspec.DecodeError) as error:
            self._process.kill()
            raise SandboxError(
                f"the sandbox template process did not start within {START_TIMEOUT:.0f} s "
                f"({error}); run `splice doctor` to check the installation"
            ) from None
        if "ready" not in ready:
            raise SandboxError(f"the sandbox template sent {ready!r} instead of ready")
        parent_end.settimeout(None)
        self.protections = {"active": ready["active"], "missing": ready["missing"]}
        self.details = ready.get("details", {})
        if ready["missing"] and self.settings.sandbox.require_isolation:
            self._process.kill()
            disabled = [name for name in ready["missing"] if name in self.settings.sandbox.disable]
            lacking = [name for name in ready["missing"] if name not in disabled]
            reasons = []
            if lacking:
                reasons.append(f"this host lacks {', '.join(lacking)}")
            if disabled:
                reasons.append(f"SPLICE_SANDBOX_DISABLE turns off {', '.join(disabled)}")
            raise SandboxError(
                f"SPLICE_SANDBOX_REQUIRE_ISOLATION is set but {' and '.join(reasons)}; run "
                "`splice doctor` for details, or unset it to run with the protections "
                "that are available"
            )
        level = logging.WARNING if ready["missing"] else logging.INFO
        logger.log(
            level,
            "sandbox protections: active %s; missing %s",
            ", ".join(ready["active"]) or "none",
            ", ".join(ready["missing"]) or "none",
        )
        self._ready = True
        threading.Thread(
            target=self._dispatch, args=(parent_end, self._started), daemon=True
        ).start()
        logger.debug("sandbox template started", extra={"pid": self._process.pid})

    def _dispatch(self, control: socket.socket, started: dict[str, Started]) -> None:
        """Route the template's messages to the waiting requests, until it closes."""
        while True:
            try:
                data = control.recv(4096)
            except OSError:
                data = b""
            if not data:
                break
            message = msgspec.msgpack.decode(data)
            with self._lock:
                if "started" in message:
                    self._route_started(message, started)
                elif "exited" in message:
                    # Popped here, so that a later child with the same pid gets a new entry.
                    exit_future = self._exits.pop(message["exited"], None)
                    if exit_future is not None:
                        exit_future.set_result((message["code"], message.get("reason")))
        with self._lock:
            for future in started.values():
                future.set_exception(SandboxError("the sandbox template process exited"))
            started.clear()
            control.close()

    def _route_started(self, message: dict[str, Any], started: dict[str, Started]) -> None:
        future = started.pop(message["started"], None)
        if future is None:
            return  # its request timed out; the child finds its socket closed and exits
        if "error" in message:
            future.set_exception(SandboxError(message["error"]))
            return
        # Registered before the reply is handed on: the template sends the child's exit
        # after its start, on the same socket, so it always finds this entry.
        exit_future: Future[tuple[int, str | None]] = Future()
        self._exits[message["pid"]] = exit_future
        future.set_result((message["pid"], exit_future))

    def _alive(self) -> bool:
        return (
            self._process is not None
            and self._process.poll() is None
            and self._control is not None
            and self._control.fileno() != -1  # the dispatch thread closes it at the end
        )

    # -- executions -----------------------------------------------------------------------

    def wait_ready(self) -> None:
        """Wait until the template has started, and raise SandboxError if it cannot."""
        with self._lock:
            if not self._ready:
                self._await_ready()

    def start(self, request: ExecutionRequest) -> ForkedExecution:
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        # Queue as much of the spec as the socket buffer takes before the child exists, so
        # the child can start on it while the template's reply is on its way back.
        frame = HEADER.pack(len(request.spec)) + request.spec
        parent_end.setblocking(False)
        try:
            sent = parent_end.send(frame)
        except BlockingIOError:
            sent = 0
        parent_end.setblocking(True)
        try:
            started = self._request_fork(child_end)
        except BaseException:
            parent_end.close()
            raise
        finally:
            child_end.close()
        try:
            pid, exit_future = started.result(timeout=START_TIMEOUT)
        except Exception as error:
            parent_end.close()
            raise SandboxError(
                f"could not fork a child for execution {request.execution_id}: {error}"
            ) from None
        if sent < len(frame):
            parent_end.sendall(frame[sent:])
        return ForkedExecution(
            request, pid, parent_end, exit_future, self._forget_exit, self.settings.sandbox
        )

    def _request_fork(self, child_end: socket.socket) -> Started:
        """Send a fork request with the child's socket to a ready template."""
        with self._lock:
            if not self._alive():
                if self._process is not None:
                    logger.warning("sandbox template process is gone; starting a new one")
                self._retire_template()
                self._spawn_template()
            elif self._forks >= self.settings.sandbox.max_forks:
                logger.info("sandbox template reached %d forks; replacing it", self._forks)
                self._retire_template()
                self._spawn_template()
            self._retired = [entry for entry in self._retired if entry[0].poll() is None]
            if not self._ready:
                self._await_ready()
            assert self._control is not None
            request_id = str(next(self._ids))
            self._forks += 1
            started: Started = Future()
            self._started[request_id] = started
            try:
                socket.send_fds(self._control, [request_id.encode()], [child_end.fileno()])
            except OSError as error:
                self._started.pop(request_id, None)
                raise SandboxError(
                    f"could not send a fork request to the sandbox template: {error}"
                ) from None
        return started

    def _retire_template(self) -> None:
        """Ask the current template to exit once its children have; called with the lock held.

        Its control socket stays open, so the exits of its children still arrive. The
        dispatch thread closes it when the template has exited.
        """
        process, control = self._process, self._control
        self._process = self._control = None
        if control is None:
            return
        if process is not None and self._ready:
            with contextlib.suppress(OSError):  # the template may have exited already
                control.send(RETIRE_MESSAGE)
            self._retired.append((process, control))
            return
        # Never ready: no dispatch thread reads this socket, and no child was forked.
        if process is not None:
            process.kill()
            self._retired.append((process, control))
        control.close()

    def _forget_exit(self, pid: int) -> None:
        with self._lock:
            self._exits.pop(pid, None)

    def close(self) -> None:
        """Stop the template, and its retired predecessors. Idempotent.

        Each template exits once its running executions have ended. Executions that still
        run after CLOSE_WAIT seconds are killed: their supervisors may be about to exit
        too, and nothing would stop them at their deadlines.
        """
        with self._lock:
            self._retire_template()
            retired, self._retired = self._retired, []
        deadline = time.monotonic() + CLOSE_WAIT
        for process, control in retired:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
                continue
            except subprocess.TimeoutExpired:
                pass
            # End of stream on the control socket: the template kills its children and
            # exits. close() alone sends none while the dispatch thread waits in recv().
            # Under the lock, because the dispatch thread closes the socket under it.
            with self._lock, contextlib.suppress(OSError):
                control.shutdown(socket.SHUT_RDWR)
            try:
                process.wait(timeout=CLOSE_WAIT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class ForkedExecution:
    """One execution running in a forked child; its events come from the child's socket."""

    def __init__(
        self,
        request: ExecutionRequest,
        pid: int,
        sock: socket.socket,
        exit_code: Future[tuple[int, str | None]],
        forget: Callable[[int], None],
        limits: SandboxSettings,
    ) -> None:
        self.execution_id = request.execution_id
        self.pid = pid
        self._sock = sock
        self._exit_code = exit_code
        self._forget = forget
        self._limits = limits
        self._scratch_dir = request.scratch_dir
        self._deadline = time.monotonic() + request.timeout
        self._timeout = request.timeout
        self._killed: str | None = None
        self._stop: ErrorInfo | None = None  # why the child was asked to stop, once it was

    def kill(self, reason: str) -> None:
        self._killed = reason
        self._signal_group()

    def cancel(self, message: str) -> None:
        """Stop the execution as its deadline does, recording the error Cancelled.

        The child records the steps it is running as failed and reports its result; it
        is killed if it has not ended STOP_GRACE seconds later. Call it from the thread
        that reads ``events``. A second call does nothing.
        """
        if self._stop is None:
            self._request_stop(CANCEL_FRAME, ErrorInfo("Cancelled", message))

    def _request_stop(self, frame: bytes, error: ErrorInfo) -> None:
        """Send the stop frame and SIGTERM, and give the child STOP_GRACE seconds to end.

        The frame lets the child's handler check that the signal came from here, and
        names the reason.
        """
        with contextlib.suppress(OSError):
            self._sock.sendall(HEADER.pack(len(frame)) + frame)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        self._stop = error
        self._deadline = time.monotonic() + STOP_GRACE

    def _signal_group(self) -> None:
        if self._exit_code.done():
            return
        # The child is pid 1 of its own pid namespace: when it dies, the kernel kills
        # every process left in that namespace, daemonised grandchildren included.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)

    def events(self, idle: Callable[[], None] | None = None) -> Iterator[Event]:
        result: ResultEvent | None = None
        try:
            result = yield from self._read(idle)
        finally:
            self._sock.close()
        if self._killed is not None:
            result = _failure("Cancelled", self._killed)
        elif result is None and self._stop is not None:
            result = _failure(self._stop.type, self._stop.message)
        elif result is None:
            result = _failure("SandboxError", self._describe_exit())
        else:
            # Measured once more at the end: an execution shorter than the check interval
            # is never measured while it runs.
            result = self._scratch_failure() or result
        self._forget(self.pid)
        yield result

    def _read(self, idle: Callable[[], None] | None) -> Generator[Event, None, ResultEvent | None]:
        """Yield events until the result event arrives, and return it (None if none came)."""
        reader = FrameReader(self._sock)
        result: ResultEvent | None = None
        while True:
            check_at = min(self._deadline, time.monotonic() + SCRATCH_CHECK_INTERVAL)
            try:
                for frame in reader.frames(check_at):
                    event = events.decoder.decode(frame)
                    if isinstance(event, ResultEvent):
                        return event  # the last event: no need to wait for the child's exit
                    yield event
                return result
            except TimeoutError:
                if idle is not None:
                    idle()
                failure = self._over_limit()
            except (ChannelError, msgspec.DecodeError, msgspec.ValidationError) as error:
                failure = _failure(
                    "SandboxError",
                    f"the sandboxed child sent an invalid frame ({error}) and was stopped",
                )
            if failure is not None:
                self._signal_group()
                return failure

    def _over_limit(self) -> ResultEvent | None:
        if time.monotonic() < self._deadline:
            return self._scratch_failure()
        if self._stop is None:
            self._request_stop(STOP_FRAME, ErrorInfo("ExecutionTimeout", self._timeout_message()))
            return None
        return _failure(self._stop.type, self._stop.message)  # the grace has passed

    def _timeout_message(self) -> str:
        return (
            f"the execution ran past its wall-clock limit of {self._timeout:g} s and was "
            "stopped; raise the limit with SPLICE_EXECUTION_TIMEOUT or make the flow faster"
        )

    def _scratch_failure(self) -> ResultEvent | None:
        used = _disk_usage(self._scratch_dir)
        limit = self._limits.scratch_size
        if used > limit:
            return _failure(
                "ScratchLimitExceeded",
                f"the execution's scratch files reached {used} bytes, over the limit of "
                f"{limit} bytes; raise SPLICE_SANDBOX_SCRATCH_SIZE or "
                "write less to the scratch directory and /tmp",
            )
        return None

    def _describe_exit(self) -> str:
        try:
            code, reason = self._exit_code.result(timeout=EXIT_WAIT)
        except Exception:
            return "the sandboxed child closed its channel without a result"
        if reason == "memory":
            return (
                f"the execution used more than its memory limit of {self._limits.memory} bytes "
                "and was killed; raise SPLICE_SANDBOX_MEMORY or process the data in parts"
            )
        if code == -signal.SIGXCPU or (code == -signal.SIGKILL and self._limits.cpu_seconds):
            return (
                f"the execution used more than its CPU time limit of "
                f"{self._limits.cpu_seconds} s and was killed; raise SPLICE_SANDBOX_CPU_SECONDS"
            )
        if code < 0:
            number = -code
            name = (
                signal.Signals(number).name
                if number in signal.Signals._value2member_map_
                else number
            )
            return f"the sandboxed child was killed by signal {name} before it finished"
        return f"the sandboxed child exited with code {code} before it finished"


def _disk_usage(folder: Path) -> int:
    """Bytes of disk that the files below ``folder`` take."""
    total = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                total += _disk_usage(Path(entry.path))
            else:
                total += entry.stat(follow_symlinks=False).st_blocks * 512
        except OSError:
            continue
    return total


def _failure(kind: str, message: str) -> ResultEvent:
    return ResultEvent("failed", error=ErrorInfo(kind, message))
