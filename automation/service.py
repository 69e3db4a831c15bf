"""The control plane's requests, shared by the HTTP API and the CLI.

Turning a request into a recorded, queued operation is the same whichever
way it comes in: the server decides where the endpoint runs (never the
request), the ttl is bounded, the spec is validated and sized by the planner
before anything is recorded, and a HF token goes to the worker's drop-box
keyed by the operation id, never into a record.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from automation.settings import Settings, Target
from automation.store import EndpointOutputs, Operation, Store, utcnow
from automation.worker import discard_secret, put_secret
from components.config import EndpointSpec, parse_spec, parse_ttl

log = logging.getLogger("llm_endpoints.service")

#: Sizes a spec; raises ValueError with the numbers when it does not fit.
Planner = Callable[[EndpointSpec], Any]


class InvalidRequest(ValueError):
    """A request that must not reach the store (HTTP 422).

    Attributes:
        code: ``invalid_spec`` or ``plan_error``.
        details: One line per problem, each naming its field.
    """

    def __init__(self, code: str, message: str, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.details = details or []


def default_planner() -> Planner | None:
    """``components.planner.plan_for_spec``, or None while it does not exist."""
    try:
        from components.planner import plan_for_spec
    except ImportError:
        log.warning("components.planner is not available; requests are not sized")
        return None
    return plan_for_spec


def placement(settings: Settings, name: str) -> dict[str, Any]:
    """Where a self-service endpoint goes (the ``cluster`` and ``pool`` of its spec)."""
    if settings.target is Target.RENDER:
        return {
            "cluster": {"mode": "existing", "render_dir": str(settings.render_base / name)},
            "pool": {"mode": "none"},
        }
    if settings.target is Target.EXISTING:
        return {
            "cluster": {"mode": "existing", "kubeconfig": str(settings.kubeconfig)},
            "pool": {"mode": "none"},
        }
    return {"cluster": {"mode": "shared", "platform_stack": settings.platform_stack}}


def check_ttl(settings: Settings, ttl: str) -> None:
    """Raise ValueError unless ``ttl`` is a valid duration within the server's maximum."""
    if parse_ttl(ttl) > settings.max_ttl_delta:
        raise ValueError(f"ttl: {ttl!r} is longer than this server's maximum {settings.max_ttl}")


def prepare_spec(settings: Settings, payload: dict[str, Any]) -> EndpointSpec:
    """The validated spec of a create request (without secrets).

    ``payload`` may not choose ``cluster`` or ``pool``; a missing ``ttl`` gets
    the server's default.

    Raises:
        InvalidRequest: ``invalid_spec`` with one line per bad field.
    """
    payload = {k: v for k, v in payload.items() if v is not None}
    details = [
        f"{k}: set by the server, not by a request" for k in ("cluster", "pool") if k in payload
    ]
    if details:
        raise InvalidRequest("invalid_spec", "invalid endpoint spec", details)
    payload.setdefault("ttl", settings.default_ttl)
    try:
        if isinstance(payload["ttl"], str):
            check_ttl(settings, payload["ttl"])
        return parse_spec({**payload, **placement(settings, str(payload.get("name", "")))})
    except ValueError as e:
        raise InvalidRequest("invalid_spec", "invalid endpoint spec", str(e).splitlines()) from None


def plan(planner: Planner | None, spec: EndpointSpec) -> EndpointOutputs:
    """Size the spec; the figures fill the record until the stack reports its own.

    Raises:
        InvalidRequest: ``plan_error`` with the planner's numbers.
    """
    if planner is None:
        return EndpointOutputs(model=spec.model, instance_type=spec.instance_type)
    try:
        est = planner(spec)
    except ValueError as e:
        raise InvalidRequest("plan_error", str(e)) from None
    if getattr(est, "fits", True) is False:
        why = getattr(est, "reason", None) or repr(est)
        raise InvalidRequest("plan_error", f"does not fit: {why}")
    cost = getattr(est, "cost_per_hour", None)
    return EndpointOutputs(
        model=spec.model,
        instance_type=getattr(est, "instance_type", None) or spec.instance_type,
        cost_per_hour=float(cost) if isinstance(cost, int | float) else None,
    )


def request_hash(payload: dict[str, Any], has_token: bool) -> str:
    """Fingerprint of a request for Idempotency-Key reuse checks (no secret in it)."""
    body = json.dumps({"p": payload, "t": has_token}, sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()


def submit_create(
    settings: Settings,
    store: Store,
    spec: EndpointSpec,
    owner: str,
    *,
    hints: EndpointOutputs | None = None,
    hf_token: str | None = None,
    idempotency_key: str | None = None,
    fingerprint: str | None = None,
    now: datetime | None = None,
) -> tuple[Operation, bool]:
    """Record the endpoint and queue its ``up``; the token waits for the worker.

    Returns:
        The operation and whether it replays an earlier request.

    Raises:
        Conflict: the name is taken by a live endpoint.
        IdempotencyMismatch: the key was used for another request.
    """
    now = now or utcnow()
    op_id = str(uuid.uuid4())
    if hf_token:
        # Before the record: the dispatcher may claim the operation at once.
        put_secret(settings, op_id, hf_token)
    ttl = spec.ttl_delta
    try:
        op, replayed = store.request_create(
            spec.name,
            owner,
            spec.model_dump(mode="json"),
            expires_at=None if ttl is None else now + ttl,
            idempotency_key=idempotency_key,
            request_hash=fingerprint,
            hints=hints,
            op_id=op_id,
            now=now,
        )
    except BaseException:
        discard_secret(settings, op_id)
        raise
    if op.id != op_id:
        discard_secret(settings, op_id)
    return op, replayed
