"""Create executions, step runs and logs.

Revision ID: 0001
Revises:
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "executions",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("integration_key", sa.String(200), nullable=False),
        sa.Column("integration_version", sa.String(100)),
        sa.Column("flow", sa.String(200), nullable=False),
        sa.Column("trigger_type", sa.String(20), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime()),
        sa.Column("ended_at", sa.DateTime()),
        sa.Column("result", sa.LargeBinary()),
        sa.Column("result_encoding", sa.String(10)),
        sa.Column("result_size", sa.BigInteger()),
        sa.Column("result_blob", sa.String(300)),
        sa.Column("error_type", sa.String(100)),
        sa.Column("error_message", sa.Text()),
        sa.Column("failed_step", sa.String(1000)),
        sa.Column("step_runs", sa.Integer(), nullable=False),
        sa.Column("continued_failures", sa.Integer(), nullable=False),
        sa.Column("definition_path", sa.Text()),
    )
    op.create_index("ix_executions_status_created", "executions", ["status", "created_at"])
    op.create_index(
        "ix_executions_integration_created", "executions", ["integration_key", "created_at"]
    )
    op.create_table(
        "step_runs",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "execution_id",
            sa.String(36),
            sa.ForeignKey("executions.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(1000), nullable=False),
        sa.Column("step_id", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("action", sa.String(200)),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("ended_at", sa.DateTime(), nullable=False),
        sa.Column("input_size", sa.BigInteger(), nullable=False),
        sa.Column("output_size", sa.BigInteger()),
        sa.Column("output", sa.LargeBinary()),
        sa.Column("output_encoding", sa.String(10)),
        sa.Column("output_blob", sa.String(300)),
        sa.Column("error_type", sa.String(100)),
        sa.Column("error_message", sa.Text()),
        sa.Column("error_traceback", sa.Text()),
        sa.Column("continued", sa.Boolean(), nullable=False),
        sa.Column("item", sa.LargeBinary()),
        sa.Column("item_encoding", sa.String(10)),
        sa.Column("item_blob", sa.String(300)),
    )
    op.create_index("ix_step_runs_execution_sequence", "step_runs", ["execution_id", "sequence"])
    op.create_table(
        "logs",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "execution_id",
            sa.String(36),
            sa.ForeignKey("executions.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("step_path", sa.String(1000)),
        sa.Column("level", sa.String(10), nullable=False),
        sa.Column("time", sa.DateTime(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
    )
    op.create_index("ix_logs_execution_sequence", "logs", ["execution_id", "sequence"])


def downgrade() -> None:
    op.drop_table("logs")
    op.drop_table("step_runs")
    op.drop_table("executions")
