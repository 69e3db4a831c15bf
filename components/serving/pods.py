"""The building blocks of every serving pod: labels, env, resources, probes, pod spec.

:class:`PodBuilder` holds what one InferenceService's pods share and makes the
pieces each serving mode assembles (``components/serving/workloads.py``), so
the rules every pod keeps are written once:

* **Fit.** Requests come from the planned instance types' allocatable as EKS
  computes it, less the platform's DaemonSets and a headroom
  (:func:`node_budget`), shared by device count among the pods of a node, never
  from fixed defaults; accelerator pods are pinned to those instance types.
* **Security.** No privilege escalation, no capabilities, the runtime's
  seccomp profile, and the image's own non-root user where it has one
  (``_versions.IMAGES``); writable paths (HOME, compile and model caches) are
  volumes, never the read-only weights mount.
* **Secrets by reference.** The HF token and the endpoint's API key reach
  containers through ``secretKeyRef``, never as values.
* Probes sized from the cold start, ``/dev/shm`` in memory, the pool's node
  selector and tolerations.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pulumi
import pulumi_kubernetes as k8s

from components import _versions, eks_node
from components.catalog import Accelerator, get_instance
from components.config import ServingMode
from components.serving.scripts import PORT, vllm_args
from components.storage.download import hf_token_env

if TYPE_CHECKING:
    from components.inference_service import InferenceServiceArgs

WEBUI_PORT = 8080
HEALTH_PATH = "/health"
#: The startup probe allows this much more than the planner's cold start.
STARTUP_MARGIN = 1.5
STARTUP_PERIOD_S = 10
#: Never less than 5 minutes of startup budget, whatever the estimate says.
MIN_STARTUP_FAILURES = 30
#: Added to the startup budget for Pulumi's wait on Deployments, Services and the
#: Ingress: a new accelerator node and a 10-20 GB image pull come first.
ROLLOUT_MARGIN_S = 1800
#: Left unrequested on a node for what the platform does not know it runs (a
#: log shipper, a security agent): requests take the rest of the budget.
HEADROOM = 0.05

NVIDIA_GPU = "nvidia.com/gpu"
NEURON = "aws.amazon.com/neuron"
EFA = "vpc.amazonaws.com/efa"
RESOURCE_NAMES = (NVIDIA_GPU, NEURON)
#: The Secret key holding an endpoint's API key (vLLM reads it as VLLM_API_KEY).
API_KEY_KEY = "key"
API_KEY_ENV = "VLLM_API_KEY"
#: Pod annotation whose change rolls the pods when the API key is rotated.
API_KEY_VERSION_ANNOTATION = "llm-endpoints/api-key-version"
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
#: Where every serving pod's writable cache volume is mounted (HOME lives there).
CACHE_ROOT = "/cache"

SECURITY_CONTEXT = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
POD_SECURITY_CONTEXT = {"seccompProfile": {"type": "RuntimeDefault"}}
#: Quiet, offline-friendly defaults for every serving container.
BASE_ENV = [
    {"name": "VLLM_NO_USAGE_STATS", "value": "1"},
    {"name": "DO_NOT_TRACK", "value": "1"},
    {"name": "HF_HUB_DISABLE_TELEMETRY", "value": "1"},
]
#: libfabric/NCCL settings for EFA (AWS "Get started with EFA and NCCL"); they
#: take effect in images that ship the aws-ofi-nccl plugin (the -efa image).
EFA_ENV = [
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
        instance_types: The instance types the pods are pinned to (the planned
            one first); their allocatable sizes the requests. Empty: not pinned,
            and the requests must be given explicitly.
        pod_annotations: Annotations the pool asks of its pods (Karpenter's
            ``do-not-disrupt``: a node serving a model is not taken from under it).
    """

    node_selector: Mapping[str, str]
    tolerations: Sequence[Mapping[str, Any]]
    resource_name: str
    efa: bool = False
    efa_devices: int = 0
    instance_types: Sequence[str] = field(default=())
    pod_annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelVolume:
    """The weights' volume, from ModelStorage.

    Attributes:
        volume: Pod volume (Kubernetes ``Volume`` dict).
        mount_path: Where to mount it.
        model_path: The weights' directory; vLLM's ``--model``.
        download_container: Init container that fills the volume at start, or None.
        service_account_name: Service account the pods must use (IRSA), or None.
        needs_root: The download writes into a volume only root may write (a
            file system whose root directory belongs to root), so its pod runs
            as root.
    """

    volume: Mapping[str, Any]
    mount_path: str
    model_path: str
    download_container: Mapping[str, Any] | None = None
    service_account_name: pulumi.Input[str] | None = None
    needs_root: bool = False


