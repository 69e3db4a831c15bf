"""The three serving modes' workloads: Deployment, LeaderWorkerSet, RayService.

Each returns the name of the Service the endpoint URL points at.
"""

from __future__ import annotations

import json
from typing import Any

import pulumi_kubernetes as k8s

from components import _versions
from components.serving.pods import (
    AUTH_PROXY,
    BASE_ENV,
    RAY_HEAD,
    SECURITY_CONTEXT,
    PodBuilder,
    cache_env,
    image_facts,
)
from components.serving.scripts import (
    AUTH_PROXY_TEMPLATE,
    PORT,
    RAY_GCS_PORT,
    multi_node_args,
    serve_config,
)

#: ``vllm serve`` (the images' entrypoint; the api_server module is deprecated).
VLLM_SERVE = ["vllm", "serve"]
#: The Ray head's object store: it holds no model data.
RAY_HEAD_OBJECT_STORE_BYTES = 512 * 1024 * 1024
RAY_DASHBOARD_PORT = 8265
#: Where the auth proxy listens in the head pod (Ray Serve keeps 8000).
AUTH_PROXY_PORT = 8443
#: The pulumi-kubernetes annotation that makes ``pulumi up`` wait on a custom
#: resource's status (the provider knows Deployments, not LWS or RayService).
WAIT_FOR = "pulumi.com/waitFor"


def _strategy(b: PodBuilder) -> dict[str, Any]:
    """Surge where the pool can add a node for the new pod (Karpenter, Auto
    Mode), so the endpoint keeps serving; in place where it cannot (a fixed
    node group or an existing cluster), so the rollout does not wait for a
    node that never comes."""
    if b.args.surge:
        return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}


def deployment(b: PodBuilder) -> str:
    """The vLLM OpenAI server as a Deployment (one model replica per pod) and its PDB."""
    a, name = b.args, b.name
    container = b.server_container("vllm", VLLM_SERVE, b.vllm_args())
    labels = b.labels("server")
    k8s.apps.v1.Deployment(
        f"{name}-deployment",
        metadata=b.meta(name, labels),
        spec={
            "replicas": a.replicas,
            "selector": {"matchLabels": b.selector("server")},
            "strategy": _strategy(b),
            "template": {
                "metadata": {"labels": labels, "annotations": b.template_annotations()},
                "spec": b.pod_spec([container]),
            },
        },
        opts=b.awaited(),
    )
    b.pdb()
    return b.service("server")


def leader_worker_set(b: PodBuilder) -> str:
    """One model over several nodes: a LeaderWorkerSet group runs vLLM's own
    multi-node mode (rank 0 serves, the others join headless), and its PDB."""
    a, name = b.args, b.name
    efa = a.scheduling.efa
    engine = b.vllm_args()
    nodes = a.pipeline_parallel
    leader = b.server_container(
        "vllm-leader", VLLM_SERVE, multi_node_args(engine, nodes=nodes, leader=True), efa=efa
    )
    worker = b.server_container(
        "vllm-worker",
        VLLM_SERVE,
        multi_node_args(engine, nodes=nodes, leader=False),
        efa=efa,
        probes=False,
    )
    # Workers serve no HTTP; the group's health is the leader's.
    worker.pop("ports")
    k8s.apiextensions.CustomResource(
        f"{name}-lws",
        api_version="leaderworkerset.x-k8s.io/v1",
        kind="LeaderWorkerSet",
        metadata=b.meta(
            name,
            b.labels("server"),
            # Every group's pods Ready and updated (the controller's Available).
            annotations={WAIT_FOR: "condition=Available"},
        ),
        spec={
            "replicas": a.replicas,
            # Workers and leader start together and meet at the rendezvous.
            "startupPolicy": "LeaderCreated",
            "rolloutStrategy": {
                "type": "RollingUpdate",
                "rollingUpdateConfiguration": {
                    "maxUnavailable": 0 if a.surge else 1,
                    "maxSurge": 1 if a.surge else 0,
                },
            },
            "leaderWorkerTemplate": {
                "size": nodes,
                # A lost pod breaks the NCCL groups: restart the whole group.
                "restartPolicy": "RecreateGroupOnPodRestart",
                "leaderTemplate": {
                    "metadata": {
                        "labels": b.labels("leader"),
                        "annotations": b.template_annotations(),
                    },
                    "spec": b.pod_spec([leader]),
                },
                "workerTemplate": {
                    "metadata": {
                        "labels": b.labels("worker"),
                        "annotations": b.template_annotations(scrape=False),
                    },
                    "spec": b.pod_spec([worker]),
                },
            },
        },
        opts=b.awaited(),
    )
    b.pdb()
    # The LeaderWorkerSet controller owns a headless Service named like the
    # LeaderWorkerSet (pod DNS for the rendezvous): ours is the leader's.
    return b.service("leader", name=f"{name}-leader")


