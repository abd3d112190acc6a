"""The template itself: required isolation on this host, and replacement after max forks."""

from __future__ import annotations

import os

import pytest

from .conftest import process_alive, start_sandbox, template_pid, wait_for

CODE = """\
import os


def whoami(context):
    return {"pid": os.getpid(), "uid": os.getuid()}


def host_uid(context):
    # This process's uid, translated through its user namespace's map to the host's.
    uid = os.getuid()
    with open("/proc/self/uid_map") as mapping:
        for line in mapping:
            inside, outside, count = (int(field) for field in line.split())
            if inside <= uid < inside + count:
                return outside + uid - inside
    return uid
"""


def test_require_isolation_starts(runner_for, tmp_path):
    """With SPLICE_SANDBOX_REQUIRE_ISOLATION=true, every protection is active and runs work."""
    sandbox = start_sandbox(tmp_path / "strict", SPLICE_SANDBOX_REQUIRE_ISOLATION="true")
    try:
        runner = runner_for(sandbox, CODE)
        outcome = runner.run("whoami")
        host = runner.run("host_uid")
        assert "succeeded" == outcome.status
        assert 1 == outcome.result["pid"]
        assert 65534 == host.result
        assert [] == sandbox.protections["missing"]
    finally:
        sandbox.close()


@pytest.fixture
def replaced(runner_for, tmp_path) -> tuple[list[str], list[int]]:
    """Run 7 executions on a template that is replaced after 3; return statuses and pids."""
    sandbox = start_sandbox(tmp_path / "short-lived", SPLICE_SANDBOX_MAX_FORKS="3")
    try:
        runner = runner_for(sandbox, CODE)
        statuses, pids = [], []
        for _ in range(7):
            outcome = runner.run("whoami")
            statuses.append(outcome.status)
            pids.append(template_pid(sandbox))
        return statuses, pids
    finally:
        sandbox.close()


def test_replacement_keeps_succeeding(replaced):
    """Executions succeed before, across and after the template's replacement."""
    statuses, _ = replaced
    assert ["succeeded"] * 7 == statuses


def test_replacement_every_3_forks(replaced):
    """A new template serves executions 4 to 6 and another the 7th."""
    _, pids = replaced
    assert [pids[0]] * 3 + [pids[3]] * 3 + [pids[6]] == pids
    assert 3 == len(set(pids))


def test_retired_template_exits(replaced):
    """A replaced template process exits."""
    _, pids = replaced
    assert wait_for(lambda: not process_alive(pids[0]))


def test_dead_template_replaced(runner_for, tmp_path):
    """When the template process dies, the next execution starts a new one and succeeds."""
    import signal

    sandbox = start_sandbox(tmp_path / "dies")
    try:
        runner = runner_for(sandbox, CODE)
        first = runner.run("whoami")
        old = template_pid(sandbox)
        os.kill(old, signal.SIGKILL)  # the template this test started
        wait_for(lambda: sandbox._process is not None and sandbox._process.poll() is not None)
        second = runner.run("whoami")
        assert "succeeded" == first.status
        assert "succeeded" == second.status
        assert old != template_pid(sandbox)
    finally:
        sandbox.close()
