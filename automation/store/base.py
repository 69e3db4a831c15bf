"""The store's foundation: the engine, transactions, row helpers, reads and logs.

:class:`~automation.store.store.Store` adds the requests, the dispatch and the
teardown claims on top of :class:`StoreBase`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Self

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection

from automation.store.db import make_engine, migrate, transaction
from automation.store.errors import IdempotencyMismatch, NotFound
from automation.store.records import (
    ENDPOINTS,
    LOG,
    OPERATIONS,
    Endpoint,
    EndpointStatus,
    LogLine,
    Operation,
    OpKind,
    OpStatus,
    record,
    utcnow,
)
from automation.store.states import check_endpoint_move, check_operation_move

ACTIVE_OP = (OpStatus.QUEUED, OpStatus.RUNNING)
E, OP = ENDPOINTS.c, OPERATIONS.c


class StoreBase:
    """Endpoints, operations and their logs.

    Args:
        url: SQLAlchemy database URL; the database is migrated to the newest
            schema first.
        log_max_lines: Lines kept per operation log.
        log_max_bytes: Bytes kept per operation log.
    """

    def __init__(self, url: str, *, log_max_lines: int = 2000, log_max_bytes: int = 256 * 1024):
        self.url = url
        self.log_max_lines = log_max_lines
        self.log_max_bytes = log_max_bytes
        self.is_sqlite = url.startswith("sqlite")
        self.engine = make_engine(url)
        migrate(self.engine)

    @classmethod
    def from_settings(cls, settings: Any) -> Self:
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
    def _tx(self, write: bool = False) -> Iterator[Connection]:
        with transaction(self.engine, write) as conn:
            yield conn

    # -- row helpers ------------------------------------------------------------

    @staticmethod
    def _endpoint(conn: Connection, name: str, *, lock: bool = False) -> Endpoint | None:
        q = select(ENDPOINTS).where(E.name == name)
        row = conn.execute(q.with_for_update() if lock else q).first()
        return None if row is None else record(Endpoint, row)

    @staticmethod
    def _operation(conn: Connection, op_id: str) -> Operation | None:
        row = conn.execute(select(OPERATIONS).where(OP.id == op_id)).first()
        return None if row is None else record(Operation, row)

    @staticmethod
    def _set_endpoint(conn: Connection, ep: Endpoint, **values: Any) -> None:
        """Update an endpoint read in this transaction; status moves are checked."""
        if "status" in values:
            check_endpoint_move(ep.name, ep.status, values["status"])
        conn.execute(update(ENDPOINTS).where(E.name == ep.name).values(**values))

    @staticmethod
    def _move_operation(conn: Connection, op: Operation, status: OpStatus, **values: Any) -> bool:
        """Move an operation from the status it was read with; False if it moved meanwhile."""
        check_operation_move(op.id, op.status, status)
        res = conn.execute(
            update(OPERATIONS)
            .where(OP.id == op.id, OP.status == op.status)
            .values(status=status, **values)
        )
        return bool(res.rowcount == 1)

    # -- reads ------------------------------------------------------------------

    def get_endpoint(self, name: str) -> Endpoint:
        """The endpoint named ``name``.

        Raises:
            NotFound: no such endpoint.
        """
        with self._tx() as conn:
            ep = self._endpoint(conn, name)
        if ep is None:
            raise NotFound(f"endpoint {name!r} not found")
        return ep

    def find_endpoint(self, name: str) -> Endpoint | None:
        """The endpoint named ``name``, or None."""
        with self._tx() as conn:
            return self._endpoint(conn, name)

    def list_endpoints(
        self, owner: str | None = None, *, include_destroyed: bool = False
    ) -> list[Endpoint]:
        """Endpoints, optionally of one owner, newest first."""
        q = select(ENDPOINTS).order_by(E.created_at.desc(), E.name)
        if owner is not None:
            q = q.where(E.owner == owner)
        if not include_destroyed:
            q = q.where(E.status != EndpointStatus.DESTROYED)
        with self._tx() as conn:
            return [record(Endpoint, r) for r in conn.execute(q)]

    def get_operation(self, op_id: str) -> Operation:
        """The operation with id ``op_id``.

        Raises:
            NotFound: no such operation.
        """
        with self._tx() as conn:
            op = self._operation(conn, op_id)
        if op is None:
            raise NotFound(f"operation {op_id!r} not found")
        return op

    def list_operations(
        self, endpoint: str | None = None, statuses: Iterable[OpStatus] | None = None
    ) -> list[Operation]:
        """Operations in FIFO order, optionally of one endpoint and some statuses."""
        q = select(OPERATIONS).order_by(OP.seq)
        if endpoint is not None:
            q = q.where(OP.endpoint == endpoint)
        if statuses is not None:
            q = q.where(OP.status.in_([OpStatus(x) for x in statuses]))
        with self._tx() as conn:
            return [record(Operation, r) for r in conn.execute(q)]

    def logs(self, op_id: str, after: int = 0, limit: int = 500) -> list[LogLine]:
        """Log lines of an operation with ids greater than ``after``."""
        q = (
            select(LOG)
            .where(LOG.c.op_id == op_id, LOG.c.id > after)
            .order_by(LOG.c.id)
            .limit(limit)
        )
        with self._tx() as conn:
            return [record(LogLine, r) for r in conn.execute(q)]

    @staticmethod
    def _replay(
        conn: Connection, user: str, key: str | None, request_hash: str | None
    ) -> Operation | None:
        if not key:
            return None
        row = conn.execute(
            select(OPERATIONS).where(OP.requested_by == user, OP.idempotency_key == key)
        ).first()
        if row is None:
            return None
        op = record(Operation, row)
        if request_hash is not None and op.request_hash != request_hash:
            raise IdempotencyMismatch(
                "Idempotency-Key was already used for a different request; use a new key"
            )
        return op

    @staticmethod
    def _new_op(
        conn: Connection,
        endpoint: str,
        kind: OpKind,
        user: str,
        key: str | None,
        request_hash: str | None,
        now: datetime,
        op_id: str | None = None,
    ) -> Operation:
        """Queue an operation of the endpoint's current generation; it becomes the
        endpoint's latest, whoever queued it."""
        op_id = op_id or str(uuid.uuid4())
        generation = conn.execute(select(E.generation).where(E.name == endpoint)).scalar_one()
        conn.execute(
            insert(OPERATIONS).values(
                id=op_id,
                endpoint=endpoint,
                generation=generation,
                kind=kind,
                status=OpStatus.QUEUED,
                requested_by=user,
                idempotency_key=key or None,
                request_hash=request_hash,
                created_at=now,
            )
        )
        conn.execute(update(ENDPOINTS).where(E.name == endpoint).values(last_operation_id=op_id))
        op = StoreBase._operation(conn, op_id)
        assert op is not None
        return op

    @staticmethod
    def _active(
        conn: Connection, endpoint: str, kind: OpKind | None = None, *, after: int = 0
    ) -> int:
        q = (
            select(func.count())
            .select_from(OPERATIONS)
            .where(OP.endpoint == endpoint, OP.status.in_(ACTIVE_OP), OP.seq > after)
        )
        if kind is not None:
            q = q.where(OP.kind == kind)
        return int(conn.execute(q).scalar_one())

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
        with self._tx(write=True) as conn:
            op = self._operation(conn, op_id)
            if op is None or op.log_truncated:
                return 0
            n_lines, n_bytes, truncated = op.log_lines, op.log_bytes, False
            kept: list[str] = []
            for line in lines:
                size = len(line.encode("utf-8", "replace"))
                if n_lines + 1 >= self.log_max_lines or n_bytes + size > self.log_max_bytes:
                    kept.append("[log truncated]")
                    n_lines += 1
                    truncated = True
                    break
                kept.append(line)
                n_lines += 1
                n_bytes += size
            conn.execute(insert(LOG), [{"op_id": op_id, "ts": now, "line": ln} for ln in kept])
            conn.execute(
                update(OPERATIONS)
                .where(OP.id == op_id)
                .values(log_lines=n_lines, log_bytes=n_bytes, log_truncated=truncated)
            )
            return len(kept) - int(truncated)
