"""Node pools as the project makes them: Auto Mode NodePools, managed groups, system nodes.

And the platform's DaemonSets, which take their share of every node. Each test
asserts what the scheduler or Karpenter did; deadlines are generous polls.
"""

from __future__ import annotations

from typing import Any

import pytest

from components import eks_node
from tests.kube.conftest import Scratch
from tests.kube.helpers import Kube
from tests.kube.nodes import KWOK_NODE_CLASS_REF, PLATFORM_DAEMONSET_LABEL
from tests.kube.sim import wait_for

pytestmark = pytest.mark.kube

NVIDIA = {eks_node.DevicePlugin.NVIDIA}


def _gpu_container(gpus: int = 1, **requests: str) -> dict[str, Any]:
    return {
        "name": "vllm",
        "image": "registry.k8s.io/pause:3.10",
        "resources": {
            "requests": {"cpu": "1", "memory": "4Gi", "nvidia.com/gpu": str(gpus), **requests},
            "limits": {"nvidia.com/gpu": str(gpus)},
        },
    }


def _scheduling_verdict(kube: Kube, namespace: str, pod: str) -> str | None:
    p = kube.api.get("v1", "Pod", pod, namespace)
    for c in p.get("status", {}).get("conditions") or []:
        if c["type"] == "PodScheduled" and c["status"] == "False" and c.get("message"):
            return str(c["message"])
    return None


def test_auto_mode_nodepool_provisions_pinned_gpu_type(scratch: Scratch, kube: Kube) -> None:
    api = kube.api
    pool = f"{scratch.id}-auto"
    api.create(
        {
            "apiVersion": "karpenter.sh/v1",
            "kind": "NodePool",
            "metadata": {"name": pool},
            "spec": {
                "template": {
                    "metadata": {"labels": {Scratch.KEY: scratch.id}},
                    "spec": {
                        "nodeClassRef": KWOK_NODE_CLASS_REF,
                        # AcceleratorPool's auto-mode requirements (selection: category).
                        "requirements": [
                            {
                                "key": "eks.amazonaws.com/instance-category",
                                "operator": "In",
                                "values": ["g"],
                            },
                            {
                                "key": "eks.amazonaws.com/instance-generation",
                                "operator": "Gt",
                                "values": ["4"],
                            },
                            {
                                "key": "karpenter.sh/capacity-type",
                                "operator": "In",
                                "values": ["spot", "on-demand"],
                            },
                            {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]},
                        ],
                        "taints": [
                            {"key": Scratch.KEY, "value": scratch.id, "effect": "NoSchedule"}
                        ],
                        "expireAfter": "336h",
                    },
                },
                "limits": {"nvidia.com/gpu": "4"},
                "disruption": {"consolidationPolicy": "WhenEmpty", "consolidateAfter": "10m"},
            },
        }
    )
    try:
        spec = scratch.pod_spec([_gpu_container()])
        spec["affinity"] = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {
                                    "key": "node.kubernetes.io/instance-type",
                                    "operator": "In",
                                    "values": ["g6.xlarge"],
                                }
                            ]
                        }
                    ]
                }
            }
        }
        api.create(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "pinned", "namespace": scratch.namespace},
                "spec": spec,
            }
        )
        node = kube.wait_pod_on_new_node(scratch.namespace, "pinned")
        labels = node["metadata"]["labels"]
        assert labels["node.kubernetes.io/instance-type"] == "g6.xlarge"
        assert labels["karpenter.sh/nodepool"] == pool
        assert labels["karpenter.sh/capacity-type"] in ("spot", "on-demand")
        assert labels["eks.amazonaws.com/instance-category"] == "g"
        assert labels["eks.amazonaws.com/instance-generation"] == "6"
        assert labels["eks.amazonaws.com/instance-gpu-name"] == "l4"
        assert node["status"]["allocatable"]["nvidia.com/gpu"] == "1"
        # (Consolidation is test_sim's Karpenter test; deleting the NodePool
        # below makes Karpenter remove this node.)
    finally:
        api.delete("karpenter.sh/v1", "NodePool", pool)


