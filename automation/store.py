"""Endpoint and operation records: the control plane's single source of truth.

Records come first: an endpoint's desired spec and every operation on it are
written here before any work starts, and every process (API replicas, workers,
the teardown job, the CLI) coordinates through this store only, never through
memory. SQLite in the state folder by default (WAL, ``busy_timeout``, write
transactions taken with ``BEGIN IMMEDIATE`` so that a read never has to upgrade
to a write lock); any SQLAlchemy URL, e.g. PostgreSQL, for more than one API
replica.

Two invariants are kept with single conditional ``UPDATE`` statements, which
are atomic on SQLite (one writer at a time) and on PostgreSQL (row locks):

* **One operation per stack.** ``endpoints.lock_op_id`` names the operation
  that holds the stack; :meth:`Store.claim` sets it only when it is empty and
  the operation is the oldest queued one of its endpoint (FIFO).
* **Exactly-once teardown.** :meth:`Store.claim_expired` moves an endpoint from
  ``ready``/``failed`` to ``destroying`` only while it is expired; the copy
  whose ``UPDATE`` matched a row owns the destroy.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    func,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class EndpointStatus(StrEnum):
    """Life cycle of an endpoint."""

    CREATING = "creating"
    READY = "ready"
    FAILED = "failed"
    DESTROYING = "destroying"
    DESTROYED = "destroyed"
    DESTROY_FAILED = "destroy_failed"


class OpKind(StrEnum):
    """What an operation does to its stack."""

    UP = "up"
    DESTROY = "destroy"
    REFRESH = "refresh"


class OpStatus(StrEnum):
    """queued -> running -> one of the terminal states."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    TIMED_OUT = "timed_out"

    @property
    def terminal(self) -> bool:
        """True once the operation can no longer change."""
        return self not in (OpStatus.QUEUED, OpStatus.RUNNING)


class CancelReason(StrEnum):
    """Why a running operation is being stopped."""

    CANCEL = "cancel"  # a user asked; ends as interrupted
    TIMEOUT = "timeout"  # ran past the time limit; ends as timed_out


ACTIVE_OP = (OpStatus.QUEUED.value, OpStatus.RUNNING.value)
#: Endpoints teardown may destroy when expired (a failed create still costs money).
EXPIRABLE = (EndpointStatus.READY.value, EndpointStatus.FAILED.value)


class StoreError(Exception):
    """Base of the store's errors."""


class NotFound(StoreError):
    """No such endpoint or operation."""


class Conflict(StoreError):
    """The request contradicts the current state (HTTP 409)."""


class IdempotencyMismatch(StoreError):
    """An Idempotency-Key was reused for a different request."""


# ---------------------------------------------------------------------------
# Schema


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC; always returns aware UTC datetimes."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class EndpointRow(Base):
    __tablename__ = "endpoints"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128), index=True)
    spec: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), index=True)
    url: Mapped[str | None] = mapped_column(String(512))
    model: Mapped[str | None] = mapped_column(String(200))
    instance_type: Mapped[str | None] = mapped_column(String(64))
    cost_per_hour: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    last_operation_id: Mapped[str | None] = mapped_column(String(36))
    #: The operation holding the stack right now (the per-stack lock).
    lock_op_id: Mapped[str | None] = mapped_column(String(36))
    error: Mapped[str | None] = mapped_column(Text)
    #: Incremented on each (re)create of the name, so teardown keys never repeat.
    generation: Mapped[int] = mapped_column(Integer, default=1)


class OperationRow(Base):
    __tablename__ = "operations"
    __table_args__ = (
        UniqueConstraint("requested_by", "idempotency_key", name="uq_operation_idempotency"),
        Index("ix_operations_endpoint_status_seq", "endpoint", "status", "seq"),
    )

    #: Global FIFO order (an integer key is portable: SQLite and PostgreSQL).
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(36), unique=True)
    endpoint: Mapped[str] = mapped_column(String(40), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), index=True)
    requested_by: Mapped[str] = mapped_column(String(128))
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: The process that owns the running operation (dispatcher, then worker).
    host: Mapped[str | None] = mapped_column(String(255))
    boot_id: Mapped[str | None] = mapped_column(String(64))
    pid: Mapped[int | None] = mapped_column(Integer)
    pid_start: Mapped[int | None] = mapped_column(Integer)
    #: True once the owner is the worker process (a session leader of its own).
    worker: Mapped[bool] = mapped_column(Boolean, default=False)
    cancel_reason: Mapped[str | None] = mapped_column(String(16))
    cancel_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    error: Mapped[str | None] = mapped_column(Text)
    log_lines: Mapped[int] = mapped_column(Integer, default=0)
    log_bytes: Mapped[int] = mapped_column(Integer, default=0)
    log_truncated: Mapped[bool] = mapped_column(Boolean, default=False)


