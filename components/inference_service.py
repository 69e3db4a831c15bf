"""InferenceService: vLLM behind an OpenAI-compatible endpoint on Kubernetes.

Modes (:class:`~components.config.ServingMode`):

* ``deployment`` — the vLLM OpenAI server as a Deployment, one model replica per
  pod, a ClusterIP Service ``{name}`` on port 8000.
* ``leader-worker-set`` — one model over several nodes: a LeaderWorkerSet whose
  groups have ``pipeline_parallel`` pods (leader + workers). The pods form a Ray
  cluster (the leader runs ``ray start --head``, workers join it) and the leader
  runs vLLM with ``--distributed-executor-backend ray``, tensor parallel inside a
  node and pipeline parallel across nodes. The Service ``{name}`` selects leaders.
* ``ray-service`` — a KubeRay RayService: a CPU-only head and an accelerator
  worker group, running Ray Serve LLM's OpenAI app (``ray.serve.llm:build_openai_app``)
  with vLLM underneath. KubeRay creates and maintains the Service
  ``{name}-serve-svc`` (port 8000) over the pods whose Serve proxy is healthy;
  the endpoint URL and the Ingress use that Service.

Every mode: ``/health`` startup, readiness and liveness probes (the startup
budget covers the planner's cold-start estimate with a margin), ``/dev/shm`` in
memory, the Hugging Face token from a Secret (by reference, never a value), a
PodDisruptionBudget, an optional ALB Ingress (internal by default,
internet-facing only with explicit source CIDRs) and an optional Open WebUI.

Security context: containers drop every capability, cannot escalate privileges
and use the runtime's seccomp profile. They are not forced to run as non-root:
the vLLM, Ray and Open WebUI images run as root and write caches under
``/root`` (torch.compile, Triton, Hugging Face), and the NVIDIA/Neuron images do
not define a non-root user; ``runAsNonRoot`` would keep them from starting.

The Secret holding the token belongs to :class:`~components.model_storage.ModelStorage`
(``hf_token_secret_name``); this component only refers to it.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pulumi
import pulumi_kubernetes as k8s
import yaml

from components import _versions
from components.config import VLLM_ARG_RE, ExposureKind, ServingMode, check_model_id

#: The OpenAI-compatible port, in every mode (vLLM server and Ray Serve).
PORT = 8000
RAY_GCS_PORT = 6379
WEBUI_PORT = 8080
HEALTH_PATH = "/health"
#: Ray Serve's proxy health route (Ray Serve LLM's app has no /health).
RAY_HEALTH_PATH = "/-/healthz"
#: The startup probe allows this much more than the planner's cold start.
STARTUP_MARGIN = 1.5
STARTUP_PERIOD_S = 10
#: Never less than 5 minutes of startup budget, whatever the estimate says.
MIN_STARTUP_FAILURES = 30
#: Added to the startup budget for Pulumi's wait on Deployments, Services and the
#: Ingress: a new accelerator node and a 10-20 GB image pull come first.
ROLLOUT_MARGIN_S = 1800
HF_TOKEN_KEY = "token"

NVIDIA_GPU = "nvidia.com/gpu"
NEURON = "aws.amazon.com/neuron"
EFA = "vpc.amazonaws.com/efa"
RESOURCE_NAMES = (NVIDIA_GPU, NEURON)

#: Flags set from their own fields; extra_args may not repeat them.
MANAGED_FLAGS = frozenset(
    {
        "--model",
        "--served-model-name",
        "--tensor-parallel-size",
        "--pipeline-parallel-size",
        "--max-model-len",
        "--gpu-memory-utilization",
        "--max-num-seqs",
        "--host",
        "--port",
        "--distributed-executor-backend",
    }
)

_NAME_RE = re.compile(r"^[a-z]([a-z0-9-]{0,38}[a-z0-9])?$")
_NS_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_QUANTITY_RE = re.compile(r"^[0-9]+(\.[0-9]+)?(m|Ki|Mi|Gi|Ti|k|M|G|T)?$")
_LABEL_KEY_RE = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_LABEL_VALUE_RE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
_ACM_ARN_RE = re.compile(r"^arn:aws[a-z-]*:acm:[a-z0-9-]+:[0-9]{12}:certificate/[0-9a-f-]+$")

_SECURITY_CONTEXT = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
_POD_SECURITY_CONTEXT = {"seccompProfile": {"type": "RuntimeDefault"}}
#: Quiet, offline-friendly defaults for every serving container.
_BASE_ENV = [
    {"name": "VLLM_NO_USAGE_STATS", "value": "1"},
    {"name": "DO_NOT_TRACK", "value": "1"},
    {"name": "HF_HUB_DISABLE_TELEMETRY", "value": "1"},
]
#: libfabric/NCCL settings for EFA (AWS "Get started with EFA and NCCL"); they
#: take effect in images that ship the aws-ofi-nccl plugin, and are inert otherwise.
_EFA_ENV = [
    {"name": "FI_PROVIDER", "value": "efa"},
    {"name": "FI_EFA_USE_DEVICE_RDMA", "value": "1"},
    {"name": "FI_EFA_FORK_SAFE", "value": "1"},
    {"name": "NCCL_DEBUG", "value": "WARN"},
]


@dataclass(frozen=True)
class Scheduling:
    """Where accelerator pods may run; from the AcceleratorPool, so both agree.

    Attributes:
        node_selector: Labels that select the pool's nodes.
        tolerations: Tolerations of the pool's taints (Kubernetes dicts).
        resource_name: ``nvidia.com/gpu`` or ``aws.amazon.com/neuron``.
        efa: The nodes carry EFA interfaces (multi-node pools).
        efa_devices: EFA interfaces per node to request (catalog ``InstanceType.efa``).
    """

    node_selector: Mapping[str, str]
    tolerations: Sequence[Mapping[str, Any]]
    resource_name: str
    efa: bool = False
    efa_devices: int = 0


@dataclass(frozen=True)
class ModelVolume:
    """The weights' volume, from ModelStorage.

    Attributes:
        volume: Pod volume (Kubernetes ``Volume`` dict).
        mount_path: Where to mount it.
        model_path: The weights' directory; vLLM's ``--model``.
        download_container: Init container that fills the volume at start, or None.
        service_account_name: Service account the pods must use (IRSA), or None.
    """

    volume: Mapping[str, Any]
    mount_path: str
    model_path: str
    download_container: Mapping[str, Any] | None = None
    service_account_name: pulumi.Input[str] | None = None


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
        args_override: Full vLLM argument list replacing the generated one
            (deployment and leader-worker-set).
        image: Serving image; default by mode and accelerator from ``_versions``.
        exposure: cluster, internal-alb or public-alb.
        cidrs: Source CIDRs allowed through the ALB (required for public-alb).
        certificate_arn: ACM certificate; the ALB then listens on HTTPS 443.
        open_webui: Deploy Open WebUI pointed at the endpoint.
        cpu: CPU request of an accelerator pod.
        memory: Memory request of an accelerator pod.
        shm_size: Size of the in-memory ``/dev/shm`` (NCCL, vLLM workers).
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
    args_override: Sequence[str] | None = None
    image: str | None = None
    exposure: ExposureKind = ExposureKind.CLUSTER
    cidrs: Sequence[str] = ()
    certificate_arn: str | None = None
    open_webui: bool = False
    cpu: str = "4"
    memory: str = "32Gi"
    shm_size: str = "16Gi"
    labels: Mapping[str, str] = field(default_factory=dict)


def vllm_args(
    *,
    model: str,
    served_model_name: str,
    tensor_parallel: int,
    pipeline_parallel: int,
    max_model_len: int,
    gpu_memory_utilization: float,
    max_num_seqs: int,
    extra_args: Sequence[str] = (),
    distributed_executor_backend: str | None = None,
) -> list[str]:
    """The vLLM OpenAI server's arguments, in a stable order."""
    args = [
        "--model", model,
        "--served-model-name", served_model_name,
        "--tensor-parallel-size", str(tensor_parallel),
    ]  # fmt: skip
    if pipeline_parallel > 1:
        args += ["--pipeline-parallel-size", str(pipeline_parallel)]
    args += [
        "--max-model-len", str(max_model_len),
        "--gpu-memory-utilization", str(gpu_memory_utilization),
        "--max-num-seqs", str(max_num_seqs),
        "--port", str(PORT),
    ]  # fmt: skip
    if distributed_executor_backend:
        args += ["--distributed-executor-backend", distributed_executor_backend]
    return args + list(extra_args)


