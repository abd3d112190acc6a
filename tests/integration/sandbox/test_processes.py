"""Customer code that outlives its execution, signals other processes or calls denied syscalls."""

from __future__ import annotations

import os
import platform

import pytest

from .conftest import execution_cgroups, wait_for

CODE = """\
import ctypes
import errno
import os
import signal
import time

libc = ctypes.CDLL(None, use_errno=True)


def fine(context):
    return "fine"


def daemon(context, *, seconds):
    beat = os.path.join(context.config["folder"], "beat")
    pid = os.fork()
    if pid == 0:
        os.setsid()
        if os.fork() == 0:
            deadline = time.monotonic() + seconds
            count = 0
            while time.monotonic() < deadline:
                count += 1
                with open(beat, "w") as file:
                    file.write(str(count))
                time.sleep(0.1)
        os._exit(0)
    os.waitpid(pid, 0)
    deadline = time.monotonic() + 5
    while not os.path.exists(beat) and time.monotonic() < deadline:
        time.sleep(0.01)
    return "daemon started"


def outcome(action):
    try:
        action()
    except OSError as error:
        return errno.errorcode.get(error.errno, str(error.errno))
    return "sent"


def signal_worker(context, *, pid):
    return {
        "SIGTERM": outcome(lambda: os.kill(pid, signal.SIGTERM)),
        "SIGKILL": outcome(lambda: os.kill(pid, signal.SIGKILL)),
        "group": outcome(lambda: os.killpg(pid, signal.SIGKILL)),
    }


def kill_everything(context):
    return {
        "pid 1": outcome(lambda: os.kill(1, signal.SIGKILL)),
        "own group": outcome(lambda: os.killpg(0, signal.SIGKILL)),
        "all": outcome(lambda: os.kill(-1, signal.SIGKILL)),
    }


def syscalls(context, *, calls):
    found = {}
    for name, (number, arguments) in calls.items():
        result = libc.syscall(number, *[ctypes.c_long(value) for value in arguments])
        found[name] = errno.errorcode.get(ctypes.get_errno(), "none") if result < 0 else "allowed"
    return found
"""

# (x86_64 number, aarch64 number, arguments); the arguments are harmless if a call ran.
SYSCALLS = {
    "ptrace_traceme": (101, 117, [0, 0, 0, 0]),  # PTRACE_TRACEME
    "ptrace_attach": (101, 117, [16, 1, 0, 0]),  # PTRACE_ATTACH to pid 1
    "mount": (165, 40, [0, 0, 0, 0, 0]),
    "unshare": (272, 97, [0x00020000]),  # CLONE_NEWNS
    "bpf": (321, 280, [0, 0, 0]),
    "keyctl": (250, 219, [0, 0, 0, 0, 0]),  # KEYCTL_GET_KEYRING_ID of no keyring
    "kexec_load": (246, 104, [0, 0, 0, 0]),
}
ARCHITECTURES = {"x86_64": 0, "aarch64": 1}


def test_daemon_killed(runner_for, sandbox, tmp_path):
    """A double-forked, setsid grandchild is killed when its execution ends."""
    folder = tmp_path / "granted"
    folder.mkdir()
    folder.chmod(0o777)  # the sandbox user writes here
    runner = runner_for(sandbox, CODE, config="  folder: {type: string, grant: write}")
    outcome = runner.run("daemon", assignments=(f"folder={folder}",), seconds=15)
    beat = folder / "beat"
    assert ("succeeded", "daemon started") == (outcome.status, outcome.result)
    assert wait_for(lambda: len(execution_cgroups(sandbox)) <= 1)
    first = beat.read_text()
    # The daemon wrote every 0.1 s: 0.5 s without a change shows that it is gone.
    assert wait_for(lambda: beat.read_text() != first, timeout=0.5) is False
    assert "succeeded" == runner.run("fine").status


def test_signal_worker(runner_for, sandbox):
    """Signals aimed at the worker's pid reach nothing outside the sandbox."""
    runner = runner_for(sandbox, CODE)
    outcome = runner.run("signal_worker", pid=os.getpid())
    assert "succeeded" == outcome.status
    for name, result in outcome.result.items():
        assert result in ("ESRCH", "EPERM"), name
    assert os.path.exists(f"/proc/{os.getpid()}/status")
    assert "succeeded" == runner.run("fine").status


def test_kill_pid_1(runner_for, sandbox):
    """SIGKILL to pid 1, its own process group or every process does not end the execution."""
    runner = runner_for(sandbox, CODE)
    outcome = runner.run("kill_everything")
    assert "succeeded" == outcome.status
    assert "succeeded" == runner.run("fine").status


@pytest.mark.skipif(platform.machine() not in ARCHITECTURES, reason="syscall numbers unknown")
def test_denied_syscalls(runner_for, sandbox):
    """ptrace, mount, unshare, bpf, keyctl and kexec_load fail with EPERM."""
    column = ARCHITECTURES[platform.machine()]
    calls = {name: (numbers[column], numbers[2]) for name, numbers in SYSCALLS.items()}
    runner = runner_for(sandbox, CODE)
    outcome = runner.run("syscalls", calls=calls)
    assert "succeeded" == outcome.status
    for name in SYSCALLS:
        assert "EPERM" == outcome.result[name], name
    assert "succeeded" == runner.run("fine").status
