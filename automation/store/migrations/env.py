"""Alembic environment: runs on the connection the store hands over (``db.migrate``)."""

from __future__ import annotations

from alembic import context

from automation.store.records import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    # SQLite alters tables by copying them; Alembic's batch mode does that.
    render_as_batch=True,
    transaction_per_migration=False,
)
with context.begin_transaction():
    context.run_migrations()