class LogRow(Base):
    __tablename__ = "operation_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    op_id: Mapped[str] = mapped_column(String(36), index=True)
    ts: Mapped[datetime] = mapped_column(UTCDateTime())
    line: Mapped[str] = mapped_column(Text)


# ---------------------------------------------------------------------------
# Plain records handed to callers (safe across threads, no lazy loading)


@dataclass(frozen=True)
class Endpoint:
    """An endpoint record (never holds secrets)."""

    name: str
    owner: str
    spec: dict[str, Any]
    status: EndpointStatus
    url: str | None
    model: str | None
    instance_type: str | None
    cost_per_hour: float | None
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None
    last_operation_id: str | None
    lock_op_id: str | None
    error: str | None
    generation: int

    @classmethod
    def of(cls, row: EndpointRow) -> Endpoint:
        return cls(
            name=row.name,
            owner=row.owner,
            spec=json.loads(row.spec),
            status=EndpointStatus(row.status),
            url=row.url,
            model=row.model,
            instance_type=row.instance_type,
            cost_per_hour=row.cost_per_hour,
            created_at=row.created_at,
            updated_at=row.updated_at,
            expires_at=row.expires_at,
            last_operation_id=row.last_operation_id,
            lock_op_id=row.lock_op_id,
            error=row.error,
            generation=row.generation,
        )


@dataclass(frozen=True)
class Operation:
    """An operation record."""

    seq: int
    id: str
    endpoint: str
    kind: OpKind
    status: OpStatus
    requested_by: str
    idempotency_key: str | None
    request_hash: str | None
    created_at: datetime
    claimed_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    host: str | None
    boot_id: str | None
    pid: int | None
    pid_start: int | None
    worker: bool
    cancel_reason: CancelReason | None
    cancel_requested_at: datetime | None
    error: str | None
    log_lines: int
    log_bytes: int
    log_truncated: bool

    @classmethod
    def of(cls, row: OperationRow) -> Operation:
        return cls(
            seq=row.seq,
            id=row.id,
            endpoint=row.endpoint,
            kind=OpKind(row.kind),
            status=OpStatus(row.status),
            requested_by=row.requested_by,
            idempotency_key=row.idempotency_key,
            request_hash=row.request_hash,
            created_at=row.created_at,
            claimed_at=row.claimed_at,
            started_at=row.started_at,
            finished_at=row.finished_at,
            host=row.host,
            boot_id=row.boot_id,
            pid=row.pid,
            pid_start=row.pid_start,
            worker=bool(row.worker),
            cancel_reason=CancelReason(row.cancel_reason) if row.cancel_reason else None,
            cancel_requested_at=row.cancel_requested_at,
            error=row.error,
            log_lines=row.log_lines or 0,
            log_bytes=row.log_bytes or 0,
            log_truncated=bool(row.log_truncated),
        )


@dataclass(frozen=True)
class LogLine:
    """One line of an operation's log."""

    id: int
    ts: datetime
    line: str


@dataclass(frozen=True)
class Owner:
    """The process that owns a running operation."""

    host: str
    boot_id: str
    pid: int
    pid_start: int | None


@dataclass(frozen=True)
class EndpointOutputs:
    """What a successful ``up`` reports back about an endpoint."""

    url: str | None = None
    model: str | None = None
    instance_type: str | None = None
    cost_per_hour: float | None = None


# ---------------------------------------------------------------------------
# The store


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # Driver-level autocommit: SQLAlchemy's "begin" hook below issues BEGIN
    # itself, so write transactions can take the lock up front.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _sqlite_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.get("write") else "BEGIN")


