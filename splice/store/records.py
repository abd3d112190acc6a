"""The record store: executions, their step runs and logs, behind one small API."""

from __future__ import annotations

import contextlib
import datetime
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Table,
    create_engine,
    event,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from splice.errors import StoreError
from splice.store import tables

logger = logging.getLogger(__name__)

HEAD_REVISION = "0003"  # the newest migration under migrations/versions
MIGRATIONS = Path(__file__).parent / "migrations"


_EPOCH = datetime.datetime(1970, 1, 1)

# Column order of the tuples that write_batch takes for step runs and logs.
STEP_RUN_COLUMNS = tuple(c.name for c in tables.step_runs.columns if c.name != "id")
LOG_COLUMNS = tuple(c.name for c in tables.logs.columns if c.name != "id")


def utc(timestamp: float) -> datetime.datetime:
    """Convert seconds since the epoch to the naive UTC datetime the tables store."""
    return _EPOCH + datetime.timedelta(microseconds=round(timestamp * 1_000_000))


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class ExecutionRecord:
    id: str
    integration_key: str
    integration_version: str | None
    flow: str
    trigger_type: str
    status: str
    created_at: datetime.datetime
    started_at: datetime.datetime | None
    ended_at: datetime.datetime | None
    result: bytes | None
    result_encoding: str | None
    result_size: int | None
    result_blob: str | None
    error_type: str | None
    error_message: str | None
    failed_step: str | None
    step_runs: int
    continued_failures: int
    definition_path: str | None
    instance_id: str | None = None
    customer_id: str | None = None
    trigger: bytes | None = None
    trigger_blob: str | None = None
    worker: str | None = None
    lease_until: datetime.datetime | None = None
    resumes: int = 0
    cancel_requested: bool = False

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return (self.ended_at - self.started_at).total_seconds()


@dataclass(frozen=True)
class StepRunRecord:
    id: int
    execution_id: str
    sequence: int
    path: str
    step_id: str
    kind: str
    action: str | None
    status: str
    attempt: int
    started_at: datetime.datetime
    ended_at: datetime.datetime
    input_size: int
    output_size: int | None
    output: bytes | None
    output_encoding: str | None
    output_blob: str | None
    error_type: str | None
    error_message: str | None
    error_traceback: str | None
    continued: bool
    item: bytes | None
    item_encoding: str | None
    item_blob: str | None

    @property
    def duration(self) -> float:
        return (self.ended_at - self.started_at).total_seconds()


