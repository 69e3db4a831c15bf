"""Request and response models of the HTTP API (they are its OpenAPI schema).

Responses are built from store records only, which never hold secrets; the
one secret a request carries (``hf_token``) is a ``SecretStr`` that is written
to the worker's drop-box and dropped from everything else.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from automation.store import Endpoint, EndpointStatus, Operation, OpKind, OpStatus
from components.config import EndpointRequest, VllmSpec


class ErrorDetail(BaseModel):
    """What went wrong."""

    code: str = Field(description="machine-readable code", examples=["invalid_spec"])
    message: str = Field(description="one-line summary")
    details: list[str] = Field(
        default_factory=list,
        description="one line per problem, each naming its field (validation errors)",
    )


class ErrorBody(BaseModel):
    """Every 4xx/5xx response has this shape."""

    error: ErrorDetail


class CreateEndpointRequest(EndpointRequest):
    """A new endpoint: the spec's request fields (:class:`~components.config.EndpointRequest`,
    the same rules as a stack file's) plus the Hugging Face token. Where it runs
    (cluster, node pool) is the server's choice."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "llama-dev",
                    "model": "deepseek-ai/DeepSeek-R1-Distill-Llama-8B",
                    "instance_type": "g5.xlarge",
                    "ttl": "8h",
                }
            ]
        },
    )

    hf_token: SecretStr | None = Field(
        default=None,
        max_length=512,
        description="Hugging Face token for gated models; stored only as a Pulumi secret",
    )

    def payload(self) -> dict[str, Any]:
        """The spec fields the caller set (no token): what the server completes and records."""
        return self.model_dump(mode="json", exclude_unset=True, exclude={"hf_token"})


class ExtendRequest(BaseModel):
    """A new time to live, counted from now."""

    model_config = ConfigDict(extra="forbid")

    ttl: str = Field(max_length=16, description="e.g. '4h'; at most the server's max ttl")


class RedeployRequest(BaseModel):
    """What to change before the ``up`` (nothing: redeploy the recorded spec)."""

    model_config = ConfigDict(extra="forbid")

    vllm: VllmSpec | None = Field(
        default=None, description="new vLLM settings (the whole section); the pods roll"
    )

    def changes(self) -> dict[str, Any]:
        """The spec sections this request replaces."""
        return self.model_dump(mode="json", exclude_none=True, exclude_unset=True)


class ApiKeyOut(BaseModel):
    """An endpoint's API key (only its owner gets it; never cached)."""

    endpoint: str
    api_key: str = Field(description="send it as `Authorization: Bearer <api_key>`")
    version: int = Field(description="bumped by each rotation")
    url: str | None = Field(description="the OpenAI base URL to use it with")


class OperationOut(BaseModel):
    """An operation on an endpoint's stack."""

    id: str
    endpoint: str
    kind: OpKind
    status: OpStatus
    requested_by: str
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None
    log_lines: int = 0
    log_truncated: bool = False

    @classmethod
    def of(cls, op: Operation) -> OperationOut:
        return cls(
            id=op.id,
            endpoint=op.endpoint,
            kind=op.kind,
            status=op.status,
            requested_by=op.requested_by,
            created_at=op.created_at,
            started_at=op.started_at,
            finished_at=op.finished_at,
            error=op.error,
            log_lines=op.log_lines,
            log_truncated=op.log_truncated,
        )


class PodOut(BaseModel):
    """One of the endpoint's pods."""

    name: str
    phase: str
    ready: bool
    reason: str = Field(default="", description="why it is not ready")


class HealthOut(BaseModel):
    """The endpoint's pods on its cluster, read when the endpoint is shown."""

    serving: bool = Field(description="every pod of the endpoint is Ready")
    detail: str = Field(description="e.g. '0/1 pods ready; ep-0 is Pending: not scheduled: ...'")
    pods: list[PodOut] = Field(default_factory=list)

    @classmethod
    def of(cls, health: Any) -> HealthOut:
        return cls(
            serving=health.serving,
            detail=health.detail,
            pods=[
                PodOut(name=p.name, phase=p.phase, ready=p.ready, reason=p.reason)
                for p in health.pods
            ],
        )


def shown_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The recorded spec as responses show it: an inline ``model_config`` (up to
    256 KiB, on every endpoint of a list) is summarized, not repeated."""
    config = spec.get("model_config")
    if not isinstance(config, dict):
        return spec
    raw = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    summary = {
        "architectures": config.get("architectures"),
        "bytes": len(raw),
        "sha256": hashlib.sha256(raw).hexdigest(),
    }
    return {**spec, "model_config": summary}


class EndpointOut(BaseModel):
    """An endpoint: where it is, what it serves, what it costs, when it goes."""

    name: str
    owner: str
    status: EndpointStatus
    url: str | None = None
    model: str | None = None
    instance_type: str | None = None
    cost_per_hour: float | None = Field(default=None, description="USD per hour, on-demand")
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None = None
    error: str | None = None
    spec: dict[str, Any] = Field(description="the validated spec (never holds secrets)")
    last_operation: OperationOut | None = None
    health: HealthOut | None = Field(
        default=None,
        description="the pods right now (endpoints on a cluster the server reads; not in lists)",
    )

    @classmethod
    def of(cls, ep: Endpoint, last: Operation | None = None, health: Any = None) -> EndpointOut:
        return cls(
            name=ep.name,
            owner=ep.owner,
            status=ep.status,
            url=ep.url,
            model=ep.model,
            instance_type=ep.instance_type,
            cost_per_hour=ep.cost_per_hour,
            created_at=ep.created_at,
            updated_at=ep.updated_at,
            expires_at=ep.expires_at,
            error=ep.error,
            spec=shown_spec(ep.spec),
            last_operation=None if last is None else OperationOut.of(last),
            health=None if health is None else HealthOut.of(health),
        )


class EndpointList(BaseModel):
    """Endpoints visible to the caller."""

    endpoints: list[EndpointOut]


class OperationList(BaseModel):
    """Operations of one endpoint, oldest first."""

    operations: list[OperationOut]


class Links(BaseModel):
    """Where to follow an accepted operation."""

    operation: str
    events: str
    endpoint: str


class OperationAccepted(BaseModel):
    """202: the operation is recorded and queued; follow it with the links."""

    operation: OperationOut
    replayed: bool = Field(
        description="true when this answers a repeat (same Idempotency-Key, or a "
        "destroy already queued)"
    )
    links: Links


class Health(BaseModel):
    """Liveness and the state of the parts."""

    status: Literal["ok", "degraded"]
    database: Literal["ok", "error"]
    dispatcher: Literal["running", "stopped", "disabled"]
