"""The store's invariants: FIFO per stack, one claim wins, exactly-once teardown."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest

from automation.store import (
    Conflict,
    EndpointOutputs,
    EndpointStatus,
    OpKind,
    OpStatus,
    Owner,
    Store,
    utcnow,
)

SPEC = {"name": "x", "model": "m"}
ME = Owner(host="h", boot_id="b", pid=1, pid_start=1)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'db.sqlite'}", log_max_lines=10, log_max_bytes=200)


def _create(store: Store, name: str, **kw) -> str:
    op, _ = store.request_create(name, "alice", {**SPEC, "name": name}, expires_at=None, **kw)
    return op.id


def test_fifo_per_stack_and_one_operation_at_a_time(store: Store) -> None:
    up = _create(store, "a")
    destroy, _ = store.request_operation("a", OpKind.DESTROY, "alice")
    other = _create(store, "b")
    # Only the head of each endpoint's queue is claimable.
    assert [o.id for o in store.claimable()] == [up, other]
    assert not store.claim(destroy.id, ME), "a later operation cannot jump the queue"
    assert store.claim(up, ME)
    assert not store.claim(up, ME), "a claim happens once"
    assert [o.id for o in store.claimable()] == [other]
    assert not store.claim(destroy.id, ME), "the stack is held by the running up"
    assert store.get_endpoint("a").lock_op_id == up

    assert store.finish(up, OpStatus.SUCCEEDED, outputs=EndpointOutputs(url="http://a"))
    ep = store.get_endpoint("a")
    assert ep.lock_op_id is None
    # The destroy queued behind the up owns the status.
    assert ep.status is EndpointStatus.DESTROYING and ep.url == "http://a"
    assert [o.id for o in store.claimable()] == [destroy.id, other]
    assert store.claim(destroy.id, ME)
    assert store.finish(destroy.id, OpStatus.SUCCEEDED)
    assert store.get_endpoint("a").status is EndpointStatus.DESTROYED
    assert not store.finish(destroy.id, OpStatus.FAILED), "a finished operation stays finished"


def test_concurrent_claims_have_exactly_one_winner(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    first = Store(url)
    op = _create(first, "race")
    stores = [Store(url) for _ in range(6)]
    wins: list[bool] = []
    barrier = threading.Barrier(len(stores))

    def claim(s: Store) -> None:
        barrier.wait()
        wins.append(s.claim(op, ME))

    threads = [threading.Thread(target=claim, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(wins) == [False] * 5 + [True]


def test_claim_expired_is_exactly_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    s0 = Store(url)
    now = utcnow()
    for name, hours in [("old-1", -1), ("old-2", -2), ("fresh", 5)]:
        op, _ = s0.request_create(name, "alice", SPEC, expires_at=now + timedelta(hours=hours))
        assert s0.claim(op.id, ME) and s0.finish(op.id, OpStatus.SUCCEEDED)
    assert [e.name for e in s0.expired(now)] == ["old-2", "old-1"]

    stores = [Store(url) for _ in range(4)]
    claimed: list[tuple[str, str]] = []
    barrier = threading.Barrier(len(stores))

    def run(s: Store) -> None:
        barrier.wait()
        for ep in s.expired(now):
            op = s.claim_expired(ep.name, now)
            if op is not None:
                claimed.append((ep.name, op.id))

    threads = [threading.Thread(target=run, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(n for n, _ in claimed) == ["old-1", "old-2"]
    assert s0.get_endpoint("fresh").status is EndpointStatus.READY
    for name in ("old-1", "old-2"):
        ops = s0.list_operations(name)
        assert [o.kind for o in ops] == [OpKind.UP, OpKind.DESTROY]
        assert ops[-1].requested_by == "teardown"
        assert s0.get_endpoint(name).status is EndpointStatus.DESTROYING
    # Not expired any more from the teardown's point of view.
    assert s0.claim_expired("old-1", now) is None


def test_failed_destroy_is_kept_visible_and_can_be_retried(store: Store) -> None:
    up = _create(store, "f")
    store.claim(up, ME)
    store.finish(up, OpStatus.SUCCEEDED)
    d, _ = store.request_operation("f", OpKind.DESTROY, "alice")
    store.claim(d.id, ME)
    store.finish(d.id, OpStatus.FAILED, error="protected")
    ep = store.get_endpoint("f")
    assert ep.status is EndpointStatus.DESTROY_FAILED and ep.error == "protected"
    retry = store.claim_retry("f", utcnow(), attempt=2)
    assert retry is not None and store.get_endpoint("f").status is EndpointStatus.DESTROYING
    assert store.claim_retry("f", utcnow(), attempt=3) is None


def test_recreate_after_destroy_and_conflicts(store: Store) -> None:
    up = _create(store, "n")
    with pytest.raises(Conflict):
        _create(store, "n")
    store.claim(up, ME)
    store.finish(up, OpStatus.FAILED, error="boom")
    assert store.get_endpoint("n").status is EndpointStatus.FAILED
    d, _ = store.request_operation("n", OpKind.DESTROY, "alice")
    store.claim(d.id, ME)
    store.finish(d.id, OpStatus.SUCCEEDED)
    again = _create(store, "n")
    ep = store.get_endpoint("n")
    assert ep.status is EndpointStatus.CREATING and ep.generation == 2
    assert ep.last_operation_id == again and ep.error is None
    assert store.list_endpoints("alice") == [ep]


def test_log_is_capped_by_lines_and_bytes(store: Store) -> None:
    op = _create(store, "l")
    assert store.append_log(op, [f"line {i}" for i in range(5)]) == 5
    assert store.append_log(op, [f"more {i}" for i in range(20)]) == 4
    lines = [x.line for x in store.logs(op)]
    assert lines[-1] == "[log truncated]" and len(lines) == 10
    assert store.append_log(op, ["after"]) == 0
    assert store.get_operation(op).log_truncated

    op2 = _create(store, "l2")
    assert store.append_log(op2, ["x" * 150, "y" * 100]) == 1
    assert [x.line for x in store.logs(op2)] == ["x" * 150, "[log truncated]"]


def test_idempotency_keys_are_per_user(store: Store) -> None:
    a, replay = store.request_create(
        "i1", "alice", SPEC, expires_at=None, idempotency_key="k", request_hash="h1"
    )
    assert not replay
    b, replay = store.request_create(
        "i1", "alice", SPEC, expires_at=None, idempotency_key="k", request_hash="h1"
    )
    assert replay and b.id == a.id
    c, replay = store.request_create(
        "i2", "bob", SPEC, expires_at=None, idempotency_key="k", request_hash="h2"
    )
    assert not replay and c.id != a.id


def test_times_are_utc_aware(store: Store) -> None:
    op = _create(store, "t")
    got = store.get_operation(op)
    assert got.created_at.tzinfo is not None
    assert abs(got.created_at - utcnow()) < timedelta(minutes=1)
