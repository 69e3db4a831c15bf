"""The labels an EKS node of a catalog instance carries (well-known, EKS, Karpenter's).

Part of :mod:`components.eks_node`; the facts per instance come from ``shape``.
"""

from __future__ import annotations

import re

from components.catalog import Accelerator, InstanceType
from components.eks_node.shape import (
    CapacityType,
    Provisioner,
    _facts,
    _instance,
)


def labels(
    instance: str | InstanceType,
    provisioner: Provisioner,
    *,
    zone: str,
    region: str,
    capacity_type: CapacityType,
    nodegroup: str | None = None,
    nodepool: str | None = None,
) -> dict[str, str]:
    """The well-known labels a node of this type carries on EKS.

    Every node: ``node.kubernetes.io/instance-type``, ``kubernetes.io/arch``,
    ``kubernetes.io/os`` (kubelet), ``topology.kubernetes.io/zone`` and
    ``/region`` (AWS cloud controller), and ``nvidia.com/gpu.present=true`` on
    NVIDIA instances (nodeadm labels.go, kubelet >= 1.35). Karpenter nodes add
    ``karpenter.sh/capacity-type``, ``karpenter.sh/nodepool`` and the
    ``karpenter.k8s.aws/instance-*`` labels of its instance-type requirements
    (types.go ``computeRequirements``); managed node group nodes add
    ``eks.amazonaws.com/nodegroup`` and ``eks.amazonaws.com/capacityType``.
    ``kubernetes.io/hostname`` is the node name, which the caller sets.

    Args:
        instance: Catalog instance type.
        provisioner: Karpenter or a managed node group.
        zone: Availability zone, e.g. ``us-east-1a``.
        region: Region, e.g. ``us-east-1``.
        capacity_type: On-demand or spot.
        nodegroup: The managed node group's name (required for one).
        nodepool: The Karpenter NodePool's name (optional: a node Karpenter did
            not launch must not claim a NodePool).

    Returns:
        Label key to value.

    Raises:
        ValueError: when the zone is not in the region, or a managed node
            group node has no ``nodegroup``.
    """
    inst = _instance(instance)
    if not zone.startswith(region) or len(zone) <= len(region):
        raise ValueError(f"zone: {zone!r} is not an availability zone of region {region!r}")
    out = {
        "node.kubernetes.io/instance-type": inst.name,
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/os": "linux",
        "topology.kubernetes.io/zone": zone,
        "topology.kubernetes.io/region": region,
    }
    if inst.accelerator is Accelerator.NVIDIA:
        out["nvidia.com/gpu.present"] = "true"
    if provisioner is Provisioner.MANAGED_NODE_GROUP:
        if not nodegroup:
            raise ValueError("nodegroup: a managed node group node needs its node group's name")
        out["eks.amazonaws.com/nodegroup"] = nodegroup
        # EKS spells the managed node group capacity type in upper case.
        out["eks.amazonaws.com/capacityType"] = capacity_type.value.upper().replace("-", "_")
        return out
    out["karpenter.sh/capacity-type"] = capacity_type.value
    if nodepool:
        out["karpenter.sh/nodepool"] = nodepool
    out.update(karpenter_instance_labels(inst))
    return out


# Karpenter's split of a type name into category and generation (v1.14.1
# pkg/providers/instancetype/instancetype.go instanceTypeScheme): the letters
# before the first digit, then the digits. (catalog.InstanceType.category drops
# every "d" and "e" instead, which gives "pn" for p5en.)
_INSTANCE_TYPE_SCHEME = re.compile(r"(^[a-z]+)(\-[0-9]+tb)?([0-9]+).*\.")


def karpenter_instance_labels(instance: str | InstanceType) -> dict[str, str]:
    """The ``karpenter.k8s.aws/instance-*`` labels Karpenter derives for a type.

    Args:
        instance: Catalog instance type.

    Returns:
        Label key to value, as karpenter-provider-aws v1.14.1 sets them
        (types.go ``computeRequirements``; values as in its instance-types.md).
    """
    inst = _instance(instance)
    _, ec2 = _facts(inst)
    family, size = inst.name.split(".", 1)
    scheme = _INSTANCE_TYPE_SCHEME.match(inst.name)
    if scheme is None:
        raise ValueError(
            f"instance_type: {inst.name!r} is not of the form <family><generation>.<size>"
        )
    prefix = "karpenter.k8s.aws/instance-"
    out = {
        prefix + "category": scheme.group(1),
        prefix + "family": family,
        prefix + "generation": scheme.group(3),
        prefix + "size": size,
        prefix + "cpu": str(inst.vcpu),
        prefix + "cpu-manufacturer": ec2.cpu_manufacturer,
        prefix + "cpu-sustained-clock-speed-mhz": str(ec2.cpu_clock_mhz),
        prefix + "memory": str(inst.memory_gib * 1024),
        prefix + "ebs-bandwidth": str(ec2.ebs_bandwidth_mbps),
        prefix + "network-bandwidth": str(ec2.network_bandwidth_mbps),
        prefix + "hypervisor": "nitro",
        prefix + "encryption-in-transit-supported": "true",
        prefix + "capability-flex": "false",
    }
    if ec2.local_nvme_gb:
        out[prefix + "local-nvme"] = str(ec2.local_nvme_gb)
    if inst.accelerator is Accelerator.NVIDIA:
        out[prefix + "gpu-name"] = ec2.device_name
        out[prefix + "gpu-manufacturer"] = "nvidia"
        out[prefix + "gpu-count"] = str(inst.count)
        out[prefix + "gpu-memory"] = str(ec2.gpu_memory_mib)
    else:
        out[prefix + "accelerator-name"] = ec2.device_name
        out[prefix + "accelerator-manufacturer"] = "aws"
        out[prefix + "accelerator-count"] = str(inst.count)
    return out
