"""Customer packages: the requirements of an integration, installed once into a read-only folder.

Each distinct set of requirements is installed with pip's ``--target`` into its own
folder under ``SPLICE_PACKAGES_DIR``, never into the platform's environment. Executions
of integrations with that set see the folder read-only, first on ``sys.path``.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from splice.errors import DefinitionError, Problem

logger = logging.getLogger(__name__)

INSTALL_TIMEOUT = 600.0  # seconds for one pip install
COMPLETE = ".splice-complete"


def packages_key(requirements: list[str]) -> str:
    """Name the folder of a requirement set; the Python version is part of it."""
    text = "\n".join(sorted(requirements)) + f"\npython {sys.version_info[:2]} {sys.platform}"
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def ensure_packages(
    requirements: list[str], *, root: Path, pip_args: str = "", source: str | None = None
) -> Path | None:
    """Return the folder holding ``requirements``, installing them first if needed."""
    if not requirements:
        return None
    target = root / packages_key(requirements)
    if (target / COMPLETE).exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be installing the same set
        if not (target / COMPLETE).exists():
            _install(requirements, target, pip_args, source)
    return target


def _install(requirements: list[str], target: Path, pip_args: str, source: str | None) -> None:
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    command = [
        sys.executable, "-m", "pip", "install", "--target", str(staging), "--no-input",
        "--disable-pip-version-check", "--no-warn-script-location", *shlex.split(pip_args),
        *requirements,
    ]  # fmt: skip
    logger.info("installing customer packages: %s", ", ".join(requirements))
    try:
        completed = subprocess.run(
            command, capture_output=True, text=True, timeout=INSTALL_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        _fail(requirements, f"pip did not finish within {INSTALL_TIMEOUT:.0f} s", source)
    if completed.returncode != 0:
        detail = (completed.stderr or completed.stdout).strip().splitlines()[-5:]
        _fail(requirements, "pip failed: " + " | ".join(detail), source)
    _make_read_only(staging)
    (staging / COMPLETE).write_text(" ".join(requirements))
    os.replace(staging, target)


def _make_read_only(folder: Path) -> None:
    os.chmod(folder, 0o555)
    for path, directories, files in os.walk(folder):
        for name in files:
            os.chmod(os.path.join(path, name), 0o444)
        for name in directories:
            os.chmod(os.path.join(path, name), 0o555)


def _fail(requirements: list[str], reason: str, source: str | None) -> None:
    raise DefinitionError(
        [
            Problem(
                f"could not install the requirements {requirements}: {reason}",
                file=source,
                path="requirements",
                fix="check the package names and versions, and that the package index is "
                "reachable (extra pip options: SPLICE_PIP_ARGS)",
            )
        ]
    )