def startup_failure_threshold(cold_start_s: float) -> int:
    """Startup-probe failures allowed so that the budget covers the cold start."""
    return max(MIN_STARTUP_FAILURES, math.ceil(cold_start_s * STARTUP_MARGIN / STARTUP_PERIOD_S))


def rollout_timeout_s(cold_start_s: float) -> int:
    """How long Pulumi waits for the serving objects: startup budget plus provisioning."""
    return startup_failure_threshold(cold_start_s) * STARTUP_PERIOD_S + ROLLOUT_MARGIN_S


def flag_to_kwarg(flag: str) -> tuple[str, Any]:
    """``--enable-prefix-caching`` -> (enable_prefix_caching, True); values typed."""
    key, _, raw = flag.removeprefix("--").partition("=")
    name = key.replace("-", "_")
    if not raw:
        return name, True
    for cast in (int, float):
        try:
            return name, cast(raw)
        except ValueError:
            pass
    if raw.lower() in ("true", "false"):
        return name, raw.lower() == "true"
    return name, raw


def _check_cidrs(kind: ExposureKind, cidrs: Sequence[str]) -> None:
    for c in cidrs:
        try:
            net = ipaddress.ip_network(c, strict=True)
        except ValueError as e:
            raise ValueError(f"cidrs: {c!r} is not a network CIDR ({e})") from None
        if net.prefixlen == 0:
            raise ValueError(
                "cidrs: 0.0.0.0/0 or ::/0 would open an unauthenticated model server to "
                "everyone; list the client networks instead"
            )
    if kind is ExposureKind.PUBLIC_ALB and not cidrs:
        raise ValueError(
            "cidrs: a public-alb needs the source CIDRs allowed in, e.g. ['203.0.113.0/24']; "
            "use internal-alb for VPC-only access"
        )
    if kind is ExposureKind.CLUSTER and cidrs:
        raise ValueError("cidrs: applies only to ALB exposure (internal-alb or public-alb)")


