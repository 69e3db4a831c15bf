"""Smoke tests of the local control plane: each asserts what the cluster did.

Deadlines are generous polls, never assertions on elapsed time.
"""

from __future__ import annotations

from typing import Any

import pytest

from components import eks_node
from tests.kube.conftest import Scratch
from tests.kube.helpers import Kube
from tests.kube.sim import ApiError, Cluster, quantities_equal, wait_for

pytestmark = pytest.mark.kube

NVIDIA = {eks_node.DevicePlugin.NVIDIA}


def _ready(pod: dict[str, Any]) -> bool:
    conds = pod.get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)


def _pods(scratch: Scratch, selector: str) -> list[dict[str, Any]]:
    return scratch.cluster.api.list_objects("v1", "Pod", scratch.namespace, selector=selector)


def _container(name: str, **resources: str) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": name, "image": "registry.k8s.io/pause:3.10"}
    if resources:
        spec["resources"] = {"requests": dict(resources), "limits": {}}
        if "nvidia.com/gpu" in resources:
            spec["resources"]["limits"]["nvidia.com/gpu"] = resources["nvidia.com/gpu"]
    return spec


def test_g5_xlarge_node_is_ready_with_eks_allocatable(scratch: Scratch) -> None:
    shape = eks_node.node_shape("g5.xlarge", eks_node.Provisioner.KARPENTER, plugins=NVIDIA)
    with_plugin = scratch.node("g5.xlarge", plugins=NVIDIA, suffix="-gpu")
    without = scratch.node("g5.xlarge", plugins=(), suffix="-bare")

    alloc = with_plugin["status"]["allocatable"]
    assert alloc["cpu"] == "3920m"
    assert alloc["memory"] == "14162Mi"
    assert alloc["pods"] == "58"
    assert alloc["nvidia.com/gpu"] == "1"
    assert quantities_equal(alloc, shape.allocatable.quantities())
    assert quantities_equal(with_plugin["status"]["capacity"], shape.capacity.quantities())
    assert "nvidia.com/gpu" not in without["status"]["allocatable"]
    assert "nvidia.com/gpu" not in without["status"]["capacity"]
    labels = with_plugin["metadata"]["labels"]
    assert labels["node.kubernetes.io/instance-type"] == "g5.xlarge"
    assert labels["karpenter.k8s.aws/instance-gpu-name"] == "a10g"


def test_pod_over_allocatable_cpu_stays_pending_insufficient_cpu(scratch: Scratch) -> None:
    node = scratch.node("g5.xlarge", plugins=NVIDIA)
    cpu_millis = int(node["status"]["allocatable"]["cpu"].removesuffix("m")) + 1
    api = scratch.cluster.api
    api.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "too-big", "namespace": scratch.namespace},
            "spec": scratch.pod_spec([_container("main", cpu=f"{cpu_millis}m")]),
        }
    )

    def unschedulable() -> str | None:
        pod = api.get("v1", "Pod", "too-big", scratch.namespace)
        for c in pod.get("status", {}).get("conditions") or []:
            if c["type"] == "PodScheduled" and c["status"] == "False":
                return str(c.get("message", ""))
        return None

    message = wait_for("the scheduler's verdict on pod too-big", unschedulable)
    assert "Insufficient cpu" in message
    assert api.get("v1", "Pod", "too-big", scratch.namespace)["status"]["phase"] == "Pending"


