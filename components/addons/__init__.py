"""Cluster add-ons: one small component per add-on, each with a ``from_cluster`` factory.

:class:`Addons` says which ones a dedicated cluster (a platform stack) gets;
:func:`install` builds them on a :class:`~components.addons.base.ClusterContext`.
To add one: a module here with an :class:`~components.addons.base.Addon`
subclass, a flag in :class:`Addons`, a line in :func:`install`, its pinned
chart in ``components/_versions.py`` and its policy documents, if any, under
``policies/`` with their source (see ``docs/ARCHITECTURE.md``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import pulumi
import pulumi_aws as aws

from components.addons import karpenter, load_balancer_controller
from components.addons.base import Addon, ClusterContext
from components.addons.dcgm import DcgmExporter
from components.addons.device_plugins import (
    EfaDevicePlugin,
    NeuronDevicePlugin,
    NvidiaDevicePlugin,
)
from components.addons.eks_addons import CSI_DRIVERS, CsiDriver, PodIdentityAgent
from components.addons.karpenter import Karpenter
from components.addons.load_balancer_controller import LoadBalancerController
from components.addons.serving import KubeRay, LeaderWorkerSet
from components.iam import IamMode, ServiceAccount

__all__ = [
    "ADDONS",
    "ADDON_SERVICE_ACCOUNTS",
    "Addon",
    "Addons",
    "ClusterContext",
    "install",
]


@dataclass(frozen=True)
class Addons:
    """Which add-ons a dedicated cluster gets (a shared cluster's platform stack owns them).

    ``None`` means "what the cluster needs": Karpenter, the NVIDIA device
    plugin and the AWS Load Balancer Controller are installed unless the
    cluster runs EKS Auto Mode, which brings its own node provisioning, device
    plugins and load balancing.

    Attributes:
        karpenter: Karpenter (controller role, interruption queue, rules).
        nvidia_device_plugin: NVIDIA device plugin DaemonSet.
        neuron: Neuron device plugin and scheduler extension.
        efa_device_plugin: EFA device plugin (pools with EFA interfaces).
        load_balancer_controller: AWS Load Balancer Controller (ALB Ingress).
        fsx_csi: FSx for Lustre CSI driver (EKS add-on).
        mountpoint_s3_csi: Mountpoint for S3 CSI driver (EKS add-on).
        efs_csi: EFS CSI driver (EKS add-on).
        leader_worker_set: LeaderWorkerSet controller (multi-node serving).
        kuberay: KubeRay operator (RayService).
        dcgm_exporter: NVIDIA DCGM exporter, annotated for Prometheus scraping.
        s3_bucket_arns: Buckets the Mountpoint driver's own role may read.
    """

    karpenter: bool | None = None
    nvidia_device_plugin: bool | None = None
    neuron: bool = False
    efa_device_plugin: bool = False
    load_balancer_controller: bool | None = None
    fsx_csi: bool = False
    mountpoint_s3_csi: bool = False
    efs_csi: bool = False
    leader_worker_set: bool = False
    kuberay: bool = False
    dcgm_exporter: bool = False
    s3_bucket_arns: tuple[str, ...] = ()

    def resolved(self, auto_mode: bool) -> Addons:
        """Fill the ``None`` flags for a cluster with or without Auto Mode."""
        default = not auto_mode

        def pick(flag: bool | None) -> bool:
            return default if flag is None else flag

        return replace(
            self,
            karpenter=pick(self.karpenter),
            nvidia_device_plugin=pick(self.nvidia_device_plugin),
            load_balancer_controller=pick(self.load_balancer_controller),
        )

    def check(self, auto_mode: bool) -> None:
        """Raise ValueError naming a flag that contradicts the cluster."""
        if auto_mode and self.karpenter:
            raise ValueError(
                "addons.karpenter: an Auto Mode cluster provisions nodes itself; leave it unset"
            )
        for arn in self.s3_bucket_arns:
            if not arn.startswith("arn:aws:s3:::") or "/" in arn:
                raise ValueError(f"addons.s3_bucket_arns: {arn!r} is not a bucket ARN")
        if self.s3_bucket_arns and not self.mountpoint_s3_csi:
            raise ValueError("addons.s3_bucket_arns: applies only with addons.mountpoint_s3_csi")


#: The add-on switches a platform stack config may set (``addons: {name: bool}``).
ADDONS: tuple[str, ...] = tuple(f.name for f in fields(Addons) if f.name != "s3_bucket_arns")

#: The service account of each add-on that calls AWS APIs.
ADDON_SERVICE_ACCOUNTS: dict[str, ServiceAccount] = {
    "karpenter": karpenter.SERVICE_ACCOUNT,
    "load-balancer-controller": load_balancer_controller.SERVICE_ACCOUNT,
    **{name: d.service_account for name, d in CSI_DRIVERS.items()},
}


def install(
    ctx: ClusterContext,
    addons: Addons,
    *,
    karpenter_node_role: aws.iam.Role | None = None,
    opts: pulumi.ResourceOptions | None = None,
) -> list[Addon]:
    """Build the resolved add-ons on a cluster, the Pod Identity agent first when needed.

    Returns:
        The add-on components, in install order.
    """
    out: list[Addon] = []
    if ctx.identity.mode is IamMode.POD_IDENTITY and not ctx.auto_mode:
        # Auto Mode runs the Pod Identity agent itself.
        agent = PodIdentityAgent(ctx, opts)
        out.append(agent)
        ctx = replace(ctx, depends_on=[*ctx.depends_on, *agent.installed])
    if addons.karpenter:
        if karpenter_node_role is None:
            raise ValueError("karpenter_node_role: Karpenter needs the role of its nodes")
        out.append(Karpenter(ctx, node_role=karpenter_node_role, opts=opts))
    if addons.load_balancer_controller:
        out.append(LoadBalancerController(ctx, opts))
    for addon_name, enabled in (
        ("aws-fsx-csi-driver", addons.fsx_csi),
        ("aws-mountpoint-s3-csi-driver", addons.mountpoint_s3_csi),
        ("aws-efs-csi-driver", addons.efs_csi),
    ):
        if enabled:
            buckets = addons.s3_bucket_arns if addon_name == "aws-mountpoint-s3-csi-driver" else ()
            out.append(CsiDriver(ctx, addon_name=addon_name, s3_bucket_arns=buckets, opts=opts))
    if addons.nvidia_device_plugin:
        out.append(NvidiaDevicePlugin(ctx, opts))
    if addons.neuron:
        out.append(NeuronDevicePlugin(ctx, opts))
    if addons.efa_device_plugin:
        out.append(EfaDevicePlugin(ctx, opts))
    if addons.leader_worker_set:
        out.append(LeaderWorkerSet(ctx, opts))
    if addons.kuberay:
        out.append(KubeRay(ctx, opts))
    if addons.dcgm_exporter:
        out.append(DcgmExporter(ctx, opts))
    return out
