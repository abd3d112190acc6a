"""Settings of a Splice process, read from ``SPLICE_*`` environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from splice.errors import ConfigError


def default_data_dir(environ: Mapping[str, str]) -> Path:
    """``$XDG_DATA_HOME/splice``, which is ``~/.local/share/splice`` unless XDG says otherwise."""
    base = environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "splice"


@dataclass(frozen=True)
class Settings:
    """Every setting, its environment variable and default (see docs/settings.md)."""

    data_dir: Path
    database_url: str  # SPLICE_DATABASE_URL; SQLite under the data directory by default
    blob_dir: Path  # SPLICE_BLOB_DIR; DATA_DIR/blobs by default
    scratch_dir: Path  # SPLICE_SCRATCH_DIR; DATA_DIR/scratch by default
    spill_threshold: int = 256 * 1024  # SPLICE_SPILL_THRESHOLD, bytes
    execution_timeout: float = 3600.0  # SPLICE_EXECUTION_TIMEOUT, seconds
    log_limit: int = 10 * 1024 * 1024  # SPLICE_LOG_LIMIT, bytes of log text per execution

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        data_dir = Path(env.get("SPLICE_DATA_DIR") or default_data_dir(env)).expanduser()
        return cls(
            data_dir=data_dir,
            database_url=env.get("SPLICE_DATABASE_URL") or f"sqlite:///{data_dir / 'splice.db'}",
            blob_dir=Path(env.get("SPLICE_BLOB_DIR") or data_dir / "blobs").expanduser(),
            scratch_dir=Path(env.get("SPLICE_SCRATCH_DIR") or data_dir / "scratch").expanduser(),
            spill_threshold=_integer(env, "SPLICE_SPILL_THRESHOLD", 256 * 1024, minimum=1024),
            execution_timeout=_seconds(env, "SPLICE_EXECUTION_TIMEOUT", 3600.0),
            log_limit=_integer(env, "SPLICE_LOG_LIMIT", 10 * 1024 * 1024, minimum=1024),
        )


def _integer(env: Mapping[str, str], name: str, default: int, *, minimum: int) -> int:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(
            f"{raw!r} is not a whole number of bytes",
            variable=name,
            source="environment",
            fix=f"set it to at least {minimum}",
        ) from None
    if value < minimum:
        raise ConfigError(
            f"{value} is below the minimum of {minimum}",
            variable=name,
            source="environment",
            fix=f"set it to at least {minimum}",
        )
    return value


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(
            f"{raw!r} is not a number of seconds",
            variable=name,
            source="environment",
            fix="set it to a number such as 900",
        ) from None
    if value <= 0:
        raise ConfigError(
            f"{value} must be positive",
            variable=name,
            source="environment",
            fix="set it to a number of seconds such as 900",
        )
    return value
