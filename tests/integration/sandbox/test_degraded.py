"""The sandbox with protections missing: it still runs, reports them, and can refuse."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from splice.errors import SandboxError
from splice.local import LocalRun
from splice.sandbox.forkserver import ForkServerSandbox
from splice.settings import Settings

NAMESPACES = "pid-namespace,private-root,unprivileged-user,cgroup-pids,cgroup-memory"
PROBE = """
key: probe
name: Probe
flows:
  main:
    trigger: {type: manual}
    steps:
      - id: look
        action: code.run
        inputs:
          source: |
            import os
            def run(context, *, database):
                try:
                    open(database, "rb").read(1)
                    database_readable = True
                except OSError:
                    database_readable = False
                return {"pid": os.getpid(), "uid": os.getuid(),
                        "database_readable": database_readable}
          args: {database: "{{ trigger.body }}"}
"""


def _settings(tmp_path: Path, **extra: str) -> Settings:
    return Settings.from_env({"SPLICE_DATA_DIR": str(tmp_path / "data"), **extra})


def test_degraded_run_succeeds(tmp_path: Path) -> None:
    """Without namespaces an execution still runs, and Landlock still hides the database."""
    settings = _settings(tmp_path, SPLICE_SANDBOX_DISABLE=NAMESPACES)
    definition = tmp_path / "probe.yaml"
    definition.write_text(PROBE)
    database = str(settings.data_dir / "splice.db")
    with LocalRun.open(settings) as local:
        outcome = local.run(definition, trigger={"type": "manual", "body": database})
        missing = local.sandbox.protections["missing"]
    assert "succeeded" == outcome.status
    assert 1 != outcome.result["pid"]
    assert False is outcome.result["database_readable"]
    assert "pid-namespace" in missing
    assert "landlock" not in missing


def test_require_isolation_refuses(tmp_path: Path) -> None:
    """With SPLICE_SANDBOX_REQUIRE_ISOLATION, a missing protection stops the sandbox."""
    settings = _settings(
        tmp_path, SPLICE_SANDBOX_DISABLE="landlock", SPLICE_SANDBOX_REQUIRE_ISOLATION="true"
    )
    sandbox = ForkServerSandbox(settings)
    try:
        with pytest.raises(SandboxError, match="landlock"):
            sandbox.wait_ready()
    finally:
        sandbox.close()


def test_doctor_lists_missing(tmp_path: Path) -> None:
    """`splice doctor` names each missing protection and exits 1."""
    environment = {
        **os.environ,
        "SPLICE_DATA_DIR": str(tmp_path / "data"),
        "SPLICE_SANDBOX_DISABLE": "seccomp",
        "COLUMNS": "200",
    }
    splice = str(Path(sys.executable).parent / "splice")
    completed = subprocess.run(
        [splice, "doctor"], env=environment, capture_output=True, text=True, timeout=120
    )
    assert 1 == completed.returncode
    assert "by SPLICE_SANDBOX_DISABLE" in completed.stdout
    assert json.dumps("seccomp")[1:-1] in completed.stdout


def test_disable_rejects_unknown_name(tmp_path: Path) -> None:
    """An unknown name in SPLICE_SANDBOX_DISABLE is a config error naming the variable."""
    from splice.errors import ConfigError

    with pytest.raises(ConfigError, match="SPLICE_SANDBOX_DISABLE"):
        _settings(tmp_path, SPLICE_SANDBOX_DISABLE="seccmp")


GRANT = """
key: granted
name: Granted
config:
  folder: {type: string, required: true, grant: read}
flows:
  main:
    trigger: {type: manual}
    steps:
      - id: list
        action: files.list
        inputs: {path: "{{ config.folder }}"}
"""


def test_grant_of_data_dir_rejected(tmp_path: Path) -> None:
    """A grant that contains Splice's data directory is a config error, and nothing runs."""
    from splice.errors import ConfigError

    settings = _settings(tmp_path)
    definition = tmp_path / "granted.yaml"
    definition.write_text(GRANT)
    with LocalRun.open(settings) as local, pytest.raises(ConfigError) as error:
        local.run(definition, assignments=[f"folder={tmp_path}"])
    assert "overlaps Splice's own folder" in str(error.value)
    assert "folder" == error.value.variable
