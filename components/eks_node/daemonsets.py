"""The DaemonSets the platform runs on every node, and what they leave for workloads.

Part of :mod:`components.eks_node`: the per-node requests of each platform
DaemonSet (with the chart they come from), which of them land on a node, and
the node's budget for workload pods once they run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from components.catalog import Accelerator, InstanceType
from components.eks_node.shape import (
    RESOURCE_EFA,
    RESOURCE_NEURON,
    RESOURCE_NVIDIA_GPU,
    DevicePlugin,
    NodeShape,
    Resources,
    _instance,
)


class RunsOn(StrEnum):
    """Which nodes a platform DaemonSet lands on."""

    ALL = "all"
    NVIDIA = "nvidia"
    NEURON = "neuron"
    EFA = "efa"


@dataclass(frozen=True)
class DaemonSetRequests:
    """The per-node requests of one DaemonSet the platform runs.

    Attributes:
        name: DaemonSet name.
        namespace: Its namespace.
        runs_on: Which nodes it lands on.
        cpu_millis: The pod's CPU request (sum over containers; init containers
            never exceed it).
        memory_mib: The pod's memory request.
        source: Chart or add-on and version the figures come from.
    """

    name: str
    namespace: str
    runs_on: RunsOn
    cpu_millis: int
    memory_mib: int
    source: str


# What the platform runs on an accelerator node, with each pod's requests at the
# chart default (read from each chart's values.yaml and templates at
# the version named). ASSUMED versions: the newest release of each chart, except
# where components/_versions.py pins one; re-check these rows when a pin moves.
PLATFORM_DAEMONSETS: tuple[DaemonSetRequests, ...] = (
    # aws-node: aws-node 25m and aws-eks-nodeagent, which defaults to the same
    # `resources` (25m); no memory request. Init container 25m.
    DaemonSetRequests(
        name="aws-node",
        namespace="kube-system",
        runs_on=RunsOn.ALL,
        cpu_millis=50,
        memory_mib=0,
        source="aws/amazon-vpc-cni-k8s v1.23.0 charts/aws-vpc-cni values.yaml, daemonset.yaml",
    ),
    # kube-proxy: the EKS add-on's DaemonSet requests 100m CPU and no memory
    # (aws/containers-roadmap#1509). No public chart; ASSUMED, verify with
    # `kubectl -n kube-system get ds kube-proxy -o yaml` on a real cluster.
    DaemonSetRequests(
        name="kube-proxy",
        namespace="kube-system",
        runs_on=RunsOn.ALL,
        cpu_millis=100,
        memory_mib=0,
        source="EKS kube-proxy add-on (unverified)",
    ),
    # eks-pod-identity-agent: chart `resources: {}`; the managed add-on is
    # ASSUMED to keep the chart default.
    DaemonSetRequests(
        name="eks-pod-identity-agent",
        namespace="kube-system",
        runs_on=RunsOn.ALL,
        cpu_millis=0,
        memory_mib=0,
        source="aws/eks-pod-identity-agent v0.1.37 charts/eks-pod-identity-agent values.yaml",
    ),
    # CSI node plugins of the EKS add-ons in _versions.EKS_ADDONS (the add-ons
    # ship the charts' manifests). FSx: fsx-plugin 10m/40Mi, registrar and
    # liveness-probe 10m/32Mi each.
    DaemonSetRequests(
        name="fsx-csi-node",
        namespace="kube-system",
        runs_on=RunsOn.ALL,
        cpu_millis=30,
        memory_mib=104,
        source="kubernetes-sigs/aws-fsx-csi-driver helm-chart-aws-fsx-csi-driver-1.17.0",
    ),
    # Mountpoint for S3: s3-plugin 10m/40Mi; both sidecars default to the
    # same. (Each mounted bucket also runs a Mountpoint pod in mount-s3,
    # sized by the volume, not counted here.)
    DaemonSetRequests(
        name="s3-csi-node",
        namespace="kube-system",
        runs_on=RunsOn.ALL,
        cpu_millis=30,
        memory_mib=120,
        source="awslabs/mountpoint-s3-csi-driver helm-chart-aws-mountpoint-s3-csi-driver-2.7.0 "
        "values.yaml, templates/node.yaml",
    ),
    # EFS: node and sidecars `resources: {}`.
    DaemonSetRequests(
        name="efs-csi-node",
        namespace="kube-system",
        runs_on=RunsOn.ALL,
        cpu_millis=0,
        memory_mib=0,
        source="kubernetes-sigs/aws-efs-csi-driver helm-chart-aws-efs-csi-driver-4.4.1 values.yaml",
    ),
    # (Not installed by the platform today: EBS CSI node would add 30m/104Mi,
    # helm-chart-aws-ebs-csi-driver-2.64.0.)
    # NVIDIA device plugin: `resources: {}` at 0.17.4 (the pin) and 0.20.0.
    DaemonSetRequests(
        name="nvidia-device-plugin",
        namespace="kube-system",
        runs_on=RunsOn.NVIDIA,
        cpu_millis=0,
        memory_mib=0,
        source="NVIDIA/k8s-device-plugin v0.17.4 deployments/helm/nvidia-device-plugin/values.yaml",
    ),
    # DCGM exporter: 100m/128Mi since chart 4.7.0 (none up to 4.6.0). The pin
    # 4.4.1 matches no chart release; ASSUMED the newest, 4.8.2.
    DaemonSetRequests(
        name="dcgm-exporter",
        namespace="monitoring",
        runs_on=RunsOn.NVIDIA,
        cpu_millis=100,
        memory_mib=128,
        source="NVIDIA/dcgm-exporter 4.5.3-4.8.2 deployment/values.yaml (chart 4.8.2)",
    ),
    # Neuron device plugin: no requests. (Its chart's node-problem-detector,
    # 10m/80Mi + 10m/150Mi, would also run on Neuron nodes; the platform turns
    # it off, components/addons/device_plugins.py `npd.enabled: False`.)
    DaemonSetRequests(
        name="neuron-device-plugin",
        namespace="kube-system",
        runs_on=RunsOn.NEURON,
        cpu_millis=0,
        memory_mib=0,
        source="aws-neuron/neuron-helm-charts neuron-helm-chart 1.0.0 values.yaml "
        "(newest in the public repository; the pin is 1.3.0)",
    ),
    # EFA device plugin: 10m/20Mi (components/addons/device_plugins.py).
    DaemonSetRequests(
        name="aws-efa-k8s-device-plugin",
        namespace="kube-system",
        runs_on=RunsOn.EFA,
        cpu_millis=10,
        memory_mib=20,
        source="aws/eks-charts stable/aws-efa-k8s-device-plugin v0.5.30 values.yaml",
    ),
)


def daemonsets_on(
    instance: str | InstanceType,
    plugins: Iterable[DevicePlugin],
    daemonsets: Iterable[DaemonSetRequests] = PLATFORM_DAEMONSETS,
) -> list[DaemonSetRequests]:
    """The DaemonSets that land on a node of this type.

    Args:
        instance: Catalog instance type.
        plugins: The device plugins the platform installs (the NVIDIA entry
            also brings the DCGM exporter).
        daemonsets: The table to select from.

    Returns:
        The DaemonSets whose pods run on the node.
    """
    inst = _instance(instance)
    installed = set(plugins)
    lands = {
        RunsOn.ALL: True,
        RunsOn.NVIDIA: DevicePlugin.NVIDIA in installed and inst.accelerator is Accelerator.NVIDIA,
        RunsOn.NEURON: DevicePlugin.NEURON in installed and inst.accelerator is Accelerator.NEURON,
        RunsOn.EFA: DevicePlugin.EFA in installed and inst.efa > 0,
    }
    return [d for d in daemonsets if lands[d.runs_on]]


def workload_budget(
    shape: NodeShape, daemonsets: Iterable[DaemonSetRequests] | None = None
) -> Resources:
    """What is left on a node for workload pods once the platform's DaemonSets run.

    Args:
        shape: The node (its plugins decide the device DaemonSets).
        daemonsets: The DaemonSets on it; by default ``daemonsets_on`` the
            shape's instance with the plugins its extended resources show.

    Returns:
        Allocatable minus the DaemonSets' requests, pods included.
    """
    if daemonsets is None:
        plugins = _plugins_of(shape)
        daemonsets = daemonsets_on(shape.instance, plugins)
    ds = list(daemonsets)
    alloc = shape.allocatable
    return Resources(
        cpu_millis=alloc.cpu_millis - sum(d.cpu_millis for d in ds),
        memory_mib=alloc.memory_mib - sum(d.memory_mib for d in ds),
        ephemeral_mib=alloc.ephemeral_mib,
        pods=alloc.pods - len(ds),
        extended=alloc.extended,
    )


def _plugins_of(shape: NodeShape) -> set[DevicePlugin]:
    ext = shape.allocatable.extended
    out = set()
    if RESOURCE_NVIDIA_GPU in ext:
        out.add(DevicePlugin.NVIDIA)
    if RESOURCE_NEURON in ext:
        out.add(DevicePlugin.NEURON)
    if RESOURCE_EFA in ext:
        out.add(DevicePlugin.EFA)
    return out