def _validate(name: str, a: InferenceServiceArgs) -> None:
    """Raise ValueError naming the first bad field and how to fix it."""
    if not _NAME_RE.match(name):
        raise ValueError(
            f"name: {name!r} must be a DNS-1035 label of at most 40 characters starting "
            "with a letter (it names the Service)"
        )
    check_model_id(a.model_id)
    if not _NS_RE.match(a.namespace):
        raise ValueError(f"namespace: {a.namespace!r} is not a DNS-1123 label")
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
    for arg in a.extra_args:
        if not VLLM_ARG_RE.match(arg):
            raise ValueError(
                f"extra_args: {arg!r} is not a plain flag of the form --name or --name=value"
            )
        if arg.split("=", 1)[0] in MANAGED_FLAGS:
            raise ValueError(
                f"extra_args: {arg.split('=', 1)[0]} is set from its own field, not extra_args"
            )
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
    for key, value in a.labels.items():
        if not _LABEL_KEY_RE.match(key) or not _LABEL_VALUE_RE.match(value):
            raise ValueError(f"labels: {key}={value!r} is not a valid Kubernetes label")
    _check_cidrs(ExposureKind(a.exposure), a.cidrs)
    if a.certificate_arn is not None:
        if ExposureKind(a.exposure) is ExposureKind.CLUSTER:
            raise ValueError("certificate_arn: applies only to ALB exposure")
        if not _ACM_ARN_RE.match(a.certificate_arn):
            raise ValueError(
                f"certificate_arn: {a.certificate_arn!r} is not an ACM certificate ARN"
            )
    for fld in ("cpu", "memory", "shm_size"):
        if not _QUANTITY_RE.match(getattr(a, fld)):
            raise ValueError(f"{fld}: {getattr(a, fld)!r} is not a Kubernetes quantity")
    if a.storage is not None:
        if not _model_path_ok(a.storage.model_path):
            raise ValueError(f"storage.model_path: {a.storage.model_path!r} must be absolute")
        if a.storage.volume.get("name") in ("dshm", "webui-data"):
            raise ValueError(
                "storage.volume: the names 'dshm' and 'webui-data' are taken; name it 'models'"
            )


def _model_path_ok(path: str) -> bool:
    return path.startswith("/") and ".." not in path.split("/")


