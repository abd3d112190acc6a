"""Table definitions; the Alembic migrations under ``migrations/`` create exactly these."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

executions = Table(
    "executions",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("integration_key", String(200), nullable=False),
    Column("integration_version", String(100)),
    Column("flow", String(200), nullable=False),
    Column("trigger_type", String(20), nullable=False),
    Column("status", String(20), nullable=False),
    Column("created_at", DateTime(), nullable=False),
    Column("started_at", DateTime()),
    Column("ended_at", DateTime()),
    Column("result", LargeBinary()),
    Column("result_encoding", String(10)),
    Column("result_size", BigInteger()),
    Column("result_blob", String(300)),
    Column("error_type", String(100)),
    Column("error_message", Text()),
    Column("failed_step", String(1000)),
    Column("step_runs", Integer(), nullable=False, default=0),
    Column("continued_failures", Integer(), nullable=False, default=0),
    Column("definition_path", Text()),
    Index("ix_executions_status_created", "status", "created_at"),
    Index("ix_executions_integration_created", "integration_key", "created_at"),
)

step_runs = Table(
    "step_runs",
    metadata,
    Column("id", Integer(), primary_key=True, autoincrement=True),
    Column(
        "execution_id", String(36), ForeignKey("executions.id", ondelete="CASCADE"), nullable=False
    ),
    Column("sequence", Integer(), nullable=False),
    Column("path", String(1000), nullable=False),
    Column("step_id", String(200), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("action", String(200)),
    Column("status", String(20), nullable=False),
    Column("attempt", Integer(), nullable=False),
    Column("started_at", DateTime(), nullable=False),
    Column("ended_at", DateTime(), nullable=False),
    Column("input_size", BigInteger(), nullable=False, default=0),
    Column("output_size", BigInteger()),
    Column("output", LargeBinary()),
    Column("output_encoding", String(10)),
    Column("output_blob", String(300)),
    Column("error_type", String(100)),
    Column("error_message", Text()),
    Column("error_traceback", Text()),
    Column("continued", Boolean(), nullable=False, default=False),
    Column("item", LargeBinary()),
    Column("item_encoding", String(10)),
    Column("item_blob", String(300)),
    Index("ix_step_runs_execution_sequence", "execution_id", "sequence"),
)

logs = Table(
    "logs",
    metadata,
    Column("id", Integer(), primary_key=True, autoincrement=True),
    Column(
        "execution_id", String(36), ForeignKey("executions.id", ondelete="CASCADE"), nullable=False
    ),
    Column("sequence", Integer(), nullable=False),
    Column("step_path", String(1000)),
    Column("level", String(10), nullable=False),
    Column("time", DateTime(), nullable=False),
    Column("message", Text(), nullable=False),
    Index("ix_logs_execution_sequence", "execution_id", "sequence"),
)

# One row per queued execution, for splice.queue.database. A claim may take a row from
# available_at on. A claimed row carries its consumer and lease, and an acknowledged row is
# deleted.
queue_entries = Table(
    "queue_entries",
    metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True),
    Column("execution_id", String(36), nullable=False),
    Column("enqueued_at", DateTime(), nullable=False),
    Column("available_at", DateTime(), nullable=False),
    Column("consumer", String(200)),
    Column("lease_until", DateTime()),
    Column("deliveries", Integer(), nullable=False, default=0),
    UniqueConstraint("execution_id", name="uq_queue_entries_execution_id"),
    Index("ix_queue_entries_claim", "available_at", "id"),
)
