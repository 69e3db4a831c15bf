"""Store migrations: a fresh database matches the records, an old one upgrades in place."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from automation.store import EndpointStatus, OpKind, OpStatus, Store
from automation.store.db import head_revision, migrate
from automation.store.records import metadata
from automation.store.states import (
    ENDPOINT_MOVES,
    OPERATION_MOVES,
    IllegalTransition,
    check_endpoint_move,
    check_operation_move,
)

V0_1_0 = Path(__file__).resolve().parents[1] / "data" / "store" / "v0.1.0.sql"


def _load_dump(path: Path) -> str:
    db = path.parent / "old.db"
    conn = sqlite3.connect(db)
    conn.executescript(
        "\n".join(ln for ln in V0_1_0.read_text().splitlines() if not ln.startswith("--"))
    )
    conn.close()
    return f"sqlite:///{db}"


def test_fresh_database_at_head_matches_the_records(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with store.engine.connect() as conn:
        ctx = MigrationContext.configure(conn)
        assert ctx.get_current_revision() == head_revision()
        # What Alembic would generate to make the database match the records: nothing.
        assert compare_metadata(ctx, metadata) == []


def test_a_v0_1_0_database_upgrades_in_place_and_keeps_its_records(tmp_path: Path) -> None:
    url = _load_dump(tmp_path / "old.db")
    store = Store(url)
    with store.engine.connect() as conn:
        ctx = MigrationContext.configure(conn)
        assert ctx.get_current_revision() == head_revision()
        assert compare_metadata(ctx, metadata) == []
    alpha = store.get_endpoint("alpha")
    assert alpha.owner == "alice" and alpha.status is EndpointStatus.READY
    assert alpha.url == "http://alpha.alpha.svc.cluster.local:8000/v1"
    assert alpha.spec["model"] == "llama3-8b"
    assert alpha.cost_per_hour == pytest.approx(0.805)
    assert alpha.expires_at is not None and alpha.expires_at.tzinfo is not None
    beta = store.get_endpoint("beta")
    assert beta.status is EndpointStatus.DESTROYING and beta.error == "boom"
    ops = store.list_operations()
    assert [(o.endpoint, o.kind, o.status) for o in ops] == [
        ("alpha", OpKind.UP, OpStatus.SUCCEEDED),
        ("beta", OpKind.UP, OpStatus.FAILED),
        ("beta", OpKind.DESTROY, OpStatus.QUEUED),
    ]
    assert ops[0].idempotency_key == "k1" and ops[0].log_lines == 2
    assert [ln.line for ln in store.logs(ops[0].id)] == ["line one", "line two"]
    # Start times of the old format cannot be compared; they were cleared.
    assert all(o.pid_start is None for o in ops)
    # The upgraded store works: the queued destroy is claimable, a new op can be queued.
    assert [o.id for o in store.claimable()] == [ops[2].id]
    op, replayed = store.request_operation("alpha", OpKind.REFRESH, "alice")
    assert not replayed and op.status is OpStatus.QUEUED
    # Migrating again is a no-op.
    assert migrate(store.engine) == head_revision()


def test_every_status_has_a_row_and_illegal_moves_are_refused() -> None:
    assert set(ENDPOINT_MOVES) == set(EndpointStatus)
    assert set(OPERATION_MOVES) == set(OpStatus)
    check_endpoint_move("x", EndpointStatus.DESTROYED, EndpointStatus.CREATING)
    check_endpoint_move("x", EndpointStatus.READY, EndpointStatus.READY)
    with pytest.raises(IllegalTransition, match="destroyed -> ready"):
        check_endpoint_move("x", EndpointStatus.DESTROYED, EndpointStatus.READY)
    with pytest.raises(IllegalTransition, match="destroying -> ready"):
        check_endpoint_move("x", EndpointStatus.DESTROYING, EndpointStatus.READY)
    check_operation_move("o", OpStatus.QUEUED, OpStatus.RUNNING)
    for terminal in (s for s in OpStatus if s.terminal):
        with pytest.raises(IllegalTransition):
            check_operation_move("o", terminal, OpStatus.RUNNING)
    with pytest.raises(IllegalTransition, match="queued -> succeeded"):
        check_operation_move("o", OpStatus.QUEUED, OpStatus.SUCCEEDED)
