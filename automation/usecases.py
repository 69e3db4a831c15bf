"""Every request of the control plane, in one place: the HTTP routes and the CLI are
a few lines each over :class:`ControlPlane`.

A request validates, records and queues; it never runs Pulumi. Whichever way
it comes in, the server decides where the endpoint runs (never the request),
the ttl is bounded, the spec is validated and sized by the planner before
anything is recorded, a HF token goes to the worker's drop-box keyed by the
operation id (never into a record), and a caller sees and touches only the
endpoints it may (others' are "not found", exactly like missing ones).
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from automation.dispatcher import Dispatcher
from automation.hub import fetch_config
from automation.secrets import api_key_for, discard_secret, put_secret
from automation.settings import Settings, Target
from automation.store import (
    Conflict,
    Endpoint,
    EndpointOutputs,
    EndpointStatus,
    LogLine,
    NotFound,
    Operation,
    OpKind,
    Quota,
    Store,
    utcnow,
)
from components.config import EndpointSpec, parse_spec
from components.models import get_model
from components.rules import check_model_id, check_name, parse_ttl

log = logging.getLogger("llm_endpoints.usecases")

#: Sizes a spec; raises ValueError with the numbers when it does not fit.
Planner = Callable[[EndpointSpec], Any]
#: The fields the server sets; a request naming them is refused.
SERVER_FIELDS = ("cluster", "pool", "namespace")
#: What a redeploy may change in a live endpoint's spec (the rest would move
#: it, resize it or change what it costs: destroy and create instead).
REDEPLOY_FIELDS = ("vllm",)


class InvalidRequest(ValueError):
    """A request that must not reach the store (HTTP 422).

    Attributes:
        code: ``invalid_spec``, ``plan_error`` or ``invalid_request``.
        details: One line per problem, each naming its field.
    """

    def __init__(self, code: str, message: str, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.details = details or []


@dataclass(frozen=True)
class Principal:
    """The caller of a request.

    Attributes:
        user: Who it is (owner of what it creates).
        admin: Sees and touches every endpoint (and has no quota).
        quota: Limits of this user, instead of the server's defaults.
    """

    user: str
    admin: bool = False
    quota: Quota | None = None

    def can_see(self, owner: str) -> bool:
        """Users see their own endpoints; admins see all."""
        return self.admin or owner == self.user


@dataclass(frozen=True)
class Accepted:
    """A recorded, queued operation (HTTP 202).

    Attributes:
        operation: The operation to follow.
        replayed: True when this answers a repeat (same Idempotency-Key, or a
            destroy already queued).
    """

    operation: Operation
    replayed: bool


def default_planner() -> Planner:
    """The project's planner (``components.planner.plan_for_spec``)."""
    from components.planner import plan_for_spec

    return plan_for_spec


def placement(settings: Settings, name: str) -> dict[str, Any]:
    """Where a self-service endpoint goes: the ``cluster``, ``pool`` and ``namespace``.

    The namespace is new for every endpoint (a name that is destroyed and
    created again gets another), so no request can reach into another
    endpoint's or the cluster's namespaces.
    """
    namespace = f"{name}-{secrets.token_hex(3)}"
    if settings.target is Target.RENDER:
        return {
            "cluster": {"mode": "existing", "render_dir": str(settings.render_base / name)},
            "pool": {"mode": "none"},
            "namespace": namespace,
        }
    if settings.target is Target.EXISTING:
        return {
            "cluster": {"mode": "existing", "kubeconfig": str(settings.kubeconfig)},
            "pool": {"mode": "none"},
            "namespace": namespace,
        }
    return {
        "cluster": {"mode": "shared", "platform_stack": settings.platform_stack},
        "namespace": namespace,
    }


def _shipped(model: str) -> bool:
    """Whether ``model`` is a shipped id or alias (``components.models``)."""
    try:
        get_model(model)
    except ValueError:
        return False
    return True


def _check_serving(spec: EndpointSpec, planned_instance: str | None = None) -> None:
    """``components.image_rules.check_serving`` (imported here: it imports Pulumi)."""
    from components.image_rules import check_serving

    check_serving(spec, planned_instance)


