"""components.eks_node and the KWOK instance-types file (no cluster needed).

Karpenter v1.14.1's instance-types reference (aws/karpenter-provider-aws
website/content/en/docs/reference/instance-types.md) lists, per instance type,
the allocatable CPU, memory and pods it computes for an AL2023 node with the
default settings: the same derivation eks_node implements from nodeadm and
Karpenter's code, so the two must agree for every catalog instance.
"""

from __future__ import annotations

import pytest

from components import eks_node
from components.catalog import INSTANCES
from tests.kube.sim import (
    KWOK_PROVIDER_OVERHEAD_CPU_MILLIS,
    KWOK_PROVIDER_OVERHEAD_MEMORY_MIB,
    ClusterConfig,
    karpenter_instance_types,
    parse_quantity,
)

# (cpu millicores, memory MiB, pods) as the Karpenter v1.14.1 reference lists them.
KARPENTER_DOCS = {
    "g5.xlarge": (3920, 14162, 58),
    "g5.4xlarge": (15890, 57691, 234),
    "g5.12xlarge": (47810, 173400, 737),
    "g5.48xlarge": (191450, 723299, 345),
    "g6.xlarge": (3920, 14162, 58),
    "g6.12xlarge": (47810, 178933, 234),
    "g6e.xlarge": (3920, 29317, 58),
    "g6e.12xlarge": (47810, 360157, 292),
    "p4d.24xlarge": (95690, 1082712, 737),
    "p4de.24xlarge": (95690, 1082712, 737),
    "p5.48xlarge": (191450, 1938410, 100),
    "p5en.48xlarge": (191450, 1937332, 198),
    "inf2.xlarge": (3920, 14162, 58),
    "inf2.8xlarge": (31850, 118312, 234),
    "inf2.24xlarge": (95690, 355262, 737),
    "inf2.48xlarge": (191450, 718987, 737),
}


def test_every_catalog_instance_has_node_facts() -> None:
    assert set(eks_node.ENI_LIMITS) == set(INSTANCES)
    assert set(eks_node.EC2_FACTS) == set(INSTANCES)
    assert set(KARPENTER_DOCS) == set(INSTANCES)


@pytest.mark.parametrize("name", sorted(INSTANCES))
def test_karpenter_allocatable_matches_karpenter_reference(name: str) -> None:
    shape = eks_node.node_shape(name, eks_node.Provisioner.KARPENTER, plugins=())
    cpu, memory, pods = KARPENTER_DOCS[name]
    assert (shape.allocatable.cpu_millis, shape.allocatable.memory_mib, shape.allocatable.pods) == (
        cpu,
        memory,
        pods,
    )
    # 20 GiB root volume - 1 GiB kube-reserved - 10% nodefs eviction = 17 GiB.
    assert shape.allocatable.ephemeral_mib == 17 * 1024


def test_managed_node_group_caps_max_pods_but_reserves_for_eni_pods() -> None:
    small = eks_node.node_shape("g5.4xlarge", eks_node.Provisioner.MANAGED_NODE_GROUP, plugins=())
    assert small.allocatable.pods == 110  # 16 vCPUs < 30: capped at 110 (ENI formula: 234)
    assert small.eni_max_pods == 234
    # nodeadm computes kube-reserved memory from the uncapped ENI figure.
    assert small.kube_reserved.memory_mib == 11 * 234 + 255
    large = eks_node.node_shape("g5.12xlarge", eks_node.Provisioner.MANAGED_NODE_GROUP, plugins=())
    assert large.allocatable.pods == 250
    few = eks_node.node_shape("p5.48xlarge", eks_node.Provisioner.MANAGED_NODE_GROUP, plugins=())
    assert few.allocatable.pods == 100  # ENI formula below the cap


def test_device_resources_follow_installed_plugins() -> None:
    plugins = set(eks_node.DevicePlugin)
    assert eks_node.device_resources("g5.12xlarge", ()) == {}
    assert eks_node.device_resources("g5.12xlarge", plugins) == {"nvidia.com/gpu": 4}
    assert eks_node.device_resources("p5.48xlarge", plugins) == {
        "nvidia.com/gpu": 8,
        "vpc.amazonaws.com/efa": 32,
    }
    assert eks_node.device_resources("inf2.48xlarge", plugins) == {
        "aws.amazon.com/neuron": 12,
        "aws.amazon.com/neuroncore": 24,
    }
    assert eks_node.device_resources("inf2.xlarge", {eks_node.DevicePlugin.NVIDIA}) == {}


