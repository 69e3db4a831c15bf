"""The shape of an EKS node of a catalog instance type: pods, capacity, allocatable.

The single source of node facts: max pods, capacity, the kubelet's reservations
and the resulting allocatable CPU/memory, the device resources the device
plugins advertise, the well-known labels, and the requests of the DaemonSets
the platform runs on every accelerator node. The serving pods' requests are
computed from it (allocatable minus the DaemonSets), and so are the local
control plane's simulated nodes and Karpenter's KWOK instance-types file
(tests/kube). Pure Python: no Pulumi, no Kubernetes client.

How each number is derived, and from where:

* **Max pods** (the node's ``pods`` capacity). nodeadm, the AL2023 node agent
  that both Karpenter and managed node groups boot, computes
  ``ENIs on the default network card x (IPv4 addresses per ENI - 1) + 2``
  (awslabs/amazon-eks-ami ``nodeadm/internal/kubelet/eni_max_pods.go``,
  ``calculateStandardMaxPods``), with no cap. Karpenter's AWS provider computes
  the same (aws/karpenter-provider-aws v1.14.1 ``pkg/providers/instancetype/
  types.go``, ``ENILimitedPods`` with ``RESERVED_ENIS=0``). **Managed node
  groups** (without a custom AMI) cap it at 110 for instances with fewer than 30
  vCPUs and 250 otherwise (EKS User Guide, "How maxPods is determined",
  choosing-instance-type.adoc).
* **Capacity.** CPU is the vCPU count. Memory is Karpenter's estimate of what
  the kubelet will report: the nominal size less ``vmMemoryOverheadPercent``
  (default 0.075), rounded up to whole MiB (types.go ``memory``). The kubelet
  itself reports the guest's ``MemTotal``, which is *larger*: Karpenter's own
  measurement (see ``MEASURED_VM_OVERHEAD_MIB``) found 2.3-3.6% missing on g5
  and p5, not 7.5%. This module uses Karpenter's estimate on purpose: Karpenter
  refuses to launch a node for a pod that does not fit its estimate, so a pod
  sized against it both gets a node from Karpenter and fits the real kubelet.
* **kube-reserved.** CPU: 6% of the first core, 1% of the second, 0.5% of the
  third and fourth, 0.25% of the rest (nodeadm ``getCPUMillicoresToReserve``,
  integer millicores; Karpenter ``kubeReservedResources`` agrees for whole
  vCPUs). Memory: ``11 MiB x max pods + 255 MiB`` (nodeadm
  ``getMemoryMebibytesToReserve``), where nodeadm uses the *ENI-formula* max
  pods even when a managed node group caps ``maxPods`` lower: the cap arrives
  as a kubelet drop-in after kube-reserved was computed (nodeadm config.go
  ``withDefaultReservedResources``; amazon-eks-ami issues #1698 and #2580).
  Karpenter does the same for AL2023 (types.go, ``UsesENILimitedMemoryOverhead``).
  ephemeral-storage: 1Gi.
* **Eviction threshold.** ``memory.available: 100Mi`` and
  ``nodefs.available: 10%`` (nodeadm ``defaultKubeletSubConfig``; Karpenter
  ``evictionThreshold``). No system-reserved is set by either.
* **Allocatable** = capacity - kube-reserved - eviction threshold. For every
  catalog instance the result equals the allocatable that Karpenter v1.14.1
  documents (website/content/en/docs/reference/instance-types.md);
  tests/kube/test_eks_node.py checks that.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from components.catalog import Accelerator, InstanceType, get_instance

MIB = 1024**2
GIB = 1024**3


class Provisioner(StrEnum):
    """Who launches the node: it decides the max-pods cap and the labels."""

    KARPENTER = "karpenter"
    MANAGED_NODE_GROUP = "managed-node-group"


class CapacityType(StrEnum):
    """EC2 purchase option, spelled as Karpenter's ``karpenter.sh/capacity-type`` label."""

    ON_DEMAND = "on-demand"
    SPOT = "spot"


class DevicePlugin(StrEnum):
    """Device plugins whose DaemonSet advertises an extended resource on the node."""

    NVIDIA = "nvidia"
    NEURON = "neuron"
    EFA = "efa"