class InferenceService(pulumi.ComponentResource):
    """vLLM serving one model, in one of three modes, with its Service.

    Attributes:
        service_name: The Service the endpoint URL points at (``{name}``, or
            KubeRay's ``{name}-serve-svc`` for ray-service).
        namespace: The namespace of every object.
        url: OpenAI base URL: ``http://<svc>.<ns>.svc.cluster.local:8000/v1``, or
            the ALB's ``http(s)://<hostname>/v1`` once it has one.
        image: The serving image.
        workload_name: The Deployment, LeaderWorkerSet or RayService name.
        webui_service_name: Open WebUI's Service (port 8080), or None.
        ingress_hostname: The ALB's hostname (Output; empty until known), or None.
    """

    TYPE: ClassVar[str] = "llm-endpoints:components:InferenceService"

    service_name: str
    namespace: str
    url: pulumi.Output[str]
    image: str
    workload_name: str
    webui_service_name: str | None
    ingress_hostname: pulumi.Output[str] | None

    def __init__(
        self, name: str, args: InferenceServiceArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        _validate(name, args)
        super().__init__(self.TYPE, name, None, opts)
        self._name, self._args = name, args
        mode = ServingMode(args.mode)
        neuron = args.scheduling.resource_name == NEURON
        if args.image is not None:
            self.image = args.image
        elif mode is ServingMode.RAY_SERVICE:
            self.image = _versions.RAY_VLLM_NEURON_IMAGE if neuron else _versions.RAY_VLLM_IMAGE
        else:
            self.image = _versions.VLLM_NEURON_IMAGE if neuron else _versions.VLLM_IMAGE
        self.namespace = args.namespace
        self.workload_name = name
        self.webui_service_name = None
        self.ingress_hostname = None

        if mode is ServingMode.DEPLOYMENT:
            self._deployment()
            self.service_name = self._service("server")
        elif mode is ServingMode.LEADER_WORKER_SET:
            self._leader_worker_set()
            self.service_name = self._service("leader")
        else:
            self._ray_service()
            self.service_name = f"{name}-serve-svc"

        in_cluster = f"http://{self.service_name}.{args.namespace}.svc.cluster.local:{PORT}/v1"
        self.url = pulumi.Output.from_input(in_cluster)
        if ExposureKind(args.exposure) is not ExposureKind.CLUSTER:
            self._ingress(mode, in_cluster)
        if args.open_webui:
            self._open_webui()

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

    # -- building blocks --------------------------------------------------------

    def _child(self, **kwargs: Any) -> pulumi.ResourceOptions:
        # The kubernetes provider comes from this component's opts.
        return pulumi.ResourceOptions(parent=self, **kwargs)

    def _awaited(self) -> pulumi.ResourceOptions:
        """Options for objects Pulumi waits on until the model serves.

        Deployments, and Services and Ingresses (ready endpoints), are awaited by
        the kubernetes provider for 10 minutes by default, less than a cold start.
        """
        wait = rollout_timeout_s(self._args.cold_start_s)
        return self._child(
            custom_timeouts=pulumi.CustomTimeouts(create=f"{wait}s", update=f"{wait}s")
        )

    def _labels(self, component: str, app: str = "vllm") -> dict[str, str]:
        # Extra labels may rename the endpoint label, never the selector labels.
        return {
            "llm-endpoints/endpoint": self._name,
            **self._args.labels,
            "app.kubernetes.io/name": app,
            "app.kubernetes.io/instance": self._name,
            "app.kubernetes.io/component": component,
            "app.kubernetes.io/managed-by": "pulumi",
        }

    def _selector(self, component: str, app: str = "vllm") -> dict[str, str]:
        return {
            "app.kubernetes.io/name": app,
            "app.kubernetes.io/instance": self._name,
            "app.kubernetes.io/component": component,
        }

    def _meta(self, obj_name: str, labels: dict[str, str], **extra: Any) -> dict[str, Any]:
        return {"name": obj_name, "namespace": self._args.namespace, "labels": labels, **extra}

    def _model_source(self) -> str:
        a = self._args
        return a.storage.model_path if a.storage is not None else a.model_id

    def _vllm_args(self, backend: str | None = None) -> list[str]:
        a = self._args
        if a.args_override is not None:
            return list(a.args_override)
        return vllm_args(
            model=self._model_source(),
            served_model_name=a.model_id,
            tensor_parallel=a.tensor_parallel,
            pipeline_parallel=a.pipeline_parallel,
            max_model_len=a.max_model_len,
            gpu_memory_utilization=a.gpu_memory_utilization,
            max_num_seqs=a.max_num_seqs,
            extra_args=a.extra_args,
            distributed_executor_backend=backend,
        )

    def _env(self, efa: bool = False) -> list[dict[str, Any]]:
        env: list[dict[str, Any]] = [dict(e) for e in _BASE_ENV]
        if self._args.hf_token_secret_name is not None:
            env.append(
                {
                    "name": "HF_TOKEN",
                    "valueFrom": {
                        "secretKeyRef": {
                            "name": self._args.hf_token_secret_name,
                            "key": HF_TOKEN_KEY,
                        }
                    },
                }
            )
        if efa:
            env += [dict(e) for e in _EFA_ENV]
        return env

    def _resources(self, efa: bool = False) -> dict[str, Any]:
        a = self._args
        devices = {a.scheduling.resource_name: str(a.devices_per_node)}
        if efa:
            devices[EFA] = str(a.scheduling.efa_devices)
        # Extended resources: limits, with requests equal. No memory limit: model
        # loading briefly maps whole checkpoints, and the node is dedicated.
        return {
            "requests": {"cpu": a.cpu, "memory": a.memory, **devices},
            "limits": dict(devices),
        }

    def _mounts(self) -> list[dict[str, Any]]:
        mounts: list[dict[str, Any]] = [{"name": "dshm", "mountPath": "/dev/shm"}]
        st = self._args.storage
        if st is not None:
            # Serving never writes the weights: read-only even on writable volumes.
            mounts.append({"name": st.volume["name"], "mountPath": st.mount_path, "readOnly": True})
        return mounts

    def _probes(self, path: str = HEALTH_PATH, port: str = "http") -> dict[str, Any]:
        get = {"path": path, "port": port}
        return {
            "startupProbe": {
                "httpGet": get,
                "periodSeconds": STARTUP_PERIOD_S,
                "timeoutSeconds": 5,
                "failureThreshold": startup_failure_threshold(self._args.cold_start_s),
            },
            "readinessProbe": {
                "httpGet": get,
                "periodSeconds": 10,
                "timeoutSeconds": 5,
                "failureThreshold": 3,
            },
            # Generous: /health answers slowly while the engine is saturated, and a
            # restart costs a full cold start.
            "livenessProbe": {
                "httpGet": get,
                "periodSeconds": 15,
                "timeoutSeconds": 10,
                "failureThreshold": 4,
            },
        }

    def _pod_spec(
        self, containers: list[dict[str, Any]], *, accelerator: bool = True
    ) -> dict[str, Any]:
        a = self._args
        spec: dict[str, Any] = {
            "automountServiceAccountToken": False,
            "securityContext": dict(_POD_SECURITY_CONTEXT),
            "containers": containers,
        }
        volumes: list[dict[str, Any]] = []
        if accelerator:
            spec["nodeSelector"] = dict(a.scheduling.node_selector)
            spec["tolerations"] = [dict(t) for t in a.scheduling.tolerations]
            volumes.append(
                {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": a.shm_size}}
            )
            if a.storage is not None:
                volumes.append(dict(a.storage.volume))
                if a.storage.service_account_name is not None:
                    spec["serviceAccountName"] = a.storage.service_account_name
                if a.storage.download_container is not None:
                    spec["initContainers"] = [dict(a.storage.download_container)]
        if volumes:
            spec["volumes"] = volumes
        return spec

    def _server_container(
        self,
        name: str,
        command: list[str],
        args: list[str] | None,
        *,
        efa: bool = False,
        probes: bool = True,
    ) -> dict[str, Any]:
        c: dict[str, Any] = {
            "name": name,
            "image": self.image,
            "command": command,
            "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
            "env": self._env(efa),
            "resources": self._resources(efa),
            "volumeMounts": self._mounts(),
            "securityContext": dict(_SECURITY_CONTEXT),
        }
        if args is not None:
            c["args"] = args
        if probes:
            c.update(self._probes())
        return c

    def _pdb(self) -> None:
        # Every serving pod of the endpoint (server; leader and workers, whose
        # loss restarts their group; Ray head and workers).
        selector = {"app.kubernetes.io/name": "vllm", "app.kubernetes.io/instance": self._name}
        k8s.policy.v1.PodDisruptionBudget(
            f"{self._name}-pdb",
            metadata=self._meta(self._name, self._labels("server")),
            # One at a time: voluntary disruptions (node drains, Karpenter
            # consolidation) never take more than one pod away, yet never block
            # cluster maintenance either.
            spec={"maxUnavailable": 1, "selector": {"matchLabels": selector}},
            opts=self._child(),
        )

    def _service(self, component: str) -> str:
        k8s.core.v1.Service(
            f"{self._name}-svc",
            metadata=self._meta(self._name, self._labels(component)),
            spec={
                "type": "ClusterIP",
                "selector": self._selector(component),
                "ports": [{"name": "http", "port": PORT, "targetPort": "http", "protocol": "TCP"}],
            },
            opts=self._awaited(),
        )
        return self._name

    # -- modes --------------------------------------------------------------------

    def _deployment(self) -> None:
        a, name = self._args, self._name
        container = self._server_container(
            "vllm", ["python3", "-m", "vllm.entrypoints.openai.api_server"], self._vllm_args()
        )
        labels = self._labels("server")
        k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata=self._meta(name, labels),
            spec={
                "replicas": a.replicas,
                "selector": {"matchLabels": self._selector("server")},
                # Replace pods one at a time without asking for an extra GPU node
                # (and without two pods fighting over a ReadWriteOnce volume).
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
                },
                "template": {
                    "metadata": {"labels": labels, "annotations": _scrape_annotations()},
                    "spec": self._pod_spec([container]),
                },
            },
            opts=self._awaited(),
        )
        self._pdb()

    def _leader_worker_set(self) -> None:
        a, name = self._args, self._name
        efa = a.scheduling.efa
        budget_s = startup_failure_threshold(a.cold_start_s) * STARTUP_PERIOD_S
        leader = self._server_container(
            "vllm-leader",
            ["/bin/bash", "-c", leader_script(self._vllm_args("ray"), budget_s)],
            None,
            efa=efa,
        )
        leader["ports"].append({"name": "gcs", "containerPort": RAY_GCS_PORT, "protocol": "TCP"})
        worker = self._server_container(
            "vllm-worker", ["/bin/bash", "-c", WORKER_SCRIPT], None, efa=efa, probes=False
        )
        worker["ports"] = [{"name": "gcs", "containerPort": RAY_GCS_PORT, "protocol": "TCP"}]
        # Ray tells NCCL and vLLM which address each pod has.
        for c in (leader, worker):
            c["env"].append(
                {"name": "VLLM_HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
            )
        k8s.apiextensions.CustomResource(
            f"{name}-lws",
            api_version="leaderworkerset.x-k8s.io/v1",
            kind="LeaderWorkerSet",
            metadata=self._meta(name, self._labels("server")),
            spec={
                "replicas": a.replicas,
                # Workers wait for the leader's Ray head themselves; LeaderReady
                # would deadlock (the leader is ready only once workers joined).
                "startupPolicy": "LeaderCreated",
                "rolloutStrategy": {
                    "type": "RollingUpdate",
                    "rollingUpdateConfiguration": {"maxUnavailable": 1, "maxSurge": 0},
                },
                "leaderWorkerTemplate": {
                    "size": a.pipeline_parallel,
                    # A lost pod breaks the NCCL groups: restart the whole group.
                    "restartPolicy": "RecreateGroupOnPodRestart",
                    "leaderTemplate": {
                        "metadata": {
                            "labels": self._labels("leader"),
                            "annotations": _scrape_annotations(),
                        },
                        "spec": self._pod_spec([leader]),
                    },
                    "workerTemplate": {
                        "metadata": {"labels": self._labels("worker")},
                        "spec": self._pod_spec([worker]),
                    },
                },
            },
            opts=self._child(),
        )
        self._pdb()

    def _ray_service(self) -> None:
        a, name = self._args, self._name
        neuron = a.scheduling.resource_name == NEURON
        group = "neuron" if neuron else "gpu"
        head = {
            "name": "ray-head",
            "image": self.image,
            "ports": [
                {"name": "gcs", "containerPort": RAY_GCS_PORT, "protocol": "TCP"},
                {"name": "dashboard", "containerPort": 8265, "protocol": "TCP"},
                {"name": "client", "containerPort": 10001, "protocol": "TCP"},
                {"name": "serve", "containerPort": PORT, "protocol": "TCP"},
                {"name": "metrics", "containerPort": 8080, "protocol": "TCP"},
            ],
            "env": [dict(e) for e in _BASE_ENV],
            "resources": {
                "requests": {"cpu": "2", "memory": "8Gi"},
                "limits": {"cpu": "2", "memory": "8Gi"},
            },
            "securityContext": dict(_SECURITY_CONTEXT),
        }
        worker = {
            "name": "ray-worker",
            "image": self.image,
            "env": self._env(),
            "resources": self._resources(),
            "volumeMounts": self._mounts(),
            "securityContext": dict(_SECURITY_CONTEXT),
        }
        worker_params = (
            # KubeRay maps only aws.amazon.com/neuroncore to Ray's neuron_cores;
            # the pool hands out whole devices, so declare the cores here.
            {"resources": "'" + json.dumps({"neuron_cores": a.tensor_parallel}) + "'"}
            if neuron
            else {"num-gpus": str(a.devices_per_node)}
        )
        budget_s = startup_failure_threshold(a.cold_start_s) * STARTUP_PERIOD_S
        k8s.apiextensions.CustomResource(
            f"{name}-rayservice",
            api_version="ray.io/v1",
            kind="RayService",
            metadata=self._meta(name, self._labels("server")),
            spec={
                "serveConfigV2": serve_config(
                    model_id=a.model_id,
                    model_source=self._model_source(),
                    tensor_parallel=a.tensor_parallel,
                    pipeline_parallel=a.pipeline_parallel,
                    max_model_len=a.max_model_len,
                    gpu_memory_utilization=a.gpu_memory_utilization,
                    max_num_seqs=a.max_num_seqs,
                    replicas=a.replicas,
                    extra_args=a.extra_args,
                    neuron_cores=a.tensor_parallel if neuron else 0,
                ),
                # The startup budget, so a slow first load is not taken for a failure.
                "deploymentUnhealthySecondThreshold": budget_s,
                "serviceUnhealthySecondThreshold": budget_s,
                "rayClusterConfig": {
                    "headGroupSpec": {
                        # The head runs the Serve controller and proxy only, on CPU
                        # nodes: no accelerator tolerations, no Ray CPUs for replicas.
                        "rayStartParams": {
                            "num-cpus": "0",
                            "num-gpus": "0",
                            "dashboard-host": "0.0.0.0",
                        },
                        "template": {
                            "metadata": {"labels": self._labels("ray-head")},
                            "spec": self._pod_spec([head], accelerator=False),
                        },
                    },
                    "workerGroupSpecs": [
                        {
                            "groupName": group,
                            "replicas": a.replicas,
                            "minReplicas": a.replicas,
                            "maxReplicas": a.replicas,
                            "rayStartParams": worker_params,
                            "template": {
                                "metadata": {
                                    "labels": self._labels("ray-worker"),
                                    "annotations": _scrape_annotations(),
                                },
                                "spec": self._pod_spec([worker]),
                            },
                        }
                    ],
                },
            },
            opts=self._child(),
        )
        self._pdb()

    # -- exposure -------------------------------------------------------------------

    def _ingress(self, mode: ServingMode, in_cluster: str) -> None:
        a, name = self._args, self._name
        public = ExposureKind(a.exposure) is ExposureKind.PUBLIC_ALB
        # Defensive re-check: the spec validates this too, but a public model
        # server without a source allow-list must never be created.
        if public and (not a.cidrs or any(ipaddress.ip_network(c).prefixlen == 0 for c in a.cidrs)):
            raise ValueError("cidrs: a public-alb needs explicit, non-default source CIDRs")
        annotations = {
            "alb.ingress.kubernetes.io/scheme": "internet-facing" if public else "internal",
            "alb.ingress.kubernetes.io/target-type": "ip",
            "alb.ingress.kubernetes.io/healthcheck-path": (
                RAY_HEALTH_PATH if mode is ServingMode.RAY_SERVICE else HEALTH_PATH
            ),
            # Streamed completions can stay quiet for minutes.
            "alb.ingress.kubernetes.io/load-balancer-attributes": (
                "idle_timeout.timeout_seconds=600"
            ),
        }
        if a.cidrs:
            annotations["alb.ingress.kubernetes.io/inbound-cidrs"] = ",".join(a.cidrs)
        if a.certificate_arn:
            annotations["alb.ingress.kubernetes.io/listen-ports"] = '[{"HTTPS": 443}]'
            annotations["alb.ingress.kubernetes.io/certificate-arn"] = a.certificate_arn
        else:
            annotations["alb.ingress.kubernetes.io/listen-ports"] = '[{"HTTP": 80}]'
        ingress = k8s.networking.v1.Ingress(
            f"{name}-ingress",
            metadata=self._meta(name, self._labels("ingress"), annotations=annotations),
            spec={
                "ingressClassName": "alb",
                "rules": [
                    {
                        "http": {
                            "paths": [
                                {
                                    "path": "/",
                                    "pathType": "Prefix",
                                    "backend": {
                                        "service": {
                                            "name": self.service_name,
                                            "port": {"number": PORT},
                                        }
                                    },
                                }
                            ]
                        }
                    }
                ],
            },
            opts=self._awaited(),
        )
        scheme = "https" if a.certificate_arn else "http"
        self.ingress_hostname = ingress.status.apply(_hostname)
        # Until the ALB has a name (and in render mode, where it never does),
        # the in-cluster URL is the one that works.
        self.url = self.ingress_hostname.apply(lambda h: f"{scheme}://{h}/v1" if h else in_cluster)

    def _open_webui(self) -> None:
        a, name = self._args, self._name
        web = f"{name}-webui"
        labels = self._labels("webui", app="open-webui")
        container = {
            "name": "open-webui",
            "image": _versions.OPEN_WEBUI_IMAGE,
            "ports": [{"name": "http", "containerPort": WEBUI_PORT, "protocol": "TCP"}],
            "env": [
                {"name": "OPENAI_API_BASE_URL", "value": f"http://{self.service_name}:{PORT}/v1"},
                {"name": "ENABLE_OLLAMA_API", "value": "false"},
                {"name": "DEFAULT_MODELS", "value": a.model_id},
                {"name": "DO_NOT_TRACK", "value": "1"},
                {"name": "ANONYMIZED_TELEMETRY", "value": "false"},
            ],
            "resources": {
                "requests": {"cpu": "500m", "memory": "1Gi"},
                "limits": {"memory": "2Gi"},
            },
            "volumeMounts": [{"name": "webui-data", "mountPath": "/app/backend/data"}],
            "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 10},
            "livenessProbe": {
                "httpGet": {"path": "/health", "port": "http"},
                "periodSeconds": 20,
                "initialDelaySeconds": 60,
            },
            "securityContext": dict(_SECURITY_CONTEXT),
        }
        spec = self._pod_spec([container], accelerator=False)
        # Chats and users live with the pod: the UI is a convenience, not a record.
        spec["volumes"] = [{"name": "webui-data", "emptyDir": {"sizeLimit": "5Gi"}}]
        k8s.apps.v1.Deployment(
            f"{web}-deployment",
            metadata=self._meta(web, labels),
            spec={
                "replicas": 1,
                "selector": {"matchLabels": self._selector("webui", app="open-webui")},
                "template": {"metadata": {"labels": labels}, "spec": spec},
            },
            opts=self._child(),
        )
        k8s.core.v1.Service(
            f"{web}-svc",
            metadata=self._meta(web, labels),
            spec={
                "type": "ClusterIP",
                "selector": self._selector("webui", app="open-webui"),
                "ports": [
                    {"name": "http", "port": WEBUI_PORT, "targetPort": "http", "protocol": "TCP"}
                ],
            },
            opts=self._child(),
        )
        self.webui_service_name = web


def _hostname(status: Any) -> str:
    """The first load-balancer hostname of an Ingress status, or ''."""
    try:
        return str(status.load_balancer.ingress[0].hostname or "")
    except (AttributeError, IndexError, TypeError):
        return ""


def _scrape_annotations() -> dict[str, str]:
    # vLLM and Ray export Prometheus metrics on these ports.
    return {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(PORT),
        "prometheus.io/path": "/metrics",
    }


#: Workers wait for the leader's Ray head (LWS_LEADER_ADDRESS is injected by the
#: LeaderWorkerSet controller), then join it and stay in the foreground.
WORKER_SCRIPT = "\n".join(
    [
        "set -u",
        f'until ray health-check --address="${{LWS_LEADER_ADDRESS}}:{RAY_GCS_PORT}" '
        ">/dev/null 2>&1; do",
        '  echo "waiting for the Ray head at ${LWS_LEADER_ADDRESS}"; sleep 5',
        "done",
        f'exec ray start --address="${{LWS_LEADER_ADDRESS}}:{RAY_GCS_PORT}" --block',
    ]
)


def leader_script(vllm: Sequence[str], wait_s: int) -> str:
    """The leader: start the Ray head, wait for the group's pods, then run vLLM."""
    count = (
        'python3 -c \'import ray; ray.init(address="auto"); '
        'print(sum(1 for n in ray.nodes() if n["Alive"]))\' 2>/dev/null || echo 0'
    )
    return "\n".join(
        [
            "set -euo pipefail",
            f"ray start --head --port={RAY_GCS_PORT} --disable-usage-stats",
            # vLLM places pipeline stages on the workers: all must have joined.
            f"for _ in $(seq 1 {max(1, wait_s // 5)}); do",
            f"  alive=$({count})",
            '  [ "$alive" -ge "$LWS_GROUP_SIZE" ] && break',
            '  echo "waiting for Ray workers: $alive/$LWS_GROUP_SIZE"; sleep 5',
            "done",
            "exec python3 -m vllm.entrypoints.openai.api_server " + shlex.join(vllm),
        ]
    )


def serve_config(
    *,
    model_id: str,
    model_source: str,
    tensor_parallel: int,
    pipeline_parallel: int,
    max_model_len: int,
    gpu_memory_utilization: float,
    max_num_seqs: int,
    replicas: int,
    extra_args: Sequence[str] = (),
    neuron_cores: int = 0,
) -> str:
    """Ray Serve ``serveConfigV2``: Ray Serve LLM's OpenAI app over vLLM."""
    engine: dict[str, Any] = {
        "tensor_parallel_size": tensor_parallel,
        "max_model_len": max_model_len,
        "gpu_memory_utilization": gpu_memory_utilization,
        "max_num_seqs": max_num_seqs,
    }
    if pipeline_parallel > 1:
        engine["pipeline_parallel_size"] = pipeline_parallel
    engine.update(flag_to_kwarg(f) for f in extra_args)
    llm: dict[str, Any] = {
        "model_loading_config": {"model_id": model_id, "model_source": model_source},
        "engine_kwargs": engine,
        "deployment_config": {
            # Fixed size: one replica per worker pod, as many as there are pods.
            "autoscaling_config": {
                "min_replicas": replicas,
                "initial_replicas": replicas,
                "max_replicas": replicas,
            },
        },
    }
    if neuron_cores:
        # Ray schedules the engine on NeuronCores instead of its default GPU bundles.
        llm["placement_group_config"] = {
            "bundles": [{"CPU": 1, "neuron_cores": neuron_cores}],
            "strategy": "STRICT_PACK",
        }
    config = {
        "applications": [
            {
                "name": "llm",
                "import_path": "ray.serve.llm:build_openai_app",
                "route_prefix": "/",
                "args": {"llm_configs": [llm]},
            }
        ]
    }
    return yaml.safe_dump(config, sort_keys=False)
