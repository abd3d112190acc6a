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
    # Set for executions of a deployed instance (splice.service); empty for `splice run`.
    Column("instance_id", String(36)),
    Column("customer_id", String(36)),
    # What started the execution, msgpack: a trigger mapping, or a webhook request whose
    # body is inline or in the blob store (trigger_blob).
    Column("trigger", LargeBinary()),
    Column("trigger_blob", String(300)),
    # The worker running it, and the end of its lease. The worker renews the lease while it
    # runs, so another worker takes over an execution whose lease expired.
    Column("worker", String(200)),
    Column("lease_until", DateTime()),
    Column("resumes", Integer(), nullable=False, default=0),
    Column("cancel_requested", Boolean(), nullable=False, default=False),
    Index("ix_executions_status_created", "status", "created_at"),
    Index("ix_executions_integration_created", "integration_key", "created_at"),
    Index("ix_executions_instance_created", "instance_id", "created_at"),
    Index("ix_executions_ended", "ended_at"),
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

customers = Table(
    "customers",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("created_at", DateTime(), nullable=False),
    UniqueConstraint("name", name="uq_customers_name"),
)

# One integration deployed to one customer. The definition is kept whole (its model as JSON
# and the customer code files it names), so a worker on any host can run it. The config
# values are sealed with the master key because they hold secrets.
instances = Table(
    "instances",
    metadata,
    Column("id", String(36), primary_key=True),
    Column(
        "customer_id", String(36), ForeignKey("customers.id", ondelete="CASCADE"), nullable=False
    ),
    Column("integration_key", String(200), nullable=False),
    Column("integration_name", String(200), nullable=False),
    Column("integration_version", String(100)),
    Column("definition", Text(), nullable=False),
    Column("sources", Text(), nullable=False),
    Column("definition_path", Text()),
    Column("config", LargeBinary(), nullable=False),
    Column("enabled", Boolean(), nullable=False, default=True),
    Column("created_at", DateTime(), nullable=False),
    Column("updated_at", DateTime(), nullable=False),
    UniqueConstraint("customer_id", "integration_key", name="uq_instances_customer_integration"),
)

# The unguessable token in the URL of each webhook flow of each instance.
webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("token", String(64), primary_key=True),
    Column(
        "instance_id", String(36), ForeignKey("instances.id", ondelete="CASCADE"), nullable=False
    ),
    Column("flow", String(200), nullable=False),
    Column("created_at", DateTime(), nullable=False),
    UniqueConstraint("instance_id", "flow", name="uq_webhook_endpoints_instance_flow"),
)

# Delivery ids seen per webhook flow, so a repeated delivery starts nothing new.
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("instance_id", String(36), primary_key=True),
    Column("flow", String(200), primary_key=True),
    Column("delivery_id", String(200), primary_key=True),
    Column("execution_id", String(36), nullable=False),
    Column("received_at", DateTime(), nullable=False),
    Index("ix_webhook_deliveries_received", "received_at"),
)

# The schedule of each schedule flow of each instance, and the due time it last fired.
# A scheduler fires a due time by moving last_fired forward in the transaction that writes
# the execution, so several schedulers fire each due time once.
schedule_states = Table(
    "schedule_states",
    metadata,
    Column(
        "instance_id",
        String(36),
        ForeignKey("instances.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("flow", String(200), primary_key=True),
    Column("cron", String(200), nullable=False),
    Column("timezone", String(100), nullable=False),
    Column("catch_up", String(10), nullable=False),
    Column("last_fired", DateTime()),
)

# Concurrency slots of flows with a `concurrency:` limit, per instance: a slot is free when
# it holds no execution or its lease expired (the worker holding it died).
flow_slots = Table(
    "flow_slots",
    metadata,
    Column("instance_id", String(36), primary_key=True),
    Column("flow", String(200), primary_key=True),
    Column("slot", Integer(), primary_key=True),
    Column("execution_id", String(36)),
    Column("lease_until", DateTime()),
)
