"""The template process: imports what executions need once, then forks one child per execution.

Run as ``python -m splice.sandbox.template CONTROL_FD``. The control socket is a
SOCK_SEQPACKET unix socket: each request carries a request id and the child's end of the
execution's socket; the template replies ``started`` with the child's pid, and sends ``exited``
with its exit code once reaped.
"""

from __future__ import annotations

import gc
import os
import select
import signal
import socket
import sys
from typing import Any

import msgspec

CONTROL_MESSAGE_SIZE = 4096


def _preload() -> None:
    """Import and warm everything an execution uses, so children start with it loaded."""
    import splice.components as components
    import splice.engine.runner
    import splice.sandbox.child  # noqa: F401
    from splice.definition.expressions import compile_value

    components.builtin_components()
    compile_value({"warm": "{{ steps.a.b | length }} {{ item }}"})


def main(control_fd: int) -> None:
    control = socket.socket(fileno=control_fd)
    _preload()
    # Children share the template's pages until they write to them; a garbage collection
    # in a child would touch every preloaded object, so freeze them out of its reach.
    gc.collect()
    gc.freeze()
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    encoder = msgspec.msgpack.Encoder()
    control.send(encoder.encode({"ready": os.getpid()}))
    while True:
        waiting: list[Any] = [control, wake_read]
        readable, _, _ = select.select(waiting, [], [])
        if wake_read in readable:
            os.read(wake_read, 4096)
            _reap(control, encoder)
        if control in readable:
            message, fds, _, _ = socket.recv_fds(control, CONTROL_MESSAGE_SIZE, 1)
            if not message:
                # The supervisor closed the control socket. Exit at once: children have
                # their own sockets, and tearing down the warmed heap only costs time.
                os._exit(0)
            if not fds:
                continue
            pid = os.fork()
            if pid == 0:
                _become_child(fds[0], control, wake_read, wake_write)
            os.close(fds[0])
            control.send(encoder.encode({"started": message.decode(), "pid": pid}))


def _reap(control: socket.socket, encoder: msgspec.msgpack.Encoder) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        control.send(encoder.encode({"exited": pid, "code": os.waitstatus_to_exitcode(status)}))


def _become_child(fd: int, control: socket.socket, wake_read: int, wake_write: int) -> None:
    """Turn the forked process into an execution's child; never returns."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        control.close()
        os.close(wake_read)
        os.close(wake_write)
        os.setsid()  # its own process group, so a timeout kills its children too
        from splice.sandbox.child import run_child

        code = run_child(socket.socket(fileno=fd))
    except BaseException:  # the parent notices the missing result and records the crash
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code)


if __name__ == "__main__":
    main(int(sys.argv[1]))