# Extended resource names, as the device plugins register them.
# Sources: NVIDIA/k8s-device-plugin README ("nvidia.com/gpu");
# aws-neuron device plugin docs ("aws.amazon.com/neuron", "aws.amazon.com/neuroncore");
# aws/eks-charts stable/aws-efa-k8s-device-plugin README ("vpc.amazonaws.com/efa").
RESOURCE_NVIDIA_GPU = "nvidia.com/gpu"
RESOURCE_NEURON = "aws.amazon.com/neuron"
RESOURCE_NEURON_CORE = "aws.amazon.com/neuroncore"
RESOURCE_EFA = "vpc.amazonaws.com/efa"

# Managed node groups' maxPods cap (EKS User Guide, choosing-instance-type.adoc,
# "How maxPods is determined": 110 below 30 vCPUs, 250 above).
MNG_MAX_PODS_SMALL = 110
MNG_MAX_PODS_LARGE = 250
MNG_LARGE_VCPU = 30

# Karpenter's default vmMemoryOverheadPercent (karpenter-provider-aws v1.14.1
# pkg/operator/options/options.go, VM_MEMORY_OVERHEAD_PERCENT).
VM_MEMORY_OVERHEAD_PERCENT = 0.075

# kubelet evictionHard defaults of nodeadm (config.go defaultKubeletSubConfig)
# and Karpenter (types.go evictionThreshold).
EVICTION_MEMORY_MIB = 100
EVICTION_NODEFS_FRACTION = 0.10
KUBE_RESERVED_EPHEMERAL_GIB = 1

# Root volume size of both Karpenter's AL2023 default block device mapping and a
# managed node group's default diskSize (karpenter-provider-aws v1.14.1
# pkg/providers/amifamily/resolver.go DefaultEBS: 20Gi; EKS CreateNodegroup
# API reference, diskSize: "Default: 20").
DEFAULT_ROOT_VOLUME_GIB = 20


@dataclass(frozen=True)
class EniLimits:
    """The ENI facts of one instance type that bound its pod count.

    Attributes:
        enis: Network interfaces on the default network card.
        ipv4_per_eni: IPv4 addresses per interface.
    """

    enis: int
    ipv4_per_eni: int


# Source: awslabs/amazon-eks-ami nodeadm/internal/kubelet/instance-info.jsonl at
# commit 4d63a3bc2d86 (2026-07-01), the table nodeadm embeds; it is generated
# from EC2 DescribeInstanceTypes (NetworkCards[DefaultNetworkCardIndex].
# MaximumNetworkInterfaces and Ipv4AddressesPerInterface), the same inputs as
# eni-max-pods.txt.
ENI_LIMITS: dict[str, EniLimits] = {
    "g5.xlarge": EniLimits(4, 15),
    "g5.4xlarge": EniLimits(8, 30),
    "g5.12xlarge": EniLimits(15, 50),
    "g5.48xlarge": EniLimits(7, 50),
    "g6.xlarge": EniLimits(4, 15),
    "g6.12xlarge": EniLimits(8, 30),
    "g6e.xlarge": EniLimits(4, 15),
    "g6e.12xlarge": EniLimits(10, 30),
    "p4d.24xlarge": EniLimits(15, 50),
    "p4de.24xlarge": EniLimits(15, 50),
    "p5.48xlarge": EniLimits(2, 50),
    "p5en.48xlarge": EniLimits(4, 50),
    "inf2.xlarge": EniLimits(4, 15),
    "inf2.8xlarge": EniLimits(8, 30),
    "inf2.24xlarge": EniLimits(15, 50),
    "inf2.48xlarge": EniLimits(15, 50),
}