def test_deployment_on_gpu_node_rolls_out(scratch: Scratch) -> None:
    scratch.node("g5.xlarge", plugins=NVIDIA)
    api = scratch.cluster.api
    labels = {"app": "serve"}
    api.create(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "serve", "namespace": scratch.namespace},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": scratch.pod_spec(
                        [_container("vllm", cpu="3", memory="12Gi", **{"nvidia.com/gpu": "1"})]
                    ),
                },
            },
        }
    )

    def rolled_out() -> dict[str, Any] | None:
        d = api.get("apps/v1", "Deployment", "serve", scratch.namespace)
        st = d.get("status", {})
        done = (
            st.get("observedGeneration", 0) >= d["metadata"]["generation"]
            and st.get("updatedReplicas") == 1
            and st.get("availableReplicas") == 1
        )
        return d if done else None

    wait_for("Deployment serve to roll out", rolled_out)
    (pod,) = _pods(scratch, "app=serve")
    assert _ready(pod)
    assert pod["spec"]["nodeName"].endswith("g5-xlarge")


def test_karpenter_provisions_instance_type_then_consolidates(scratch: Scratch, kube: Kube) -> None:
    api = scratch.cluster.api
    pool = f"{scratch.id}-pool"
    api.create(
        {
            "apiVersion": "karpenter.sh/v1",
            "kind": "NodePool",
            "metadata": {"name": pool},
            "spec": {
                "template": {
                    "metadata": {"labels": {Scratch.KEY: scratch.id}},
                    "spec": {
                        "nodeClassRef": {
                            "group": "karpenter.kwok.sh",
                            "kind": "KWOKNodeClass",
                            "name": "default",
                        },
                        "requirements": [
                            {
                                "key": "node.kubernetes.io/instance-type",
                                "operator": "In",
                                "values": ["g5.xlarge"],
                            },
                            {
                                "key": "karpenter.sh/capacity-type",
                                "operator": "In",
                                "values": ["on-demand"],
                            },
                        ],
                        "taints": [
                            {"key": Scratch.KEY, "value": scratch.id, "effect": "NoSchedule"}
                        ],
                        "expireAfter": "Never",
                    },
                },
                # As the project's pools: only empty nodes, after 10 minutes
                # (hurried below once the pod is gone).
                "disruption": {"consolidationPolicy": "WhenEmpty", "consolidateAfter": "10m"},
                "limits": {"cpu": "64"},
            },
        }
    )
    try:
        api.create(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "needs-gpu", "namespace": scratch.namespace},
                "spec": scratch.pod_spec(
                    [_container("main", cpu="1", memory="4Gi", **{"nvidia.com/gpu": "1"})]
                ),
            }
        )

        # On timeout the error carries the NodeClaims' conditions and Karpenter's log.
        node_name = kube.wait_pod_on_new_node(scratch.namespace, "needs-gpu")["metadata"]["name"]
        node = api.get("v1", "Node", node_name)
        labels = node["metadata"]["labels"]
        assert labels["node.kubernetes.io/instance-type"] == "g5.xlarge"
        assert labels["karpenter.sh/nodepool"] == pool
        assert labels["karpenter.sh/capacity-type"] == "on-demand"
        assert labels["karpenter.k8s.aws/instance-gpu-name"] == "a10g"
        shape = eks_node.node_shape(
            "g5.xlarge", eks_node.Provisioner.KARPENTER, plugins=set(eks_node.DevicePlugin)
        )
        alloc = node["status"]["allocatable"]
        assert alloc["cpu"] == f"{shape.allocatable.cpu_millis}m"
        assert alloc["memory"] == f"{shape.allocatable.memory_mib}Mi"
        assert alloc["nvidia.com/gpu"] == "1"

        def claim_nodes() -> list[str | None] | None:
            # Karpenter records the node on its NodeClaim when it registers,
            # which may come after the pod already runs there.
            claims = api.list_objects(
                "karpenter.sh/v1", "NodeClaim", selector=f"karpenter.sh/nodepool={pool}"
            )
            names = [c.get("status", {}).get("nodeName") for c in claims]
            return names if all(names) else None

        assert wait_for("the NodeClaim to name its node", claim_nodes) == [node_name]

        api.delete("v1", "Pod", "needs-gpu", scratch.namespace)

        kube.hurry_consolidation(pool)
        kube.wait_nodepool_empty(pool, timeout=240)
    finally:
        api.delete("karpenter.sh/v1", "NodePool", pool)