class RecordStore:
    """Reads and writes records in one database, SQLite or PostgreSQL, through SQLAlchemy."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = _create_engine(url)
        self._sqlite = self.engine.dialect.name == "sqlite"
        # SQLite has one writer at a time, and a writer that finds the lock taken sleeps in
        # SQLite's busy handler for 1 ms, then longer. Threads of this process take turns
        # on this lock first, so that only other processes ever meet the busy handler.
        self._write_lock = threading.RLock() if self._sqlite else None
        self._paramstyle = self.engine.dialect.paramstyle
        self._insert_statements: dict[str, str] = {}
        # The second and its text, as one tuple so that threads never see half an update.
        self._cached: tuple[int, str] = (-1, "")

    @classmethod
    def open(cls, url: str) -> RecordStore:
        """Connect and bring the schema up to date."""
        store = cls(url)
        store.migrate()
        return store

    @contextlib.contextmanager
    def begin(self) -> Iterator[Connection]:
        """Open a write transaction: ``engine.begin()``, one thread at a time on SQLite."""
        if self._write_lock is None:
            with self.engine.begin() as connection:
                yield connection
            return
        with self._write_lock, self.engine.begin() as connection:
            yield connection

    def close(self) -> None:
        self.engine.dispose()

    def database_file(self) -> Path | None:
        """Return the SQLite database file, or None for a database on a server."""
        parsed = make_url(self.url)
        if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
            return None
        return Path(parsed.database)

    # -- schema ---------------------------------------------------------------------------

    def migrate(self) -> None:
        """Run Alembic's upgrade to head unless the database is already there."""
        try:
            if self._revision() == HEAD_REVISION:
                return
            from alembic import command
            from alembic.config import Config

            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS))
            with self.begin() as connection:
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
        except SQLAlchemyError as error:
            raise StoreError(
                f"could not migrate the records database {_safe(self.url)}: {error}; "
                "check SPLICE_DATABASE_URL and that the database is reachable"
            ) from error

    def _revision(self) -> str | None:
        with self.engine.connect() as connection:
            try:
                row = connection.execute(text("SELECT version_num FROM alembic_version")).first()
            except SQLAlchemyError:
                connection.rollback()
                return None
        return row[0] if row else None

    # -- writing --------------------------------------------------------------------------

    def create_execution(self, values: Mapping[str, Any]) -> None:
        row = {"step_runs": 0, "continued_failures": 0, **values}
        self._write(lambda c: c.execute(insert(tables.executions), [row]))

    def timestamp(self, seconds: float) -> Any:
        """Convert seconds since the epoch to what this database's driver takes for a time."""
        if not self._sqlite:
            return utc(seconds)
        # The same text as SQLAlchemy's SQLite DateTime type, built from a cached prefix
        # because most rows of a batch fall within the same second.
        whole, micros = divmod(round(seconds * 1_000_000), 1_000_000)
        cached = self._cached
        if whole != cached[0]:
            cached = (whole, utc(whole).strftime("%Y-%m-%d %H:%M:%S."))
            self._cached = cached
        return f"{cached[1]}{micros:06d}"

    def write_batch(
        self,
        step_runs: Sequence[Sequence[Any] | Mapping[str, Any]],
        logs: Sequence[Sequence[Any] | Mapping[str, Any]],
        execution: tuple[str, Mapping[str, Any]] | None = None,
    ) -> None:
        """Insert step runs and logs, and update an execution, in one transaction.

        Rows are tuples in the order of STEP_RUN_COLUMNS and LOG_COLUMNS, with times from
        :meth:`timestamp`, or mappings by column name.
        """

        def write(connection: Any) -> None:
            if step_runs:
                self._insert_many(connection, tables.step_runs, step_runs)
            if logs:
                self._insert_many(connection, tables.logs, logs)
            if execution is not None:
                execution_id, values = execution
                connection.execute(
                    update(tables.executions)
                    .where(tables.executions.c.id == execution_id)
                    .values(**values)
                )

        self._write(write)

    def _insert_many(
        self, connection: Any, table: Table, rows: Sequence[Sequence[Any] | Mapping[str, Any]]
    ) -> None:
        """Insert rows through the driver's executemany.

        Skipping SQLAlchemy's per-row parameter processing makes a batch of step runs several
        times cheaper to write. Values are converted here the way its column types would.
        """
        columns = [column.name for column in table.columns if column.name != "id"]
        statement = self._insert_statements.get(table.name)
        if statement is None:
            marks = ", ".join(_placeholder(self._paramstyle, name) for name in columns)
            statement = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({marks})"
            self._insert_statements[table.name] = statement
        parameters = [
            tuple(
                _sqlite_value(row.get(name)) if self._sqlite else row.get(name) for name in columns
            )
            if isinstance(row, Mapping)
            else row
            for row in rows
        ]
        connection.exec_driver_sql(statement, parameters)

    def _write(self, action: Any) -> None:
        try:
            with self.begin() as connection:
                action(connection)
        except SQLAlchemyError as error:
            raise StoreError(f"could not write records to {_safe(self.url)}: {error}") from error

    # -- reading --------------------------------------------------------------------------

    def get_execution(self, execution_id: str) -> ExecutionRecord | None:
        """Find an execution by its id or by a unique prefix of at least 6 characters."""
        column = tables.executions.c.id
        with self.engine.connect() as connection:
            row = connection.execute(
                select(tables.executions).where(column == execution_id)
            ).first()
            if row is None and len(execution_id) >= 6:
                rows = connection.execute(
                    select(tables.executions).where(column.startswith(execution_id)).limit(2)
                ).all()
                row = rows[0] if len(rows) == 1 else None
        return ExecutionRecord(**row._mapping) if row else None

    def list_executions(
        self,
        *,
        status: str | None = None,
        integration: str | None = None,
        flow: str | None = None,
        limit: int = 20,
    ) -> list[ExecutionRecord]:
        query = select(tables.executions).order_by(tables.executions.c.created_at.desc())
        if status:
            query = query.where(tables.executions.c.status == status)
        if integration:
            query = query.where(tables.executions.c.integration_key == integration)
        if flow:
            query = query.where(tables.executions.c.flow == flow)
        with self.engine.connect() as connection:
            rows = connection.execute(query.limit(limit)).all()
        return [ExecutionRecord(**row._mapping) for row in rows]

    def step_runs(self, execution_id: str) -> list[StepRunRecord]:
        query = (
            select(tables.step_runs)
            .where(tables.step_runs.c.execution_id == execution_id)
            .order_by(tables.step_runs.c.sequence)
        )
        with self.engine.connect() as connection:
            return [StepRunRecord(**row._mapping) for row in connection.execute(query)]

    def logs(self, execution_id: str) -> list[dict[str, Any]]:
        query = (
            select(tables.logs)
            .where(tables.logs.c.execution_id == execution_id)
            .order_by(tables.logs.c.sequence)
        )
        with self.engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(query)]

    def count_step_runs(self, execution_id: str) -> int:
        query = select(func.count()).where(tables.step_runs.c.execution_id == execution_id)
        with self.engine.connect() as connection:
            return int(connection.execute(query).scalar_one())


def _placeholder(paramstyle: str, name: str) -> str:
    if paramstyle == "qmark":
        return "?"
    if paramstyle in ("format", "pyformat"):
        return "%s"
    if paramstyle == "numeric_dollar":
        raise StoreError("the numeric_dollar parameter style is not supported")
    return f":{name}"


def _sqlite_value(value: Any) -> Any:
    """Store a datetime the way SQLAlchemy's SQLite DateTime type stores it."""
    if type(value) is datetime.datetime:
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


def _create_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        url = str(parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False))
    return create_engine(url, pool_pre_ping=True)


def _sqlite_pragmas(connection: Any, record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _safe(url: str) -> str:
    """Render a database URL without its password."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<invalid database URL>"