@dataclass(frozen=True)
class Ec2Facts:
    """EC2 facts Karpenter turns into ``karpenter.k8s.aws/instance-*`` labels.

    Attributes:
        cpu_manufacturer: ``instance-cpu-manufacturer`` (lower-kebab EC2 name).
        cpu_clock_mhz: ``instance-cpu-sustained-clock-speed-mhz``.
        ebs_bandwidth_mbps: ``instance-ebs-bandwidth``.
        network_bandwidth_mbps: ``instance-network-bandwidth``.
        local_nvme_gb: ``instance-local-nvme`` (instance store), 0 for none.
        device_name: ``instance-gpu-name`` or ``instance-accelerator-name``.
        gpu_memory_mib: ``instance-gpu-memory`` per GPU (NVIDIA only), else 0.
        ec2_efa: EFA interfaces EC2 reports (MaximumEfaInterfaces); may differ
            from the catalog's ``efa`` (see ``device_resources``).
    """

    cpu_manufacturer: str
    cpu_clock_mhz: int
    ebs_bandwidth_mbps: int
    network_bandwidth_mbps: int
    local_nvme_gb: int
    device_name: str
    gpu_memory_mib: int
    ec2_efa: int


# Source: aws/karpenter-provider-aws v1.14.1
# website/content/en/docs/reference/instance-types.md (generated by Karpenter from
# EC2 DescribeInstanceTypes; its label and resource tables per instance type).
EC2_FACTS: dict[str, Ec2Facts] = {
    "g5.xlarge": Ec2Facts("amd", 3300, 3500, 2500, 250, "a10g", 22888, 0),
    "g5.4xlarge": Ec2Facts("amd", 3300, 4750, 10000, 600, "a10g", 22888, 0),
    "g5.12xlarge": Ec2Facts("amd", 3300, 16000, 40000, 3800, "a10g", 22888, 1),
    "g5.48xlarge": Ec2Facts("amd", 3300, 19000, 100000, 7600, "a10g", 22888, 1),
    "g6.xlarge": Ec2Facts("amd", 3400, 5000, 2500, 250, "l4", 22888, 0),
    "g6.12xlarge": Ec2Facts("amd", 3400, 20000, 40000, 3760, "l4", 22888, 1),
    "g6e.xlarge": Ec2Facts("amd", 3400, 5000, 2500, 250, "l40s", 45776, 0),
    "g6e.12xlarge": Ec2Facts("amd", 3400, 20000, 100000, 3800, "l40s", 45776, 1),
    "p4d.24xlarge": Ec2Facts("intel", 3000, 19000, 400000, 8000, "a100", 40960, 4),
    "p4de.24xlarge": Ec2Facts("intel", 3000, 19000, 400000, 8000, "a100", 81920, 4),
    "p5.48xlarge": Ec2Facts("amd", 3600, 80000, 3200000, 30400, "h100", 81920, 32),
    "p5en.48xlarge": Ec2Facts("intel", 2400, 100000, 3200000, 30400, "h200", 144384, 16),
    "inf2.xlarge": Ec2Facts("amd", 3600, 10000, 2083, 0, "inferentia2", 0, 0),
    "inf2.8xlarge": Ec2Facts("amd", 3600, 10000, 16667, 0, "inferentia2", 0, 0),
    "inf2.24xlarge": Ec2Facts("amd", 3600, 30000, 50000, 0, "inferentia2", 0, 0),
    "inf2.48xlarge": Ec2Facts("amd", 3600, 60000, 100000, 0, "inferentia2", 0, 0),
}

# Nominal memory minus the memory capacity a node of that type actually
# reported, in MiB, as Karpenter measured it on Bottlerocket nodes in 2023
# (aws/karpenter-provider-aws commit 33450d8f8, "Update instance types
# documentation", pkg/providers/instancetype/zz_generated.memory_overhead.go;
# the change was never released). Only the catalog types it measured. For
# reference: shows how conservative VM_MEMORY_OVERHEAD_PERCENT is; not used.
MEASURED_VM_OVERHEAD_MIB: dict[str, int] = {
    "g5.xlarge": 590,
    "g5.4xlarge": 1936,
    "g5.12xlarge": 5430,
    "g5.48xlarge": 20552,
    "p5.48xlarge": 49192,
}


def _facts(inst: InstanceType) -> tuple[EniLimits, Ec2Facts]:
    try:
        return ENI_LIMITS[inst.name], EC2_FACTS[inst.name]
    except KeyError:
        raise ValueError(
            f"instance_type: {inst.name!r} has no ENI/EC2 facts in components/eks_node.py; "
            "add its row to ENI_LIMITS and EC2_FACTS (sources are named there)"
        ) from None