@dataclass(frozen=True)
class Share:
    """CPU (millicores) and memory (MiB) a pod requests."""

    cpu_millis: int
    memory_mib: int

    def quantities(self) -> dict[str, str]:
        """As Kubernetes quantities."""
        return {"cpu": f"{self.cpu_millis}m", "memory": f"{self.memory_mib}Mi"}


#: What the endpoint's CPU-only pods request. They run on the pool's nodes
#: (a cluster need not have CPU nodes with room for them), so an accelerator
#: pod's share leaves room for them.
RAY_HEAD = Share(cpu_millis=1000, memory_mib=3072)
AUTH_PROXY = Share(cpu_millis=100, memory_mib=64)
WEBUI = Share(cpu_millis=500, memory_mib=1024)


def device_plugins(accelerator: Accelerator, efa: bool) -> list[eks_node.DevicePlugin]:
    """The device plugins the platform runs on an accelerator node (they bring DaemonSets)."""
    plugins = [
        eks_node.DevicePlugin.NVIDIA
        if accelerator is Accelerator.NVIDIA
        else eks_node.DevicePlugin.NEURON
    ]
    return [*plugins, eks_node.DevicePlugin.EFA] if efa else plugins


def node_budget(instance_types: Sequence[str], *, efa: bool) -> tuple[Share, int]:
    """What the serving pods of one node may request, and the node's device count.

    The smallest budget over ``instance_types`` (the pods may land on any of
    them): allocatable as EKS computes it (``eks_node``), less the platform's
    DaemonSets, less :data:`HEADROOM`.
    """
    budgets, devices = [], []
    for name in instance_types:
        inst = get_instance(name)
        shape = eks_node.node_shape(
            inst,
            eks_node.Provisioner.KARPENTER,
            plugins=device_plugins(inst.accelerator, efa and inst.efa > 0),
        )
        left = eks_node.workload_budget(shape)
        budgets.append(
            Share(
                math.floor(left.cpu_millis * (1 - HEADROOM)),
                math.floor(left.memory_mib * (1 - HEADROOM)),
            )
        )
        devices.append(inst.count)
    return (
        Share(min(b.cpu_millis for b in budgets), min(b.memory_mib for b in budgets)),
        min(devices),
    )


def pinned_to(instance_types: Sequence[str]) -> dict[str, Any] | None:
    """A pod ``affinity`` that allows only these instance types (None: any)."""
    if not instance_types:
        return None
    term = {"key": INSTANCE_TYPE_LABEL, "operator": "In", "values": list(instance_types)}
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [term]}]
            }
        }
    }


def startup_failure_threshold(cold_start_s: float) -> int:
    """Startup-probe failures allowed so that the budget covers the cold start."""
    return max(MIN_STARTUP_FAILURES, math.ceil(cold_start_s * STARTUP_MARGIN / STARTUP_PERIOD_S))


def rollout_timeout_s(cold_start_s: float) -> int:
    """How long Pulumi waits for the serving objects: startup budget plus provisioning."""
    return startup_failure_threshold(cold_start_s) * STARTUP_PERIOD_S + ROLLOUT_MARGIN_S


def scrape_annotations() -> dict[str, str]:
    """Prometheus annotations: vLLM and Ray export their metrics on the serving port."""
    return {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(PORT),
        "prometheus.io/path": "/metrics",
    }


def image_facts(image: str) -> _versions.Image:
    """What the project knows of a pinned image (a custom one: assume it needs root)."""
    return _versions.IMAGES.get(image) or _versions.Image(None, 0, 0, "/root")


def pod_security(image: str, *, fs_group: bool = True) -> dict[str, Any]:
    """The pod ``securityContext`` for an image: its non-root user, or root if it needs it."""
    facts = image_facts(image)
    ctx: dict[str, Any] = dict(POD_SECURITY_CONTEXT)
    if facts.uid:
        ctx |= {"runAsNonRoot": True, "runAsUser": facts.uid, "runAsGroup": facts.gid}
        if fs_group:
            # Volumes that support it (emptyDir, EBS) become writable by the group.
            ctx |= {"fsGroup": facts.gid or facts.uid, "fsGroupChangePolicy": "OnRootMismatch"}
    return ctx


