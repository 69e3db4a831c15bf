"""IAM for workloads: one way to give a Kubernetes service account an AWS role.

Every consumer (the add-ons' controllers, the S3 weights' readers and
writers) gets its role from :func:`service_account_role`, trusted either
through the cluster's OIDC provider (IRSA, the default; every add-on supports
it) or through EKS Pod Identity. Both trust policies pin the role to exactly
one namespace and service account, so a stray service account elsewhere in the
cluster cannot assume it.

Policy documents published upstream are kept verbatim as data files beside the
code that uses them (:func:`policy_file`), each with its source and version.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from typing import Any

import pulumi
import pulumi_aws as aws

from components import rules


class IamMode(StrEnum):
    """How workloads get AWS credentials.

    ``irsa`` (the default) trusts the cluster's OIDC provider for one service
    account; every add-on supports it. ``pod-identity`` uses EKS Pod Identity
    associations (and the agent, which Auto Mode ships); each role's trust
    policy still pins the namespace and service account through the session
    tags Pod Identity sets.
    """

    IRSA = "irsa"
    POD_IDENTITY = "pod-identity"


@dataclass(frozen=True)
class ServiceAccount:
    """A Kubernetes service account an IAM role is scoped to."""

    namespace: str
    name: str


@dataclass(frozen=True)
class WorkloadIdentity:
    """What a cluster offers to trust service accounts with IAM roles.

    Attributes:
        mode: irsa or pod-identity.
        cluster_name: The EKS cluster (Pod Identity pins it in the trust policy).
        oidc_provider_arn: The cluster's IAM OIDC provider (IRSA).
        oidc_issuer: Its issuer URL, with or without ``https://`` (IRSA).
    """

    mode: IamMode = IamMode.IRSA
    cluster_name: pulumi.Input[str] | None = None
    oidc_provider_arn: pulumi.Input[str] | None = None
    oidc_issuer: pulumi.Input[str] | None = None

    def check(self, field: str = "identity") -> None:
        """Raise ValueError unless the mode has what it needs."""
        if self.mode is IamMode.IRSA and (
            self.oidc_provider_arn is None or self.oidc_issuer is None
        ):
            raise ValueError(
                f"{field}: IRSA roles need the cluster's oidc_provider_arn and oidc_issuer"
            )
        if self.mode is IamMode.POD_IDENTITY and self.cluster_name is None:
            raise ValueError(f"{field}: Pod Identity roles need the cluster name")


def irsa_trust_policy(oidc_provider_arn: str, issuer: str, sa: ServiceAccount) -> dict[str, Any]:
    """Trust policy letting exactly one service account assume a role (IRSA).

    Args:
        oidc_provider_arn: The cluster's IAM OIDC provider.
        issuer: The issuer, with or without ``https://``.
        sa: The service account.
    """
    host = issuer.removeprefix("https://").rstrip("/")
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Federated": oidc_provider_arn},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {
                    "StringEquals": {
                        f"{host}:sub": f"system:serviceaccount:{sa.namespace}:{sa.name}",
                        f"{host}:aud": "sts.amazonaws.com",
                    }
                },
            }
        ],
    }


def pod_identity_trust_policy(cluster_name: str, sa: ServiceAccount) -> dict[str, Any]:
    """Trust policy for EKS Pod Identity, pinned to one cluster, namespace and SA.

    The association already binds the role to one service account; the session
    tags Pod Identity sets make the trust policy say so too, so a stray
    association elsewhere cannot use the role.
    """
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "pods.eks.amazonaws.com"},
                "Action": ["sts:AssumeRole", "sts:TagSession"],
                "Condition": {
                    "StringEquals": {
                        "aws:RequestTag/eks-cluster-name": cluster_name,
                        "aws:RequestTag/kubernetes-namespace": sa.namespace,
                        "aws:RequestTag/kubernetes-service-account": sa.name,
                    }
                },
            }
        ],
    }


def ec2_trust_policy() -> dict[str, Any]:
    """Trust policy of a node role (EC2 instances assume it)."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "ec2.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }


def trust_policy(identity: WorkloadIdentity, sa: ServiceAccount) -> pulumi.Output[str]:
    """The trust policy (JSON) of a role for ``sa`` under ``identity``."""
    identity.check()
    if identity.mode is IamMode.IRSA:
        return pulumi.Output.all(identity.oidc_provider_arn, identity.oidc_issuer).apply(
            lambda v: json.dumps(irsa_trust_policy(str(v[0]), str(v[1]), sa))
        )
    return pulumi.Output.from_input(identity.cluster_name).apply(
        lambda c: json.dumps(pod_identity_trust_policy(str(c), sa))
    )


def service_account_role(
    name: str,
    sa: ServiceAccount,
    identity: WorkloadIdentity,
    *,
    opts: pulumi.ResourceOptions,
    tags: dict[str, str] | None = None,
) -> aws.iam.Role:
    """A role only ``sa`` can assume (IRSA or Pod Identity, per ``identity.mode``)."""
    return aws.iam.Role(
        name,
        description=f"llm-endpoints {sa.namespace}/{sa.name}",
        assume_role_policy=trust_policy(identity, sa),
        tags=tags,
        name_prefix=rules.name_prefix_for("aws:iam/role:Role", name),
        opts=opts,
    )


def bind_service_account(
    name: str,
    sa: ServiceAccount,
    role: aws.iam.Role,
    identity: WorkloadIdentity,
    *,
    opts: pulumi.ResourceOptions,
) -> tuple[dict[str, Any], list[pulumi.Resource]]:
    """How a Helm chart's service account gets the role, and what to wait for.

    Returns:
        The chart's ``serviceAccount`` values (with the IRSA annotation), and
        the Pod Identity association to depend on (empty for IRSA).
    """
    if identity.mode is IamMode.IRSA:
        return {
            "create": True,
            "name": sa.name,
            "annotations": {"eks.amazonaws.com/role-arn": role.arn},
        }, []
    assoc = aws.eks.PodIdentityAssociation(
        name,
        cluster_name=identity.cluster_name,
        namespace=sa.namespace,
        service_account=sa.name,
        role_arn=role.arn,
        opts=opts,
    )
    return {"create": True, "name": sa.name}, [assoc]


def policy_file(package: str, filename: str) -> str:
    """The text of a policy data file shipped with a package (``components.addons``)."""
    return resources.files(package).joinpath("policies", filename).read_text()
