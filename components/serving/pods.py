"""The building blocks of every serving pod: labels, env, resources, probes, pod spec.

:class:`PodBuilder` holds what one InferenceService's pods share and makes the
pieces each serving mode assembles (``components/serving/workloads.py``), so
the rules every pod keeps (probes sized from the cold start, the HF token by
reference, ``/dev/shm`` in memory, no privilege escalation, the pool's
node selector and tolerations) are written once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pulumi
import pulumi_kubernetes as k8s

from components.serving.scripts import PORT, vllm_args
from components.storage.download import hf_token_env

if TYPE_CHECKING:
    from components.inference_service import InferenceServiceArgs

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

NVIDIA_GPU = "nvidia.com/gpu"
NEURON = "aws.amazon.com/neuron"
EFA = "vpc.amazonaws.com/efa"
RESOURCE_NAMES = (NVIDIA_GPU, NEURON)

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
#: take effect in images that ship the aws-ofi-nccl plugin, and are inert otherwise.
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

    def env(self, efa: bool = False) -> list[dict[str, Any]]:
        env: list[dict[str, Any]] = [dict(e) for e in BASE_ENV]
        env += hf_token_env(self.args.hf_token_secret_name)
        if efa:
            env += [dict(e) for e in EFA_ENV]
        return env

    def resources(self, efa: bool = False) -> dict[str, Any]:
        a = self.args
        devices = {a.scheduling.resource_name: str(a.devices_per_node)}
        if efa:
            devices[EFA] = str(a.scheduling.efa_devices)
        # Extended resources: limits, with requests equal. No memory limit: model
        # loading briefly maps whole checkpoints, and the node is dedicated.
        return {
            "requests": {"cpu": a.cpu, "memory": a.memory, **devices},
            "limits": dict(devices),
        }

    def mounts(self) -> list[dict[str, Any]]:
        mounts: list[dict[str, Any]] = [{"name": "dshm", "mountPath": "/dev/shm"}]
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

    def pod_spec(
        self, containers: list[dict[str, Any]], *, accelerator: bool = True
    ) -> dict[str, Any]:
        a = self.args
        spec: dict[str, Any] = {
            "automountServiceAccountToken": False,
            "securityContext": dict(POD_SECURITY_CONTEXT),
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
        k8s.policy.v1.PodDisruptionBudget(
            f"{self.name}-pdb",
            metadata=self.meta(self.name, self.labels("server")),
            # One at a time: voluntary disruptions (node drains, Karpenter
            # consolidation) never take more than one pod away, yet never block
            # cluster maintenance either.
            spec={"maxUnavailable": 1, "selector": {"matchLabels": selector}},
            opts=self.child(),
        )

    def service(self, component: str) -> str:
        k8s.core.v1.Service(
            f"{self.name}-svc",
            metadata=self.meta(self.name, self.labels(component)),
            spec={
                "type": "ClusterIP",
                "selector": self.selector(component),
                "ports": [{"name": "http", "port": PORT, "targetPort": "http", "protocol": "TCP"}],
            },
            opts=self.awaited(),
        )
        return self.name

    # -- modes --------------------------------------------------------------------
