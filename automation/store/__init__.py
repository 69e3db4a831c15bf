"""The control plane's records (see :mod:`automation.store.store` for the invariants).

``records`` declares each record and its table once; ``states`` holds the
endpoint and operation state tables; ``db`` the engine and the Alembic
migrations; ``store`` the :class:`Store` itself.
"""

from automation.procs import Owner
from automation.store.errors import (
    Conflict,
    IdempotencyMismatch,
    NotFound,
    QuotaExceeded,
    StoreError,
)
from automation.store.records import (
    CancelReason,
    Endpoint,
    EndpointOutputs,
    EndpointStatus,
    LogLine,
    Operation,
    OpKind,
    OpStatus,
    utcnow,
)
from automation.store.states import IllegalTransition
from automation.store.store import ACTIVE_OP, EXPIRABLE, Quota, Store

__all__ = [
    "ACTIVE_OP",
    "EXPIRABLE",
    "CancelReason",
    "Conflict",
    "Endpoint",
    "EndpointOutputs",
    "EndpointStatus",
    "IdempotencyMismatch",
    "IllegalTransition",
    "LogLine",
    "NotFound",
    "OpKind",
    "OpStatus",
    "Operation",
    "Owner",
    "Quota",
    "QuotaExceeded",
    "Store",
    "StoreError",
    "utcnow",
]
