"""Endpoint and operation records: the control plane's single source of truth.

Records come first: an endpoint's desired spec and every operation on it are
written here before any work starts, and every process (API replicas, workers,
the teardown job, the CLI) coordinates through this store only, never through
memory. Two invariants are kept with single conditional ``UPDATE`` statements,
which are atomic on SQLite (one writer at a time) and on PostgreSQL (row locks):

* **One operation per stack.** ``endpoints.lock_op_id`` names the operation
  that holds the stack; :meth:`Store.claim` sets it only when it is empty and
  the operation is the oldest queued one of its endpoint (FIFO).
* **Exactly-once teardown.** :meth:`Store.claim_expired` moves an endpoint from
  ``ready``/``failed`` to ``destroying`` only while it is expired; the copy
  whose ``UPDATE`` matched a row owns the destroy.

Every status change is checked against the state tables of
:mod:`automation.store.states`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from automation.procs import Owner
from automation.store.base import ACTIVE_OP, OP, E, StoreBase
from automation.store.errors import Conflict, NotFound, QuotaExceeded
from automation.store.records import (
    ENDPOINTS,
    OPERATIONS,
    CancelReason,
    Endpoint,
    EndpointOutputs,
    EndpointStatus,
    Operation,
    OpKind,
    OpStatus,
    record,
    utcnow,
)
from automation.store.states import check_endpoint_move

#: Endpoints teardown may destroy when expired (a failed create still costs money).
EXPIRABLE = (EndpointStatus.READY, EndpointStatus.FAILED)
#: Endpoint statuses from which a redeploy (another ``up``) is accepted.
REDEPLOYABLE = (EndpointStatus.CREATING, EndpointStatus.READY, EndpointStatus.FAILED)


@dataclass(frozen=True)
class Quota:
    """What one user may run at once (None: no limit).

    Attributes:
        endpoints: Live endpoints (everything not destroyed, ``destroy_failed``
            included: it may still cost money).
        accelerators: Accelerator devices across those endpoints.
        cost_per_hour: Their total $/h, as planned.
        queued: Operations waiting to run (destroys are never refused).
    """

    endpoints: int | None = None
    accelerators: int | None = None
    cost_per_hour: float | None = None
    queued: int | None = None


class Store(StoreBase):
    """Endpoints, operations and their logs.

    Args:
        url: SQLAlchemy database URL; the database is migrated to the newest
            schema first.
        log_max_lines: Lines kept per operation log.
        log_max_bytes: Bytes kept per operation log.
    """

    def request_create(
        self,
        name: str,
        owner: str,
        spec: dict[str, Any],
        *,
        expires_at: datetime | None,
        idempotency_key: str | None = None,
        request_hash: str | None = None,
        hints: EndpointOutputs | None = None,
        op_id: str | None = None,
        quota: Quota | None = None,
        now: datetime | None = None,
    ) -> tuple[Operation, bool]:
        """Record a new endpoint (or re-create a destroyed one) and queue its ``up``.

        ``hints`` (the planner's model, instance type and price) fill the record
        until the stack's outputs replace them; ``op_id`` lets the caller name
        the operation before it exists (its secret waits under that id).

        Returns:
            The operation and whether it is a replay of an earlier request with
            the same Idempotency-Key.

        Raises:
            Conflict: the name belongs to a live endpoint.
            IdempotencyMismatch: the key was used for a different request.
            QuotaExceeded: the owner's quota does not allow another endpoint.
        """
        now = now or utcnow()
        hints = hints or EndpointOutputs()
        values: dict[str, Any] = {
            "owner": owner,
            "spec": spec,
            "status": EndpointStatus.CREATING,
            "url": None,
            "model": hints.model or str(spec.get("model") or "") or None,
            "instance_type": hints.instance_type,
            "cost_per_hour": hints.cost_per_hour,
            "accelerators": hints.accelerators,
            "error": None,
            "created_at": now,
            "updated_at": now,
            "expires_at": expires_at,
            "lock_op_id": None,
        }
        try:
            with self._tx(write=True) as conn:
                if replay := self._replay(conn, owner, idempotency_key, request_hash):
                    return replay, True
                ep = self._endpoint(conn, name, lock=True)
                if ep is not None and ep.status is not EndpointStatus.DESTROYED:
                    raise Conflict(
                        f"endpoint {name!r} already exists (status {ep.status}); "
                        "delete it first or choose another name"
                    )
                if quota is not None:
                    self._check_quota(conn, owner, quota, hints, new_endpoint=True)
                if ep is None:
                    conn.execute(insert(ENDPOINTS).values(name=name, generation=1, **values))
                else:
                    self._set_endpoint(conn, ep, generation=ep.generation + 1, **values)
                op = self._new_op(
                    conn, name, OpKind.UP, owner, idempotency_key, request_hash, now, op_id
                )
                return op, False
        except IntegrityError:
            # A concurrent request won the insert: the same key (replay) or the
            # same name (conflict).
            with self._tx() as conn:
                if replay := self._replay(conn, owner, idempotency_key, request_hash):
                    return replay, True
            raise Conflict(f"endpoint {name!r} already exists; choose another name") from None

    def request_operation(
        self,
        name: str,
        kind: OpKind,
        user: str,
        *,
        idempotency_key: str | None = None,
        request_hash: str | None = None,
        max_queued: int = 8,
        quota: Quota | None = None,
        spec: dict[str, Any] | None = None,
        hints: EndpointOutputs | None = None,
        rotate_key: bool = False,
        now: datetime | None = None,
    ) -> tuple[Operation, bool]:
        """Queue a destroy, refresh or re-``up`` of an existing endpoint.

        A destroy is always accepted while the endpoint is live (it queues
        behind whatever runs); asking again returns the destroy already queued.
        An ``up`` may bring a new desired ``spec`` (with its planner ``hints``)
        and may move the endpoint to a new API key version (``rotate_key``).

        Returns:
            The operation and whether it is a replay (same key, or the destroy
            already queued).

        Raises:
            NotFound: no such endpoint.
            Conflict: the endpoint's state does not allow the operation, or its
                queue is full.
            IdempotencyMismatch: the key was used for a different request.
        """
        now = now or utcnow()
        try:
            with self._tx(write=True) as conn:
                if replay := self._replay(conn, user, idempotency_key, request_hash):
                    return replay, True
                ep = self._endpoint(conn, name, lock=True)
                if ep is None:
                    raise NotFound(f"endpoint {name!r} not found")
                if kind is OpKind.DESTROY:
                    if ep.status is EndpointStatus.DESTROYED:
                        raise Conflict(f"endpoint {name!r} is already destroyed")
                    pending = conn.execute(
                        select(OPERATIONS)
                        .where(
                            OP.endpoint == name,
                            OP.kind == OpKind.DESTROY,
                            OP.status.in_(ACTIVE_OP),
                        )
                        .order_by(OP.seq)
                    ).first()
                    if pending is not None:
                        return record(Operation, pending), True
                    new_status = EndpointStatus.DESTROYING
                elif kind is OpKind.UP:
                    if ep.status not in REDEPLOYABLE:
                        raise Conflict(f"endpoint {name!r} is {ep.status}; it cannot be redeployed")
                    new_status = (
                        EndpointStatus.CREATING if ep.status is EndpointStatus.FAILED else ep.status
                    )
                else:
                    if ep.status not in EXPIRABLE:
                        raise Conflict(f"endpoint {name!r} is {ep.status}; it cannot be refreshed")
                    new_status = ep.status
                if quota is not None and kind is not OpKind.DESTROY:
                    self._check_quota(conn, user, quota, None, new_endpoint=False)
                if self._active(conn, name) >= max_queued:
                    raise Conflict(
                        f"endpoint {name!r} already has {max_queued} operations queued; "
                        "retry when they finish"
                    )
                changes: dict[str, Any] = {"status": new_status, "updated_at": now}
                if kind is OpKind.UP and spec is not None:
                    changes["spec"] = spec
                    if hints is not None:
                        changes |= {
                            "cost_per_hour": hints.cost_per_hour,
                            "accelerators": hints.accelerators,
                        }
                if kind is OpKind.UP and rotate_key:
                    changes["api_key_version"] = ep.api_key_version + 1
                self._set_endpoint(conn, ep, **changes)
                op = self._new_op(conn, name, kind, user, idempotency_key, request_hash, now)
                return op, False
        except IntegrityError:
            with self._tx() as conn:
                if replay := self._replay(conn, user, idempotency_key, request_hash):
                    return replay, True
            raise

    @staticmethod
    def _check_quota(
        conn: Connection,
        user: str,
        quota: Quota,
        adding: EndpointOutputs | None,
        *,
        new_endpoint: bool,
    ) -> None:
        """Raise QuotaExceeded when one more operation (and endpoint) would pass a limit."""
        live = conn.execute(
            select(func.count(), func.sum(E.accelerators), func.sum(E.cost_per_hour)).where(
                E.owner == user, E.status != EndpointStatus.DESTROYED
            )
        ).one()
        queued = conn.execute(
            select(func.count()).where(OP.requested_by == user, OP.status == OpStatus.QUEUED)
        ).scalar_one()
        add = adding or EndpointOutputs()
        usage: dict[str, tuple[float, float | None, str]] = {
            "queued": (int(queued) + 1, quota.queued, "queued operations"),
        }
        if new_endpoint:
            usage |= {
                "endpoints": (int(live[0]) + 1, quota.endpoints, "live endpoints"),
                "accelerators": (
                    int(live[1] or 0) + (add.accelerators or 0),
                    quota.accelerators,
                    "accelerators",
                ),
                "cost_per_hour": (
                    float(live[2] or 0) + (add.cost_per_hour or 0),
                    quota.cost_per_hour,
                    "$/h",
                ),
            }
        for name, (wanted, limit, what) in usage.items():
            if limit is not None and wanted > limit:
                raise QuotaExceeded(
                    name,
                    f"quota.{name}: {user} would have {wanted:g} {what}, over the limit of "
                    f"{limit:g}; destroy an endpoint or wait for operations to finish",
                )

    def extend(self, name: str, expires_at: datetime, *, now: datetime | None = None) -> Endpoint:
        """Move an endpoint's expiry (while it is creating or ready).

        Raises:
            NotFound: no such endpoint.
            Conflict: the endpoint is failed, being destroyed or gone.
        """
        now = now or utcnow()
        with self._tx(write=True) as conn:
            res = conn.execute(
                update(ENDPOINTS)
                .where(
                    E.name == name,
                    E.status.in_([EndpointStatus.CREATING, EndpointStatus.READY]),
                )
                .values(expires_at=expires_at, updated_at=now)
            )
            ep = self._endpoint(conn, name)
        if ep is None:
            raise NotFound(f"endpoint {name!r} not found")
        if res.rowcount != 1:
            raise Conflict(f"endpoint {name!r} is {ep.status}; only live endpoints extend")
        return ep

    def cancel(self, op_id: str, *, now: datetime | None = None) -> Operation:
        """Cancel an operation: a queued one ends at once, a running one is
        flagged for its dispatcher to stop (SIGINT, then SIGKILL)."""
        now = now or utcnow()
        with self._tx(write=True) as conn:
            op = self._operation(conn, op_id)
            if op is None:
                raise NotFound(f"operation {op_id!r} not found")
            if op.status is OpStatus.QUEUED:
                error = "cancelled before it started"
                self._move_operation(conn, op, OpStatus.INTERRUPTED, error=error, finished_at=now)
                self._after_finish(conn, op, OpStatus.INTERRUPTED, error, None, now)
            elif op.status is OpStatus.RUNNING and op.cancel_reason is None:
                conn.execute(
                    update(OPERATIONS)
                    .where(OP.id == op_id)
                    .values(cancel_reason=CancelReason.CANCEL, cancel_requested_at=now)
                )
            out = self._operation(conn, op_id)
        assert out is not None
        return out

    # -- dispatch ----------------------------------------------------------------

    def claimable(self, limit: int = 10, only: Sequence[str] | None = None) -> list[Operation]:
        """Queued operations that are first in their endpoint's queue and whose stack
        is free, fairly ordered between users: by how many operations the user
        already has running plus its place in the user's own queue, then oldest
        first. One user's backlog therefore never delays another user's first
        operation by more than one slot."""
        head = select(func.min(OP.seq)).where(OP.status == OpStatus.QUEUED).group_by(OP.endpoint)
        running = (
            select(OP.requested_by.label("user"), func.count().label("n"))
            .where(OP.status == OpStatus.RUNNING)
            .group_by(OP.requested_by)
            .subquery()
        )
        ready = (
            select(
                OPERATIONS,
                func.row_number()
                .over(partition_by=OP.requested_by, order_by=OP.seq)
                .label("place"),
            )
            .join(ENDPOINTS, E.name == OP.endpoint)
            .where(OP.seq.in_(head), E.lock_op_id.is_(None))
        )
        if only is not None:
            ready = ready.where(OP.id.in_(list(only)))
        r = ready.subquery()
        q = (
            select(*(r.c[c.name] for c in OPERATIONS.c))
            .outerjoin(running, running.c.user == r.c.requested_by)
            .order_by(func.coalesce(running.c.n, 0) + r.c.place, r.c.seq)
            .limit(limit)
        )
        with self._tx() as conn:
            return [record(Operation, row) for row in conn.execute(q)]

    def claim(self, op_id: str, owner: Owner, *, now: datetime | None = None) -> bool:
        """Atomically take the stack lock for a queued operation and mark it running.

        Succeeds only when the stack is free and the operation is the oldest
        queued one of its endpoint, so two dispatchers (threads, processes or
        API replicas) can never run two operations on one stack.
        """
        now = now or utcnow()
        try:
            with self._tx(write=True) as conn:
                return self._claim(conn, op_id, owner, now)
        except _Lost:
            return False

    def _claim(self, conn: Connection, op_id: str, owner: Owner, now: datetime) -> bool:
        op = self._operation(conn, op_id)
        if op is None or op.status is not OpStatus.QUEUED:
            return False
        oldest = conn.execute(
            select(func.min(OP.seq)).where(OP.endpoint == op.endpoint, OP.status == OpStatus.QUEUED)
        ).scalar()
        if oldest != op.seq:
            return False
        locked = conn.execute(
            update(ENDPOINTS)
            .where(E.name == op.endpoint, E.lock_op_id.is_(None))
            .values(lock_op_id=op.id)
        )
        if locked.rowcount != 1:
            return False
        if not self._move_operation(
            conn, op, OpStatus.RUNNING, claimed_at=now, worker=False, **_owner(owner)
        ):
            raise _Lost  # undo the lock taken above
        return True

    def _set_running_owner(self, op_id: str, owner: Owner, **values: Any) -> bool:
        with self._tx(write=True) as conn:
            res = conn.execute(
                update(OPERATIONS)
                .where(OP.id == op_id, OP.status == OpStatus.RUNNING)
                .values(worker=True, **_owner(owner), **values)
            )
            return bool(res.rowcount == 1)

    def set_owner(self, op_id: str, owner: Owner) -> bool:
        """Hand a running operation to the worker process that runs it."""
        return self._set_running_owner(op_id, owner)

    def mark_started(self, op_id: str, owner: Owner, *, now: datetime | None = None) -> bool:
        """The worker began work: record its process and the start time."""
        return self._set_running_owner(op_id, owner, started_at=now or utcnow())

    def request_timeout(self, op_id: str, *, now: datetime | None = None) -> bool:
        """Flag a running operation as over its time limit."""
        now = now or utcnow()
        with self._tx(write=True) as conn:
            res = conn.execute(
                update(OPERATIONS)
                .where(OP.id == op_id, OP.status == OpStatus.RUNNING, OP.cancel_reason.is_(None))
                .values(cancel_reason=CancelReason.TIMEOUT, cancel_requested_at=now)
            )
            return bool(res.rowcount == 1)

    def running(self) -> list[Operation]:
        """All running operations."""
        return self.list_operations(statuses=[OpStatus.RUNNING])

    def finish(
        self,
        op_id: str,
        status: OpStatus,
        *,
        error: str | None = None,
        outputs: EndpointOutputs | None = None,
        now: datetime | None = None,
    ) -> bool:
        """End a running operation, release its stack and update its endpoint.

        Only a ``running`` operation changes, so a worker and a dispatcher that
        both try to finish the same operation cannot overwrite each other.
        """
        if not status.terminal:
            raise ValueError(f"status: {status} is not terminal")
        now = now or utcnow()
        with self._tx(write=True) as conn:
            op = self._operation(conn, op_id)
            if op is None or op.status is not OpStatus.RUNNING:
                return False
            if not self._move_operation(conn, op, status, finished_at=now, error=error):
                return False
            self._after_finish(conn, op, status, error, outputs, now)
            return True

    def _after_finish(
        self,
        conn: Connection,
        op: Operation,
        status: OpStatus,
        error: str | None,
        outputs: EndpointOutputs | None,
        now: datetime,
    ) -> None:
        ep = self._endpoint(conn, op.endpoint, lock=True)
        if ep is None:
            return
        values: dict[str, Any] = {"updated_at": now}
        if ep.lock_op_id == op.id:
            values["lock_op_id"] = None
        ok = status is OpStatus.SUCCEEDED
        if op.kind is OpKind.UP:
            if ok and outputs is not None:
                values |= {
                    "url": outputs.url,
                    "model": outputs.model,
                    "instance_type": outputs.instance_type,
                    "cost_per_hour": outputs.cost_per_hour,
                    "accelerators": outputs.accelerators or ep.accelerators,
                }
            # A destroy queued behind this up owns the status from here on.
            if ep.status in REDEPLOYABLE:
                if ok:
                    values |= {"status": EndpointStatus.READY, "error": None}
                elif op.claimed_at is not None or (
                    ep.status is EndpointStatus.CREATING
                    and not self._active(conn, op.endpoint, OpKind.UP)
                ):
                    # It ran and failed, or the only create was cancelled unstarted.
                    values |= {"status": EndpointStatus.FAILED, "error": error}
        elif op.kind is OpKind.DESTROY:
            if ok:
                values |= {"status": EndpointStatus.DESTROYED, "url": None, "error": None}
            elif not self._active(conn, op.endpoint, OpKind.DESTROY, after=op.seq):
                values |= {"status": EndpointStatus.DESTROY_FAILED, "error": error}
        elif not ok and ep.status is not EndpointStatus.DESTROYING:
            values["error"] = error
        self._set_endpoint(conn, ep, **values)

    # -- teardown ---------------------------------------------------------------

    def expired(
        self, now: datetime, statuses: Sequence[EndpointStatus] = EXPIRABLE
    ) -> list[Endpoint]:
        """Endpoints past their expiry in one of ``statuses``."""
        q = (
            select(ENDPOINTS)
            .where(E.status.in_(list(statuses)), E.expires_at.is_not(None), E.expires_at < now)
            .order_by(E.expires_at, E.name)
        )
        with self._tx() as conn:
            return [record(Endpoint, r) for r in conn.execute(q)]

    def claim_expired(
        self,
        name: str,
        now: datetime,
        *,
        requested_by: str = "teardown",
        statuses: Sequence[EndpointStatus] = EXPIRABLE,
        attempt: int = 1,
    ) -> Operation | None:
        """Atomically take an expired endpoint for destruction and queue its destroy.

        ``UPDATE endpoints SET status='destroying' WHERE name=? AND status IN
        (...) AND expires_at < now``: of two teardown copies, exactly one
        matches the row; the other gets None. The destroy operation is queued in
        the same transaction, so a claim is never left without its operation.
        """
        return self._claim_for_teardown(
            name,
            now,
            requested_by,
            attempt,
            E.status.in_(list(statuses)),
            E.expires_at.is_not(None),
            E.expires_at < now,
        )

    def claim_retry(
        self, name: str, now: datetime, *, requested_by: str = "teardown", attempt: int
    ) -> Operation | None:
        """Queue another destroy of an endpoint whose destroy failed (teardown retry)."""
        return self._claim_for_teardown(
            name, now, requested_by, attempt, E.status == EndpointStatus.DESTROY_FAILED
        )

    def _claim_for_teardown(
        self, name: str, now: datetime, requested_by: str, attempt: int, *where: Any
    ) -> Operation | None:
        with self._tx(write=True) as conn:
            ep = self._endpoint(conn, name, lock=True)
            if ep is None:
                return None
            res = conn.execute(
                update(ENDPOINTS)
                .where(E.name == name, *where)
                .values(status=EndpointStatus.DESTROYING, updated_at=now)
            )
            if res.rowcount != 1:
                return None
            check_endpoint_move(name, ep.status, EndpointStatus.DESTROYING)
            key = f"teardown:{name}:{ep.generation}:{int(now.timestamp())}:{attempt}"
            return self._new_op(conn, name, OpKind.DESTROY, requested_by, key, None, now)


class _Lost(Exception):
    """A claim lost a race half-way; its transaction is rolled back."""


def _owner(owner: Owner) -> dict[str, Any]:
    return {
        "host": owner.host,
        "boot_id": owner.boot_id,
        "pid": owner.pid,
        "pid_start": owner.pid_start,
    }
