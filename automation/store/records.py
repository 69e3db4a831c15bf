"""The records and their tables: each field is declared once, with its column.

A record class (:class:`Endpoint`, :class:`Operation`, :class:`LogLine`) is a
frozen dataclass whose fields carry their column (:func:`col`); the table is
built from those fields (:func:`table_of`) and a row becomes a record with
``Record(**row._mapping)`` (:func:`record`), so the table and the records can
never disagree. Columns convert values themselves (enums, JSON, UTC times),
so records hold real types. Records never hold secrets.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Row
from sqlalchemy.types import TypeDecorator, TypeEngine

_COLUMN = "column"


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class EndpointStatus(StrEnum):
    """Life cycle of an endpoint (moves: :data:`automation.store.states.ENDPOINT_MOVES`)."""

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
    """queued -> running -> a terminal state (:data:`~automation.store.states.OPERATION_MOVES`)."""

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


# -- column types -------------------------------------------------------------------


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


class EnumText(TypeDecorator[StrEnum]):
    """A ``StrEnum`` stored as its value."""

    impl = String
    cache_ok = True

    def __init__(self, enum: type[StrEnum], length: int) -> None:
        super().__init__(length)
        self.enum = enum

    def process_bind_param(self, value: Any, dialect: Any) -> str | None:
        return None if value is None else self.enum(value).value

    def process_result_value(self, value: str | None, dialect: Any) -> StrEnum | None:
        return None if value is None else self.enum(value)


class JSONText(TypeDecorator[Any]):
    """A JSON document stored as (sorted) text, portable across SQLite and PostgreSQL."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> str | None:
        return None if value is None else json.dumps(value, sort_keys=True)

    def process_result_value(self, value: str | None, dialect: Any) -> Any:
        return None if value is None else json.loads(value)


def col(type_: TypeEngine[Any] | type[TypeEngine[Any]], **kwargs: Any) -> Any:
    """A record field stored in a column of ``type_`` (``primary_key``, ``index``, ...).

    Nullability follows the field's annotation (``str | None`` is nullable).
    """
    return field(metadata={_COLUMN: (type_, kwargs)})


def table_of(record: type, name: str, metadata: MetaData, *extra: Any) -> Table:
    """The table of a record class: one column per field, in field order."""
    columns = []
    for f in fields(record):
        type_, kwargs = f.metadata[_COLUMN]
        nullable = "None" in str(f.type)
        columns.append(Column(f.name, type_, nullable=nullable, **kwargs))
    return Table(name, metadata, *columns, *extra)


R = TypeVar("R")


def record(cls: type[R], row: Row[Any]) -> R:
    """The record of a row."""
    return cls(**row._mapping)


# -- records ------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """An endpoint record: its desired spec, where it stands, what it reported."""

    name: str = col(String(40), primary_key=True)
    owner: str = col(String(128), index=True)
    spec: dict[str, Any] = col(JSONText())
    status: EndpointStatus = col(EnumText(EndpointStatus, 20), index=True)
    url: str | None = col(String(512))
    model: str | None = col(String(200))
    instance_type: str | None = col(String(64))
    cost_per_hour: float | None = col(Float)
    created_at: datetime = col(UTCDateTime())
    updated_at: datetime = col(UTCDateTime())
    expires_at: datetime | None = col(UTCDateTime(), index=True)
    last_operation_id: str | None = col(String(36))
    #: The operation holding the stack right now (the per-stack lock).
    lock_op_id: str | None = col(String(36))
    error: str | None = col(Text)
    #: Incremented on each (re)create of the name: operations belong to a
    #: generation, so a new owner of a reused name never sees the old history.
    generation: int = col(Integer, default=1)
    #: Accelerator devices the endpoint runs (all replicas), for quotas.
    accelerators: int | None = col(Integer)
    #: Bumped on each API key rotation; the serving pods roll when it changes.
    api_key_version: int = col(Integer, default=1)


@dataclass(frozen=True)
class Operation:
    """An operation on an endpoint's stack."""

    #: Global FIFO order (an integer key is portable: SQLite and PostgreSQL).
    seq: int = col(Integer, primary_key=True, autoincrement=True)
    id: str = col(String(36), unique=True)
    endpoint: str = col(String(40), index=True)
    #: The endpoint generation the operation belongs to.
    generation: int = col(Integer, default=1)
    kind: OpKind = col(EnumText(OpKind, 16))
    status: OpStatus = col(EnumText(OpStatus, 16), index=True)
    requested_by: str = col(String(128))
    idempotency_key: str | None = col(String(200))
    request_hash: str | None = col(String(64))
    created_at: datetime = col(UTCDateTime())
    claimed_at: datetime | None = col(UTCDateTime())
    started_at: datetime | None = col(UTCDateTime())
    finished_at: datetime | None = col(UTCDateTime())
    #: The process that owns the running operation (dispatcher, then worker).
    host: str | None = col(String(255))
    boot_id: str | None = col(String(64))
    pid: int | None = col(Integer)
    #: The owner's start time, seconds since the epoch (automation.procs).
    pid_start: float | None = col(Float)
    #: True once the owner is the worker process (a session leader of its own).
    worker: bool = col(Boolean, default=False)
    cancel_reason: CancelReason | None = col(EnumText(CancelReason, 16))
    cancel_requested_at: datetime | None = col(UTCDateTime())
    error: str | None = col(Text)
    log_lines: int = col(Integer, default=0)
    log_bytes: int = col(Integer, default=0)
    log_truncated: bool = col(Boolean, default=False)


@dataclass(frozen=True)
class LogLine:
    """One line of an operation's log."""

    id: int = col(Integer, primary_key=True, autoincrement=True)
    op_id: str = col(String(36), index=True)
    ts: datetime = col(UTCDateTime())
    line: str = col(Text)


@dataclass(frozen=True)
class EndpointOutputs:
    """What a successful ``up`` reports back about an endpoint (not stored as a table)."""

    url: str | None = None
    model: str | None = None
    instance_type: str | None = None
    cost_per_hour: float | None = None
    accelerators: int | None = None


metadata = MetaData()
ENDPOINTS = table_of(Endpoint, "endpoints", metadata)
OPERATIONS = table_of(
    Operation,
    "operations",
    metadata,
    UniqueConstraint("requested_by", "idempotency_key", name="uq_operation_idempotency"),
    Index("ix_operations_endpoint_status_seq", "endpoint", "status", "seq"),
)
LOG = table_of(LogLine, "operation_log", metadata)
