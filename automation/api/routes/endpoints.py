"""``/v1/endpoints``: create, list, show, destroy, extend, redeploy, refresh.

Nothing here runs Pulumi: each route is a call to
:class:`~automation.usecases.ControlPlane`, which validates, records and
queues; the dispatcher's worker processes do the work and the caller follows
the operation (``202`` with its id and links).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Response

from automation.api.deps import Caller, Control
from automation.api.schemas import (
    ApiKeyOut,
    CreateEndpointRequest,
    EndpointList,
    EndpointOut,
    ErrorBody,
    ExtendRequest,
    Links,
    OperationAccepted,
    OperationList,
    OperationOut,
    RedeployRequest,
)
from automation.usecases import Accepted

router = APIRouter(prefix="/v1/endpoints", tags=["endpoints"])

Responses = dict[int | str, dict[str, Any]]

E401: Responses = {401: {"model": ErrorBody, "description": "missing or unknown bearer token"}}
E404: Responses = {404: {"model": ErrorBody, "description": "no such endpoint (or not yours)"}}
E409: Responses = {
    409: {"model": ErrorBody, "description": "the endpoint's state does not allow it"}
}
E429: Responses = {
    429: {"model": ErrorBody, "description": "over a quota of yours (named in the error)"}
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


def accepted(result: Accepted, response: Response) -> OperationAccepted:
    """The 202 body (and ``Location``) of a queued operation."""
    op = result.operation
    response.headers["Location"] = f"/v1/operations/{op.id}"
    return OperationAccepted(
        operation=OperationOut.of(op),
        replayed=result.replayed,
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
    responses={**E401, **E409, **E422, **E429},
)
def create_endpoint(
    body: CreateEndpointRequest,
    control: Control,
    caller: Caller,
    response: Response,
    idempotency_key: IdemKey = None,
) -> OperationAccepted:
    token = body.hf_token.get_secret_value() if body.hf_token else None
    result = control.create(caller, body.payload(), hf_token=token, idempotency_key=idempotency_key)
    return accepted(result, response)


@router.get(
    "",
    response_model=EndpointList,
    summary="List endpoints",
    description="Your endpoints (admins: everyone's, or one owner's with `owner`).",
    responses={**E401},
)
def list_endpoints(
    control: Control,
    caller: Caller,
    include_destroyed: Annotated[bool, Query(description="also list destroyed ones")] = False,
    owner: Annotated[str | None, Query(max_length=128, description="admins only")] = None,
) -> EndpointList:
    eps = control.list_endpoints(caller, include_destroyed=include_destroyed, owner=owner)
    return EndpointList(endpoints=[EndpointOut.of(ep) for ep in eps])


@router.get(
    "/{name}",
    response_model=EndpointOut,
    summary="Show an endpoint",
    description=(
        "Status, URL, model, instance type, $/h, expiry, the last operation and, on a "
        "cluster the server reads, the pods right now (`health`: ready, or why not)."
    ),
    responses={**E401, **E404, **E422},
)
def get_endpoint(name: Name, control: Control, caller: Caller) -> EndpointOut:
    ep, last = control.show(caller, name)
    return EndpointOut.of(ep, last, control.health(ep))


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
    name: Name,
    control: Control,
    caller: Caller,
    response: Response,
    idempotency_key: IdemKey = None,
) -> OperationAccepted:
    return accepted(control.destroy(caller, name, idempotency_key=idempotency_key), response)


@router.post(
    "/{name}/redeploy",
    status_code=202,
    response_model=OperationAccepted,
    summary="Redeploy an endpoint",
    description=(
        "Queues another `up`: of the recorded spec (retry a failed create, fix drift), "
        "or with new `vllm` settings, validated and sized before the 202; the pods roll."
    ),
    responses={**E401, **E404, **E409, **E422, **E429},
)
def redeploy_endpoint(
    name: Name,
    control: Control,
    caller: Caller,
    response: Response,
    body: RedeployRequest | None = None,
    idempotency_key: IdemKey = None,
) -> OperationAccepted:
    changes = body.changes() if body is not None else None
    result = control.redeploy(caller, name, changes, idempotency_key=idempotency_key)
    return accepted(result, response)


@router.get(
    "/{name}/api-key",
    response_model=ApiKeyOut,
    summary="Get an endpoint's API key",
    description=(
        "The key the endpoint's OpenAI API requires (`Authorization: Bearer ...`). "
        "Only the endpoint's owner gets it; it appears in no other response or log."
    ),
    responses={**E401, **E404, **E409, **E422},
)
def get_api_key(name: Name, control: Control, caller: Caller, response: Response) -> ApiKeyOut:
    ep, key = control.api_key(caller, name)
    response.headers["Cache-Control"] = "no-store"
    return ApiKeyOut(endpoint=ep.name, api_key=key, version=ep.api_key_version, url=ep.url)


@router.post(
    "/{name}/api-key/rotate",
    status_code=202,
    response_model=OperationAccepted,
    summary="Rotate an endpoint's API key",
    description=(
        "Moves the endpoint to a new key and queues the `up` that rolls its pods onto "
        "it; the old key works until they have rolled."
    ),
    responses={**E401, **E404, **E409, **E422, **E429},
)
def rotate_api_key(
    name: Name,
    control: Control,
    caller: Caller,
    response: Response,
    idempotency_key: IdemKey = None,
) -> OperationAccepted:
    return accepted(control.rotate_api_key(caller, name, idempotency_key=idempotency_key), response)


@router.post(
    "/{name}/refresh",
    status_code=202,
    response_model=OperationAccepted,
    summary="Refresh an endpoint's state",
    description=(
        "Queues a `refresh` that reads the resources back from the cluster. Endpoints "
        "rendered to files have no cluster to read from (422)."
    ),
    responses={**E401, **E404, **E409, **E422, **E429},
)
def refresh_endpoint(
    name: Name,
    control: Control,
    caller: Caller,
    response: Response,
    idempotency_key: IdemKey = None,
) -> OperationAccepted:
    return accepted(control.refresh(caller, name, idempotency_key=idempotency_key), response)


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
def extend_endpoint(
    name: Name, body: ExtendRequest, control: Control, caller: Caller
) -> EndpointOut:
    updated = control.extend(caller, name, body.ttl)
    return EndpointOut.of(updated, control.last_operation(updated))


@router.get(
    "/{name}/operations",
    response_model=OperationList,
    summary="List an endpoint's operations",
    responses={**E401, **E404, **E422},
)
def list_endpoint_operations(name: Name, control: Control, caller: Caller) -> OperationList:
    return OperationList(operations=[OperationOut.of(o) for o in control.operations(caller, name)])
