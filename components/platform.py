"""The platform stack's contract: what it exports, and what a shared cluster reads.

A ``shared``-mode :class:`~components.cluster.Cluster` reads exactly the
outputs in :data:`CONTRACT` from the platform stack, and
:func:`export_platform_outputs` writes exactly those: one table, so the two
cannot drift.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pulumi

from components.config import ClusterMode

if TYPE_CHECKING:
    from components.cluster import Cluster

OUT_KUBECONFIG = "kubeconfig"
OUT_CLUSTER_NAME = "clusterName"
OUT_OIDC_PROVIDER_ARN = "oidcProviderArn"
OUT_OIDC_ISSUER = "oidcIssuer"
OUT_NODE_ROLE_NAME = "nodeRoleName"
OUT_NODE_ROLE_ARN = "nodeRoleArn"
OUT_MANAGED_NODE_ROLE_ARN = "managedNodeRoleArn"
OUT_PRIVATE_SUBNET_IDS = "privateSubnetIds"
OUT_CLUSTER_SECURITY_GROUP_ID = "clusterSecurityGroupId"
OUT_VPC_ID = "vpcId"
OUT_AUTO_MODE = "autoMode"


@dataclass(frozen=True)
class Output:
    """One output of the contract.

    Attributes:
        attribute: The :class:`~components.cluster.Cluster` attribute it carries.
        required: A shared cluster cannot work without it (``require_output``).
    """

    attribute: str
    required: bool = False


CONTRACT: Mapping[str, Output] = {
    OUT_KUBECONFIG: Output("kubeconfig", required=True),
    OUT_CLUSTER_NAME: Output("cluster_name", required=True),
    OUT_OIDC_PROVIDER_ARN: Output("oidc_provider_arn"),
    OUT_OIDC_ISSUER: Output("oidc_issuer"),
    OUT_NODE_ROLE_NAME: Output("node_role_name"),
    OUT_NODE_ROLE_ARN: Output("node_role_arn"),
    OUT_MANAGED_NODE_ROLE_ARN: Output("managed_node_role_arn"),
    OUT_PRIVATE_SUBNET_IDS: Output("private_subnet_ids", required=True),
    OUT_CLUSTER_SECURITY_GROUP_ID: Output("cluster_security_group_id"),
    OUT_VPC_ID: Output("vpc_id"),
    OUT_AUTO_MODE: Output("auto_mode"),
}
PLATFORM_OUTPUTS: tuple[str, ...] = tuple(CONTRACT)


def kubeconfig_text(kubeconfig: Any) -> str:
    """pulumi_eks exports a JSON string; accept an object too."""
    return kubeconfig if isinstance(kubeconfig, str) else json.dumps(kubeconfig)


def read_platform(
    ref: pulumi.StackReference, *, declared_auto_mode: bool, platform_stack: str
) -> dict[str, pulumi.Output[Any]]:
    """The contract's outputs of a platform stack, by Cluster attribute.

    The cluster name fails the deployment when the platform's ``autoMode``
    contradicts what the endpoint declared (its pools were validated against
    the declaration).
    """

    def check_auto_mode(values: list[Any]) -> str:
        cluster_name, actual = values
        if actual is not None and bool(actual) != declared_auto_mode:
            raise ValueError(
                f"auto_mode: declared {declared_auto_mode} but platform stack "
                f"{platform_stack!r} reports autoMode={actual}"
            )
        return str(cluster_name)

    values = {
        out.attribute: ref.require_output(key) if out.required else ref.get_output(key)
        for key, out in CONTRACT.items()
        if key != OUT_AUTO_MODE
    }
    values["cluster_name"] = pulumi.Output.all(
        ref.require_output(OUT_CLUSTER_NAME), ref.get_output(OUT_AUTO_MODE)
    ).apply(check_auto_mode)
    return values


def export_platform_outputs(cluster: Cluster) -> None:
    """Export what shared-mode clusters read (call from the platform stack).

    Raises:
        ValueError: when ``cluster`` is not a dedicated cluster.
    """
    if cluster.mode is not ClusterMode.DEDICATED:
        raise ValueError(f"cluster: only a dedicated cluster is a platform, got {cluster.mode}")
    for key, out in CONTRACT.items():
        value = getattr(cluster, out.attribute)
        # Cluster-admin credentials: never in plain text in state or outputs.
        pulumi.export(key, pulumi.Output.secret(value) if key == OUT_KUBECONFIG else value)
