"""Karpenter: the controller, its interruption queue and rules, and its IAM role.

Everything Karpenter needs in AWS comes from upstream's getting-started
CloudFormation template for the pinned release, kept verbatim
(``policies/karpenter-cloudformation.yaml``): the controller's six policy
documents (merged into one inline policy of the controller's role), the
interruption queue's settings and policy, and the EventBridge rules that feed
it. Only the template's placeholders are filled in here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import cache
from typing import Any

import pulumi
import pulumi_aws as aws
import yaml

from components import _versions, rules
from components.addons.base import ADDON_NAMESPACE, SYSTEM_LABEL, Addon, ClusterContext
from components.iam import ServiceAccount, bind_service_account, policy_file, service_account_role

SERVICE_ACCOUNT = ServiceAccount(ADDON_NAMESPACE, "karpenter")
TEMPLATE = "karpenter-cloudformation.yaml"
#: The template's EventBridge rules, by the logical-name key each had before
#: the template was read (their resources keep those names).
RULE_KEYS: Mapping[str, str] = {
    "ScheduledChangeRule": "health",
    "SpotInterruptionRule": "spot",
    "RebalanceRule": "rebalance",
    "InstanceStateChangeRule": "state",
    "CapacityReservationInterruptionRule": "capacity-reservation",
}
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9:.]+)\}")


class _CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation's short-form tags (``!Sub``, ``!GetAtt``, ``!Ref``)."""


def _short_form(tag: str) -> Any:
    def construct(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> dict[str, Any]:
        return {f"Fn::{tag}": loader.construct_scalar(node)}

    return construct


for _tag in ("Sub", "GetAtt", "Ref"):
    _CfnLoader.add_constructor(f"!{_tag}", _short_form(_tag))


@cache
def template() -> dict[str, Any]:
    """The upstream template's ``Resources``."""
    doc = yaml.load(policy_file("components.addons", TEMPLATE), Loader=_CfnLoader)
    resources: dict[str, Any] = doc["Resources"]
    return resources


def substitute(text: str, values: Mapping[str, str]) -> str:
    """Fill ``${Name}`` placeholders; every one must have a value.

    Raises:
        KeyError: naming a placeholder the template uses but ``values`` lacks.
    """

    def fill(m: re.Match[str]) -> str:
        if m.group(1) not in values:
            raise KeyError(f"{TEMPLATE}: no value for ${{{m.group(1)}}}")
        return values[m.group(1)]

    return _PLACEHOLDER.sub(fill, text)


def controller_policy(values: Mapping[str, str]) -> dict[str, Any]:
    """The controller's permissions: every managed policy of the template, as one document.

    Args:
        values: ``AWS::Partition``, ``AWS::Region``, ``AWS::AccountId``,
            ``ClusterName``, ``KarpenterInterruptionQueue.Arn`` and
            ``KarpenterNodeRole.Arn``.
    """
    statements: list[dict[str, Any]] = []
    for res in template().values():
        if res["Type"] == "AWS::IAM::ManagedPolicy":
            doc = json.loads(substitute(res["Properties"]["PolicyDocument"]["Fn::Sub"], values))
            statements += doc["Statement"]
    return {"Version": "2012-10-17", "Statement": statements}


def interruption_rules() -> dict[str, dict[str, Any]]:
    """The EventBridge event patterns that feed the interruption queue, by key."""
    return {
        RULE_KEYS[name]: res["Properties"]["EventPattern"]
        for name, res in template().items()
        if res["Type"] == "AWS::Events::Rule"
    }


def _queue_policy(queue_arn: str) -> str:
    doc = json.loads(json.dumps(template()["KarpenterInterruptionQueuePolicy"]["Properties"]))
    policy = doc["PolicyDocument"]
    for st in policy["Statement"]:
        st["Resource"] = queue_arn  # the template's !GetAtt KarpenterInterruptionQueue.Arn
    return json.dumps(policy)


class Karpenter(Addon):
    """Karpenter's controller (Helm chart), interruption handling and IAM role.

    Args:
        ctx: The cluster.
        node_role: The IAM role of the nodes Karpenter launches (the cluster
            gives it an EC2_LINUX access entry).
    """

    TYPE = "llm-endpoints:addons:Karpenter"
    SUFFIX = "karpenter"

    def __init__(
        self,
        ctx: ClusterContext,
        *,
        node_role: aws.iam.Role,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(ctx, opts)
        name, child = ctx.prefix, self._child()
        queue_props = template()["KarpenterInterruptionQueue"]["Properties"]
        cluster_name = pulumi.Output.from_input(ctx.cluster_name)
        self.queue = aws.sqs.Queue(
            f"{name}-karpenter",
            # Karpenter's settings.interruptionQueue takes the queue name.
            name=cluster_name.apply(lambda c: f"{c}-karpenter"),
            message_retention_seconds=queue_props["MessageRetentionPeriod"],
            sqs_managed_sse_enabled=queue_props["SqsManagedSseEnabled"],
            opts=child,
        )
        aws.sqs.QueuePolicy(
            f"{name}-karpenter",
            queue_url=self.queue.url,
            policy=self.queue.arn.apply(_queue_policy),
            opts=child,
        )
        for key, pattern in interruption_rules().items():
            rule_name = f"{name}-karpenter-{key}"
            rule = aws.cloudwatch.EventRule(
                rule_name,
                name_prefix=rules.name_prefix_for("aws:cloudwatch/eventRule:EventRule", rule_name),
                description=f"Karpenter interruption: {pattern['detail-type'][0]}",
                event_pattern=json.dumps(pattern),
                opts=child,
            )
            aws.cloudwatch.EventTarget(
                f"{name}-karpenter-{key}",
                rule=rule.name,
                arn=self.queue.arn,
                target_id="KarpenterInterruptionQueue",
                opts=child,
            )

        role = service_account_role(f"{name}-karpenter", SERVICE_ACCOUNT, ctx.identity, opts=child)
        invoke = pulumi.InvokeOutputOptions(parent=self)
        policy = pulumi.Output.all(
            aws.get_partition_output(opts=invoke).partition,
            aws.get_region_output(opts=invoke).region,
            aws.get_caller_identity_output(opts=invoke).account_id,
            cluster_name,
            self.queue.arn,
            node_role.arn,
        ).apply(
            lambda v: json.dumps(
                controller_policy(
                    {
                        "AWS::Partition": v[0],
                        "AWS::Region": v[1],
                        "AWS::AccountId": v[2],
                        "ClusterName": v[3],
                        "KarpenterInterruptionQueue.Arn": v[4],
                        "KarpenterNodeRole.Arn": v[5],
                    }
                )
            )
        )
        aws.iam.RolePolicy(f"{name}-karpenter", role=role.id, policy=policy, opts=child)
        sa_values, deps = bind_service_account(
            f"{name}-karpenter", SERVICE_ACCOUNT, role, ctx.identity, opts=child
        )
        self._release(
            "karpenter",
            _versions.KARPENTER_CHART,
            _versions.KARPENTER_VERSION,
            ADDON_NAMESPACE,
            {
                "settings": {"clusterName": ctx.cluster_name, "interruptionQueue": self.queue.name},
                "serviceAccount": sa_values,
                # Keep the controller off the nodes it manages.
                "nodeSelector": {SYSTEM_LABEL: "system"},
                "controller": {
                    "resources": {
                        "requests": {"cpu": "250m", "memory": "512Mi"},
                        "limits": {"memory": "1Gi"},
                    }
                },
            },
            depends_on=deps,
        )
        self._done(queue_name=self.queue.name)
