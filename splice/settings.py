"""Settings of a Splice process, read from ``SPLICE_*`` environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from splice.errors import SettingError


def default_data_dir(environ: Mapping[str, str]) -> Path:
    """``$XDG_DATA_HOME/splice``, which is ``~/.local/share/splice`` unless XDG_DATA_HOME is set."""
    base = environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "splice"


MIB = 1024 * 1024


@dataclass(frozen=True)
class SandboxSettings:
    """Limits and options of the sandbox (see docs/sandbox.md)."""

    cpu_seconds: int | None = None  # SPLICE_SANDBOX_CPU_SECONDS; none: the wall clock bounds it
    memory: int = 1024 * MIB  # SPLICE_SANDBOX_MEMORY, bytes
    processes: int = 64  # SPLICE_SANDBOX_PROCESSES, processes and threads
    open_files: int = 256  # SPLICE_SANDBOX_OPEN_FILES
    file_size: int = 1024 * MIB  # SPLICE_SANDBOX_FILE_SIZE, bytes of one written file
    scratch_size: int = 2048 * MIB  # SPLICE_SANDBOX_SCRATCH_SIZE, bytes of all scratch files
    uid: int = 65534  # SPLICE_SANDBOX_UID: the unprivileged user customer code runs as
    max_forks: int = 10_000  # SPLICE_SANDBOX_MAX_FORKS, before the template is replaced
    require_isolation: bool = False  # SPLICE_SANDBOX_REQUIRE_ISOLATION
    disable: tuple[str, ...] = ()  # SPLICE_SANDBOX_DISABLE: protections not to apply

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SandboxSettings:
        cpu = env.get("SPLICE_SANDBOX_CPU_SECONDS")
        return cls(
            cpu_seconds=_integer(env, "SPLICE_SANDBOX_CPU_SECONDS", 0, minimum=1) if cpu else None,
            memory=_integer(env, "SPLICE_SANDBOX_MEMORY", 1024 * MIB, minimum=32 * MIB),
            processes=_integer(env, "SPLICE_SANDBOX_PROCESSES", 64, minimum=4),
            open_files=_integer(env, "SPLICE_SANDBOX_OPEN_FILES", 256, minimum=32),
            file_size=_integer(env, "SPLICE_SANDBOX_FILE_SIZE", 1024 * MIB, minimum=MIB),
            scratch_size=_integer(env, "SPLICE_SANDBOX_SCRATCH_SIZE", 2048 * MIB, minimum=MIB),
            uid=_integer(env, "SPLICE_SANDBOX_UID", 65534, minimum=1),
            max_forks=_integer(env, "SPLICE_SANDBOX_MAX_FORKS", 10_000, minimum=1),
            require_isolation=_boolean(env, "SPLICE_SANDBOX_REQUIRE_ISOLATION"),
            disable=_protections(env, "SPLICE_SANDBOX_DISABLE"),
        )


GIB = 1024 * MIB
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
DAY = 86_400.0


@dataclass(frozen=True)
class ServiceSettings:
    """Settings of the service roles: API, webhooks, workers and scheduler (docs/settings.md)."""

    host: str = "127.0.0.1"  # SPLICE_HOST: the address `splice serve` and `splice api` listen on
    port: int = 8000  # SPLICE_PORT
    public_url: str = ""  # SPLICE_PUBLIC_URL: the base of webhook URLs; the listen address
    queue_url: str | None = None  # SPLICE_QUEUE_URL: redis://...; the database queue if unset
    blob_url: str | None = None  # SPLICE_BLOB_URL: s3://bucket/prefix; the blob folder if unset
    master_key: str | None = None  # SPLICE_MASTER_KEY; DATA_DIR/master.key when unset
    max_body: int = GIB  # SPLICE_WEBHOOK_MAX_BODY, bytes
    sync_timeout: float = 30.0  # SPLICE_WEBHOOK_SYNC_TIMEOUT, seconds
    delivery_window: float = 7 * DAY  # SPLICE_WEBHOOK_DELIVERY_WINDOW, seconds
    worker_concurrency: int = 8  # SPLICE_WORKER_CONCURRENCY: executions a worker runs at once
    lease: float = 30.0  # SPLICE_LEASE, seconds a worker keeps an execution without renewing
    drain_timeout: float = 60.0  # SPLICE_DRAIN_TIMEOUT, seconds a worker drains on SIGTERM
    schedule_interval: float = 1.0  # SPLICE_SCHEDULE_INTERVAL, seconds between due checks
    retention: float = 30 * DAY  # SPLICE_RETENTION_DAYS (0 keeps executions for ever)
    requeue_after: float = 600.0  # SPLICE_REQUEUE_AFTER: seconds before recovery requeues

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ServiceSettings:
        host = env.get("SPLICE_HOST") or "127.0.0.1"
        port = _integer(env, "SPLICE_PORT", 8000, minimum=1)
        if port > 65535:
            raise SettingError(
                f"{port} is not a port number", setting="SPLICE_PORT", fix="use 1 to 65535"
            )
        from splice.blobs.url import parse_blob_url

        queue_url = env.get("SPLICE_QUEUE_URL") or None
        if queue_url is not None and not queue_url.startswith(REDIS_SCHEMES):
            scheme = queue_url.partition("://")[0] if "://" in queue_url else queue_url[:20]
            raise SettingError(
                f"the queue URL's scheme {scheme!r} is not one of Redis's",
                setting="SPLICE_QUEUE_URL",
                fix="give a Redis URL such as redis://127.0.0.1:6379/0 (rediss:// for TLS, "
                "unix:///path/to/redis.sock), or unset it to use the database as the queue",
            )
        blob_url = env.get("SPLICE_BLOB_URL") or None
        parse_blob_url(blob_url)  # raises SettingError for a value that names no store
        lease = _seconds(env, "SPLICE_LEASE", 30.0)
        retention_days = _seconds(env, "SPLICE_RETENTION_DAYS", 30.0, allow_zero=True)
        return cls(
            host=host,
            port=port,
            public_url=(env.get("SPLICE_PUBLIC_URL") or "").rstrip("/"),
            queue_url=queue_url,
            blob_url=blob_url,
            master_key=env.get("SPLICE_MASTER_KEY") or None,
            max_body=_integer(env, "SPLICE_WEBHOOK_MAX_BODY", GIB, minimum=1024),
            sync_timeout=_seconds(env, "SPLICE_WEBHOOK_SYNC_TIMEOUT", 30.0),
            delivery_window=_seconds(env, "SPLICE_WEBHOOK_DELIVERY_WINDOW", 7 * DAY),
            worker_concurrency=_integer(env, "SPLICE_WORKER_CONCURRENCY", 8, minimum=1),
            lease=lease,
            drain_timeout=_seconds(env, "SPLICE_DRAIN_TIMEOUT", 60.0),
            schedule_interval=_seconds(env, "SPLICE_SCHEDULE_INTERVAL", 1.0),
            retention=retention_days * DAY,
            requeue_after=_seconds(env, "SPLICE_REQUEUE_AFTER", 600.0),
        )

    def base_url(self) -> str:
        """Return the base of webhook URLs: SPLICE_PUBLIC_URL, or the address the API listens on."""
        if self.public_url:
            return self.public_url
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


@dataclass(frozen=True)
class Settings:
    """Every setting, its environment variable and default (see docs/settings.md)."""

    data_dir: Path
    database_url: str  # SPLICE_DATABASE_URL; SQLite under the data directory by default
    blob_dir: Path  # SPLICE_BLOB_DIR; DATA_DIR/blobs by default
    scratch_dir: Path  # SPLICE_SCRATCH_DIR; DATA_DIR/scratch by default
    packages_dir: Path  # SPLICE_PACKAGES_DIR; DATA_DIR/packages by default
    spill_threshold: int = 256 * 1024  # SPLICE_SPILL_THRESHOLD, bytes
    execution_timeout: float = 3600.0  # SPLICE_EXECUTION_TIMEOUT, seconds
    log_limit: int = 10 * 1024 * 1024  # SPLICE_LOG_LIMIT, bytes of log text per execution
    pip_args: str = ""  # SPLICE_PIP_ARGS: extra pip options for installing requirements
    sandbox: SandboxSettings = field(default_factory=lambda: SandboxSettings())
    service: ServiceSettings = field(default_factory=lambda: ServiceSettings())

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
            packages_dir=Path(env.get("SPLICE_PACKAGES_DIR") or data_dir / "packages"),
            pip_args=env.get("SPLICE_PIP_ARGS", ""),
            sandbox=SandboxSettings.from_env(env),
            service=ServiceSettings.from_env(env),
        )


def _integer(env: Mapping[str, str], name: str, default: int, *, minimum: int) -> int:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingError(
            f"{raw!r} is not a whole number",
            setting=name,
            fix=f"set it to at least {minimum}",
        ) from None
    if value < minimum:
        raise SettingError(
            f"{value} is below the minimum of {minimum}",
            setting=name,
            fix=f"set it to at least {minimum}",
        )
    return value


def _seconds(
    env: Mapping[str, str], name: str, default: float, *, allow_zero: bool = False
) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingError(
            f"{raw!r} is not a number of seconds",
            setting=name,
            fix="set it to a number such as 900",
        ) from None
    if value < 0 or (value == 0 and not allow_zero):
        raise SettingError(
            f"{value} must be positive",
            setting=name,
            fix="set it to a number of seconds such as 900",
        )
    return value


def _boolean(env: Mapping[str, str], name: str) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise SettingError(
        f"{raw!r} is not a boolean",
        setting=name,
        fix="set it to true or false",
    )


def _protections(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    from splice.sandbox.confinement import PROTECTIONS

    names = tuple(part.strip() for part in env.get(name, "").split(",") if part.strip())
    for protection in names:
        if protection not in PROTECTIONS:
            raise SettingError(
                f"{protection!r} is not a sandbox protection",
                setting=name,
                fix=f"use names from: {', '.join(PROTECTIONS)}",
            )
    return names
