"""Owner processes are identified by psutil's start time (seconds), not clock ticks.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

``operations.pid_start`` held ``/proc/<pid>/stat`` clock ticks since boot; it
now holds the start time in seconds since the epoch (``automation.procs``), a
float. Old values cannot be converted (the boot time is not recorded), so they
are cleared: an owner with no start time is judged by its pid alone.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("UPDATE operations SET pid_start = NULL")
    with op.batch_alter_table("operations") as batch:
        batch.alter_column(
            "pid_start",
            existing_type=sa.Integer,
            type_=sa.Float,
            postgresql_using="pid_start::double precision",
        )


def downgrade() -> None:
    op.execute("UPDATE operations SET pid_start = NULL")
    with op.batch_alter_table("operations") as batch:
        batch.alter_column("pid_start", existing_type=sa.Float, type_=sa.Integer)
