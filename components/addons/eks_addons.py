"""EKS managed add-ons: the CSI drivers the weights' volumes use, and the Pod Identity agent.

Each CSI driver's controller gets its own role (IRSA or Pod Identity, like
every other add-on) with the driver's AWS managed policy; Mountpoint for S3
has none, so bucket access is granted per bucket here
(``s3_bucket_arns``) or per pod by ModelStorage (``authenticationSource: pod``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from components import _versions
from components.addons.base import ADDON_NAMESPACE, Addon, ClusterContext
from components.iam import IamMode, ServiceAccount, service_account_role


@dataclass(frozen=True)
class CsiDriverSpec:
    """One CSI driver add-on.

    Attributes:
        addon_name: The EKS add-on's name.
        short: Short name in logical names (``fsx`` -> ``plat-fsx-csi``).
        service_account: The controller's service account.
        policies: AWS managed policies of its role (each add-on's user-guide page).
    """

    addon_name: str
    short: str
    service_account: ServiceAccount
    policies: tuple[str, ...]


CSI_DRIVERS: Mapping[str, CsiDriverSpec] = {
    d.addon_name: d
    for d in (
        CsiDriverSpec(
            "aws-fsx-csi-driver",
            "fsx",
            ServiceAccount(ADDON_NAMESPACE, "fsx-csi-controller-sa"),
            ("arn:aws:iam::aws:policy/AmazonFSxFullAccess",),
        ),
        CsiDriverSpec(
            "aws-mountpoint-s3-csi-driver",
            "mountpoint-s3",
            ServiceAccount(ADDON_NAMESPACE, "s3-csi-driver-sa"),
            (),
        ),
        CsiDriverSpec(
            "aws-efs-csi-driver",
            "efs",
            ServiceAccount(ADDON_NAMESPACE, "efs-csi-controller-sa"),
            ("arn:aws:iam::aws:policy/service-role/AmazonEFSCSIDriverPolicy",),
        ),
    )
}


def s3_bucket_read_policy(bucket_arns: Sequence[str]) -> str:
    """Read-only access to whole buckets (Mountpoint's driver-level credentials)."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": list(bucket_arns)},
                {
                    "Effect": "Allow",
                    "Action": "s3:GetObject",
                    "Resource": [f"{arn}/*" for arn in bucket_arns],
                },
            ],
        }
    )


class CsiDriver(Addon):
    """One CSI driver as an EKS add-on, with its controller's role.

    Args:
        ctx: The cluster.
        addon_name: A key of :data:`CSI_DRIVERS`.
        s3_bucket_arns: Mountpoint only: buckets its own role may read.
    """

    TYPE = "llm-endpoints:addons:CsiDriver"
    SUFFIX = "csi"

    def __init__(
        self,
        ctx: ClusterContext,
        *,
        addon_name: str,
        s3_bucket_arns: Sequence[str] = (),
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        spec = CSI_DRIVERS[addon_name]
        super().__init__(ctx, opts, suffix=f"{spec.short}-csi")
        base, child = f"{ctx.prefix}-{spec.short}-csi", self._child()
        sa = spec.service_account
        role = service_account_role(base, sa, ctx.identity, opts=child)
        for i, policy_arn in enumerate(spec.policies):
            aws.iam.RolePolicyAttachment(
                f"{base}-{i}", role=role.name, policy_arn=policy_arn, opts=child
            )
        if s3_bucket_arns:
            aws.iam.RolePolicy(
                base, role=role.id, policy=s3_bucket_read_policy(s3_bucket_arns), opts=child
            )
        identity: dict[str, Any]
        if ctx.identity.mode is IamMode.IRSA:
            identity = {"service_account_role_arn": role.arn}
        else:
            identity = {
                "pod_identity_associations": [
                    aws.eks.AddonPodIdentityAssociationArgs(
                        role_arn=role.arn, service_account=sa.name
                    )
                ]
            }
        self.installed.append(
            aws.eks.Addon(
                base,
                cluster_name=ctx.cluster_name,
                addon_name=addon_name,
                addon_version=_versions.EKS_ADDONS[addon_name],
                resolve_conflicts_on_create="OVERWRITE",
                resolve_conflicts_on_update="OVERWRITE",
                **identity,
                opts=self._child(depends_on=ctx.depends_on),
            )
        )
        self._done()


class PodIdentityAgent(Addon):
    """The EKS Pod Identity agent (Auto Mode runs its own)."""

    TYPE = "llm-endpoints:addons:PodIdentityAgent"
    SUFFIX = "pod-identity-agent"

    def __init__(self, ctx: ClusterContext, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(ctx, opts)
        self.installed.append(
            aws.eks.Addon(
                f"{ctx.prefix}-pod-identity-agent",
                cluster_name=ctx.cluster_name,
                addon_name="eks-pod-identity-agent",
                addon_version=_versions.EKS_ADDONS["eks-pod-identity-agent"],
                opts=self._child(depends_on=ctx.depends_on),
            )
        )
        self._done()
