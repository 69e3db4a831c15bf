"""Operations belong to an endpoint generation; accelerators and API key versions.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

* ``operations.generation``: the endpoint generation an operation was queued
  for. Existing operations are given their endpoint's current generation, the
  best that can be known (0.1.0 kept no history of earlier generations).
* ``endpoints.accelerators``: the devices an endpoint runs, for quotas
  (unknown, NULL, for existing endpoints until their next ``up``).
* ``endpoints.api_key_version``: bumped on each API key rotation.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("operations") as batch:
        batch.add_column(sa.Column("generation", sa.Integer, nullable=False, server_default="1"))
    op.execute(
        "UPDATE operations SET generation = (SELECT e.generation FROM endpoints e "
        "WHERE e.name = operations.endpoint) "
        "WHERE EXISTS (SELECT 1 FROM endpoints e WHERE e.name = operations.endpoint)"
    )
    with op.batch_alter_table("endpoints") as batch:
        batch.add_column(sa.Column("accelerators", sa.Integer))
        batch.add_column(
            sa.Column("api_key_version", sa.Integer, nullable=False, server_default="1")
        )


def downgrade() -> None:
    with op.batch_alter_table("endpoints") as batch:
        batch.drop_column("api_key_version")
        batch.drop_column("accelerators")
    with op.batch_alter_table("operations") as batch:
        batch.drop_column("generation")
