"""Node facts the harness needs beyond ``components.eks_node``.

* **Auto Mode labels.** EKS Auto Mode NodePools select on
  ``eks.amazonaws.com/instance-*`` where Karpenter uses
  ``karpenter.k8s.aws/instance-*``; ``auto_mode_instance_labels`` derives them
  from eks_node's Karpenter labels. (A candidate for ``components.eks_node``.)
* **CPU system nodes.** eks_node knows the accelerator catalog only; the
  platform's system node group runs ``m6i.large``, whose shape is computed
  here with eks_node's own formulas.
* **Managed node groups.** The labels and taints an EKS managed node group
  created by ``AcceleratorPool`` gives its nodes.
* **Platform DaemonSets.** ``eks_node.PLATFORM_DAEMONSETS`` as real DaemonSet
  objects (pause containers with those requests), so serving pods must fit next
  to them as on EKS.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from components import eks_node
from components.catalog import INSTANCES, Accelerator, InstanceType, get_instance

PAUSE_IMAGE = "registry.k8s.io/pause:3.10"

# --------------------------------------------------------------------------- Auto Mode

#: The ``eks.amazonaws.com/instance-*`` labels Auto Mode supports (EKS User Guide,
#: automode/create-node-pool.adoc, "EKS Auto Mode Supported Labels"), each named
#: like Karpenter's ``karpenter.k8s.aws/instance-*`` label with the same meaning.
#: Not among them: cpu-sustained-clock-speed-mhz, capability-flex and the
#: accelerator-* (Neuron) labels.
AUTO_MODE_INSTANCE_LABELS = (
    "hypervisor", "encryption-in-transit-supported", "category", "generation", "family",
    "size", "cpu", "cpu-manufacturer", "memory", "ebs-bandwidth", "network-bandwidth",
    "gpu-name", "gpu-manufacturer", "gpu-count", "gpu-memory", "local-nvme",
)  # fmt: skip
AUTO_MODE_PREFIX = "eks.amazonaws.com/instance-"
#: The label Auto Mode puts on every node it manages (same page).
AUTO_MODE_COMPUTE_TYPE = ("eks.amazonaws.com/compute-type", "auto")
#: The node class every simulated NodePool references (Karpenter's KWOK
#: provider supports only this kind), for karpenter and auto-mode pools alike.
KWOK_NODE_CLASS_REF = {"group": "karpenter.kwok.sh", "kind": "KWOKNodeClass", "name": "default"}


def auto_mode_instance_labels(instance: str | InstanceType) -> dict[str, str]:
    """The ``eks.amazonaws.com/instance-*`` labels of an instance type under Auto Mode.

    The values are Karpenter's (Auto Mode runs Karpenter; its documented
    examples use the same units: MiB of memory, Mbps of bandwidth).

    Args:
        instance: Catalog instance type.

    Returns:
        Label key to value; empty for a type Auto Mode does not offer
        (``InstanceType.auto_mode`` False), so that no Auto Mode pool can pick it.
    """
    inst = get_instance(instance) if isinstance(instance, str) else instance
    if not inst.auto_mode:
        return {}
    karpenter = eks_node.karpenter_instance_labels(inst)
    out = {}
    for name in AUTO_MODE_INSTANCE_LABELS:
        value = karpenter.get(f"karpenter.k8s.aws/instance-{name}")
        if value is not None:
            out[AUTO_MODE_PREFIX + name] = value
    return out


# --------------------------------------------------------------------------- CPU nodes


@dataclass(frozen=True)
class CpuInstance:
    """A CPU instance type the platform runs (outside the accelerator catalog).

    Attributes:
        name: EC2 instance type.
        vcpu: vCPUs.
        memory_gib: Memory.
        enis: Network interfaces (default network card).
        ipv4_per_eni: IPv4 addresses per interface.
        source: Where the figures come from.
    """

    name: str
    vcpu: int
    memory_gib: int
    enis: int
    ipv4_per_eni: int
    source: str


M6I_LARGE = CpuInstance(
    "m6i.large",
    vcpu=2,
    memory_gib=8,
    enis=3,
    ipv4_per_eni=10,
    source="EC2 instance types (m6i.large: 2 vCPU, 8 GiB); ENIs and IPv4 per ENI from "
    "amazon-eks-ami nodeadm instance-info.jsonl (3 x 10 -> 29 pods)",
)
SYSTEM_LABEL = ("llm-endpoints/role", "system")


@dataclass(frozen=True)
class CpuNodeShape:
    """A CPU node as the scheduler sees it (eks_node.NodeShape's figures)."""

    capacity: eks_node.Resources
    allocatable: eks_node.Resources
    eni_max_pods: int


def cpu_node_shape(
    inst: CpuInstance,
    provisioner: eks_node.Provisioner = eks_node.Provisioner.MANAGED_NODE_GROUP,
    *,
    root_volume_gib: int = eks_node.DEFAULT_ROOT_VOLUME_GIB,
) -> CpuNodeShape:
    """Capacity and allocatable of a CPU node, by the same rules as ``eks_node.node_shape``.

    Args:
        inst: The CPU instance type.
        provisioner: Managed node group (the system nodes) or Karpenter.
        root_volume_gib: Root volume.

    Returns:
        The shape (m6i.large in a managed group: 1930m CPU, 6903Mi, 29 pods).
    """
    eni_pods = inst.enis * (inst.ipv4_per_eni - 1) + 2
    pods = eni_pods
    if provisioner is eks_node.Provisioner.MANAGED_NODE_GROUP:
        cap = (
            eks_node.MNG_MAX_PODS_SMALL
            if inst.vcpu < eks_node.MNG_LARGE_VCPU
            else eks_node.MNG_MAX_PODS_LARGE
        )
        pods = min(eni_pods, cap)
    nominal = inst.memory_gib * 1024
    memory = nominal - math.ceil(nominal * eks_node.VM_MEMORY_OVERHEAD_PERCENT)
    ephemeral = root_volume_gib * 1024
    capacity = eks_node.Resources(inst.vcpu * 1000, memory, ephemeral, pods)
    allocatable = eks_node.Resources(
        cpu_millis=capacity.cpu_millis - eks_node.kube_reserved_cpu_millis(inst.vcpu),
        memory_mib=memory
        - eks_node.kube_reserved_memory_mib(eni_pods)
        - eks_node.EVICTION_MEMORY_MIB,
        ephemeral_mib=ephemeral
        - eks_node.KUBE_RESERVED_EPHEMERAL_GIB * 1024
        - math.ceil(ephemeral * eks_node.EVICTION_NODEFS_FRACTION),
        pods=pods,
    )
    return CpuNodeShape(capacity, allocatable, eni_pods)


def cpu_node_labels(
    inst: CpuInstance,
    *,
    zone: str,
    region: str,
    nodegroup: str,
    capacity_type: eks_node.CapacityType = eks_node.CapacityType.ON_DEMAND,
) -> dict[str, str]:
    """The well-known labels of a managed node group's CPU node (as ``eks_node.labels``)."""
    return {
        "node.kubernetes.io/instance-type": inst.name,
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/os": "linux",
        "topology.kubernetes.io/zone": zone,
        "topology.kubernetes.io/region": region,
        "eks.amazonaws.com/nodegroup": nodegroup,
        "eks.amazonaws.com/capacityType": capacity_type.value.upper().replace("-", "_"),
    }


# --------------------------------------------------------------------------- managed groups


@dataclass(frozen=True)
class PoolMarks:
    """What ``AcceleratorPool`` puts on a pool's nodes: labels and taints."""

    labels: dict[str, str]
    taints: list[dict[str, str]]


def accelerator_pool_marks(
    pool: str,
    accelerator: Accelerator,
    *,
    labels: Mapping[str, str] | None = None,
    taint_key: str | None = None,
) -> PoolMarks:
    """The labels and taints ``components.accelerator_pool.AcceleratorPool`` gives its nodes.

    Read from the component's own constants (``POOL_LABEL``, ``ACCELERATOR_LABEL``,
    ``TAINT_KEYS``), so a change there reaches the simulated nodes.

    Args:
        pool: The pool's name (its ``llm-endpoints/pool`` label).
        accelerator: nvidia or neuron.
        labels: The pool's extra labels.
        taint_key: The pool's taint key; the accelerator's default if None.

    Returns:
        Labels and taints, as a managed node group (or a NodePool) applies them.
    """
    # Imported here: accelerator_pool imports Pulumi and its AWS SDK, which
    # the rest of the harness does not need.
    from components import accelerator_pool as ap

    key = taint_key or ap.TAINT_KEYS[accelerator]
    return PoolMarks(
        labels={**dict(labels or {}), ap.POOL_LABEL: pool, ap.ACCELERATOR_LABEL: accelerator.value},
        taints=[{"key": key, "value": "true", "effect": "NoSchedule"}],
    )


# --------------------------------------------------------------------------- DaemonSets

#: The label on every platform DaemonSet the harness creates (and their pods).
PLATFORM_DAEMONSET_LABEL = ("kube-sim/platform-daemonset", "true")


def _lands_on(
    runs_on: eks_node.RunsOn, plugins: frozenset[eks_node.DevicePlugin]
) -> list[str] | None:
    """The catalog instance types a DaemonSet lands on; None for every node."""
    if runs_on is eks_node.RunsOn.ALL:
        return None
    out = []
    for inst in INSTANCES.values():
        probe = eks_node.DaemonSetRequests("probe", "probe", runs_on, 0, 0, "")
        if eks_node.daemonsets_on(inst, plugins, [probe]):
            out.append(inst.name)
    return out


def platform_daemonset_manifests(
    daemonsets: Iterable[eks_node.DaemonSetRequests] = eks_node.PLATFORM_DAEMONSETS,
    *,
    plugins: Iterable[eks_node.DevicePlugin] = frozenset(eks_node.DevicePlugin),
) -> list[dict[str, Any]]:
    """The platform's DaemonSets as Kubernetes objects, with eks_node's requests.

    Each runs one pause container requesting the row's CPU and memory (none
    when the row has none: the pod still takes a pod slot, as
    ``eks_node.workload_budget`` counts). Where it lands follows
    ``eks_node.daemonsets_on``: everywhere for ``RunsOn.ALL``, else on the
    catalog instance types with that hardware (a ``node.kubernetes.io/
    instance-type`` affinity) when its plugin is installed. Every one tolerates
    every taint: aws-node, kube-proxy and the CSI node plugins do on EKS, and
    the device plugins tolerate their pools' taints (components/addons), which
    are the only taints on the nodes they land on.

    Args:
        daemonsets: The rows to create.
        plugins: The device plugins the platform installs.

    Returns:
        DaemonSet manifests (apps/v1).
    """
    installed = frozenset(plugins)
    key, value = PLATFORM_DAEMONSET_LABEL
    out = []
    for d in daemonsets:
        types = _lands_on(d.runs_on, installed)
        if types == []:
            continue
        requests = {}
        if d.cpu_millis:
            requests["cpu"] = f"{d.cpu_millis}m"
        if d.memory_mib:
            requests["memory"] = f"{d.memory_mib}Mi"
        labels = {"app.kubernetes.io/name": d.name, key: value}
        pod_spec: dict[str, Any] = {
            "containers": [
                {"name": d.name, "image": PAUSE_IMAGE, "resources": {"requests": requests}}
            ],
            "tolerations": [{"operator": "Exists"}],
            "terminationGracePeriodSeconds": 0,
            "automountServiceAccountToken": False,
        }
        if types is not None:
            pod_spec["affinity"] = {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {
                                        "key": "node.kubernetes.io/instance-type",
                                        "operator": "In",
                                        "values": types,
                                    }
                                ]
                            }
                        ]
                    }
                }
            }
        out.append(
            {
                "apiVersion": "apps/v1",
                "kind": "DaemonSet",
                "metadata": {
                    "name": d.name,
                    "namespace": d.namespace,
                    "labels": labels,
                    "annotations": {"kube-sim/source": d.source},
                },
                "spec": {
                    "selector": {"matchLabels": {"app.kubernetes.io/name": d.name}},
                    "template": {"metadata": {"labels": labels}, "spec": pod_spec},
                },
            }
        )
    return out


def daemonset_namespaces(manifests: Sequence[Mapping[str, Any]]) -> list[str]:
    """The namespaces the DaemonSets live in (to create first)."""
    return sorted({m["metadata"]["namespace"] for m in manifests})