def _instance(instance: str | InstanceType) -> InstanceType:
    return get_instance(instance) if isinstance(instance, str) else instance


def eni_max_pods(instance: str | InstanceType) -> int:
    """The ENI-formula pod limit: ``ENIs x (IPv4 per ENI - 1) + 2``.

    Args:
        instance: Catalog instance type (name or object).

    Returns:
        The max pods nodeadm and Karpenter compute with no cap.
    """
    eni, _ = _facts(_instance(instance))
    return eni.enis * (eni.ipv4_per_eni - 1) + 2


def max_pods(instance: str | InstanceType, provisioner: Provisioner) -> int:
    """The kubelet's ``maxPods`` (the node's ``pods`` capacity).

    Args:
        instance: Catalog instance type.
        provisioner: Karpenter (ENI formula) or a managed node group (capped).

    Returns:
        The pod limit.
    """
    inst = _instance(instance)
    limit = eni_max_pods(inst)
    if provisioner is Provisioner.MANAGED_NODE_GROUP:
        cap = MNG_MAX_PODS_SMALL if inst.vcpu < MNG_LARGE_VCPU else MNG_MAX_PODS_LARGE
        return min(limit, cap)
    return limit


def kube_reserved_cpu_millis(vcpu: int) -> int:
    """CPU kube-reserved by the EKS ranges (6% / 1% / 0.5% / 0.25%).

    Args:
        vcpu: vCPUs of the instance.

    Returns:
        Millicores reserved.
    """
    if vcpu <= 0:
        raise ValueError(f"vcpu: must be positive, got {vcpu}")
    total = vcpu * 1000
    # (range start, range end, basis points): nodeadm getCPUMillicoresToReserve.
    ranges = ((0, 1000, 600), (1000, 2000, 100), (2000, 4000, 50), (4000, total, 25))
    reserved = 0
    for start, end, basis_points in ranges:
        if total > start:
            reserved += (min(total, end) - start) * basis_points // 10000
    return reserved


def kube_reserved_memory_mib(pods: int) -> int:
    """Memory kube-reserved: ``11 MiB x max pods + 255 MiB``.

    Args:
        pods: The ENI-formula max pods (what nodeadm uses, see the module doc).

    Returns:
        MiB reserved.
    """
    return 11 * pods + 255


def memory_capacity_mib(instance: str | InstanceType) -> int:
    """Memory capacity as Karpenter estimates the kubelet will report it.

    Args:
        instance: Catalog instance type.

    Returns:
        ``nominal - ceil(nominal x vmMemoryOverheadPercent)`` in MiB (a lower
        bound of the real kubelet figure; see the module doc).
    """
    nominal = _instance(instance).memory_gib * 1024
    return nominal - math.ceil(nominal * VM_MEMORY_OVERHEAD_PERCENT)


def device_resources(
    instance: str | InstanceType, plugins: Iterable[DevicePlugin]
) -> dict[str, int]:
    """Extended resources the node advertises, given which device plugins run on it.

    A resource appears only when its plugin's DaemonSet runs on the node and
    the instance has that hardware, as on a real node (Karpenter's estimate
    assumes the plugins; a node without them shows none).

    Args:
        instance: Catalog instance type.
        plugins: The device plugins installed on the node.

    Returns:
        Resource name to count. EFA uses the catalog's ``efa`` (EC2 reports
        one EFA interface on some types the catalog lists with none, see
        ``EC2_FACTS.ec2_efa``).
    """
    inst = _instance(instance)
    installed = set(plugins)
    out: dict[str, int] = {}
    if DevicePlugin.NVIDIA in installed and inst.accelerator is Accelerator.NVIDIA:
        out[RESOURCE_NVIDIA_GPU] = inst.count
    if DevicePlugin.NEURON in installed and inst.accelerator is Accelerator.NEURON:
        out[RESOURCE_NEURON] = inst.count
        out[RESOURCE_NEURON_CORE] = inst.count * inst.chip.cores
    if DevicePlugin.EFA in installed and inst.efa > 0:
        out[RESOURCE_EFA] = inst.efa
    return out