def needs_root(image: str, *, open_webui: bool, storage_root: bool) -> bool:
    """Whether an endpoint runs some pod as root: its serving image or Open
    WebUI's has no user of its own, or its weights' volume is writable only by
    root. Its namespace then gets Pod Security ``baseline``, else ``restricted``."""
    images = [image, *([_versions.OPEN_WEBUI_IMAGE] if open_webui else [])]
    return storage_root or any(image_facts(i).uid == 0 for i in images)


def cache_env(image: str, neuron: bool = False) -> list[dict[str, Any]]:
    """HOME and every cache a serving process writes, on the cache volume."""
    env = [
        {"name": "HOME", "value": f"{CACHE_ROOT}/home"},
        {"name": "XDG_CACHE_HOME", "value": f"{CACHE_ROOT}/xdg"},
        {"name": "HF_HOME", "value": f"{CACHE_ROOT}/huggingface"},
        {"name": "VLLM_CACHE_ROOT", "value": f"{CACHE_ROOT}/vllm"},
        {"name": "TRITON_CACHE_DIR", "value": f"{CACHE_ROOT}/triton"},
        {"name": "TORCHINDUCTOR_CACHE_DIR", "value": f"{CACHE_ROOT}/inductor"},
    ]
    if neuron:
        # The Neuron compiler's cache and its compiled artifacts; by default the
        # artifacts go next to the weights, which are mounted read-only.
        env += [
            {"name": "NEURON_COMPILE_CACHE_URL", "value": f"{CACHE_ROOT}/neuron-compile-cache"},
            {"name": "NEURON_COMPILED_ARTIFACTS", "value": f"{CACHE_ROOT}/neuron-artifacts"},
        ]
    return env


