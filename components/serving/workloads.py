"""The three serving modes' workloads: Deployment, LeaderWorkerSet, RayService."""

from __future__ import annotations

import json

import pulumi_kubernetes as k8s

from components.serving.pods import (
    BASE_ENV,
    NEURON,
    SECURITY_CONTEXT,
    STARTUP_PERIOD_S,
    PodBuilder,
    scrape_annotations,
    startup_failure_threshold,
)
from components.serving.scripts import (
    PORT,
    RAY_GCS_PORT,
    WORKER_SCRIPT,
    leader_script,
    serve_config,
)


def deployment(b: PodBuilder) -> None:
    """The vLLM OpenAI server as a Deployment (one model replica per pod) and its PDB."""
    a, name = b.args, b.name
    container = b.server_container(
        "vllm", ["python3", "-m", "vllm.entrypoints.openai.api_server"], b.vllm_args()
    )
    labels = b.labels("server")
    k8s.apps.v1.Deployment(
        f"{name}-deployment",
        metadata=b.meta(name, labels),
        spec={
            "replicas": a.replicas,
            "selector": {"matchLabels": b.selector("server")},
            # Replace pods one at a time without asking for an extra GPU node
            # (and without two pods fighting over a ReadWriteOnce volume).
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
            },
            "template": {
                "metadata": {"labels": labels, "annotations": scrape_annotations()},
                "spec": b.pod_spec([container]),
            },
        },
        opts=b.awaited(),
    )
    b.pdb()


def leader_worker_set(b: PodBuilder) -> None:
    """One model over several nodes: a LeaderWorkerSet of Ray-connected pods, and its PDB."""
    a, name = b.args, b.name
    efa = a.scheduling.efa
    budget_s = startup_failure_threshold(a.cold_start_s) * STARTUP_PERIOD_S
    leader = b.server_container(
        "vllm-leader",
        ["/bin/bash", "-c", leader_script(b.vllm_args("ray"), budget_s)],
        None,
        efa=efa,
    )
    leader["ports"].append({"name": "gcs", "containerPort": RAY_GCS_PORT, "protocol": "TCP"})
    worker = b.server_container(
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
        metadata=b.meta(name, b.labels("server")),
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
                        "labels": b.labels("leader"),
                        "annotations": scrape_annotations(),
                    },
                    "spec": b.pod_spec([leader]),
                },
                "workerTemplate": {
                    "metadata": {"labels": b.labels("worker")},
                    "spec": b.pod_spec([worker]),
                },
            },
        },
        opts=b.child(),
    )
    b.pdb()


def ray_service(b: PodBuilder) -> None:
    """A KubeRay RayService running Ray Serve LLM over vLLM, and its PDB."""
    a, name = b.args, b.name
    neuron = a.scheduling.resource_name == NEURON
    group = "neuron" if neuron else "gpu"
    head = {
        "name": "ray-head",
        "image": b.image,
        "ports": [
            {"name": "gcs", "containerPort": RAY_GCS_PORT, "protocol": "TCP"},
            {"name": "dashboard", "containerPort": 8265, "protocol": "TCP"},
            {"name": "client", "containerPort": 10001, "protocol": "TCP"},
            {"name": "serve", "containerPort": PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": 8080, "protocol": "TCP"},
        ],
        "env": [dict(e) for e in BASE_ENV],
        "resources": {
            "requests": {"cpu": "2", "memory": "8Gi"},
            "limits": {"cpu": "2", "memory": "8Gi"},
        },
        "securityContext": dict(SECURITY_CONTEXT),
    }
    worker = {
        "name": "ray-worker",
        "image": b.image,
        "env": b.env(),
        "resources": b.resources(),
        "volumeMounts": b.mounts(),
        "securityContext": dict(SECURITY_CONTEXT),
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
        metadata=b.meta(name, b.labels("server")),
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
                neuron_cores=a.tensor_parallel if neuron else 0,
                trust_remote_code=a.trust_remote_code,
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
                        "metadata": {"labels": b.labels("ray-head")},
                        "spec": b.pod_spec([head], accelerator=False),
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
                                "annotations": scrape_annotations(),
                            },
                            "spec": b.pod_spec([worker]),
                        },
                    }
                ],
            },
        },
        opts=b.child(),
    )
    b.pdb()


# -- exposure -------------------------------------------------------------------
