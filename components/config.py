"""The endpoint spec: validated models, and the one loader from ``pulumi.Config``.

The same :class:`EndpointSpec` is read from a stack file (``pulumi up``), from
an HTTP request body (self-service) and from the operations store, so every
rule that keeps a bad endpoint from reaching Pulumi lives here. Unknown keys
are errors, not silently ignored, so a typo never becomes a default.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from components import _versions, rules
from components.catalog import INSTANCES, Accelerator, get_instance
from components.model_spec import CustomModel, resolve_model
from components.pool_rules import check_node_class, check_pool_instances
from components.rules import NAME_RE, check_model_id, check_name, parse_ttl
from components.vllm_flags import ALLOWED, MAX_EXTRA_ARGS, parse_extra_args

__all__ = [
    "NAME_RE",
    "Accelerator",
    "CustomModel",
    "check_model_id",
    "check_name",
    "parse_ttl",
]


class ClusterMode(StrEnum):
    """Where the endpoint runs."""

    DEDICATED = "dedicated"  # a new VPC and EKS cluster for this stack
    SHARED = "shared"  # a platform stack's cluster, through a StackReference
    EXISTING = "existing"  # a kubeconfig, or render-to-directory


class PoolMode(StrEnum):
    """How accelerator nodes are provisioned."""

    KARPENTER = "karpenter"
    AUTO_MODE = "auto-mode"
    MANAGED = "managed"
    NONE = "none"  # an existing cluster's nodes (render and existing targets)


class CapacityType(StrEnum):
    """EC2 purchase options."""

    ON_DEMAND = "on-demand"
    SPOT = "spot"


class ServingMode(StrEnum):
    """How vLLM is run."""

    DEPLOYMENT = "deployment"
    LEADER_WORKER_SET = "leader-worker-set"
    RAY_SERVICE = "ray-service"


class StorageKind(StrEnum):
    """Where the weights come from."""

    FSX = "fsx"
    S3 = "s3"
    EFS = "efs"
    PVC = "pvc"
    NONE = "none"  # download from the Hub at start into an ephemeral volume


class ExposureKind(StrEnum):
    """Who can reach the endpoint."""

    CLUSTER = "cluster"  # ClusterIP only
    INTERNAL_ALB = "internal-alb"
    PUBLIC_ALB = "public-alb"


class _Model(BaseModel):
    # By alias: ``model_config`` is a field's alias (the attribute name is pydantic's).
    model_config = ConfigDict(
        extra="forbid", frozen=True, use_enum_values=False, serialize_by_alias=True
    )


class ClusterSpec(_Model):
    """Which cluster the endpoint lands on."""

    mode: ClusterMode = ClusterMode.SHARED
    #: shared: the platform stack, ``org/project/stack`` or ``project/stack``.
    platform_stack: str | None = None
    #: existing: a kubeconfig file; None with render_dir means no cluster at all.
    kubeconfig: str | None = None
    #: existing: write manifests here instead of applying them.
    render_dir: str | None = None
    #: dedicated: AWS region and Kubernetes version.
    region: str = "us-east-1"
    kubernetes_version: str = _versions.EKS_KUBERNETES_VERSION
    auto_mode: bool = False
    availability_zones: int = Field(default=3, ge=2, le=3)

    @field_validator("kubernetes_version")
    @classmethod
    def _k8s_version(cls, v: str) -> str:
        return check_kubernetes_version(v, "cluster.kubernetes_version")

    @model_validator(mode="after")
    def _mode_fields(self) -> Self:
        if self.mode is ClusterMode.SHARED and not self.platform_stack:
            raise ValueError("cluster.platform_stack is required when cluster.mode is 'shared'")
        if self.mode is ClusterMode.EXISTING and not (self.kubeconfig or self.render_dir):
            raise ValueError(
                "cluster.mode 'existing' needs cluster.kubeconfig or cluster.render_dir"
            )
        if self.mode is not ClusterMode.EXISTING and (self.kubeconfig or self.render_dir):
            raise ValueError(
                "cluster.kubeconfig and cluster.render_dir apply only to cluster.mode 'existing'"
            )
        return self


class NodeClassRef(_Model):
    """A node class the cluster's Karpenter already has (a NodePool's ``nodeClassRef``)."""

    group: str = Field(max_length=rules.DNS1123_SUBDOMAIN_MAX_LEN)
    kind: str = Field(max_length=63)
    name: str = Field(max_length=rules.DNS1123_SUBDOMAIN_MAX_LEN)

    @model_validator(mode="after")
    def _valid(self) -> Self:
        check_node_class(self.model_dump(), "pool.node_class")
        return self


class PoolSpec(_Model):
    """Accelerator node provisioning."""

    #: None: ``none`` on an existing cluster, ``auto-mode`` on an Auto Mode
    #: cluster, ``karpenter`` otherwise (see EndpointSpec.resolved_pool_mode).
    mode: PoolMode | None = None
    capacity_types: list[CapacityType] = Field(
        default_factory=lambda: [CapacityType.ON_DEMAND], min_length=1
    )
    #: Extra instance types Karpenter may choose besides the planned one.
    instance_types: list[str] = Field(default_factory=list, max_length=16)
    max_nodes: int = Field(default=4, ge=1, le=64)
    #: managed: EFA interfaces and a cluster placement group (multi-node).
    efa: bool = False
    #: An existing cluster's own node class for a karpenter or auto-mode pool
    #: (e.g. its EC2NodeClass): the NodePool uses it and nothing AWS-side is made.
    node_class: NodeClassRef | None = None

    @field_validator("instance_types")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        for name in v:
            get_instance(name)
        return v


class StorageSpec(_Model):
    """Where the model weights live."""

    kind: StorageKind = StorageKind.NONE
    #: s3: an existing bucket to read from; a new one is created when None.
    bucket: str | None = None
    #: s3/fsx: key prefix under which the weights sit (default: the model id).
    prefix: str | None = None
    #: fsx/efs/pvc: capacity; fsx SCRATCH_2 comes in 1200 GiB or 2400 GiB steps.
    size_gib: int = Field(default=1200, ge=1, le=100_000)
    #: pvc: the StorageClass (None: the cluster default).
    storage_class: str | None = None
    #: efs: an existing file system (one is created when None).
    file_system_id: str | None = None
    #: Download the weights once into the volume with a Job before serving.
    prefetch: bool = False

    @model_validator(mode="after")
    def _kind_fields(self) -> Self:
        rules.check_storage(
            self.kind.value,
            size_gib=self.size_gib,
            prefetch=self.prefetch,
            bucket=self.bucket,
            storage_class=self.storage_class,
            file_system_id=self.file_system_id,
            prefix=self.prefix,
        )
        return self


class ExposureSpec(_Model):
    """Who may call the endpoint."""

    kind: ExposureKind = ExposureKind.CLUSTER
    #: Source CIDRs allowed through an ALB (required for public-alb).
    cidrs: list[str] = Field(
        default_factory=list, max_length=rules.MAX_CIDRS, validate_default=True
    )

    @field_validator("cidrs")
    @classmethod
    def _cidrs(cls, v: list[str], info: ValidationInfo) -> list[str]:
        kind = info.data.get("kind")
        if kind is None:  # the kind itself was invalid; that error is reported
            return v
        return rules.check_exposure_cidrs(ExposureKind(kind).value, v)


_BATCHED = ALLOWED["--max-num-batched-tokens"]


class VllmSpec(_Model):
    """vLLM settings; anything left None is chosen by the planner (or vLLM)."""

    max_model_len: int | None = Field(default=None, gt=0)
    gpu_memory_utilization: float = Field(default=0.90, gt=0, le=1)
    max_num_seqs: int | None = Field(default=None, gt=0, le=4096)
    #: Tokens per scheduler step (``--max-num-batched-tokens``); None: vLLM's
    #: default. The planner sizes with it, and it reaches vLLM as that flag in
    #: ``extra_args`` (one given there fills this field).
    max_num_batched_tokens: int | None = Field(default=None, ge=_BATCHED.lo, le=_BATCHED.hi)
    #: Extra flags passed through, e.g. ``--enable-prefix-caching``.
    extra_args: list[str] = Field(default_factory=list, max_length=MAX_EXTRA_ARGS)
    #: Run the model repository's own Python code (``--trust-remote-code``). The
    #: control plane refuses it unless an administrator allows the model.
    trust_remote_code: bool = False

    @field_validator("extra_args")
    @classmethod
    def _args(cls, v: list[str]) -> list[str]:
        return parse_extra_args(v)

    @model_validator(mode="after")
    def _batched_tokens(self) -> Self:
        """One value in both places: the field (the planner) and the flag (vLLM)."""
        flag = _BATCHED.name
        given = [a.split("=", 1)[1] for a in self.extra_args if a.split("=", 1)[0] == flag]
        in_args = int(given[0]) if given else None
        tokens = self.max_num_batched_tokens
        if tokens is not None and in_args is not None and tokens != in_args:
            raise ValueError(
                f"vllm.max_num_batched_tokens: {tokens} differs from {flag}={in_args} in "
                "vllm.extra_args; set it once"
            )
        if tokens is None and in_args is not None:
            tokens = in_args
            object.__setattr__(self, "max_num_batched_tokens", tokens)  # frozen: set once here
        elif tokens is not None and in_args is None:
            if len(self.extra_args) >= MAX_EXTRA_ARGS:
                raise ValueError(
                    f"vllm.extra_args: at most {MAX_EXTRA_ARGS - 1} flags with "
                    f"vllm.max_num_batched_tokens (it is passed as {flag})"
                )
            object.__setattr__(self, "extra_args", [*self.extra_args, f"{flag}={tokens}"])
        if tokens is not None and self.max_num_seqs is not None and tokens < self.max_num_seqs:
            # vLLM's SchedulerConfig refuses to start otherwise.
            raise ValueError(
                f"vllm.max_num_batched_tokens: {tokens} is less than vllm.max_num_seqs "
                f"{self.max_num_seqs}; vLLM needs at least one token per sequence of a step"
            )
        return self


class EndpointRequest(_Model):
    """What a request may set about an endpoint: everything but where it runs.

    The HTTP request model derives from this one, so the API and stack files
    share every field and rule; :class:`EndpointSpec` adds the placement
    (``cluster``, ``pool``) and the rules across fields.

    Attributes:
        name: Endpoint name; names the stack and every object.
        model: Catalog model id or alias (see ``components.models.MODELS``), or
            any Hugging Face id together with ``model_config`` (the control
            plane fetches that from the Hub when a request gives none).
        model_config: The model's Hugging Face ``config.json``, inline (bounded
            by ``rules.MODEL_CONFIG_MAX_BYTES``); it sizes the model instead of
            the shipped config. (Attribute ``hf_config``: pydantic reserves the
            name ``model_config``.)
        custom_model: Architecture facts for a model outside the catalog, the
            older way (a Llama-style decoder); ``model_config`` supersedes it.
        accelerator: nvidia or neuron; inferred from ``instance_type`` when given.
        instance_type: EC2 instance type; None lets the planner choose.
        tensor_parallel: Devices per model replica per node; None: planner.
        pipeline_parallel: Nodes per replica (leader-worker-set only).
        serving: deployment, leader-worker-set or ray-service.
        replicas: Independent model replicas.
        ttl: Time to live (``8h``); None for endpoints that never expire.
        open_webui: Deploy Open WebUI pointed at the endpoint.
        storage: Where the weights live.
        exposure: Who may call the endpoint.
        vllm: vLLM settings.
        labels: Extra labels on every object and node.
    """

    name: str = Field(max_length=rules.MAX_STRING_LEN)
    model: str = Field(max_length=rules.MODEL_ID_MAX_LEN)
    hf_config: dict[str, Any] | None = Field(default=None, alias="model_config")
    custom_model: CustomModel | None = None
    accelerator: Accelerator | None = None
    instance_type: str | None = Field(default=None, max_length=rules.INSTANCE_TYPE_MAX_LEN)
    tensor_parallel: int | None = Field(default=None, ge=1, le=64)
    pipeline_parallel: int = Field(default=1, ge=1, le=16)
    serving: ServingMode = ServingMode.DEPLOYMENT
    replicas: int = Field(default=1, ge=1, le=16)
    ttl: str | None = Field(default=None, max_length=rules.TTL_MAX_LEN)
    open_webui: bool = False
    storage: StorageSpec = Field(default_factory=StorageSpec)
    exposure: ExposureSpec = Field(default_factory=ExposureSpec)
    vllm: VllmSpec = Field(default_factory=VllmSpec)
    labels: dict[
        Annotated[str, Field(max_length=rules.DNS1123_SUBDOMAIN_MAX_LEN + 64)],
        Annotated[str, Field(max_length=rules.LABEL_VALUE_MAX_LEN)],
    ] = Field(default_factory=dict, max_length=rules.MAX_LABELS)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name(v)

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        return rules.check_user_labels(v)

    @field_validator("hf_config", mode="before")
    @classmethod
    def _hf_config(cls, v: object) -> object:
        return None if v is None else rules.check_model_config(v)

    @field_validator("instance_type")
    @classmethod
    def _instance(cls, v: str | None) -> str | None:
        return None if v is None else get_instance(v).name

    @field_validator("ttl")
    @classmethod
    def _ttl(cls, v: str | None) -> str | None:
        if v is not None:
            parse_ttl(v)
        return v


class EndpointSpec(EndpointRequest):
    """Everything needed to build one model endpoint: the request and where it runs.

    Attributes:
        cluster: Which cluster the endpoint lands on.
        pool: How its accelerator nodes are provisioned.
        namespace: The namespace the endpoint creates, owns and deletes; None:
            the endpoint's name. The control plane gives every endpoint one of
            its own (a request cannot choose it).
    """

    cluster: ClusterSpec = Field(
        default_factory=lambda: ClusterSpec(mode=ClusterMode.EXISTING, render_dir="rendered")
    )
    pool: PoolSpec = Field(default_factory=PoolSpec)
    namespace: str | None = Field(default=None, max_length=rules.MAX_STRING_LEN)

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, v: str | None) -> str | None:
        return None if v is None else rules.check_endpoint_namespace(v)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.custom_model is None:
            resolve_model(self.model, self.hf_config)
        elif self.hf_config is not None:
            raise ValueError("model_config: give model_config or custom_model, not both")
        elif self.custom_model.id != self.model:
            raise ValueError(
                f"custom_model.id {self.custom_model.id!r} must equal model {self.model!r}"
            )
        if self.instance_type:
            inst = INSTANCES[self.instance_type]
            if self.accelerator and self.accelerator is not inst.accelerator:
                raise ValueError(
                    f"instance_type: {inst.name} has {inst.accelerator.value} accelerators "
                    f"but accelerator is {self.accelerator.value}"
                )
        if self.pipeline_parallel > 1 and self.serving is not ServingMode.LEADER_WORKER_SET:
            raise ValueError(
                "pipeline_parallel > 1 spans nodes and needs serving 'leader-worker-set'"
            )
        if self.serving is ServingMode.LEADER_WORKER_SET and self.pipeline_parallel < 2:
            raise ValueError(
                "pipeline_parallel: serving 'leader-worker-set' runs one model over several "
                "nodes; set pipeline_parallel >= 2, or use serving 'deployment' for one node"
            )
        if self.pool.mode is PoolMode.AUTO_MODE and not self.cluster.auto_mode:
            # Shared and existing clusters declare it too; the shared mode
            # checks the declaration against the platform stack's output.
            raise ValueError("pool.mode 'auto-mode' needs cluster.auto_mode: true")
        if self.cluster.mode is ClusterMode.EXISTING:
            # An existing cluster's VPC, node roles and discovery tags are not
            # known to this program, so nothing AWS-side can be built for it.
            own_class = self.pool.node_class is not None
            if self.pool.mode not in (None, PoolMode.NONE) and not own_class:
                raise ValueError(
                    "pool.mode: an existing cluster uses its own nodes; leave pool.mode unset "
                    "or 'none', or name its Karpenter's node class in pool.node_class "
                    "(managed needs cluster.mode dedicated or shared)"
                )
            if self.storage.kind not in (StorageKind.PVC, StorageKind.NONE):
                raise ValueError(
                    f"storage.kind: {self.storage.kind.value!r} creates AWS resources, which "
                    "cluster.mode 'existing' cannot; use 'pvc' or 'none'"
                )
        if self.pool.node_class is not None and self.resolved_pool_mode not in (
            PoolMode.KARPENTER,
            PoolMode.AUTO_MODE,
        ):
            raise ValueError("pool.node_class: applies only to karpenter and auto-mode pools")
        if self.resolved_pool_mode is not PoolMode.NONE:
            check_pool_instances(
                [get_instance(i) for i in self.pool.instance_types],
                mode=self.resolved_pool_mode.value,
                accelerator=self.resolved_accelerator,
                efa=self.pool.efa,
                max_nodes=self.pool_max_nodes,
                field_prefix="pool.",
            )
        if self.cluster.auto_mode and self.pool.mode is PoolMode.KARPENTER:
            raise ValueError(
                "pool.mode: an Auto Mode cluster provisions nodes itself; use 'auto-mode' "
                "or 'managed', not 'karpenter'"
            )
        return self

    @property
    def pool_max_nodes(self) -> int:
        """Most nodes the pool may run: the spec's, or what the replicas need."""
        return max(self.pool.max_nodes, self.pipeline_parallel * self.replicas)

    @property
    def resolved_accelerator(self) -> Accelerator:
        """The accelerator family, from the instance type when one is given."""
        if self.instance_type:
            return INSTANCES[self.instance_type].accelerator
        return self.accelerator or Accelerator.NVIDIA

    @property
    def resolved_namespace(self) -> str:
        """The namespace the endpoint runs in."""
        return self.namespace or self.name

    @property
    def resolved_pool_mode(self) -> PoolMode:
        """The pool mode, defaulted from the cluster mode when not given."""
        if self.pool.mode is not None:
            return self.pool.mode
        if self.cluster.mode is ClusterMode.EXISTING:
            return PoolMode.NONE
        return PoolMode.AUTO_MODE if self.cluster.auto_mode else PoolMode.KARPENTER

    @property
    def ttl_delta(self) -> timedelta | None:
        """The time to live as a timedelta (None: never expires)."""
        return None if self.ttl is None else parse_ttl(self.ttl)

    @property
    def render_only(self) -> bool:
        """True when manifests are written to a folder and no cluster is touched."""
        return self.cluster.mode is ClusterMode.EXISTING and bool(self.cluster.render_dir)


