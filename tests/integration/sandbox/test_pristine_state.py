"""Customer code that changes interpreter state or leaves files; the next execution is clean."""

from __future__ import annotations

from pathlib import Path

import pytest

from splice.sandbox.forkserver import ForkServerSandbox

from .conftest import CodeRunner

CODE = """\
import builtins
import json
import os
import string
import sys
import types

import httpx


def poison(context):
    json.loads = None
    builtins.print = lambda *args, **kwargs: None
    httpx.Client.send = lambda self, request, **kwargs: "intercepted"
    os.environ["SPLICE_POISON"] = "set by the previous execution"
    sys.modules["poison_module"] = types.ModuleType("poison_module")
    string.ascii_lowercase = "poisoned"
    with open("/tmp/leftover.txt", "w") as file:
        file.write("left in /tmp")
    with open("leftover.txt", "w") as file:
        file.write("left in the scratch directory")
    return os.getcwd()


def inspect(context, *, previous_scratch):
    return {
        "json_loads": json.loads('{"a": 1}'),
        "print": builtins.print is print and type(print).__name__,
        "send": httpx.Client.send.__qualname__,
        "environment": "SPLICE_POISON" in os.environ,
        "module": "poison_module" in sys.modules,
        "global": string.ascii_lowercase,
        "tmp_file": os.path.exists("/tmp/leftover.txt"),
        "previous_scratch": os.path.exists(previous_scratch),
        "scratch_file": os.path.exists("leftover.txt"),
        "scratch": os.getcwd(),
    }
"""


@pytest.fixture
def poisoned(runner_for, sandbox: ForkServerSandbox) -> tuple[CodeRunner, dict]:
    """Run the poisoning execution, then the inspecting one; return the runner and findings."""
    runner = runner_for(sandbox, CODE)
    first = runner.run("poison")
    assert "succeeded" == first.status
    second = runner.run("inspect", previous_scratch=first.result)
    assert "succeeded" == second.status
    return runner, {"first_scratch": first.result, **second.result}


def test_json_loads_restored(poisoned):
    """json.loads replaced by one execution works again in the next."""
    _, found = poisoned
    assert {"a": 1} == found["json_loads"]


def test_print_restored(poisoned):
    """builtins.print replaced by one execution is the built-in again in the next."""
    _, found = poisoned
    assert "builtin_function_or_method" == found["print"]


def test_httpx_send_restored(poisoned):
    """A patched httpx.Client.send does not reach the next execution."""
    _, found = poisoned
    assert "Client.send" == found["send"]


def test_environment_restored(poisoned):
    """A variable added to os.environ is gone in the next execution."""
    _, found = poisoned
    assert found["environment"] is False


def test_sys_modules_restored(poisoned):
    """A module added to sys.modules is gone in the next execution."""
    _, found = poisoned
    assert found["module"] is False


def test_module_global_restored(poisoned):
    """A module global changed by one execution has its original value in the next."""
    _, found = poisoned
    assert "abcdefghijklmnopqrstuvwxyz" == found["global"]


def test_tmp_file_gone(poisoned):
    """A file left in /tmp is not visible to the next execution."""
    _, found = poisoned
    assert found["tmp_file"] is False


def test_scratch_file_gone(poisoned):
    """The scratch directory of the previous execution, and its file, are gone."""
    _, found = poisoned
    assert found["previous_scratch"] is False
    assert found["scratch_file"] is False
    assert found["first_scratch"] != found["scratch"]


def test_scratch_removed_on_host(poisoned):
    """The host removes each execution's scratch directory when it ends."""
    _, found = poisoned
    assert Path(found["first_scratch"]).exists() is False


def test_worker_unaffected(poisoned):
    """The worker process's own json.loads and print are untouched."""
    import builtins
    import json

    assert {"b": 2} == json.loads('{"b": 2}')
    assert "builtin_function_or_method" == type(builtins.print).__name__