@dataclass(frozen=True)
class Resources:
    """CPU, memory, ephemeral storage and pods, in the units the kubelet uses.

    Attributes:
        cpu_millis: Millicores.
        memory_mib: MiB.
        ephemeral_mib: MiB of ephemeral storage.
        pods: Pod slots.
        extended: Extended resources (device plugins), name to count.
    """

    cpu_millis: int
    memory_mib: int
    ephemeral_mib: int = 0
    pods: int = 0
    extended: Mapping[str, int] = field(default_factory=dict)

    def quantities(self) -> dict[str, str]:
        """The resource list as Kubernetes quantity strings (for a Node's status)."""
        out = {"cpu": f"{self.cpu_millis}m", "memory": f"{self.memory_mib}Mi"}
        if self.ephemeral_mib:
            out["ephemeral-storage"] = f"{self.ephemeral_mib}Mi"
        if self.pods:
            out["pods"] = str(self.pods)
        out.update({k: str(v) for k, v in self.extended.items()})
        return out


@dataclass(frozen=True)
class NodeShape:
    """A node of one instance type as the scheduler sees it.

    Attributes:
        instance: The catalog instance type.
        provisioner: Karpenter or a managed node group.
        capacity: What the kubelet reports as capacity (memory: Karpenter's estimate).
        kube_reserved: CPU, memory and ephemeral storage kube-reserved.
        eviction: The hard eviction thresholds (memory, nodefs).
        allocatable: ``capacity - kube_reserved - eviction``, with pods and the
            extended resources of the installed device plugins.
        eni_max_pods: The uncapped ENI formula (what kube-reserved memory uses).
    """

    instance: InstanceType
    provisioner: Provisioner
    capacity: Resources
    kube_reserved: Resources
    eviction: Resources
    allocatable: Resources
    eni_max_pods: int


def node_shape(
    instance: str | InstanceType,
    provisioner: Provisioner,
    *,
    plugins: Iterable[DevicePlugin],
    root_volume_gib: int = DEFAULT_ROOT_VOLUME_GIB,
) -> NodeShape:
    """Capacity, reservations and allocatable of an EKS node of this type.

    Args:
        instance: Catalog instance type (name or object).
        provisioner: Karpenter or a managed node group.
        plugins: The device plugins running on the node; they decide the
            extended resources (pass none for a node before its DaemonSets run).
        root_volume_gib: Root EBS volume; 20 GiB is both launchers' default.

    Returns:
        The node's shape.

    Raises:
        ValueError: for an unknown instance type or a non-positive volume.
    """
    inst = _instance(instance)
    if root_volume_gib <= 0:
        raise ValueError(f"root_volume_gib: must be positive, got {root_volume_gib}")
    plugins = tuple(plugins)
    eni_pods = eni_max_pods(inst)
    pods = max_pods(inst, provisioner)
    devices = device_resources(inst, plugins)
    ephemeral = root_volume_gib * 1024
    capacity = Resources(
        cpu_millis=inst.vcpu * 1000,
        memory_mib=memory_capacity_mib(inst),
        ephemeral_mib=ephemeral,
        pods=pods,
        extended=devices,
    )
    reserved = Resources(
        cpu_millis=kube_reserved_cpu_millis(inst.vcpu),
        memory_mib=kube_reserved_memory_mib(eni_pods),
        ephemeral_mib=KUBE_RESERVED_EPHEMERAL_GIB * 1024,
    )
    eviction = Resources(
        cpu_millis=0,
        memory_mib=EVICTION_MEMORY_MIB,
        ephemeral_mib=math.ceil(ephemeral * EVICTION_NODEFS_FRACTION),
    )
    allocatable = Resources(
        cpu_millis=capacity.cpu_millis - reserved.cpu_millis,
        memory_mib=capacity.memory_mib - reserved.memory_mib - eviction.memory_mib,
        ephemeral_mib=capacity.ephemeral_mib - reserved.ephemeral_mib - eviction.ephemeral_mib,
        pods=pods,
        extended=devices,
    )
    return NodeShape(inst, provisioner, capacity, reserved, eviction, allocatable, eni_pods)
