"""``/v1/endpoints``: create, list, show, destroy, extend, redeploy, refresh.

Nothing here runs Pulumi. A request validates, records and queues; the
dispatcher's worker processes do the work and the caller follows the
operation (``202`` with its id and links).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Path, Query, Response

from automation import service
from automation.api.deps import AppContext, Caller, Ctx, Principal, visible_endpoint
from automation.api.schemas import (
    CreateEndpointRequest,
    EndpointList,
    EndpointOut,
    ErrorBody,
    ExtendRequest,
    Links,
    OperationAccepted,
    OperationList,
    OperationOut,
)
from automation.store import Operation, OpKind, utcnow
from components.config import check_name, parse_ttl

router = APIRouter(prefix="/v1/endpoints", tags=["endpoints"])

Responses = dict[int | str, dict[str, Any]]

E401: Responses = {401: {"model": ErrorBody, "description": "missing or unknown bearer token"}}
E404: Responses = {404: {"model": ErrorBody, "description": "no such endpoint (or not yours)"}}
E409: Responses = {
    409: {"model": ErrorBody, "description": "the endpoint's state does not allow it"}
}
E422: Responses = {
    422: {"model": ErrorBody, "description": "invalid request; one detail line per field"}
}

IdemKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=200,
        pattern=r"^[A-Za-z0-9._:-]{1,200}$",
        description="repeat a request safely: the same key returns the same operation",
    ),
]
Name = Annotated[str, Path(max_length=63, description="endpoint name")]


def _name(name: str) -> str:
    try:
        return check_name(name)
    except ValueError as e:
        raise HTTPException(status_code=422, detail=str(e)) from None


def _accepted(op: Operation, replayed: bool, response: Response) -> OperationAccepted:
    response.headers["Location"] = f"/v1/operations/{op.id}"
    return OperationAccepted(
        operation=OperationOut.of(op),
        replayed=replayed,
        links=Links(
            operation=f"/v1/operations/{op.id}",
            events=f"/v1/operations/{op.id}/events",
            endpoint=f"/v1/endpoints/{op.endpoint}",
        ),
    )


@router.post(
    "",
    status_code=202,
    response_model=OperationAccepted,
    summary="Create an endpoint",
    description=(
        "Validates the spec (and sizes it with the planner), records the endpoint and "
        "queues its `up`. Answers 202 at once with the operation to follow. A repeat "
        "with the same `Idempotency-Key` returns the same operation."
    ),
    responses={**E401, **E409, **E422},
)
def create_endpoint(
    body: CreateEndpointRequest,
    ctx: Ctx,
    caller: Caller,
    response: Response,
    idempotency_key: IdemKey = None,
) -> OperationAccepted:
    payload = body.model_dump(mode="json", exclude_none=True, exclude={"hf_token"})
    token = body.hf_token.get_secret_value() if body.hf_token else None
    try:
        spec = service.prepare_spec(ctx.settings, payload)
        hints = service.plan(ctx.planner, spec)
    except service.InvalidRequest as e:
        raise HTTPException(
            status_code=422,
            detail={"code": e.code, "message": str(e), "details": e.details},
        ) from None
    op, replayed = service.submit_create(
        ctx.settings,
        ctx.store,
        spec,
        caller.user,
        hints=hints,
        hf_token=token,
        idempotency_key=idempotency_key,
        fingerprint=service.request_hash(payload, bool(token)),
    )
    if ctx.dispatcher is not None:
        ctx.dispatcher.wake()
    return _accepted(op, replayed, response)


@router.get(
    "",
    response_model=EndpointList,
    summary="List endpoints",
    description="Your endpoints (admins: everyone's, or one owner's with `owner`).",
    responses={**E401},
)
def list_endpoints(
    ctx: Ctx,
    caller: Caller,
    include_destroyed: Annotated[bool, Query(description="also list destroyed ones")] = False,
    owner: Annotated[str | None, Query(max_length=128, description="admins only")] = None,
) -> EndpointList:
    who = owner if caller.admin else caller.user
    eps = ctx.store.list_endpoints(who, include_destroyed=include_destroyed)
    return EndpointList(endpoints=[EndpointOut.of(ep) for ep in eps])


def _last(ctx: AppContext, op_id: str | None) -> Operation | None:
    if not op_id:
        return None
    try:
        return ctx.store.get_operation(op_id)
    except Exception:
        return None


@router.get(
    "/{name}",
    response_model=EndpointOut,
    summary="Show an endpoint",
    description="Status, URL, model, instance type, $/h, expiry and the last operation.",
    responses={**E401, **E404, **E422},
)
def get_endpoint(name: Name, ctx: Ctx, caller: Caller) -> EndpointOut:
    ep = visible_endpoint(ctx, caller, _name(name))
    return EndpointOut.of(ep, _last(ctx, ep.last_operation_id))


def _queue(
    ctx: AppContext,
    caller: Principal,
    name: str,
    kind: OpKind,
    key: str | None,
    response: Response,
) -> OperationAccepted:
    ep = visible_endpoint(ctx, caller, _name(name))
    op, replayed = ctx.store.request_operation(
        ep.name,
        kind,
        caller.user,
        idempotency_key=key,
        request_hash=service.request_hash({"op": kind.value, "name": ep.name}, False),
        max_queued=ctx.settings.max_queued_per_endpoint,
    )
    if ctx.dispatcher is not None:
        ctx.dispatcher.wake()
    return _accepted(op, replayed, response)


@router.delete(
    "/{name}",
    status_code=202,
    response_model=OperationAccepted,
    summary="Destroy an endpoint",
    description=(
        "Queues a `destroy` behind whatever runs on the stack (a queued or running "
        "create included). Asking again returns the destroy already queued."
    ),
    responses={**E401, **E404, **E409, **E422},
)
def delete_endpoint(
    name: Name, ctx: Ctx, caller: Caller, response: Response, idempotency_key: IdemKey = None
) -> OperationAccepted:
    return _queue(ctx, caller, name, OpKind.DESTROY, idempotency_key, response)


@router.post(
    "/{name}/redeploy",
    status_code=202,
    response_model=OperationAccepted,
    summary="Redeploy an endpoint",
    description="Queues another `up` of the recorded spec (retry a failed create, fix drift).",
    responses={**E401, **E404, **E409, **E422},
)
def redeploy_endpoint(
    name: Name, ctx: Ctx, caller: Caller, response: Response, idempotency_key: IdemKey = None
) -> OperationAccepted:
    return _queue(ctx, caller, name, OpKind.UP, idempotency_key, response)


@router.post(
    "/{name}/refresh",
    status_code=202,
    response_model=OperationAccepted,
    summary="Refresh an endpoint's state",
    description=(
        "Queues a `refresh` that reads the resources back from the cluster. Endpoints "
        "rendered to files have no cluster to read from (422)."
    ),
    responses={**E401, **E404, **E409, **E422},
)
def refresh_endpoint(
    name: Name, ctx: Ctx, caller: Caller, response: Response, idempotency_key: IdemKey = None
) -> OperationAccepted:
    ep = visible_endpoint(ctx, caller, _name(name))
    if ep.spec.get("cluster", {}).get("render_dir"):
        raise HTTPException(
            status_code=422,
            detail="refresh: this endpoint is rendered to files; there is no cluster to read",
        )
    return _queue(ctx, caller, name, OpKind.REFRESH, idempotency_key, response)


@router.post(
    "/{name}/extend",
    response_model=EndpointOut,
    summary="Extend an endpoint's time to live",
    description=(
        "Sets `expires_at` to now + `ttl` (at most the server's maximum). Only the "
        "record changes: teardown reads the expiry from the store."
    ),
    responses={**E401, **E404, **E409, **E422},
)
def extend_endpoint(name: Name, body: ExtendRequest, ctx: Ctx, caller: Caller) -> EndpointOut:
    ep = visible_endpoint(ctx, caller, _name(name))
    try:
        ttl = parse_ttl(body.ttl)
        service.check_ttl(ctx.settings, body.ttl)
    except ValueError as e:
        raise HTTPException(status_code=422, detail=str(e)) from None
    now = utcnow()
    updated = ctx.store.extend(ep.name, now + ttl, now=now)
    return EndpointOut.of(updated, _last(ctx, updated.last_operation_id))


@router.get(
    "/{name}/operations",
    response_model=OperationList,
    summary="List an endpoint's operations",
    responses={**E401, **E404, **E422},
)
def list_endpoint_operations(name: Name, ctx: Ctx, caller: Caller) -> OperationList:
    ep = visible_endpoint(ctx, caller, _name(name))
    ops = ctx.store.list_operations(ep.name)
    return OperationList(operations=[OperationOut.of(o) for o in ops])
