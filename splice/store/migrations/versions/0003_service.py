"""Create customers, instances, webhook endpoints and deliveries, schedules and slots.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("executions") as batch:
        batch.add_column(sa.Column("instance_id", sa.String(36)))
        batch.add_column(sa.Column("customer_id", sa.String(36)))
        batch.add_column(sa.Column("trigger", sa.LargeBinary()))
        batch.add_column(sa.Column("trigger_blob", sa.String(300)))
        batch.add_column(sa.Column("worker", sa.String(200)))
        batch.add_column(sa.Column("lease_until", sa.DateTime()))
        batch.add_column(
            sa.Column("resumes", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )
        batch.add_column(
            sa.Column("cancel_requested", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.create_index("ix_executions_instance_created", "executions", ["instance_id", "created_at"])
    op.create_index("ix_executions_ended", "executions", ["ended_at"])
    op.create_table(
        "customers",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("name", name="uq_customers_name"),
    )
    op.create_table(
        "instances",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column(
            "customer_id",
            sa.String(36),
            sa.ForeignKey("customers.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("integration_key", sa.String(200), nullable=False),
        sa.Column("integration_name", sa.String(200), nullable=False),
        sa.Column("integration_version", sa.String(100)),
        sa.Column("definition", sa.Text(), nullable=False),
        sa.Column("sources", sa.Text(), nullable=False),
        sa.Column("definition_path", sa.Text()),
        sa.Column("config", sa.LargeBinary(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint(
            "customer_id", "integration_key", name="uq_instances_customer_integration"
        ),
    )
    op.create_table(
        "webhook_endpoints",
        sa.Column("token", sa.String(64), primary_key=True),
        sa.Column(
            "instance_id",
            sa.String(36),
            sa.ForeignKey("instances.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("flow", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("instance_id", "flow", name="uq_webhook_endpoints_instance_flow"),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("instance_id", sa.String(36), primary_key=True),
        sa.Column("flow", sa.String(200), primary_key=True),
        sa.Column("delivery_id", sa.String(200), primary_key=True),
        sa.Column("execution_id", sa.String(36), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_webhook_deliveries_received", "webhook_deliveries", ["received_at"])
    op.create_table(
        "schedule_states",
        sa.Column(
            "instance_id",
            sa.String(36),
            sa.ForeignKey("instances.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("flow", sa.String(200), primary_key=True),
        sa.Column("cron", sa.String(200), nullable=False),
        sa.Column("timezone", sa.String(100), nullable=False),
        sa.Column("catch_up", sa.String(10), nullable=False),
        sa.Column("last_fired", sa.DateTime()),
    )
    op.create_table(
        "flow_slots",
        sa.Column("instance_id", sa.String(36), primary_key=True),
        sa.Column("flow", sa.String(200), primary_key=True),
        sa.Column("slot", sa.Integer(), primary_key=True),
        sa.Column("execution_id", sa.String(36)),
        sa.Column("lease_until", sa.DateTime()),
    )


def downgrade() -> None:
    for table in (
        "flow_slots",
        "schedule_states",
        "webhook_deliveries",
        "webhook_endpoints",
        "instances",
        "customers",
    ):
        op.drop_table(table)
    op.drop_index("ix_executions_ended", "executions")
    op.drop_index("ix_executions_instance_created", "executions")
    with op.batch_alter_table("executions") as batch:
        for column in (
            "cancel_requested",
            "resumes",
            "lease_until",
            "worker",
            "trigger_blob",
            "trigger",
            "customer_id",
            "instance_id",
        ):
            batch.drop_column(column)