def check_kubernetes_version(value: str, field: str) -> str:
    """An EKS Kubernetes version in standard support (extended support bills extra)."""
    if value not in _versions.EKS_STANDARD_SUPPORT:
        raise ValueError(
            f"{field}: {value!r} is not an EKS version in standard support "
            f"({', '.join(_versions.EKS_STANDARD_SUPPORT)}); older ones bill extended support"
        )
    return value


def format_validation_error(err: ValidationError) -> str:
    """One line per problem, each naming the field: ``storage.kind: ...``."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        # Validators already name their field ("exposure.cidrs: ..."); keep those as they are.
        named = re.match(r"^[a-z_][a-z0-9_.]*: ", msg)
        lines.append(msg if named or not loc else f"{loc}: {msg}")
    return "\n".join(lines)


def parse_spec(data: dict[str, Any]) -> EndpointSpec:
    """Validate a spec from plain data.

    Raises:
        ValueError: one line per bad field, each naming it.
    """
    try:
        return EndpointSpec.model_validate(data)
    except ValidationError as e:
        raise ValueError(format_validation_error(e)) from None


class PlatformSpec(_Model):
    """The shared platform cluster that self-service endpoints land on.

    Attributes:
        name: Cluster name.
        region: AWS region.
        kubernetes_version: EKS version.
        auto_mode: EKS Auto Mode instead of Karpenter.
        availability_zones: How many AZs the VPC spans.
        addons: Add-on switches by name (see ``components.cluster.ADDONS``);
            unnamed ones keep their defaults.
    """

    name: str = "llm-platform"
    region: str = "us-east-1"
    kubernetes_version: str = _versions.EKS_KUBERNETES_VERSION
    auto_mode: bool = False
    availability_zones: int = Field(default=3, ge=2, le=3)
    addons: dict[str, bool] = Field(default_factory=dict)

    @field_validator("kubernetes_version")
    @classmethod
    def _k8s_version(cls, v: str) -> str:
        return check_kubernetes_version(v, "kubernetes_version")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name(v)


@dataclass(frozen=True)
class StackConfig:
    """What one stack builds: an endpoint, or the platform cluster."""

    endpoint: EndpointSpec | None
    platform: PlatformSpec | None
    hf_token: Any = None  # pulumi.Output[str] (secret) or None
    api_key: Any = None  # pulumi.Output[str] (secret) or None
    api_key_version: int = 1


def load_stack_config() -> StackConfig:
    """Read and validate the stack's config (the only place config is read).

    Raises:
        ValueError: naming the key and each bad field.
    """
    import pulumi

    cfg = pulumi.Config("llm-endpoints")
    # Pulumi.yaml gives the optional keys empty defaults (declared keys without
    # one are required by the engine), so empty means "not set".
    endpoint = cfg.get_object("endpoint") or None
    platform = cfg.get_object("platform") or None
    if (endpoint is None) == (platform is None):
        raise ValueError(
            "stack config: set exactly one of llm-endpoints:endpoint and llm-endpoints:platform "
            "(see Pulumi.yaml and stacks/)"
        )
    if platform is not None:
        if not isinstance(platform, dict):
            raise ValueError("llm-endpoints:platform must be an object (see Pulumi.yaml)")
        try:
            return StackConfig(endpoint=None, platform=PlatformSpec.model_validate(platform))
        except ValidationError as e:
            raise ValueError("llm-endpoints:platform: " + format_validation_error(e)) from None
    if not isinstance(endpoint, dict):
        raise ValueError("llm-endpoints:endpoint must be an object (see Pulumi.yaml)")
    hf_token = _secret_config(cfg, "hfToken", required=False)
    spec = parse_spec(endpoint)
    return StackConfig(
        endpoint=spec,
        platform=None,
        hf_token=hf_token,
        api_key=_secret_config(cfg, "apiKey", required=not spec.render_only),
        api_key_version=cfg.get_int("apiKeyVersion") or 1,
    )


def _secret_config(cfg: Any, key: str, *, required: bool) -> Any:
    """A config value that must be a Pulumi secret (None when unset and optional)."""
    import pulumi

    if not cfg.get(key):
        if required:
            raise ValueError(
                f"llm-endpoints:{key}: required for an endpoint on a cluster (clients "
                "authenticate with it); set it with `pulumi config set --secret "
                f'llm-endpoints:{key} "$(openssl rand -hex 24)"`'
            )
        return None
    if not pulumi.runtime.config.is_config_secret(f"llm-endpoints:{key}"):
        raise ValueError(
            f"llm-endpoints:{key} is stored in plain text; set it with "
            f"`pulumi config set --secret llm-endpoints:{key} ...`"
        )
    return cfg.get_secret(key)
