"""Create queue entries, the database-backed queue and outbox.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-11
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "queue_entries",
        # SQLite only auto-increments an INTEGER PRIMARY KEY, which is 64-bit there anyway.
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("execution_id", sa.String(36), nullable=False),
        sa.Column("enqueued_at", sa.DateTime(), nullable=False),
        sa.Column("available_at", sa.DateTime(), nullable=False),
        sa.Column("consumer", sa.String(200)),
        sa.Column("lease_until", sa.DateTime()),
        sa.Column("deliveries", sa.Integer(), nullable=False),
        sa.UniqueConstraint("execution_id", name="uq_queue_entries_execution_id"),
    )
    op.create_index("ix_queue_entries_claim", "queue_entries", ["available_at", "id"])


def downgrade() -> None:
    op.drop_table("queue_entries")