class PodBuilder:
    """What the pods of one InferenceService share, and the pieces they are made of.

    Args:
        parent: The InferenceService component (every object is its child).
        name: Its name (names and selects every object).
        args: Its arguments.
        image: The serving image.
    """

    def __init__(
        self, parent: pulumi.Resource, name: str, args: InferenceServiceArgs, image: str
    ) -> None:
        self.parent, self.name, self.args, self.image = parent, name, args, image
        self.neuron = args.scheduling.resource_name == NEURON

    @property
    def api_key_secret_name(self) -> str:
        """The Secret holding the endpoint's API key (key ``key``)."""
        return f"{self.name}-api-key"

    def child(self, **kwargs: Any) -> pulumi.ResourceOptions:
        # The kubernetes provider comes from this component's opts.
        return pulumi.ResourceOptions(parent=self.parent, **kwargs)

    def awaited(self) -> pulumi.ResourceOptions:
        """Options for objects Pulumi waits on until the model serves.

        Deployments, and Services and Ingresses (ready endpoints), are awaited by
        the kubernetes provider for 10 minutes by default, less than a cold start.
        """
        wait = rollout_timeout_s(self.args.cold_start_s)
        return self.child(
            custom_timeouts=pulumi.CustomTimeouts(create=f"{wait}s", update=f"{wait}s")
        )

    def labels(self, component: str, app: str = "vllm") -> dict[str, str]:
        # Extra labels may rename the endpoint label, never the selector labels.
        return {
            "llm-endpoints/endpoint": self.name,
            **self.args.labels,
            "app.kubernetes.io/name": app,
            "app.kubernetes.io/instance": self.name,
            "app.kubernetes.io/component": component,
            "app.kubernetes.io/managed-by": "pulumi",
        }

    def selector(self, component: str, app: str = "vllm") -> dict[str, str]:
        return {
            "app.kubernetes.io/name": app,
            "app.kubernetes.io/instance": self.name,
            "app.kubernetes.io/component": component,
        }

    def meta(self, obj_name: str, labels: dict[str, str], **extra: Any) -> dict[str, Any]:
        return {"name": obj_name, "namespace": self.args.namespace, "labels": labels, **extra}

    def template_annotations(self, *, scrape: bool = True) -> dict[str, str]:
        """Pod template annotations: metrics, the pool's, and the API key version
        (a new one rolls the pods)."""
        out = scrape_annotations() if scrape else {}
        out |= self.args.scheduling.pod_annotations
        out[API_KEY_VERSION_ANNOTATION] = str(self.args.api_key_version)
        return out

    def model_source(self) -> str:
        a = self.args
        return a.storage.model_path if a.storage is not None else a.model_id

    def vllm_args(self, backend: str | None = None) -> list[str]:
        a = self.args
        if a.args_override is not None:
            return list(a.args_override)
        return vllm_args(
            model=self.model_source(),
            served_model_name=a.model_id,
            tensor_parallel=a.tensor_parallel,
            pipeline_parallel=a.pipeline_parallel,
            max_model_len=a.max_model_len,
            gpu_memory_utilization=a.gpu_memory_utilization,
            max_num_seqs=a.max_num_seqs,
            extra_args=a.extra_args,
            distributed_executor_backend=backend,
            trust_remote_code=a.trust_remote_code,
        )

    def api_key_env(self, name: str = API_KEY_ENV) -> dict[str, Any]:
        """The endpoint's API key from its Secret (vLLM refuses requests without it)."""
        return {
            "name": name,
            "valueFrom": {"secretKeyRef": {"name": self.api_key_secret_name, "key": API_KEY_KEY}},
        }

    def env(self, efa: bool = False, *, api_key: bool = True) -> list[dict[str, Any]]:
        env: list[dict[str, Any]] = [dict(e) for e in BASE_ENV]
        env += cache_env(self.image, self.neuron)
        env += hf_token_env(self.args.hf_token_secret_name)
        if api_key:
            env.append(self.api_key_env())
        if efa:
            env += [dict(e) for e in EFA_ENV]
        return env

    # -- fit ------------------------------------------------------------------

    def node_share(self) -> tuple[Share, int]:
        """The budget of the serving pods on one node, and how many devices it has."""
        a = self.args
        types = a.scheduling.instance_types
        if not types:
            raise ValueError(
                "scheduling.instance_types: give the instance types the pods run on "
                "(their allocatable sizes the requests), or cpu and memory explicitly"
            )
        return node_budget(types, efa=a.scheduling.efa)

    def companions(self) -> list[Share]:
        """The endpoint's CPU-only pods, which may share a node with an accelerator pod."""
        a = self.args
        out = [RAY_HEAD, AUTH_PROXY] if ServingMode(a.mode) is ServingMode.RAY_SERVICE else []
        return [*out, WEBUI] if a.open_webui else out

    def requests(self) -> dict[str, str]:
        """CPU and memory of an accelerator pod: its devices' share of the node's
        budget, less what the endpoint's CPU-only pods take (:meth:`companions`)."""
        a = self.args
        besides = self.companions()
        if a.cpu is not None and a.memory is not None:
            return {"cpu": a.cpu, "memory": a.memory}
        budget, devices = self.node_share()
        fraction = min(1.0, a.devices_per_node / max(devices, 1))
        cpu = math.floor(budget.cpu_millis * fraction) - sum(b.cpu_millis for b in besides)
        mem = math.floor(budget.memory_mib * fraction) - sum(b.memory_mib for b in besides)
        if cpu < 1000 or mem < 4096:
            raise ValueError(
                f"scheduling.instance_types: {', '.join(a.scheduling.instance_types)} leave "
                f"{cpu}m CPU and {mem}Mi for the server after the platform's DaemonSets and "
                "the endpoint's other pods; choose a larger instance type"
            )
        return {"cpu": a.cpu or f"{cpu}m", "memory": a.memory or f"{mem}Mi"}

    def resources(self, efa: bool = False) -> dict[str, Any]:
        a = self.args
        devices = {a.scheduling.resource_name: str(a.devices_per_node)}
        if efa:
            devices[EFA] = str(a.scheduling.efa_devices)
        # Extended resources: limits, with requests equal. No memory limit: model
        # loading briefly maps whole checkpoints, and the node is dedicated.
        return {
            "requests": {**self.requests(), **devices},
            "limits": dict(devices),
        }

    def node_affinity(self) -> dict[str, Any] | None:
        """Pin to the planned instance types: the node the pod lands on is the one
        the planner sized and priced."""
        return pinned_to(self.args.scheduling.instance_types)

    # -- containers and pods -------------------------------------------------------

    def mounts(self) -> list[dict[str, Any]]:
        mounts: list[dict[str, Any]] = [
            {"name": "dshm", "mountPath": "/dev/shm"},
            {"name": "cache", "mountPath": CACHE_ROOT},
            {"name": "tmp", "mountPath": "/tmp"},
        ]
        st = self.args.storage
        if st is not None:
            # Serving never writes the weights: read-only even on writable volumes.
            mounts.append({"name": st.volume["name"], "mountPath": st.mount_path, "readOnly": True})
        return mounts

    def probes(self, path: str = HEALTH_PATH, port: str = "http") -> dict[str, Any]:
        get = {"path": path, "port": port}
        return {
            "startupProbe": {
                "httpGet": get,
                "periodSeconds": STARTUP_PERIOD_S,
                "timeoutSeconds": 5,
                "failureThreshold": startup_failure_threshold(self.args.cold_start_s),
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

    def scheduling(self) -> dict[str, Any]:
        """Node selector, tolerations and instance pinning of the pool's nodes."""
        a = self.args
        out: dict[str, Any] = {
            "nodeSelector": dict(a.scheduling.node_selector),
            "tolerations": [dict(t) for t in a.scheduling.tolerations],
        }
        if (affinity := self.node_affinity()) is not None:
            out["affinity"] = affinity
        return out

    def pod_spec(
        self,
        containers: list[dict[str, Any]],
        *,
        accelerator: bool = True,
        on_pool: bool | None = None,
    ) -> dict[str, Any]:
        """A pod of the endpoint.

        Args:
            containers: Its containers.
            accelerator: It holds the accelerators (the weights, shm, downloader).
            on_pool: It runs on the pool's nodes (default: ``accelerator``); a
                CPU-only pod of the endpoint (Ray head, Open WebUI) goes there too
                when the platform has no CPU pool for it.
        """
        a = self.args
        # Root only to download into a volume only root may write.
        needs_root = (
            accelerator
            and a.storage is not None
            and a.storage.needs_root
            and a.storage.download_container is not None
        )
        image = containers[0]["image"]
        spec: dict[str, Any] = {
            "automountServiceAccountToken": False,
            "securityContext": (dict(POD_SECURITY_CONTEXT) if needs_root else pod_security(image)),
            "containers": containers,
        }
        if on_pool if on_pool is not None else accelerator:
            spec |= self.scheduling()
        volumes: list[dict[str, Any]] = [
            {"name": "cache", "emptyDir": {"sizeLimit": a.cache_size}},
            {"name": "tmp", "emptyDir": {"sizeLimit": "4Gi"}},
        ]
        if accelerator:
            volumes.append(
                {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": a.shm_size}}
            )
            if a.storage is not None:
                volumes.append(dict(a.storage.volume))
                if a.storage.service_account_name is not None:
                    spec["serviceAccountName"] = a.storage.service_account_name
                if a.storage.download_container is not None:
                    spec["initContainers"] = [dict(a.storage.download_container)]
        spec["volumes"] = volumes
        return spec

    def needs_root(self) -> bool:
        """Whether any pod of the endpoint runs as root (:func:`needs_root`)."""
        a = self.args
        return needs_root(
            self.image,
            open_webui=a.open_webui,
            storage_root=a.storage is not None and a.storage.needs_root,
        )

    def server_container(
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
            "env": self.env(efa),
            "resources": self.resources(efa),
            "volumeMounts": self.mounts(),
            "securityContext": dict(SECURITY_CONTEXT),
        }
        if args is not None:
            c["args"] = args
        if probes:
            c.update(self.probes())
        return c

    def pdb(self) -> None:
        # Every serving pod of the endpoint (server; leader and workers, whose
        # loss restarts their group; Ray head and workers).
        selector = {"app.kubernetes.io/name": "vllm", "app.kubernetes.io/instance": self.name}
        # One at a time; a single replica is never evicted voluntarily (node
        # drains and consolidation wait for a redeploy or destroy to move it).
        budget = {"maxUnavailable": 1} if self.args.replicas > 1 else {"minAvailable": 1}
        k8s.policy.v1.PodDisruptionBudget(
            f"{self.name}-pdb",
            metadata=self.meta(self.name, self.labels("server")),
            spec={**budget, "selector": {"matchLabels": selector}},
            opts=self.child(),
        )

    def service(self, component: str, *, name: str | None = None, port: str = "http") -> str:
        """The endpoint's ClusterIP Service (port 8000) over one component's pods."""
        svc_name = name or self.name
        k8s.core.v1.Service(
            f"{self.name}-svc",
            metadata=self.meta(svc_name, self.labels(component)),
            spec={
                "type": "ClusterIP",
                "selector": self.selector(component),
                "ports": [{"name": "http", "port": PORT, "targetPort": port, "protocol": "TCP"}],
            },
            opts=self.awaited(),
        )
        return svc_name
