"""The state machines of endpoints and operations, as explicit tables.

Every status change in the store goes through :func:`check_endpoint_move` or
:func:`check_operation_move`; a move that is not in the table raises
:class:`IllegalTransition` instead of silently corrupting a record. Staying in
the same state is always allowed (a redeploy of a ready endpoint keeps it
ready).
"""

from __future__ import annotations

from collections.abc import Mapping

from automation.store.errors import StoreError
from automation.store.records import EndpointStatus, OpStatus

_E = EndpointStatus
#: Where an endpoint may go from each status.
ENDPOINT_MOVES: Mapping[EndpointStatus, frozenset[EndpointStatus]] = {
    # The create runs: ready or failed; a destroy may be queued behind it.
    _E.CREATING: frozenset({_E.READY, _E.FAILED, _E.DESTROYING}),
    # A redeploy that fails leaves it failed; a destroy or teardown takes it.
    _E.READY: frozenset({_E.FAILED, _E.DESTROYING}),
    # A redeploy retries the create; a destroy or teardown takes it.
    _E.FAILED: frozenset({_E.CREATING, _E.READY, _E.DESTROYING}),
    _E.DESTROYING: frozenset({_E.DESTROYED, _E.DESTROY_FAILED}),
    # Kept visible until a person or the teardown retries it.
    _E.DESTROY_FAILED: frozenset({_E.DESTROYING}),
    # The name may be created again (a new generation).
    _E.DESTROYED: frozenset({_E.CREATING}),
}

_O = OpStatus
#: Where an operation may go from each status; terminal statuses go nowhere.
OPERATION_MOVES: Mapping[OpStatus, frozenset[OpStatus]] = {
    # Claimed by a dispatcher; or cancelled before it started.
    _O.QUEUED: frozenset({_O.RUNNING, _O.INTERRUPTED}),
    _O.RUNNING: frozenset({_O.SUCCEEDED, _O.FAILED, _O.INTERRUPTED, _O.TIMED_OUT}),
    **{s: frozenset() for s in OpStatus if s.terminal},
}


class IllegalTransition(StoreError):
    """A status change the state table does not allow (a bug, never a request error)."""


def check_endpoint_move(name: str, old: EndpointStatus, new: EndpointStatus) -> None:
    """Raise :class:`IllegalTransition` unless an endpoint may go from ``old`` to ``new``."""
    if new is not old and new not in ENDPOINT_MOVES[old]:
        raise IllegalTransition(f"endpoint {name!r}: {old} -> {new} is not allowed")


def check_operation_move(op_id: str, old: OpStatus, new: OpStatus) -> None:
    """Raise :class:`IllegalTransition` unless an operation may go from ``old`` to ``new``."""
    if new not in OPERATION_MOVES[old]:
        raise IllegalTransition(f"operation {op_id}: {old} -> {new} is not allowed")