def check_ttl(settings: Settings, ttl: str) -> None:
    """Raise ValueError unless ``ttl`` is a valid duration within the server's maximum."""
    if parse_ttl(ttl) > settings.max_ttl_delta:
        raise ValueError(f"ttl: {ttl!r} is longer than this server's maximum {settings.max_ttl}")


def request_hash(payload: dict[str, Any], has_token: bool) -> str:
    """Fingerprint of a request for Idempotency-Key reuse checks (no secret in it)."""
    body = json.dumps({"p": payload, "t": has_token}, sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()


class ControlPlane:
    """The control plane's requests over one store.

    Args:
        settings: Control-plane settings.
        store: The records.
        planner: Sizes a spec; None skips sizing (tests of the plumbing).
        dispatcher: Woken when a request queues something (None: a server or
            CLI elsewhere picks it up).
    """

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        planner: Planner | None,
        dispatcher: Dispatcher | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.planner = planner
        self.dispatcher = dispatcher
        self._core: Any = None  # the target cluster's API client, made on first use

    # -- validation ---------------------------------------------------------------

    def prepare_spec(self, payload: dict[str, Any], *, hf_token: str | None = None) -> EndpointSpec:
        """The validated spec of a create request (without secrets).

        ``payload`` may not choose ``cluster`` or ``pool``; a missing ``ttl``
        gets the server's default. A model that is not shipped, named without
        ``model_config``, has its ``config.json`` fetched from the Hub
        (``settings.hf_endpoint``, with ``hf_token``) into the spec, so the
        worker and the planner never fetch it. What the spec's pinned serving
        image cannot run is refused (``components.image_rules``).

        Raises:
            InvalidRequest: ``invalid_spec`` with one line per bad field
                (a config the Hub would not give: ``model: ...``).
        """
        payload = {k: v for k, v in payload.items() if v is not None}
        details = [
            f"{k}: set by the server, not by a request" for k in SERVER_FIELDS if k in payload
        ]
        if details:
            raise InvalidRequest("invalid_spec", "invalid endpoint spec", details)
        payload.setdefault("ttl", self.settings.default_ttl)
        try:
            if isinstance(payload["ttl"], str):
                check_ttl(self.settings, payload["ttl"])
            name = str(payload.get("name", ""))
            payload = self._with_model_config(payload, hf_token)
            spec = parse_spec({**payload, **placement(self.settings, name)})
            _check_serving(spec)
        except ValueError as e:
            raise InvalidRequest(
                "invalid_spec", "invalid endpoint spec", str(e).splitlines()
            ) from None
        return spec

    def _with_model_config(self, payload: dict[str, Any], hf_token: str | None) -> dict[str, Any]:
        """``payload`` with ``model_config`` from the Hub when its model needs one.

        Only a valid ``owner/name`` id (the URL is built from it) that is not
        shipped, given neither ``model_config`` nor ``custom_model``; anything
        else is left to the spec's own rules.

        Raises:
            HubError: the Hub would not give it (a ValueError naming the field).
        """
        model = payload.get("model")
        if (
            not isinstance(model, str)
            or payload.get("model_config") is not None
            or payload.get("custom_model") is not None
            or _shipped(model)
        ):
            return payload
        try:
            check_model_id(model)
        except ValueError:
            return payload
        config = fetch_config(model, endpoint=self.settings.hf_endpoint, token=hf_token)
        log.info("fetched the config.json of %s from %s", model, self.settings.hf_endpoint)
        return {**payload, "model_config": config}

    def plan(self, spec: EndpointSpec) -> EndpointOutputs:
        """Size the spec; the figures fill the record until the stack reports its own.

        Raises:
            InvalidRequest: ``plan_error`` with the planner's numbers.
        """
        if self.planner is None:
            return EndpointOutputs(model=spec.model, instance_type=spec.instance_type)
        try:
            est = self.planner(spec)
        except ValueError as e:
            raise InvalidRequest("plan_error", str(e)) from None
        if getattr(est, "fits", True) is False:
            why = getattr(est, "reason", None) or repr(est)
            raise InvalidRequest("plan_error", f"does not fit: {why}")
        cost = getattr(est, "cost_per_hour", None)
        devices = getattr(est, "devices_per_node", None)
        nodes = getattr(est, "nodes", 1)
        return EndpointOutputs(
            model=spec.model,
            instance_type=getattr(est, "instance_type", None) or spec.instance_type,
            cost_per_hour=(
                round(float(cost) * spec.replicas, 3) if isinstance(cost, int | float) else None
            ),
            accelerators=devices * nodes * spec.replicas if isinstance(devices, int) else None,
        )

    def quota(self, caller: Principal) -> Quota | None:
        """The caller's limits: none for administrators, else theirs or the server's."""
        if caller.admin:
            return None
        if caller.quota is not None:
            return caller.quota
        s = self.settings
        return Quota(
            endpoints=s.quota_endpoints,
            accelerators=s.quota_accelerators,
            cost_per_hour=s.quota_cost_per_hour,
            queued=s.quota_queued,
        )

    def _check_policy(self, spec: EndpointSpec, hf_token: str | None) -> None:
        """What this server allows beyond the spec's own rules.

        Raises:
            InvalidRequest: remote code for a model no administrator allowed, or
                a secret for a target that would write it to disk in plain text.
        """
        details = []
        if spec.vllm.trust_remote_code and spec.model not in self.settings.trusted_remote_code:
            details.append(
                f"vllm.trust_remote_code: {spec.model} is not among the models an "
                "administrator allows to run their own code (LLM_ENDPOINTS_REMOTE_CODE_MODELS)"
            )
        if hf_token and spec.render_only and self.settings.render_secrets != "allow":
            details.append(
                "hf_token: this server renders manifests to files, which would hold the token "
                "in plain text; leave it out (use an ungated model) or have the operator set "
                "LLM_ENDPOINTS_RENDER_SECRETS=allow"
            )
        if details:
            raise InvalidRequest("invalid_spec", "refused by this server's policy", details)

    def _name(self, name: str) -> str:
        try:
            return check_name(name)
        except ValueError as e:
            raise InvalidRequest("invalid_request", str(e), [str(e)]) from None

    def visible_endpoint(self, caller: Principal, name: str) -> Endpoint:
        """The endpoint if the caller may see it.

        Raises:
            InvalidRequest: the name is not a valid endpoint name.
            NotFound: alike for missing and foreign endpoints.
        """
        ep = self.store.find_endpoint(self._name(name))
        if ep is None or not caller.can_see(ep.owner):
            raise NotFound(f"endpoint {name!r} not found")
        return ep

    def visible_operation(self, caller: Principal, op_id: str) -> Operation:
        """The operation if it belongs to the current generation of an endpoint the
        caller owns (an endpoint's history outlives a reused name: the new owner of
        a name never sees the old owner's operations), or to any, for an admin.

        Raises:
            NotFound: alike for missing, malformed and foreign ids.
        """
        try:
            uuid.UUID(op_id)
            op = self.store.get_operation(op_id)
        except (ValueError, NotFound):
            raise NotFound("operation not found") from None
        if caller.admin:
            return op
        ep = self.store.find_endpoint(op.endpoint)
        if ep is None or ep.owner != caller.user or ep.generation != op.generation:
            raise NotFound("operation not found")
        return op

    def _wake(self) -> None:
        if self.dispatcher is not None:
            self.dispatcher.wake()

    # -- requests -----------------------------------------------------------------

    def create(
        self,
        caller: Principal,
        payload: dict[str, Any],
        *,
        hf_token: str | None = None,
        idempotency_key: str | None = None,
        now: datetime | None = None,
    ) -> Accepted:
        """Validate, size and record an endpoint and queue its ``up``.

        Raises:
            InvalidRequest: a bad field or a model that does not fit.
            Conflict: the name is taken by a live endpoint.
            IdempotencyMismatch: the key was used for another request.
        """
        spec = self.prepare_spec(payload, hf_token=hf_token)
        self._check_policy(spec, hf_token)
        hints = self.plan(spec)
        if spec.instance_type is None and hints.instance_type:
            try:
                _check_serving(spec, hints.instance_type)
            except ValueError as e:
                raise InvalidRequest(
                    "invalid_spec", "invalid endpoint spec", str(e).splitlines()
                ) from None
        now = now or utcnow()
        op_id = str(uuid.uuid4())
        if hf_token:
            # Before the record: the dispatcher may claim the operation at once.
            put_secret(self.settings, op_id, hf_token)
        ttl = spec.ttl_delta
        try:
            op, replayed = self.store.request_create(
                spec.name,
                caller.user,
                spec.model_dump(mode="json"),
                expires_at=None if ttl is None else now + ttl,
                idempotency_key=idempotency_key,
                request_hash=request_hash(payload, bool(hf_token)),
                hints=hints,
                op_id=op_id,
                quota=self.quota(caller),
                now=now,
            )
        except BaseException:
            discard_secret(self.settings, op_id)
            raise
        if op.id != op_id:
            discard_secret(self.settings, op_id)
        self._wake()
        return Accepted(op, replayed)

    def _queue(
        self, caller: Principal, name: str, kind: OpKind, idempotency_key: str | None
    ) -> Accepted:
        ep = self.visible_endpoint(caller, name)
        op, replayed = self.store.request_operation(
            ep.name,
            kind,
            caller.user,
            idempotency_key=idempotency_key,
            request_hash=request_hash({"op": kind.value, "name": ep.name}, False),
            max_queued=self.settings.max_queued_per_endpoint,
            quota=self.quota(caller),
        )
        self._wake()
        return Accepted(op, replayed)

    def destroy(
        self, caller: Principal, name: str, *, idempotency_key: str | None = None
    ) -> Accepted:
        """Queue a destroy behind whatever runs on the stack."""
        return self._queue(caller, name, OpKind.DESTROY, idempotency_key)

    def redeploy(
        self,
        caller: Principal,
        name: str,
        changes: dict[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> Accepted:
        """Queue another ``up``: of the recorded spec, or with ``changes``
        (:data:`REDEPLOY_FIELDS`) applied, validated and sized first.

        Raises:
            InvalidRequest: a field that may not change, or the changed spec is invalid.
        """
        ep = self.visible_endpoint(caller, name)
        if not changes:
            return self._queue(caller, name, OpKind.UP, idempotency_key)
        details = [
            f"{k}: cannot change on a live endpoint (destroy and create it instead)"
            for k in changes
            if k not in REDEPLOY_FIELDS
        ]
        if details:
            raise InvalidRequest("invalid_request", "invalid redeploy", details)
        try:
            spec = parse_spec({**ep.spec, **changes})
        except ValueError as e:
            raise InvalidRequest(
                "invalid_spec", "invalid endpoint spec", str(e).splitlines()
            ) from None
        self._check_policy(spec, None)
        hints = self.plan(spec)
        op, replayed = self.store.request_operation(
            ep.name,
            OpKind.UP,
            caller.user,
            idempotency_key=idempotency_key,
            request_hash=request_hash({"op": "up", "name": ep.name, **changes}, False),
            max_queued=self.settings.max_queued_per_endpoint,
            quota=self.quota(caller),
            spec=spec.model_dump(mode="json"),
            hints=hints,
        )
        self._wake()
        return Accepted(op, replayed)

    def api_key(self, caller: Principal, name: str) -> tuple[Endpoint, str]:
        """The endpoint's API key, for its owner only (not even an administrator:
        they rotate it instead).

        Raises:
            NotFound: not the caller's endpoint.
            Conflict: the endpoint is destroyed (its key is gone).
        """
        ep = self.visible_endpoint(caller, name)
        if ep.owner != caller.user:
            raise NotFound(f"endpoint {name!r} not found")
        if ep.status is EndpointStatus.DESTROYED:
            raise Conflict(f"endpoint {name!r} is destroyed; it has no key")
        return ep, api_key_for(self.settings, ep.name, ep.generation, ep.api_key_version)

    def rotate_api_key(
        self, caller: Principal, name: str, *, idempotency_key: str | None = None
    ) -> Accepted:
        """Move the endpoint to a new key and queue the ``up`` that rolls its pods
        onto it (the old key works until they have rolled)."""
        ep = self.visible_endpoint(caller, name)
        op, replayed = self.store.request_operation(
            ep.name,
            OpKind.UP,
            caller.user,
            idempotency_key=idempotency_key,
            request_hash=request_hash({"op": "rotate-api-key", "name": ep.name}, False),
            max_queued=self.settings.max_queued_per_endpoint,
            quota=self.quota(caller),
            rotate_key=True,
        )
        self._wake()
        return Accepted(op, replayed)

    def refresh(
        self, caller: Principal, name: str, *, idempotency_key: str | None = None
    ) -> Accepted:
        """Queue a refresh (read the resources back from the cluster).

        Raises:
            InvalidRequest: the endpoint is rendered to files (no cluster to read).
        """
        ep = self.visible_endpoint(caller, name)
        if ep.spec.get("cluster", {}).get("render_dir"):
            msg = "refresh: this endpoint is rendered to files; there is no cluster to read"
            raise InvalidRequest("invalid_request", msg, [msg])
        return self._queue(caller, name, OpKind.REFRESH, idempotency_key)

    def extend(
        self, caller: Principal, name: str, ttl: str, *, now: datetime | None = None
    ) -> Endpoint:
        """Set the endpoint's expiry to now + ``ttl`` (at most the server's maximum).

        Raises:
            InvalidRequest: a bad or too long ttl.
            Conflict: the endpoint is not live.
        """
        ep = self.visible_endpoint(caller, name)
        try:
            delta = parse_ttl(ttl)
            check_ttl(self.settings, ttl)
        except ValueError as e:
            raise InvalidRequest("invalid_request", str(e), [str(e)]) from None
        now = now or utcnow()
        return self.store.extend(ep.name, now + delta, now=now)

    def cancel(self, caller: Principal, op_id: str) -> Operation:
        """Cancel an operation: a queued one ends at once, a running one is stopped."""
        op = self.store.cancel(self.visible_operation(caller, op_id).id)
        self._wake()
        return op

    # -- reads ----------------------------------------------------------------------

    def list_endpoints(
        self, caller: Principal, *, include_destroyed: bool = False, owner: str | None = None
    ) -> list[Endpoint]:
        """The caller's endpoints (admins: everyone's, or one owner's)."""
        who = owner if caller.admin else caller.user
        return self.store.list_endpoints(who, include_destroyed=include_destroyed)

    def last_operation(self, ep: Endpoint) -> Operation | None:
        """The endpoint's latest operation, if any."""
        if not ep.last_operation_id:
            return None
        try:
            return self.store.get_operation(ep.last_operation_id)
        except NotFound:
            return None

    def show(self, caller: Principal, name: str) -> tuple[Endpoint, Operation | None]:
        """An endpoint and its latest operation."""
        ep = self.visible_endpoint(caller, name)
        return ep, self.last_operation(ep)

    def health(self, ep: Endpoint) -> Any:
        """The endpoint's pods now (:func:`automation.kube.pod_health`), where this
        server applies endpoints to a cluster it can read; None otherwise."""
        if self.settings.target is not Target.EXISTING or ep.status is EndpointStatus.DESTROYED:
            return None
        namespace = ep.spec.get("namespace")
        if not namespace or not self.settings.kubeconfig:
            return None
        from automation.kube import core_api, pod_health

        if self._core is None:
            self._core = core_api(self.settings.kubeconfig)
        return pod_health(self._core, namespace, ep.name)

    def operations(self, caller: Principal, name: str) -> list[Operation]:
        """An endpoint's operations, oldest first (its current generation's, for users)."""
        ep = self.visible_endpoint(caller, name)
        ops = self.store.list_operations(ep.name)
        return ops if caller.admin else [o for o in ops if o.generation == ep.generation]

    def logs(
        self, caller: Principal, op_id: str, after: int = 0, limit: int = 500
    ) -> list[LogLine]:
        """An operation's log lines after ``after``."""
        return self.store.logs(self.visible_operation(caller, op_id).id, after, limit)