class Store:
    """Endpoints, operations and their logs.

    Args:
        url: SQLAlchemy database URL.
        log_max_lines: Lines kept per operation log.
        log_max_bytes: Bytes kept per operation log.
    """

    def __init__(self, url: str, *, log_max_lines: int = 2000, log_max_bytes: int = 256 * 1024):
        self.url = url
        self.log_max_lines = log_max_lines
        self.log_max_bytes = log_max_bytes
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {"future": True}
        if self.is_sqlite:
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            kwargs["pool_pre_ping"] = True
        self.engine: Engine = create_engine(url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
            event.listen(self.engine, "begin", _sqlite_begin)
        try:
            Base.metadata.create_all(self.engine)
        except OperationalError:
            # Another process created the schema between our check and CREATE.
            Base.metadata.create_all(self.engine)

    @classmethod
    def from_settings(cls, settings: Any) -> Store:
        """A store for :class:`automation.settings.Settings`."""
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        return cls(
            settings.db_url,
            log_max_lines=settings.log_max_lines,
            log_max_bytes=settings.log_max_bytes,
        )

    def close(self) -> None:
        """Release pooled connections."""
        self.engine.dispose()

    @contextmanager
    def _tx(self, write: bool = False) -> Iterator[Session]:
        with self.engine.connect() as conn:
            conn.info["write"] = write
            try:
                with Session(bind=conn, expire_on_commit=False) as s, s.begin():
                    yield s
            finally:
                conn.info.pop("write", None)

    # -- reads ------------------------------------------------------------------

    def get_endpoint(self, name: str) -> Endpoint:
        """The endpoint named ``name``.

        Raises:
            NotFound: no such endpoint.
        """
        with self._tx() as s:
            row = s.get(EndpointRow, name)
            if row is None:
                raise NotFound(f"endpoint {name!r} not found")
            return Endpoint.of(row)

    def find_endpoint(self, name: str) -> Endpoint | None:
        """The endpoint named ``name``, or None."""
        try:
            return self.get_endpoint(name)
        except NotFound:
            return None

    def list_endpoints(
        self, owner: str | None = None, *, include_destroyed: bool = False
    ) -> list[Endpoint]:
        """Endpoints, optionally of one owner, newest first."""
        q = select(EndpointRow).order_by(EndpointRow.created_at.desc(), EndpointRow.name)
        if owner is not None:
            q = q.where(EndpointRow.owner == owner)
        if not include_destroyed:
            q = q.where(EndpointRow.status != EndpointStatus.DESTROYED.value)
        with self._tx() as s:
            return [Endpoint.of(r) for r in s.scalars(q)]

    def get_operation(self, op_id: str) -> Operation:
        """The operation with id ``op_id``.

        Raises:
            NotFound: no such operation.
        """
        with self._tx() as s:
            row = s.scalar(select(OperationRow).where(OperationRow.id == op_id))
            if row is None:
                raise NotFound(f"operation {op_id!r} not found")
            return Operation.of(row)

    def list_operations(
        self, endpoint: str | None = None, statuses: Iterable[OpStatus] | None = None
    ) -> list[Operation]:
        """Operations in FIFO order, optionally of one endpoint and some statuses."""
        q = select(OperationRow).order_by(OperationRow.seq)
        if endpoint is not None:
            q = q.where(OperationRow.endpoint == endpoint)
        if statuses is not None:
            q = q.where(OperationRow.status.in_([OpStatus(x).value for x in statuses]))
        with self._tx() as s:
            return [Operation.of(r) for r in s.scalars(q)]

    def logs(self, op_id: str, after: int = 0, limit: int = 500) -> list[LogLine]:
        """Log lines of an operation with ids greater than ``after``."""
        q = (
            select(LogRow)
            .where(LogRow.op_id == op_id, LogRow.id > after)
            .order_by(LogRow.id)
            .limit(limit)
        )
        with self._tx() as s:
            return [LogLine(r.id, r.ts, r.line) for r in s.scalars(q)]

    # -- requests -----------------------------------------------------------------

    def _replay(self, s: Session, user: str, key: str | None, request_hash: str | None):
        if not key:
            return None
        row = s.scalar(
            select(OperationRow).where(
                OperationRow.requested_by == user, OperationRow.idempotency_key == key
            )
        )
        if row is None:
            return None
        if request_hash is not None and row.request_hash != request_hash:
            raise IdempotencyMismatch(
                "Idempotency-Key was already used for a different request; use a new key"
            )
        return Operation.of(row)

    def _new_op(
        self,
        s: Session,
        row: EndpointRow,
        kind: OpKind,
        user: str,
        key: str | None,
        request_hash: str | None,
        now: datetime,
        op_id: str | None = None,
    ) -> OperationRow:
        op = OperationRow(
            id=op_id or str(uuid.uuid4()),
            endpoint=row.name,
            kind=kind.value,
            status=OpStatus.QUEUED.value,
            requested_by=user,
            idempotency_key=key or None,
            request_hash=request_hash,
            created_at=now,
            log_lines=0,
            log_bytes=0,
            log_truncated=False,
            worker=False,
        )
        s.add(op)
        # Every new operation is its endpoint's latest, whoever queued it.
        row.last_operation_id = op.id
        s.flush()
        return op

    def _queue_depth(self, s: Session, endpoint: str) -> int:
        return (
            s.scalar(
                select(func.count())
                .select_from(OperationRow)
                .where(OperationRow.endpoint == endpoint, OperationRow.status.in_(ACTIVE_OP))
            )
            or 0
        )

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
        """
        now = now or utcnow()
        try:
            with self._tx(write=True) as s:
                if replay := self._replay(s, owner, idempotency_key, request_hash):
                    return replay, True
                row = s.get(EndpointRow, name, with_for_update=True)
                if row is not None and row.status != EndpointStatus.DESTROYED.value:
                    raise Conflict(
                        f"endpoint {name!r} already exists (status {row.status}); "
                        "delete it first or choose another name"
                    )
                if row is None:
                    row = EndpointRow(name=name, generation=1)
                    s.add(row)
                else:
                    row.generation = (row.generation or 0) + 1
                row.owner = owner
                row.spec = json.dumps(spec, sort_keys=True)
                row.status = EndpointStatus.CREATING.value
                hints = hints or EndpointOutputs()
                row.url = None
                row.model = hints.model or str(spec.get("model") or "") or None
                row.instance_type = hints.instance_type
                row.cost_per_hour = hints.cost_per_hour
                row.error = None
                row.created_at = row.updated_at = now
                row.expires_at = expires_at
                row.lock_op_id = None
                op = self._new_op(
                    s, row, OpKind.UP, owner, idempotency_key, request_hash, now, op_id
                )
                return Operation.of(op), False
        except IntegrityError:
            # A concurrent request won the insert: the same key (replay) or the
            # same name (conflict).
            with self._tx() as s:
                if replay := self._replay(s, owner, idempotency_key, request_hash):
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
        now: datetime | None = None,
    ) -> tuple[Operation, bool]:
        """Queue a destroy, refresh or re-``up`` of an existing endpoint.

        A destroy is always accepted while the endpoint is live (it queues
        behind whatever runs); asking again returns the destroy already queued.

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
            with self._tx(write=True) as s:
                if replay := self._replay(s, user, idempotency_key, request_hash):
                    return replay, True
                row = s.get(EndpointRow, name, with_for_update=True)
                if row is None:
                    raise NotFound(f"endpoint {name!r} not found")
                status = EndpointStatus(row.status)
                if kind is OpKind.DESTROY:
                    if status is EndpointStatus.DESTROYED:
                        raise Conflict(f"endpoint {name!r} is already destroyed")
                    pending = s.scalar(
                        select(OperationRow)
                        .where(
                            OperationRow.endpoint == name,
                            OperationRow.kind == OpKind.DESTROY.value,
                            OperationRow.status.in_(ACTIVE_OP),
                        )
                        .order_by(OperationRow.seq)
                    )
                    if pending is not None:
                        return Operation.of(pending), True
                    new_status = EndpointStatus.DESTROYING
                elif kind is OpKind.UP:
                    if status not in (
                        EndpointStatus.CREATING,
                        EndpointStatus.READY,
                        EndpointStatus.FAILED,
                    ):
                        raise Conflict(f"endpoint {name!r} is {status}; it cannot be redeployed")
                    new_status = (
                        EndpointStatus.CREATING if status is EndpointStatus.FAILED else status
                    )
                else:
                    if status not in (EndpointStatus.READY, EndpointStatus.FAILED):
                        raise Conflict(f"endpoint {name!r} is {status}; it cannot be refreshed")
                    new_status = status
                if self._queue_depth(s, name) >= max_queued:
                    raise Conflict(
                        f"endpoint {name!r} already has {max_queued} operations queued; "
                        "retry when they finish"
                    )
                row.status = new_status.value
                row.updated_at = now
                op = self._new_op(s, row, kind, user, idempotency_key, request_hash, now)
                return Operation.of(op), False
        except IntegrityError:
            with self._tx() as s:
                if replay := self._replay(s, user, idempotency_key, request_hash):
                    return replay, True
            raise

    def extend(self, name: str, expires_at: datetime, *, now: datetime | None = None) -> Endpoint:
        """Move an endpoint's expiry (while it is creating or ready).

        Raises:
            NotFound: no such endpoint.
            Conflict: the endpoint is failed, being destroyed or gone.
        """
        now = now or utcnow()
        with self._tx(write=True) as s:
            res = s.execute(
                update(EndpointRow)
                .where(
                    EndpointRow.name == name,
                    EndpointRow.status.in_(
                        [EndpointStatus.CREATING.value, EndpointStatus.READY.value]
                    ),
                )
                .values(expires_at=expires_at, updated_at=now)
            )
            row = s.get(EndpointRow, name)
            if row is None:
                raise NotFound(f"endpoint {name!r} not found")
            if res.rowcount != 1:  # type: ignore[attr-defined]
                raise Conflict(f"endpoint {name!r} is {row.status}; only live endpoints extend")
            return Endpoint.of(row)

    def cancel(self, op_id: str, *, now: datetime | None = None) -> Operation:
        """Cancel an operation: a queued one ends at once, a running one is
        flagged for its dispatcher to stop (SIGINT, then SIGKILL)."""
        now = now or utcnow()
        with self._tx(write=True) as s:
            row = s.scalar(select(OperationRow).where(OperationRow.id == op_id))
            if row is None:
                raise NotFound(f"operation {op_id!r} not found")
            if row.status == OpStatus.QUEUED.value:
                row.status = OpStatus.INTERRUPTED.value
                row.error = "cancelled before it started"
                row.finished_at = now
                self._after_finish(s, row, OpStatus.INTERRUPTED, None, now)
            elif row.status == OpStatus.RUNNING.value and not row.cancel_reason:
                row.cancel_reason = CancelReason.CANCEL.value
                row.cancel_requested_at = now
            return Operation.of(row)

    # -- dispatch ----------------------------------------------------------------

    def claimable(self, limit: int = 10, only: Sequence[str] | None = None) -> list[Operation]:
        """Queued operations that are first in their endpoint's queue and whose
        stack is free, oldest first."""
        head = (
            select(func.min(OperationRow.seq))
            .where(OperationRow.status == OpStatus.QUEUED.value)
            .group_by(OperationRow.endpoint)
        )
        q = (
            select(OperationRow)
            .join(EndpointRow, EndpointRow.name == OperationRow.endpoint)
            .where(
                OperationRow.seq.in_(head),
                EndpointRow.lock_op_id.is_(None),
            )
            .order_by(OperationRow.seq)
            .limit(limit)
        )
        if only is not None:
            q = q.where(OperationRow.id.in_(list(only)))
        with self._tx() as s:
            return [Operation.of(r) for r in s.scalars(q)]

    def claim(self, op_id: str, owner: Owner, *, now: datetime | None = None) -> bool:
        """Atomically take the stack lock for a queued operation and mark it running.

        Succeeds only when the stack is free and the operation is the oldest
        queued one of its endpoint, so two dispatchers (threads, processes or
        API replicas) can never run two operations on one stack.
        """
        now = now or utcnow()
        with self._tx(write=True) as s:
            op = s.scalar(select(OperationRow).where(OperationRow.id == op_id))
            if op is None or op.status != OpStatus.QUEUED.value:
                return False
            oldest = s.scalar(
                select(func.min(OperationRow.seq)).where(
                    OperationRow.endpoint == op.endpoint,
                    OperationRow.status == OpStatus.QUEUED.value,
                )
            )
            if oldest != op.seq:
                return False
            locked = s.execute(
                update(EndpointRow)
                .where(EndpointRow.name == op.endpoint, EndpointRow.lock_op_id.is_(None))
                .values(lock_op_id=op.id)
            )
            if locked.rowcount != 1:  # type: ignore[attr-defined]
                return False
            started = s.execute(
                update(OperationRow)
                .where(OperationRow.id == op_id, OperationRow.status == OpStatus.QUEUED.value)
                .values(
                    status=OpStatus.RUNNING.value,
                    claimed_at=now,
                    host=owner.host,
                    boot_id=owner.boot_id,
                    pid=owner.pid,
                    pid_start=owner.pid_start,
                    worker=False,
                )
            )
            if started.rowcount != 1:  # type: ignore[attr-defined]
                s.rollback()
                return False
            return True

    def set_owner(self, op_id: str, owner: Owner) -> bool:
        """Hand a running operation to the worker process that runs it."""
        with self._tx(write=True) as s:
            res = s.execute(
                update(OperationRow)
                .where(OperationRow.id == op_id, OperationRow.status == OpStatus.RUNNING.value)
                .values(
                    host=owner.host,
                    boot_id=owner.boot_id,
                    pid=owner.pid,
                    pid_start=owner.pid_start,
                    worker=True,
                )
            )
            return res.rowcount == 1  # type: ignore[attr-defined]

    def mark_started(self, op_id: str, owner: Owner, *, now: datetime | None = None) -> bool:
        """The worker began work: record its process and the start time."""
        now = now or utcnow()
        with self._tx(write=True) as s:
            res = s.execute(
                update(OperationRow)
                .where(OperationRow.id == op_id, OperationRow.status == OpStatus.RUNNING.value)
                .values(
                    started_at=now,
                    host=owner.host,
                    boot_id=owner.boot_id,
                    pid=owner.pid,
                    pid_start=owner.pid_start,
                    worker=True,
                )
            )
            return res.rowcount == 1  # type: ignore[attr-defined]

    def request_timeout(self, op_id: str, *, now: datetime | None = None) -> bool:
        """Flag a running operation as over its time limit."""
        now = now or utcnow()
        with self._tx(write=True) as s:
            res = s.execute(
                update(OperationRow)
                .where(
                    OperationRow.id == op_id,
                    OperationRow.status == OpStatus.RUNNING.value,
                    OperationRow.cancel_reason.is_(None),
                )
                .values(cancel_reason=CancelReason.TIMEOUT.value, cancel_requested_at=now)
            )
            return res.rowcount == 1  # type: ignore[attr-defined]

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
        with self._tx(write=True) as s:
            row = s.scalar(select(OperationRow).where(OperationRow.id == op_id))
            if row is None or row.status != OpStatus.RUNNING.value:
                return False
            row.status = status.value
            row.finished_at = now
            row.error = error
            self._after_finish(s, row, status, outputs, now)
            return True

    def _after_finish(
        self,
        s: Session,
        op: OperationRow,
        status: OpStatus,
        outputs: EndpointOutputs | None,
        now: datetime,
    ) -> None:
        ep = s.get(EndpointRow, op.endpoint, with_for_update=True)
        if ep is None:
            return
        if ep.lock_op_id == op.id:
            ep.lock_op_id = None
        ep.updated_at = now
        current = EndpointStatus(ep.status)
        kind = OpKind(op.kind)
        ok = status is OpStatus.SUCCEEDED
        if kind is OpKind.UP:
            if ok and outputs is not None:
                ep.url, ep.model = outputs.url, outputs.model
                ep.instance_type, ep.cost_per_hour = outputs.instance_type, outputs.cost_per_hour
            # A destroy queued behind this up owns the status from here on.
            if current in (EndpointStatus.CREATING, EndpointStatus.READY, EndpointStatus.FAILED):
                if ok:
                    ep.status = EndpointStatus.READY.value
                    ep.error = None
                elif op.claimed_at is not None or (
                    current is EndpointStatus.CREATING
                    and not self._has_active(s, op.endpoint, OpKind.UP, after=0)
                ):
                    # It ran and failed, or the only create was cancelled unstarted.
                    ep.status = EndpointStatus.FAILED.value
                    ep.error = op.error
        elif kind is OpKind.DESTROY:
            if ok:
                ep.status = EndpointStatus.DESTROYED.value
                ep.url = None
                ep.error = None
            elif not self._has_active(s, op.endpoint, OpKind.DESTROY, after=op.seq):
                ep.status = EndpointStatus.DESTROY_FAILED.value
                ep.error = op.error
        elif not ok and current is not EndpointStatus.DESTROYING:
            ep.error = op.error

    def _has_active(self, s: Session, endpoint: str, kind: OpKind | None, *, after: int) -> bool:
        q = (
            select(func.count())
            .select_from(OperationRow)
            .where(
                OperationRow.endpoint == endpoint,
                OperationRow.status.in_(ACTIVE_OP),
                OperationRow.seq > after,
            )
        )
        if kind is not None:
            q = q.where(OperationRow.kind == kind.value)
        return bool(s.scalar(q))

    # -- teardown ---------------------------------------------------------------

    def expired(self, now: datetime, statuses: Sequence[str] = EXPIRABLE) -> list[Endpoint]:
        """Endpoints past their expiry in one of ``statuses``."""
        q = (
            select(EndpointRow)
            .where(
                EndpointRow.status.in_(list(statuses)),
                EndpointRow.expires_at.is_not(None),
                EndpointRow.expires_at < now,
            )
            .order_by(EndpointRow.expires_at, EndpointRow.name)
        )
        with self._tx() as s:
            return [Endpoint.of(r) for r in s.scalars(q)]

    def claim_expired(
        self,
        name: str,
        now: datetime,
        *,
        requested_by: str = "teardown",
        statuses: Sequence[str] = EXPIRABLE,
        attempt: int = 1,
    ) -> Operation | None:
        """Atomically take an expired endpoint for destruction and queue its destroy.

        ``UPDATE endpoints SET status='destroying' WHERE name=? AND status IN
        (...) AND expires_at < now``: of two teardown copies, exactly one
        matches the row; the other gets None. The destroy operation is queued in
        the same transaction, so a claim is never left without its operation.
        """
        with self._tx(write=True) as s:
            res = s.execute(
                update(EndpointRow)
                .where(
                    EndpointRow.name == name,
                    EndpointRow.status.in_(list(statuses)),
                    EndpointRow.expires_at.is_not(None),
                    EndpointRow.expires_at < now,
                )
                .values(status=EndpointStatus.DESTROYING.value, updated_at=now)
            )
            if res.rowcount != 1:  # type: ignore[attr-defined]
                return None
            return self._queue_teardown(s, name, now, requested_by, attempt)

    def _queue_teardown(
        self, s: Session, name: str, now: datetime, requested_by: str, attempt: int
    ) -> Operation:
        """Record the destroy operation of an endpoint the teardown just claimed."""
        row = s.get(EndpointRow, name)
        assert row is not None
        key = f"teardown:{name}:{row.generation}:{int(now.timestamp())}:{attempt}"
        return Operation.of(self._new_op(s, row, OpKind.DESTROY, requested_by, key, None, now))

    def claim_retry(
        self, name: str, now: datetime, *, requested_by: str = "teardown", attempt: int
    ) -> Operation | None:
        """Queue another destroy of an endpoint whose destroy failed (teardown retry)."""
        with self._tx(write=True) as s:
            res = s.execute(
                update(EndpointRow)
                .where(
                    EndpointRow.name == name,
                    EndpointRow.status == EndpointStatus.DESTROY_FAILED.value,
                )
                .values(status=EndpointStatus.DESTROYING.value, updated_at=now)
            )
            if res.rowcount != 1:  # type: ignore[attr-defined]
                return None
            return self._queue_teardown(s, name, now, requested_by, attempt)

    # -- logs --------------------------------------------------------------------

    def append_log(self, op_id: str, lines: Sequence[str], *, now: datetime | None = None) -> int:
        """Append lines to an operation's log, within its line and byte caps.

        Returns:
            How many lines were kept. Past a cap one ``[log truncated]`` line is
            written and everything after it is dropped.
        """
        if not lines:
            return 0
        now = now or utcnow()
        with self._tx(write=True) as s:
            op = s.scalar(select(OperationRow).where(OperationRow.id == op_id))
            if op is None or op.log_truncated:
                return 0
            n_lines, n_bytes = op.log_lines or 0, op.log_bytes or 0
            kept = 0
            for line in lines:
                size = len(line.encode("utf-8", "replace"))
                if n_lines + 1 >= self.log_max_lines or n_bytes + size > self.log_max_bytes:
                    s.add(LogRow(op_id=op_id, ts=now, line="[log truncated]"))
                    op.log_truncated = True
                    n_lines += 1
                    break
                s.add(LogRow(op_id=op_id, ts=now, line=line))
                n_lines += 1
                n_bytes += size
                kept += 1
            op.log_lines, op.log_bytes = n_lines, n_bytes
            return kept