def test_managed_node_group_nodes_carry_pool_marks(scratch: Scratch, kube: Kube) -> None:
    plugins = {eks_node.DevicePlugin.NVIDIA, eks_node.DevicePlugin.EFA}
    group = scratch.managed_node_group("p4d.24xlarge", 2, pool=scratch.id, plugins=plugins)
    assert len(group) == 2
    shape = eks_node.node_shape(
        "p4d.24xlarge", eks_node.Provisioner.MANAGED_NODE_GROUP, plugins=plugins
    )
    for node in group:
        labels, alloc = node["metadata"]["labels"], node["status"]["allocatable"]
        assert labels["eks.amazonaws.com/nodegroup"] == f"{scratch.id}-mng"
        assert labels["eks.amazonaws.com/capacityType"] == "ON_DEMAND"
        assert labels["llm-endpoints/pool"] == scratch.id
        assert labels["llm-endpoints/accelerator"] == "nvidia"
        assert "karpenter.sh/nodepool" not in labels
        # (The node lifecycle controller's node.kubernetes.io/not-ready may linger a moment.)
        taints = [t for t in node["spec"]["taints"] if not t["key"].startswith("node.kubernetes")]
        assert taints == [{"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}]
        assert alloc["nvidia.com/gpu"] == "8"
        assert alloc["vpc.amazonaws.com/efa"] == "4"
        assert alloc["pods"] == "250"  # the managed groups' cap, not the ENI formula's 737
        assert alloc["cpu"] == f"{shape.allocatable.cpu_millis}m"

    api, ns = kube.api, scratch.namespace
    pool_selector = {"llm-endpoints/pool": scratch.id}
    toleration = {"key": "nvidia.com/gpu", "operator": "Equal", "value": "true"}
    whole_node = _gpu_container(8, **{"vpc.amazonaws.com/efa": "4"})
    whole_node["resources"]["limits"]["vpc.amazonaws.com/efa"] = "4"
    for name, tolerations in (
        ("fits", [toleration | {"effect": "NoSchedule"}]),
        ("untolerated", []),
    ):
        api.create(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": ns, "labels": {"role": name}},
                "spec": {
                    "containers": [whole_node],
                    "nodeSelector": pool_selector,
                    "tolerations": tolerations,
                    "terminationGracePeriodSeconds": 0,
                },
            }
        )
    (fits,) = kube.wait_pods_ready(ns, "role=fits", count=1, timeout=60)
    assert kube.node_of(fits)["metadata"]["name"] in {n["metadata"]["name"] for n in group}
    verdict = wait_for(
        "the scheduler's verdict on pod untolerated",
        lambda: _scheduling_verdict(kube, ns, "untolerated"),
    )
    # (Other tests' nodes may still be going away: count none of them.)
    assert "node(s) had untolerated taint(s)" in verdict, verdict
    assert "Insufficient" not in verdict, verdict


def test_system_nodes_are_m6i_large_with_eks_allocatable(scratch: Scratch, kube: Kube) -> None:
    (node,) = scratch.system_nodes(1)
    labels, alloc = node["metadata"]["labels"], node["status"]["allocatable"]
    assert labels["llm-endpoints/role"] == "system"
    assert labels["node.kubernetes.io/instance-type"] == "m6i.large"
    assert labels["eks.amazonaws.com/nodegroup"] == f"{scratch.id}-system"
    # 2 vCPU less 70m kube-reserved; 8 GiB less 7.5% VM overhead, 11 x 29 + 255 MiB
    # kube-reserved and the 100Mi eviction threshold; 3 ENIs x (10 - 1) + 2 pods.
    assert (alloc["cpu"], alloc["memory"], alloc["pods"]) == ("1930m", "6903Mi", "29")
    assert "nvidia.com/gpu" not in alloc


def test_platform_daemonsets_take_their_share_of_a_node(
    scratch: Scratch, kube: Kube, platform_daemonsets: list[dict[str, Any]]
) -> None:
    node = scratch.node("g5.xlarge", plugins=NVIDIA)
    name = node["metadata"]["name"]
    api, ns = kube.api, scratch.namespace
    landing = eks_node.daemonsets_on("g5.xlarge", NVIDIA)
    key, value = PLATFORM_DAEMONSET_LABEL

    def daemon_pods_ready() -> list[dict[str, Any]] | None:
        pods = [
            p
            for p in api.list_objects("v1", "Pod", None, selector=f"{key}={value}")
            if p["spec"].get("nodeName") == name
        ]
        ready = [p for p in pods if p.get("status", {}).get("phase") == "Running"]
        return ready if len(ready) == len(landing) else None

    daemon_pods = wait_for("the platform DaemonSets' pods on the node", daemon_pods_ready)
    assert sorted(p["metadata"]["labels"]["app.kubernetes.io/name"] for p in daemon_pods) == sorted(
        d.name for d in landing
    )

    shape = eks_node.node_shape("g5.xlarge", eks_node.Provisioner.KARPENTER, plugins=NVIDIA)
    budget = eks_node.workload_budget(shape)
    assert budget.cpu_millis < shape.allocatable.cpu_millis

    def pod(pod_name: str, cpu_millis: int, memory_mib: int) -> dict[str, Any]:
        container = _gpu_container(cpu=f"{cpu_millis}m", memory=f"{memory_mib}Mi")
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": pod_name, "namespace": ns, "labels": {"role": pod_name}},
            "spec": scratch.pod_spec([container]),
        }

    alloc = shape.allocatable
    api.create(pod("sized-to-allocatable", alloc.cpu_millis, budget.memory_mib))
    verdict = wait_for(
        "the scheduler's verdict on pod sized-to-allocatable",
        lambda: _scheduling_verdict(kube, ns, "sized-to-allocatable"),
    )
    assert "Insufficient cpu" in verdict, verdict
    kube.delete_pod(ns, "sized-to-allocatable")

    api.create(pod("sized-to-budget", budget.cpu_millis, budget.memory_mib))
    (placed,) = kube.wait_pods_ready(ns, "role=sized-to-budget", count=1, timeout=60)
    assert kube.node_of(placed)["metadata"]["name"] == name