def _auth_proxy(b: PodBuilder) -> tuple[dict[str, Any], dict[str, Any]]:
    """The nginx sidecar checking the endpoint's key in front of Ray Serve, and
    the ConfigMap volume holding its template."""
    facts = image_facts(_versions.AUTH_PROXY_IMAGE)
    proxy = {
        "name": "auth-proxy",
        "image": _versions.AUTH_PROXY_IMAGE,
        "ports": [{"name": "http", "containerPort": AUTH_PROXY_PORT, "protocol": "TCP"}],
        "env": [
            b.api_key_env("API_KEY"),
            {"name": "UPSTREAM", "value": f"127.0.0.1:{PORT}"},
            {"name": "LISTEN_PORT", "value": str(AUTH_PROXY_PORT)},
        ],
        "resources": {
            "requests": AUTH_PROXY.quantities(),
            "limits": {"memory": "128Mi"},
        },
        "volumeMounts": [
            {"name": "auth-proxy", "mountPath": "/etc/nginx/templates", "readOnly": True}
        ],
        "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 10},
        "securityContext": {
            **SECURITY_CONTEXT,
            "runAsNonRoot": True,
            "runAsUser": facts.uid,
            "runAsGroup": facts.gid,
        },
    }
    config = k8s.core.v1.ConfigMap(
        f"{b.name}-auth-proxy",
        metadata=b.meta(f"{b.name}-auth-proxy", b.labels("auth-proxy")),
        data={"default.conf.template": AUTH_PROXY_TEMPLATE},
        opts=b.child(),
    )
    volume = {"name": "auth-proxy", "configMap": {"name": config.metadata.name}}
    return proxy, volume


def ray_service(b: PodBuilder) -> str:
    """A KubeRay RayService running Ray Serve LLM over vLLM, its PDB, and the
    Service through the head's API-key check."""
    a, name = b.args, b.name
    group = "neuron" if b.neuron else "gpu"
    # The Serve controller, the HTTP proxy and the dashboard, never a replica
    # (num-cpus 0); it runs on a pool node.
    head = {
        "name": "ray-head",
        "image": b.image,
        "ports": [
            {"name": "gcs", "containerPort": RAY_GCS_PORT, "protocol": "TCP"},
            {"name": "dashboard", "containerPort": RAY_DASHBOARD_PORT, "protocol": "TCP"},
            {"name": "client", "containerPort": 10001, "protocol": "TCP"},
            {"name": "serve", "containerPort": PORT, "protocol": "TCP"},
        ],
        "env": [dict(e) for e in BASE_ENV] + cache_env(b.image),
        "resources": {
            "requests": RAY_HEAD.quantities(),
            "limits": {"memory": RAY_HEAD.quantities()["memory"]},
        },
        "volumeMounts": [
            {"name": "cache", "mountPath": "/cache"},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        "securityContext": dict(SECURITY_CONTEXT),
    }
    proxy, proxy_volume = _auth_proxy(b)
    head_spec = b.pod_spec([head, proxy], accelerator=False, on_pool=True)
    head_spec["volumes"].append(proxy_volume)
    worker = {
        "name": "ray-worker",
        "image": b.image,
        "env": b.env(api_key=False),
        # The head may share the node: the worker leaves room for it.
        "resources": b.resources(),
        "volumeMounts": b.mounts(),
        "securityContext": dict(SECURITY_CONTEXT),
    }
    worker_params = (
        # KubeRay maps only aws.amazon.com/neuroncore to Ray's neuron_cores;
        # the pool hands out whole devices, so declare the cores here.
        {"resources": "'" + json.dumps({"neuron_cores": a.tensor_parallel}) + "'"}
        if b.neuron
        else {"num-gpus": str(a.devices_per_node)}
    )
    k8s.apiextensions.CustomResource(
        f"{name}-rayservice",
        api_version="ray.io/v1",
        kind="RayService",
        metadata=b.meta(
            name,
            b.labels("server"),
            # KubeRay's Ready: the Serve application is RUNNING and serving.
            annotations={WAIT_FOR: "condition=Ready"},
        ),
        spec={
            "serveConfigV2": serve_config(
                model_id=a.model_id,
                model_source=b.model_source(),
                tensor_parallel=a.tensor_parallel,
                pipeline_parallel=a.pipeline_parallel,
                max_model_len=a.max_model_len,
                gpu_memory_utilization=a.gpu_memory_utilization,
                max_num_seqs=a.max_num_seqs,
                replicas=a.replicas,
                extra_args=a.extra_args,
                neuron_cores=a.tensor_parallel if b.neuron else 0,
                trust_remote_code=a.trust_remote_code,
            ),
            "rayClusterConfig": {
                "headGroupSpec": {
                    "rayStartParams": {
                        "num-cpus": "0",
                        "num-gpus": "0",
                        "dashboard-host": "0.0.0.0",
                        "object-store-memory": str(RAY_HEAD_OBJECT_STORE_BYTES),
                    },
                    "template": {
                        "metadata": {
                            "labels": b.labels("ray-head"),
                            "annotations": b.template_annotations(scrape=False),
                        },
                        "spec": head_spec,
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
                                "labels": b.labels("ray-worker"),
                                "annotations": b.template_annotations(),
                            },
                            "spec": b.pod_spec([worker]),
                        },
                    }
                ],
            },
        },
        opts=b.awaited(),
    )
    b.pdb()
    # Not KubeRay's {name}-serve-svc (straight to Ray Serve, no key check): the
    # head's auth proxy.
    return b.service("ray-head", port="http")
