"""The template process: imports what executions need once, then forks one child per execution.

Run as ``python -I -m splice.sandbox.template CONTROL_FD CONFIG_JSON``. The control socket
is a SOCK_SEQPACKET unix socket: each request carries a request id and the child's end of
the execution's socket. The template replies ``started`` with the child's pid, and sends
``exited`` with its exit code (and ``reason`` when a limit ended it) once reaped.

A ``retire`` message (without a descriptor) asks the template to fork nothing more and to
exit once its last child has. The end of the control socket means that the supervisor's
process is gone or closed the sandbox: the template kills its children and exits, because
no one would stop them at their deadlines any more.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import select
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import msgspec

from splice.definition.model import Integration
from splice.sandbox import confinement, linux
from splice.sandbox.spec import RETIRE_MESSAGE

CONTROL_MESSAGE_SIZE = 4096
WARM_INTEGRATION = {
    "key": "warm",
    "name": "Warm",
    "requirements": ["warm>=1"],
    "config": {"c": {"type": "connection", "connection": "api_key", "grant": None}},
    "flows": {
        "f": {
            "trigger": {"type": "manual"},
            "steps": [
                {
                    "id": "a",
                    "action": "log.write",
                    "inputs": {"message": "{{ config.c }}"},
                    "on_error": {"retry": {"attempts": 2}, "then": "continue"},
                },
                {"id": "l", "loop": "{{ steps.a }}", "steps": [{"id": "b", "action": "log.write"}]},
                {
                    "id": "c",
                    "branch": [
                        {"when": "{{ true }}", "steps": [{"id": "d", "action": "log.write"}]}
                    ],
                    "else": [],
                },
            ],
        },
        "s": {
            "trigger": {"type": "schedule", "cron": "0 6 * * 1-5", "timezone": "Europe/Berlin"},
            "steps": [{"id": "e", "action": "log.write"}],
        },
        "w": {"trigger": {"type": "webhook"}, "steps": [{"id": "g", "action": "log.write"}]},
    },
}
logger = logging.getLogger(__name__)


def _preload() -> None:
    """Import and warm everything an execution uses, so children start with it loaded."""
    # httpx imports its command-line tool (click, rich) when they are installed. Children
    # never need it, and every megabyte of the template is copied at each fork.
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    import splice.components as components
    import splice.engine.runner
    import splice.sandbox.child  # noqa: F401
    from splice.definition.expressions import compile_value

    components.builtin_components()
    _warm_http()
    compile_value({"warm": "{{ steps.a.b | length }} {{ item }}"})
    # Validating once loads whatever pydantic and the validators load on first use, so that
    # no child pays for it (a lazy import from inside the sandbox reads from disk).
    Integration.model_validate(WARM_INTEGRATION)
    # Lazily imported by socket and httpx on first use; an unprivileged child may not be
    # able to import them later.
    import encodings.idna  # noqa: F401


def _warm_http() -> None:
    """Send one request through the http component's client to a loopback socket.

    httpx and httpcore import their connection, parsing and TLS modules on first use, about
    30 ms in all, which every execution's first request would pay again after the fork.
    """
    import socket
    import threading

    import httpx

    from splice.components.http import new_client

    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def answer() -> None:
            connection, _ = listener.accept()
            with connection:
                connection.recv(65536)
                connection.sendall(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    b"content-length: 2\r\nconnection: close\r\n\r\n{}"
                )

        server = threading.Thread(target=answer, daemon=True)
        server.start()
        try:
            with new_client() as client:
                client.post(f"http://127.0.0.1:{port}/warm", json={"warm": True}).json()
        except httpx.HTTPError:
            logger.debug("warming the HTTP client failed; executions load it themselves")
        server.join(timeout=2)


def _plan(config: dict[str, Any]) -> confinement.Plan:
    limits = confinement.Limits(**config["limits"])
    plan = confinement.make_plan(
        limits=limits,
        scratch_root=Path(config["scratch_root"]),
        extra_readable=config.get("readable", []),
        uid=config["uid"],
    )
    for name in config.get("disable", []):
        plan.available[name] = False
    together = ("mount-namespace", "ipc-namespace", "uts-namespace", "private-root")
    if not all(plan.available[name] for name in together):
        for name in together:  # one unshare() and the root that needs it: all or none
            plan.available[name] = False
    return plan


class Template:
    """The fork loop, with the per-execution cgroups it creates and removes."""

    def __init__(self, control: socket.socket, plan: confinement.Plan) -> None:
        self.control = control
        self.plan = plan
        self.encoder = msgspec.msgpack.Encoder()
        self.cgroups: dict[int, dict[str, str]] = {}
        self.forks = 0
        self.spare: tuple[int, socket.socket] | None = None  # pid and hand-off socket
        self.retiring = False
        self.wake_read, self.wake_write = os.pipe()

    def send(self, message: dict[str, Any]) -> None:
        try:
            self.control.send(self.encoder.encode(message))
        except OSError:  # the supervisor is gone
            self.abandon()

    def serve(self) -> None:
        os.set_blocking(self.wake_write, False)
        signal.set_wakeup_fd(self.wake_write)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        self.prepare_spare()
        self.send(
            {
                "ready": os.getpid(),
                "active": self.plan.active,
                "missing": self.plan.missing,
                "details": self.plan.details(),
            }
        )
        while True:
            waiting: list[Any] = [self.control, self.wake_read]
            readable, _, _ = select.select(waiting, [], [])
            if self.wake_read in readable:
                os.read(self.wake_read, 4096)
                self.reap()
            if self.control in readable:
                message, fds, _, _ = socket.recv_fds(self.control, CONTROL_MESSAGE_SIZE, 1)
                if not message:
                    self.abandon()
                if fds:
                    self.fork(message.decode(), fds[0])
                elif message == RETIRE_MESSAGE:
                    self.retire()
            if self.retiring and not self.cgroups:
                confinement.remove_cgroups(self.plan.cgroups)
                os._exit(0)  # without tearing down the warmed heap

    def fork(self, request_id: str, fd: int) -> None:
        """Hand the execution's socket to the spare child, reply, then prepare the next spare."""
        if self.retiring:  # the supervisor sends nothing after retire; this is a guard
            os.close(fd)
            self.send({"started": request_id, "pid": 0, "error": "the template is retiring"})
            return
        if self.spare is None:
            self.prepare_spare()
        assert self.spare is not None
        pid, handoff = self.spare
        self.spare = None
        try:
            socket.send_fds(handoff, [b"run"], [fd])
        except OSError as error:
            os.kill(pid, signal.SIGKILL)
            self.send(
                {
                    "started": request_id,
                    "pid": pid,
                    "error": f"could not hand the execution to its child: {error}",
                }
            )
        else:
            self.send({"started": request_id, "pid": pid})
        finally:
            handoff.close()
            os.close(fd)
        self.prepare_spare()

    def prepare_spare(self) -> None:
        """Fork and half-confine the child that will run the next execution."""
        self.forks += 1
        groups = confinement.create_execution_cgroups(self.plan, f"exec-{self.forks}")
        handoff, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        flags = self.plan.clone_flags()
        # The child is pid 1 of its pid namespace, in its own user namespace where available.
        pid = linux.fork_with_namespaces(flags) if flags else os.fork()
        if pid == 0:
            handoff.close()
            self.become_child(child_end)
        child_end.close()
        self.cgroups[pid] = groups
        try:
            confinement.join_cgroups(groups, pid)
            if self.plan.available["user-namespace"]:
                self.plan.map_ids(pid)
            handoff.send(b"go")  # the child may set itself up now
        except OSError as error:
            logger.warning("could not prepare child %d: %s", pid, error)
            os.kill(pid, signal.SIGKILL)
            handoff.close()
            return
        self.spare = (pid, handoff)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            groups = self.cgroups.pop(pid, {})
            message: dict[str, Any] = {"exited": pid, "code": os.waitstatus_to_exitcode(status)}
            if confinement.memory_limit_hit(groups):
                message["reason"] = "memory"
            confinement.remove_cgroups(groups)
            self.send(message)

    def retire(self) -> None:
        """Fork nothing more; serve() exits once every child has been reaped."""
        self.retiring = True
        if self.spare is not None:
            self.spare[1].close()  # the spare child reads the end of its socket and exits
            self.spare = None

    def abandon(self) -> None:
        """Kill every child and exit: the supervisor's process is gone or closed the sandbox."""
        for pid in list(self.cgroups):
            # The process group reaches the child's own children where no pid namespace
            # does. A child that has not yet called setsid() has no group of its own.
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        self.drain()
        os._exit(0)

    def drain(self) -> None:
        if self.spare is not None:
            self.spare[1].close()  # the spare child reads the end of its socket and exits
            self.spare = None
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        while self.cgroups:
            try:
                pid, _ = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            confinement.remove_cgroups(self.cgroups.pop(pid, {}))
        for groups in self.cgroups.values():
            confinement.remove_cgroups(groups)
        confinement.remove_cgroups(self.plan.cgroups)

    def become_child(self, handoff: socket.socket) -> None:
        """Turn the forked process into an execution's child; never returns."""
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            self.control.close()
            os.setsid()  # its own process group, so a timeout kills its children too
            keep = handoff.fileno()
            os.closerange(3, keep)
            os.closerange(keep + 1, 65536)
            from splice.sandbox.child import run_child, warm_up

            if handoff.recv(16) != b"go":
                os._exit(0)  # the template could not prepare this child
            stage = confinement.prepare(self.plan)
            warm_up(Path(self.plan.root_mount_point))
            message, fds, _, _ = socket.recv_fds(handoff, CONTROL_MESSAGE_SIZE, 1)
            handoff.close()
            if not message or not fds:
                os._exit(0)  # the template closed: no execution will come
            code = run_child(socket.socket(fileno=fds[0]), self.plan, stage)
        except BaseException:  # the parent notices the missing result and records the crash
            code = 70
        finally:
            os._exit(code)


def main(control_fd: int, config: dict[str, Any]) -> None:
    control = socket.socket(fileno=control_fd)
    _preload()
    plan = _plan(config)
    # Children share the template's pages until they write to them. A garbage collection
    # in a child would touch every preloaded object, so freeze them out of its reach.
    gc.collect()
    gc.freeze()
    Template(control, plan).serve()


if __name__ == "__main__":
    main(int(sys.argv[1]), json.loads(sys.argv[2]))
