"""The schema llm-endpoints 0.1.0 created (before migrations existed).

Revision ID: 0001
Revises:
Create Date: 2026-12-01
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
        "endpoints",
        sa.Column("name", sa.String(40), primary_key=True),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("url", sa.String(512)),
        sa.Column("model", sa.String(200)),
        sa.Column("instance_type", sa.String(64)),
        sa.Column("cost_per_hour", sa.Float),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Column("expires_at", sa.DateTime),
        sa.Column("last_operation_id", sa.String(36)),
        sa.Column("lock_op_id", sa.String(36)),
        sa.Column("error", sa.Text),
        sa.Column("generation", sa.Integer, nullable=False),
    )
    op.create_index("ix_endpoints_owner", "endpoints", ["owner"])
    op.create_index("ix_endpoints_status", "endpoints", ["status"])
    op.create_index("ix_endpoints_expires_at", "endpoints", ["expires_at"])
    op.create_table(
        "operations",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(36), nullable=False, unique=True),
        sa.Column("endpoint", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("requested_by", sa.String(128), nullable=False),
        sa.Column("idempotency_key", sa.String(200)),
        sa.Column("request_hash", sa.String(64)),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("claimed_at", sa.DateTime),
        sa.Column("started_at", sa.DateTime),
        sa.Column("finished_at", sa.DateTime),
        sa.Column("host", sa.String(255)),
        sa.Column("boot_id", sa.String(64)),
        sa.Column("pid", sa.Integer),
        sa.Column("pid_start", sa.Integer),
        sa.Column("worker", sa.Boolean, nullable=False),
        sa.Column("cancel_reason", sa.String(16)),
        sa.Column("cancel_requested_at", sa.DateTime),
        sa.Column("error", sa.Text),
        sa.Column("log_lines", sa.Integer, nullable=False),
        sa.Column("log_bytes", sa.Integer, nullable=False),
        sa.Column("log_truncated", sa.Boolean, nullable=False),
        sa.UniqueConstraint("requested_by", "idempotency_key", name="uq_operation_idempotency"),
    )
    op.create_index("ix_operations_endpoint", "operations", ["endpoint"])
    op.create_index("ix_operations_status", "operations", ["status"])
    op.create_index(
        "ix_operations_endpoint_status_seq", "operations", ["endpoint", "status", "seq"]
    )
    op.create_table(
        "operation_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("op_id", sa.String(36), nullable=False),
        sa.Column("ts", sa.DateTime, nullable=False),
        sa.Column("line", sa.Text, nullable=False),
    )
    op.create_index("ix_operation_log_op_id", "operation_log", ["op_id"])


def downgrade() -> None:
    op.drop_table("operation_log")
    op.drop_table("operations")
    op.drop_table("endpoints")
