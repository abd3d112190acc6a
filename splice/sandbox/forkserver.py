"""A Sandbox that forks every execution from a pre-warmed template process."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from itertools import count

import msgspec

from splice.engine import events
from splice.engine.events import ErrorInfo, Event, ResultEvent
from splice.errors import SandboxError
from splice.sandbox import ExecutionRequest
from splice.sandbox.channel import ChannelError, FrameReader, send_frame

logger = logging.getLogger(__name__)

START_TIMEOUT = 60.0  # seconds for the template to import what executions need
EXIT_WAIT = 2.0  # seconds to wait for a child's exit code after its channel closed


class ForkServerSandbox:
    """Starts a template process once and forks one child per execution from it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids = count(1)
        self._started: dict[str, Future[int]] = {}
        self._exits: dict[int, Future[int]] = {}
        self._process: subprocess.Popen[bytes] | None = None
        self._control: socket.socket | None = None
        self._ready = False
        # The template imports in its own process while this one goes on; the first
        # execution waits for it to be ready.
        self._spawn_template()

    # -- the template ---------------------------------------------------------------------

    def _spawn_template(self) -> None:
        parent_end, template_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        environment = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
        self._process = subprocess.Popen(
            [sys.executable, "-m", "splice.sandbox.template", str(template_end.fileno())],
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
        self._ready = True
        threading.Thread(target=self._dispatch, args=(parent_end,), daemon=True).start()
        logger.debug("sandbox template started", extra={"pid": self._process.pid})

    def _dispatch(self, control: socket.socket) -> None:
        """Route the template's messages to whoever waits for them, until it closes."""
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
                    future = self._started.pop(message["started"], None)
                    if future is not None:
                        future.set_result(message["pid"])
                elif "exited" in message:
                    self._exits.setdefault(message["exited"], Future()).set_result(message["code"])
        with self._lock:
            for future in self._started.values():
                future.set_exception(SandboxError("the sandbox template process exited"))
            self._started.clear()

    def _alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # -- executions -----------------------------------------------------------------------

    def start(self, request: ExecutionRequest) -> ForkedExecution:
        with self._lock:
            if not self._alive():
                logger.warning("sandbox template process is gone; starting a new one")
                self._spawn_template()
            if not self._ready:
                self._await_ready()
            request_id = str(next(self._ids))
            started: Future[int] = Future()
            self._started[request_id] = started
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        assert self._control is not None
        try:
            socket.send_fds(self._control, [request_id.encode()], [child_end.fileno()])
        finally:
            child_end.close()
        try:
            pid = started.result(timeout=START_TIMEOUT)
        except Exception as error:
            parent_end.close()
            raise SandboxError(
                f"could not fork a child for execution {request.execution_id}: {error}"
            ) from None
        with self._lock:
            exit_future = self._exits.setdefault(pid, Future())
        send_frame(parent_end, request.spec)
        return ForkedExecution(request, pid, parent_end, exit_future, self._forget_exit)

    def _forget_exit(self, pid: int) -> None:
        with self._lock:
            self._exits.pop(pid, None)

    def close(self) -> None:
        """Stop the template; executions already running finish on their own. Idempotent."""
        if self._process is not None and not self._ready:
            self._process.kill()  # still importing: nothing of value to wait for
        if self._control is not None:
            # close() alone sends no end of stream while the dispatch thread is blocked in
            # recv() on this socket, so the template would wait until it is killed.
            with contextlib.suppress(OSError):  # the template already closed its end
                self._control.shutdown(socket.SHUT_RDWR)
            self._control.close()
            self._control = None
        if self._process is not None:
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None


class ForkedExecution:
    """One execution running in a forked child; its events come from the child's socket."""

    def __init__(
        self,
        request: ExecutionRequest,
        pid: int,
        sock: socket.socket,
        exit_code: Future[int],
        forget: object,
    ) -> None:
        self.execution_id = request.execution_id
        self.pid = pid
        self._sock = sock
        self._exit_code = exit_code
        self._forget = forget
        self._deadline = time.monotonic() + request.timeout
        self._timeout = request.timeout
        self._killed: str | None = None

    def kill(self, reason: str) -> None:
        self._killed = reason
        self._signal_group()

    def _signal_group(self) -> None:
        if self._exit_code.done():
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)

    def events(self) -> Iterator[Event]:
        result: ResultEvent | None = None
        reader = FrameReader(self._sock)
        try:
            for frame in reader.frames(self._deadline):
                event = events.decoder.decode(frame)
                if isinstance(event, ResultEvent):
                    result = event
                    continue
                yield event
        except TimeoutError:
            self._signal_group()
            result = _failure(
                "ExecutionTimeout",
                f"the execution ran past its wall-clock limit "
                f"of {self._timeout:g} s and was stopped; raise the limit with "
                "SPLICE_EXECUTION_TIMEOUT or make the flow faster",
            )
        except (ChannelError, msgspec.DecodeError, msgspec.ValidationError) as error:
            self._signal_group()
            result = _failure(
                "SandboxError",
                f"the sandboxed child sent an invalid frame ({error}) and was stopped",
            )
        finally:
            self._sock.close()
        if self._killed is not None:
            result = _failure("Cancelled", self._killed)
        elif result is None:
            result = _failure("SandboxError", self._describe_exit())
        self._forget(self.pid)  # type: ignore[operator]
        yield result

    def _describe_exit(self) -> str:
        try:
            code = self._exit_code.result(timeout=EXIT_WAIT)
        except Exception:
            return "the sandboxed child closed its channel without a result"
        if code < 0:
            name = (
                signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else code
            )
            return f"the sandboxed child was killed by signal {name} before it finished"
        return f"the sandboxed child exited with code {code} before it finished"


def _failure(kind: str, message: str) -> ResultEvent:
    return ResultEvent("failed", error=ErrorInfo(kind, message))
