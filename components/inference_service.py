"""InferenceService: vLLM behind an OpenAI-compatible endpoint on Kubernetes.

Modes (:class:`~components.config.ServingMode`):

* ``deployment`` — ``vllm serve`` as a Deployment, one model replica per pod, a
  ClusterIP Service ``{name}`` on port 8000.
* ``leader-worker-set`` — one model over several nodes: a LeaderWorkerSet whose
  groups have ``pipeline_parallel`` pods, running vLLM's own multi-node mode
  (tensor parallel inside a node, pipeline parallel across nodes; the leader
  serves, the workers join it headless). The Service ``{name}-leader`` selects
  leaders (the controller owns a headless Service named ``{name}``). With EFA the
  pods use vLLM's ``-efa`` image and request the interfaces.
* ``ray-service`` — a KubeRay RayService: a small head (Serve controller and
  proxy, no replicas) and an accelerator worker group, running Ray Serve LLM's
  OpenAI app with vLLM underneath. Ray Serve has no API keys, so the head pod
  carries an nginx that checks the endpoint's key; the Service ``{name}`` points
  at it (KubeRay's own ``{name}-serve-svc`` skips the check and is not used).

Every mode:

* **Fits its node.** Requests are the pod's share of the pinned instance types'
  allocatable, less the platform's DaemonSets and the endpoint's CPU-only pods
  (``serving/pods.py``); pods are pinned to those instance types.
* **Authenticated.** The endpoint's API key lives in the Secret
  ``{name}-api-key`` (made here from ``api_key``, a Pulumi secret); vLLM reads
  it from ``VLLM_API_KEY`` and refuses ``/v1`` calls without it. Rotating bumps
  ``api_key_version``, which rolls the pods.
* **Non-root where the image allows** (vLLM uid 2000, Ray uid 1000), no
  privilege escalation, no capabilities, the runtime's seccomp profile;
  writable caches and HOME on volumes, the weights read-only.
* ``/health`` startup, readiness and liveness probes (the startup budget covers
  the planner's cold-start estimate with a margin), ``/dev/shm`` in memory, the
  Hugging Face token by reference, a PodDisruptionBudget, an optional ALB
  Ingress (internal by default, internet-facing only with explicit source
  CIDRs) and an optional Open WebUI (which calls the endpoint with its key).
* ``pulumi up`` waits until the model serves: Deployments by the provider's own
  rules, LeaderWorkerSets and RayServices by their ``Available`` and ``Ready``
  conditions (``pulumi.com/waitFor``).

The Secret holding the HF token belongs to :class:`~components.model_storage.ModelStorage`
(``hf_token_secret_name``); this component only refers to it. The pods' building
blocks, the three workloads and the exposure live in ``components/serving/``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import pulumi
import pulumi_kubernetes as k8s

from components import _versions, rules
from components.addons.serving import KubeRay
from components.catalog import get_instance
from components.config import ExposureKind, ServingMode
from components.serving import exposure, workloads
from components.serving.pods import (
    API_KEY_KEY,
    EFA,
    HEALTH_PATH,
    NEURON,
    NVIDIA_GPU,
    RESOURCE_NAMES,
    WEBUI_PORT,
    ModelVolume,
    PodBuilder,
    Scheduling,
    rollout_timeout_s,
    startup_failure_threshold,
)
from components.serving.scripts import (
    PORT,
    RAY_GCS_PORT,
    flag_to_kwarg,
    multi_node_args,
    serve_config,
    vllm_args,
)
from components.vllm_flags import MANAGED_FLAGS, parse_extra_args

__all__ = [
    "EFA",
    "HEALTH_PATH",
    "MANAGED_FLAGS",
    "NEURON",
    "NVIDIA_GPU",
    "PORT",
    "RAY_GCS_PORT",
    "InferenceService",
    "InferenceServiceArgs",
    "ModelVolume",
    "Scheduling",
    "flag_to_kwarg",
    "multi_node_args",
    "rollout_timeout_s",
    "serve_config",
    "startup_failure_threshold",
    "vllm_args",
]


@dataclass(frozen=True)
class InferenceServiceArgs:
    """Inputs of :class:`InferenceService`.

    Attributes:
        model_id: Hugging Face id; the served model name.
        namespace: Namespace of every object (must exist).
        mode: deployment, leader-worker-set or ray-service.
        scheduling: Node selector, tolerations and device resource of the pool.
        tensor_parallel: Devices (NeuronCores on Neuron) one node's shard uses.
        devices_per_node: Accelerator devices requested per pod.
        max_model_len: vLLM ``--max-model-len`` (from the planner).
        max_num_seqs: vLLM ``--max-num-seqs`` (from the planner).
        cold_start_s: Planner's cold-start estimate; sizes the startup probe.
        gpu_memory_utilization: vLLM ``--gpu-memory-utilization``.
        pipeline_parallel: Pipeline stages; nodes per replica for leader-worker-set.
        cores_per_device: Compute cores per device (2 NeuronCores per
            Inferentia2 device; 1 for NVIDIA).
        replicas: Independent model replicas.
        storage: The weights' volume; None lets vLLM download from the Hub.
        hf_token_secret_name: Secret with the Hugging Face token under ``token``.
        extra_args: Extra vLLM flags (``--name`` or ``--name=value``).
        trust_remote_code: Let vLLM run the model repository's own code.
        args_override: Full vLLM argument list replacing the generated one
            (deployment and leader-worker-set).
        image: Serving image; default by mode and accelerator from ``_versions``.
        exposure: cluster, internal-alb or public-alb.
        cidrs: Source CIDRs allowed through the ALB (required for public-alb).
        certificate_arn: ACM certificate; the ALB then listens on HTTPS 443.
        open_webui: Deploy Open WebUI pointed at the endpoint.
        cpu: CPU request of an accelerator pod; None: its share of the pinned
            instance types' allocatable (``scheduling.instance_types``).
        memory: Memory request of an accelerator pod; None: likewise.
        shm_size: Size of the in-memory ``/dev/shm`` (NCCL, vLLM workers).
        cache_size: Size of the writable cache volume (HOME, compile caches).
        api_key: The endpoint's API key (a Pulumi secret): stored in the Secret
            ``{name}-api-key`` that every serving container reads. None: that
            Secret is made outside this program (a render target that must not
            write secrets), and still required.
        api_key_version: Bumped on rotation; the pods roll when it changes.
        surge: Roll a Deployment by starting the new pod before stopping the old
            (needs room for one more node: Karpenter and Auto Mode pools); False
            replaces pods in place (fixed pools, existing clusters).
        kuberay_namespace: Where the KubeRay operator runs (it alone may reach
            Ray's dashboard).
        labels: Extra labels on every object.
    """

    model_id: str
    namespace: str
    mode: ServingMode
    scheduling: Scheduling
    tensor_parallel: int
    devices_per_node: int
    max_model_len: int
    max_num_seqs: int
    cold_start_s: float
    gpu_memory_utilization: float = 0.90
    pipeline_parallel: int = 1
    cores_per_device: int = 1
    replicas: int = 1
    storage: ModelVolume | None = None
    hf_token_secret_name: pulumi.Input[str] | None = None
    extra_args: Sequence[str] = ()
    trust_remote_code: bool = False
    args_override: Sequence[str] | None = None
    image: str | None = None
    exposure: ExposureKind = ExposureKind.CLUSTER
    cidrs: Sequence[str] = ()
    certificate_arn: str | None = None
    open_webui: bool = False
    cpu: str | None = None
    memory: str | None = None
    shm_size: str = "16Gi"
    cache_size: str = "50Gi"
    api_key: pulumi.Input[str] | None = None
    api_key_version: int = 1
    surge: bool = False
    kuberay_namespace: str = KubeRay.NAMESPACE
    labels: Mapping[str, str] = field(default_factory=dict)


def _validate(name: str, a: InferenceServiceArgs) -> None:
    """Raise ValueError naming the first bad field and how to fix it."""
    rules.check_name(name)
    rules.check_model_id(a.model_id)
    rules.check_dns_label(a.namespace, "namespace")
    mode = ServingMode(a.mode)
    s = a.scheduling
    if s.resource_name not in RESOURCE_NAMES:
        raise ValueError(
            f"scheduling.resource_name: {s.resource_name!r} is not one of "
            f"{', '.join(RESOURCE_NAMES)}"
        )
    for fld in ("tensor_parallel", "pipeline_parallel", "devices_per_node", "cores_per_device",
                "replicas", "max_model_len", "max_num_seqs"):  # fmt: skip
        if getattr(a, fld) < 1:
            raise ValueError(f"{fld}: must be at least 1, got {getattr(a, fld)}")
    if not 0 < a.gpu_memory_utilization <= 1:
        raise ValueError(
            f"gpu_memory_utilization: must be in (0, 1], got {a.gpu_memory_utilization}"
        )
    if a.cold_start_s <= 0:
        raise ValueError(f"cold_start_s: must be positive, got {a.cold_start_s}")
    if s.resource_name == NVIDIA_GPU and a.cores_per_device != 1:
        raise ValueError("cores_per_device: NVIDIA GPUs count as one device each; set 1")
    if mode is ServingMode.LEADER_WORKER_SET:
        if a.pipeline_parallel < 2:
            raise ValueError(
                f"pipeline_parallel: leader-worker-set spreads one model over "
                f"pipeline_parallel nodes and needs at least 2, got {a.pipeline_parallel}; "
                "use mode 'deployment' for a model that fits one node"
            )
        if s.resource_name == NEURON:
            raise ValueError(
                "scheduling.resource_name: leader-worker-set runs vLLM over Ray and NCCL "
                "across NVIDIA nodes; serve Neuron models with 'deployment' or 'ray-service'"
            )
        per_pod = a.tensor_parallel
        what = "tensor_parallel"
    else:
        per_pod = a.tensor_parallel * a.pipeline_parallel
        what = "tensor_parallel x pipeline_parallel"
    cores = a.devices_per_node * a.cores_per_device
    if cores != per_pod:
        unit = "GPUs" if s.resource_name == NVIDIA_GPU else "NeuronCores"
        raise ValueError(
            f"devices_per_node: each pod gets {a.devices_per_node} x {a.cores_per_device} = "
            f"{cores} {unit} but {what} = {per_pod} needs exactly that many; set "
            f"devices_per_node to {per_pod // a.cores_per_device or 1} or change tensor_parallel"
        )
    if s.efa and s.efa_devices < 1:
        raise ValueError(
            "scheduling.efa_devices: EFA nodes need the interface count (e.g. 4 on p4d)"
        )
    if s.efa_devices and not s.efa:
        raise ValueError("scheduling.efa_devices: set only together with scheduling.efa")
    parse_extra_args(list(a.extra_args), "extra_args")
    if a.args_override is not None:
        if mode is ServingMode.RAY_SERVICE:
            raise ValueError(
                "args_override: ray-service passes engine settings as Ray Serve LLM "
                "engine_kwargs; use extra_args there"
            )
        if not a.args_override:
            raise ValueError(
                "args_override: an empty argument list would start vLLM without a model"
            )
    if a.image is not None and (
        ":" not in a.image.rsplit("/", 1)[-1] or a.image.endswith(":latest")
    ):
        raise ValueError(f"image: {a.image!r} must be pinned to a tag or digest, not latest")
    rules.check_labels(a.labels)
    rules.check_exposure_cidrs(ExposureKind(a.exposure).value, a.cidrs, "cidrs")
    if a.certificate_arn is not None:
        if ExposureKind(a.exposure) is ExposureKind.CLUSTER:
            raise ValueError("certificate_arn: applies only to ALB exposure")
        if not rules.ACM_ARN_RE.match(a.certificate_arn):
            raise ValueError(
                f"certificate_arn: {a.certificate_arn!r} is not an ACM certificate ARN"
            )
    for fld in ("cpu", "memory", "shm_size", "cache_size"):
        if getattr(a, fld) is not None:
            rules.check_quantity(getattr(a, fld), fld)
    if (a.cpu is None or a.memory is None) and not s.instance_types:
        raise ValueError(
            "scheduling.instance_types: give the instance types the pods run on (their "
            "allocatable sizes the requests), or both cpu and memory"
        )
    for name in s.instance_types:
        get_instance(name)
    if a.storage is not None:
        if not _model_path_ok(a.storage.model_path):
            raise ValueError(f"storage.model_path: {a.storage.model_path!r} must be absolute")
        if a.storage.volume.get("name") in ("dshm", "webui-data"):
            raise ValueError(
                "storage.volume: the names 'dshm' and 'webui-data' are taken; name it 'models'"
            )


def _model_path_ok(path: str) -> bool:
    return path.startswith("/") and ".." not in path.split("/")


def default_image(mode: ServingMode, *, neuron: bool, efa: bool) -> str:
    """The pinned serving image for a mode and accelerator (``_versions``)."""
    if ServingMode(mode) is ServingMode.RAY_SERVICE:
        return _versions.RAY_VLLM_NEURON_IMAGE if neuron else _versions.RAY_VLLM_IMAGE
    if neuron:
        return _versions.VLLM_NEURON_IMAGE
    # NCCL over EFA needs the libfabric plugin only the -efa image ships.
    return _versions.VLLM_EFA_IMAGE if efa else _versions.VLLM_IMAGE


class InferenceService(pulumi.ComponentResource):
    """vLLM serving one model, in one of three modes, with its Service.

    Attributes:
        service_name: The Service the endpoint URL points at (``{name}``, or
            ``{name}-leader`` for leader-worker-set).
        namespace: The namespace of every object.
        url: OpenAI base URL: ``http://<svc>.<ns>.svc.cluster.local:8000/v1``, or
            the ALB's ``http(s)://<hostname>/v1`` once it has one.
        image: The serving image.
        workload_name: The Deployment, LeaderWorkerSet or RayService name.
        webui_service_name: Open WebUI's Service (port 8080), or None.
        ingress_hostname: The ALB's hostname (Output; empty until known), or None.
        needs_root: Some pod of the endpoint runs as root (Pod Security
            ``baseline`` for its namespace; otherwise ``restricted``).
        api_key_secret_name: The Secret every serving container reads the key from.
    """

    TYPE: ClassVar[str] = "llm-endpoints:components:InferenceService"

    service_name: str
    namespace: str
    url: pulumi.Output[str]
    image: str
    workload_name: str
    webui_service_name: str | None
    ingress_hostname: pulumi.Output[str] | None
    needs_root: bool
    api_key_secret_name: str

    def __init__(
        self, name: str, args: InferenceServiceArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        _validate(name, args)
        super().__init__(self.TYPE, name, None, opts)
        self._name, self._args = name, args
        mode = ServingMode(args.mode)
        self.image = args.image or default_image(
            mode, neuron=args.scheduling.resource_name == NEURON, efa=args.scheduling.efa
        )
        self.namespace = args.namespace
        self.workload_name = name
        self.webui_service_name = None
        self.ingress_hostname = None

        pods = PodBuilder(self, name, args, self.image)
        #: Any pod of the endpoint runs as root (its namespace's Pod Security level).
        self.needs_root = pods.needs_root()
        self.api_key_secret_name = pods.api_key_secret_name
        if args.api_key is not None:
            k8s.core.v1.Secret(
                f"{name}-api-key",
                metadata=pods.meta(pods.api_key_secret_name, pods.labels("api-key")),
                type="Opaque",
                string_data={API_KEY_KEY: pulumi.Output.secret(args.api_key)},
                opts=pods.child(),
            )
        if mode is ServingMode.DEPLOYMENT:
            self.service_name = workloads.deployment(pods)
        elif mode is ServingMode.LEADER_WORKER_SET:
            self.service_name = workloads.leader_worker_set(pods)
        else:
            self.service_name = workloads.ray_service(pods)

        in_cluster = f"http://{self.service_name}.{args.namespace}.svc.cluster.local:{PORT}/v1"
        self.url = pulumi.Output.from_input(in_cluster)
        if ExposureKind(args.exposure) is not ExposureKind.CLUSTER:
            self.ingress_hostname, self.url = exposure.ingress(pods, self.service_name, in_cluster)
        if args.open_webui:
            self.webui_service_name = exposure.open_webui(pods, self.service_name)
        exposure.network_policy(
            pods,
            public_ports=[
                workloads.AUTH_PROXY_PORT if mode is ServingMode.RAY_SERVICE else PORT,
                *([WEBUI_PORT] if args.open_webui else []),
            ],
            kuberay_namespace=args.kuberay_namespace,
        )

        self.register_outputs(
            {
                "service_name": self.service_name,
                "namespace": self.namespace,
                "url": self.url,
                "image": self.image,
                "workload_name": self.workload_name,
                "webui_service_name": self.webui_service_name,
            }
        )
