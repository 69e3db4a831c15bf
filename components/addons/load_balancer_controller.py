"""The AWS Load Balancer Controller: ALBs for endpoints exposed through an Ingress.

Its IAM policy is upstream's ``docs/install/iam_policy.json`` for the chart's
app version, verbatim (``policies/aws-load-balancer-controller.json``):
mutations are limited to load balancers, target groups and security groups
tagged ``elbv2.k8s.aws/cluster``, i.e. those the controller created.
"""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from components import _versions
from components.addons.base import ADDON_NAMESPACE, Addon, ClusterContext
from components.iam import ServiceAccount, bind_service_account, policy_file, service_account_role

SERVICE_ACCOUNT = ServiceAccount(ADDON_NAMESPACE, "aws-load-balancer-controller")
POLICY_FILE = "aws-load-balancer-controller.json"


def controller_policy() -> str:
    """The controller's IAM policy document (JSON, as published)."""
    return policy_file("components.addons", POLICY_FILE)


class LoadBalancerController(Addon):
    """The controller's chart and its IAM role."""

    TYPE = "llm-endpoints:addons:LoadBalancerController"
    SUFFIX = "aws-load-balancer-controller"

    def __init__(self, ctx: ClusterContext, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(ctx, opts)
        if ctx.vpc_id is None:
            raise ValueError("vpc_id: the load balancer controller needs the cluster's VPC id")
        name, child = ctx.prefix, self._child()
        role = service_account_role(f"{name}-lbc", SERVICE_ACCOUNT, ctx.identity, opts=child)
        aws.iam.RolePolicy(f"{name}-lbc", role=role.id, policy=controller_policy(), opts=child)
        sa_values, deps = bind_service_account(
            f"{name}-lbc", SERVICE_ACCOUNT, role, ctx.identity, opts=child
        )
        region = aws.get_region_output(opts=pulumi.InvokeOutputOptions(parent=self)).region
        self._release(
            "aws-load-balancer-controller",
            _versions.AWS_LB_CONTROLLER_CHART,
            _versions.AWS_LB_CONTROLLER_VERSION,
            ADDON_NAMESPACE,
            {
                "clusterName": ctx.cluster_name,
                # Given explicitly: IMDS hop limit 1 hides them from pods.
                "region": region,
                "vpcId": ctx.vpc_id,
                "serviceAccount": sa_values,
            },
            repo=_versions.AWS_LB_CONTROLLER_REPO,
            depends_on=deps,
        )
        self._done()