def test_kube_reserved_cpu_ranges() -> None:
    assert eks_node.kube_reserved_cpu_millis(1) == 60
    assert eks_node.kube_reserved_cpu_millis(2) == 70
    assert eks_node.kube_reserved_cpu_millis(4) == 80
    assert eks_node.kube_reserved_cpu_millis(192) == 80 + (192000 - 4000) * 25 // 10000
    with pytest.raises(ValueError, match="vcpu"):
        eks_node.kube_reserved_cpu_millis(0)


def test_labels_by_provisioner() -> None:
    karpenter = eks_node.labels(
        "p5en.48xlarge",
        eks_node.Provisioner.KARPENTER,
        zone="us-east-1a",
        region="us-east-1",
        capacity_type=eks_node.CapacityType.SPOT,
        nodepool="gpu",
    )
    assert karpenter["karpenter.sh/capacity-type"] == "spot"
    assert karpenter["karpenter.sh/nodepool"] == "gpu"
    assert karpenter["karpenter.k8s.aws/instance-category"] == "p"
    assert karpenter["karpenter.k8s.aws/instance-gpu-name"] == "h200"
    assert karpenter["karpenter.k8s.aws/instance-gpu-count"] == "8"
    assert karpenter["karpenter.k8s.aws/instance-memory"] == "2097152"
    mng = eks_node.labels(
        "inf2.xlarge",
        eks_node.Provisioner.MANAGED_NODE_GROUP,
        zone="us-east-1b",
        region="us-east-1",
        capacity_type=eks_node.CapacityType.ON_DEMAND,
        nodegroup="neuron",
    )
    assert mng["eks.amazonaws.com/nodegroup"] == "neuron"
    assert mng["eks.amazonaws.com/capacityType"] == "ON_DEMAND"
    assert not any(k.startswith("karpenter") for k in mng)
    with pytest.raises(ValueError, match="nodegroup"):
        eks_node.labels(
            "inf2.xlarge",
            eks_node.Provisioner.MANAGED_NODE_GROUP,
            zone="us-east-1b",
            region="us-east-1",
            capacity_type=eks_node.CapacityType.ON_DEMAND,
        )
    with pytest.raises(ValueError, match="zone"):
        eks_node.labels(
            "g5.xlarge",
            eks_node.Provisioner.KARPENTER,
            zone="us-west-2a",
            region="us-east-1",
            capacity_type=eks_node.CapacityType.ON_DEMAND,
        )


def test_workload_budget_subtracts_the_node_daemonsets() -> None:
    shape = eks_node.node_shape(
        "g5.xlarge", eks_node.Provisioner.KARPENTER, plugins={eks_node.DevicePlugin.NVIDIA}
    )
    ds = eks_node.daemonsets_on("g5.xlarge", {eks_node.DevicePlugin.NVIDIA})
    names = {d.name for d in ds}
    assert {"aws-node", "kube-proxy", "nvidia-device-plugin", "dcgm-exporter"} <= names
    assert "neuron-device-plugin" not in names
    assert "aws-efa-k8s-device-plugin" not in names  # g5.xlarge has no EFA
    budget = eks_node.workload_budget(shape)
    assert budget.cpu_millis == 3920 - sum(d.cpu_millis for d in ds)
    assert budget.memory_mib == 14162 - sum(d.memory_mib for d in ds)
    assert budget.pods == 58 - len(ds)
    assert budget.extended == {"nvidia.com/gpu": 1}


def test_unknown_instance_type_is_named() -> None:
    with pytest.raises(ValueError, match=r"m5\.large"):
        eks_node.node_shape("m5.large", eks_node.Provisioner.KARPENTER, plugins=())


def test_karpenter_kwok_instance_types_land_on_eks_allocatable() -> None:
    config = ClusterConfig()
    types = {t["name"]: t for t in karpenter_instance_types(config)}
    assert set(types) == set(INSTANCES)
    g5 = types["g5.12xlarge"]
    # The KWOK provider subtracts its fixed overhead; what is left is EKS's allocatable.
    cpu = parse_quantity(g5["resources"]["cpu"]) * 1000 - KWOK_PROVIDER_OVERHEAD_CPU_MILLIS
    memory = parse_quantity(g5["resources"]["memory"]) / 2**20 - KWOK_PROVIDER_OVERHEAD_MEMORY_MIB
    assert (cpu, memory) == (47810, 173400)
    assert g5["resources"]["pods"] == "737"
    assert g5["resources"]["nvidia.com/gpu"] == "4"
    assert len(g5["offerings"]) == len(config.zones) * len(config.capacity_types)
    keys = {r["key"] for r in g5["offerings"][0]["Requirements"]}
    assert {"karpenter.k8s.aws/instance-gpu-name", "topology.kubernetes.io/zone"} <= keys