def test_restricted_namespace_rejects_root_pod(kube_cluster: Cluster, scratch: Scratch) -> None:
    ns = f"{scratch.id}-restricted"
    kube_cluster.create_namespace(ns, {"pod-security.kubernetes.io/enforce": "restricted"})
    try:
        with pytest.raises(ApiError) as err:
            kube_cluster.api.create(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": "root", "namespace": ns},
                    "spec": {"containers": [_container("main")]},
                }
            )
        assert err.value.status == 403
        message = str(err.value.body["message"])
        assert 'violates PodSecurity "restricted:latest"' in message
        assert "runAsNonRoot != true" in message
    finally:
        kube_cluster.api.delete("v1", "Namespace", ns)


def test_leaderworkerset_creates_leader_and_worker_with_leader_address(scratch: Scratch) -> None:
    scratch.node("g5.12xlarge", plugins=NVIDIA)
    api = scratch.cluster.api
    template = {"spec": scratch.pod_spec([_container("vllm", cpu="1", memory="1Gi")])}
    api.create(
        {
            "apiVersion": "leaderworkerset.x-k8s.io/v1",
            "kind": "LeaderWorkerSet",
            "metadata": {"name": "llm", "namespace": scratch.namespace},
            "spec": {
                "replicas": 1,
                "leaderWorkerTemplate": {
                    "size": 2,
                    "leaderTemplate": template,
                    "workerTemplate": template,
                },
            },
        }
    )
    selector = "leaderworkerset.sigs.k8s.io/name=llm"

    def both_ready() -> list[dict[str, Any]] | None:
        pods = _pods(scratch, selector)
        return pods if len(pods) == 2 and all(_ready(p) for p in pods) else None

    pods = wait_for("the LeaderWorkerSet's leader and worker pods to be Ready", both_ready)
    roles = sorted(
        p["metadata"]["labels"].get("leaderworkerset.sigs.k8s.io/worker-index") for p in pods
    )
    assert roles == ["0", "1"]
    for pod in pods:
        env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0].get("env", [])}
        assert env.get("LWS_LEADER_ADDRESS") == f"llm-0.llm.{scratch.namespace}", pod["metadata"][
            "name"
        ]


def test_raycluster_head_and_worker_pods_become_ready(scratch: Scratch) -> None:
    scratch.node("g5.12xlarge", plugins=NVIDIA)
    api = scratch.cluster.api

    def group_template(name: str) -> dict[str, Any]:
        container = _container(name, cpu="1", memory="2Gi")
        container["image"] = "rayproject/ray:2.49.0"
        return {"spec": scratch.pod_spec([container])}

    api.create(
        {
            "apiVersion": "ray.io/v1",
            "kind": "RayCluster",
            "metadata": {"name": "ray", "namespace": scratch.namespace},
            "spec": {
                "headGroupSpec": {"rayStartParams": {}, "template": group_template("ray-head")},
                "workerGroupSpecs": [
                    {
                        "groupName": "gpu",
                        "replicas": 1,
                        "minReplicas": 1,
                        "maxReplicas": 1,
                        "rayStartParams": {},
                        "template": group_template("ray-worker"),
                    }
                ],
            },
        }
    )

    def ready_pods() -> list[dict[str, Any]] | None:
        pods = _pods(scratch, "ray.io/cluster=ray")
        return pods if len(pods) == 2 and all(_ready(p) for p in pods) else None

    pods = wait_for("the RayCluster's head and worker pods to be Ready", ready_pods)
    assert sorted(p["metadata"]["labels"]["ray.io/node-type"] for p in pods) == ["head", "worker"]

    def cluster_ready() -> bool:
        rc = api.get("ray.io/v1", "RayCluster", "ray", scratch.namespace)
        return rc.get("status", {}).get("state") == "ready"

    wait_for("RayCluster ray to report state ready", cluster_ready)
