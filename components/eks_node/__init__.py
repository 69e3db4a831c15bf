"""What an EKS node of a catalog instance type looks like to the scheduler.

The single source of node facts, in three parts: ``shape`` (max pods,
capacity, the kubelet's reservations, allocatable, the device resources; the
derivation of every number is in its docstring), ``labels`` (well-known, EKS
and Karpenter labels) and ``daemonsets`` (the requests of the DaemonSets the
platform runs on each node, and the budget they leave for workload pods). The
serving pods' requests are computed from it, and so are the local control
plane's simulated nodes and Karpenter's KWOK instance types (tests/kube).
Pure Python: no Pulumi, no Kubernetes client.
"""

from __future__ import annotations

from components.eks_node.daemonsets import (
    PLATFORM_DAEMONSETS,
    DaemonSetRequests,
    RunsOn,
    daemonsets_on,
    workload_budget,
)
from components.eks_node.labels import (
    karpenter_instance_labels,
    labels,
)
from components.eks_node.shape import (
    DEFAULT_ROOT_VOLUME_GIB,
    EC2_FACTS,
    ENI_LIMITS,
    EVICTION_MEMORY_MIB,
    EVICTION_NODEFS_FRACTION,
    GIB,
    KUBE_RESERVED_EPHEMERAL_GIB,
    MEASURED_VM_OVERHEAD_MIB,
    MIB,
    MNG_LARGE_VCPU,
    MNG_MAX_PODS_LARGE,
    MNG_MAX_PODS_SMALL,
    RESOURCE_EFA,
    RESOURCE_NEURON,
    RESOURCE_NEURON_CORE,
    RESOURCE_NVIDIA_GPU,
    VM_MEMORY_OVERHEAD_PERCENT,
    CapacityType,
    DevicePlugin,
    Ec2Facts,
    EniLimits,
    NodeShape,
    Provisioner,
    Resources,
    device_resources,
    eni_max_pods,
    kube_reserved_cpu_millis,
    kube_reserved_memory_mib,
    max_pods,
    memory_capacity_mib,
    node_shape,
)

__all__ = [
    "DEFAULT_ROOT_VOLUME_GIB",
    "EC2_FACTS",
    "ENI_LIMITS",
    "EVICTION_MEMORY_MIB",
    "EVICTION_NODEFS_FRACTION",
    "GIB",
    "KUBE_RESERVED_EPHEMERAL_GIB",
    "MEASURED_VM_OVERHEAD_MIB",
    "MIB",
    "MNG_LARGE_VCPU",
    "MNG_MAX_PODS_LARGE",
    "MNG_MAX_PODS_SMALL",
    "PLATFORM_DAEMONSETS",
    "RESOURCE_EFA",
    "RESOURCE_NEURON",
    "RESOURCE_NEURON_CORE",
    "RESOURCE_NVIDIA_GPU",
    "VM_MEMORY_OVERHEAD_PERCENT",
    "CapacityType",
    "DaemonSetRequests",
    "DevicePlugin",
    "Ec2Facts",
    "EniLimits",
    "NodeShape",
    "Provisioner",
    "Resources",
    "RunsOn",
    "daemonsets_on",
    "device_resources",
    "eni_max_pods",
    "karpenter_instance_labels",
    "kube_reserved_cpu_millis",
    "kube_reserved_memory_mib",
    "labels",
    "max_pods",
    "memory_capacity_mib",
    "node_shape",
    "workload_budget",
]
