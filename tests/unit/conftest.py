"""Pulumi mocks for unit tests: every AWS/EKS/Kubernetes resource is recorded.

Use the ``mocks`` fixture, build components inside a test, and resolve outputs
with :func:`resolve`. ``mocks.by_type("aws:iam/role:Role")`` returns the
recorded resources (type, name, inputs) so tests assert on real properties.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pulumi
import pytest

from components.rules import AUTONAME_SUFFIX_LEN, AWS_NAME_LIMITS, NAME_PREFIX_MAX_LEN

ZONES = ["us-east-1a", "us-east-1b", "us-east-1c", "us-east-1d"]


def custom_model(model_id: str = "acme/other", **over: Any) -> dict[str, Any]:
    """A spec's ``custom_model``: a Mistral-7B-shaped dense model named ``model_id``."""
    return {
        "id": model_id,
        "params": 7.25e9,
        "layers": 32,
        "hidden_size": 4096,
        "heads": 32,
        "kv_heads": 8,
        "head_dim": 128,
        "intermediate_size": 14336,
        "vocab_size": 32768,
        "max_context": 32768,
        **over,
    }


#: What a platform stack exports (components.platform.CONTRACT), for shared clusters.
PLATFORM_STACK_OUTPUTS: dict[str, Any] = {
    "kubeconfig": {"apiVersion": "v1", "clusters": []},
    "clusterName": "llm-platform",
    "oidcProviderArn": "arn:aws:iam::123456789012:oidc-provider/oidc.eks",
    "oidcIssuer": "oidc.eks.us-east-1.amazonaws.com/id/ABC",
    "nodeRoleName": "llm-platform-karpenter-node",
    "nodeRoleArn": "arn:aws:iam::123456789012:role/llm-platform-karpenter-node",
    "managedNodeRoleArn": "arn:aws:iam::123456789012:role/llm-platform-managed",
    "privateSubnetIds": ["subnet-a", "subnet-b", "subnet-c"],
    "clusterSecurityGroupId": "sg-cluster",
    "vpcId": "vpc-123",
    "autoMode": False,
}


@dataclass
class Recorded:
    """One registered resource as the engine saw it."""

    typ: str
    name: str
    inputs: dict[str, Any]
    provider: str | None


class RecordingMocks(pulumi.runtime.Mocks):
    """Records resources; answers the data-source calls the components make."""

    def __init__(self, stack_outputs: dict[str, Any] | None = None) -> None:
        self.resources: list[Recorded] = []
        self.calls: list[tuple[str, dict[str, Any]]] = []
        #: Outputs a ``pulumi.StackReference`` sees (set per test for shared clusters).
        self.stack_outputs: dict[str, Any] = dict(stack_outputs or {})
        #: AWS resources whose auto-generated name would break the service's limit.
        self.name_violations: list[str] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.resources.append(Recorded(args.typ, args.name, dict(args.inputs), args.provider))
        limit = AWS_NAME_LIMITS.get(args.typ)
        # Pulumi auto-names what has no explicit name: logical name + "-" + 7 hex.
        auto_named = not args.inputs.get("name") and not args.inputs.get("namePrefix")
        if limit is not None and auto_named and len(args.name) + AUTONAME_SUFFIX_LEN > limit:
            self.name_violations.append(f"{args.typ} {args.name!r}: auto-name over {limit}")
        if len(args.inputs.get("namePrefix") or "") > NAME_PREFIX_MAX_LEN:
            self.name_violations.append(f"{args.typ} {args.name!r}: name prefix over 38")
        outputs = dict(args.inputs)
        rid = f"{args.name}-id"
        if args.typ.startswith("aws:"):
            service = args.typ.split(":")[1].split("/")[0]
            outputs.setdefault("arn", f"arn:aws:{service}:us-east-1:123456789012:{args.name}")
            if args.typ in AWS_NAME_LIMITS and auto_named:
                # What Pulumi's auto-naming gives the resource (a fixed suffix here).
                outputs["name"] = f"{args.name}-0a1b2c3"
        if args.typ == "aws:eks/cluster:Cluster":
            outputs.setdefault("endpoint", "https://ABC.gr7.us-east-1.eks.amazonaws.com")
            outputs.setdefault(
                "identities",
                [{"oidcs": [{"issuer": "https://oidc.eks.us-east-1.amazonaws.com/id/ABC"}]}],
            )
        if args.typ == "eks:index:Cluster":
            # pulumi_eks.Cluster is a remote component: mock its plain outputs.
            issuer = "oidc.eks.us-east-1.amazonaws.com/id/ABC"
            outputs.setdefault("kubeconfigJson", '{"apiVersion": "v1", "kind": "Config"}')
            outputs.setdefault(
                "oidcProviderArn", f"arn:aws:iam::123456789012:oidc-provider/{issuer}"
            )
            outputs.setdefault("oidcIssuer", issuer)
            outputs.setdefault("oidcProviderUrl", f"https://{issuer}")
            outputs.setdefault("clusterSecurityGroupId", "sg-cluster")
            outputs.setdefault("nodeSecurityGroupId", "sg-node")
            outputs.setdefault("autoModeNodeRoleName", "")
        if args.typ == "aws:ec2/placementGroup:PlacementGroup":
            # The engine auto-names it; the launch template refers to the name.
            outputs["name"] = f"{args.name}-pg"
        if args.typ == "pulumi:pulumi:StackReference":
            outputs["outputs"] = dict(self.stack_outputs)
            outputs.setdefault("secretOutputNames", [])
        if args.typ == "aws:fsx/lustreFileSystem:LustreFileSystem":
            outputs.setdefault("dnsName", f"{rid}.fsx.us-east-1.amazonaws.com")
            outputs.setdefault("mountName", "abcdefgh")
        return rid, outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
        self.calls.append((args.token, dict(args.args)))
        if args.token == "aws:index/getAvailabilityZones:getAvailabilityZones":
            return {
                "names": ZONES,
                "zoneIds": [f"use1-az{i}" for i in range(1, 5)],
                "id": "us-east-1",
            }
        if args.token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {
                "accountId": "123456789012",
                "arn": "arn:aws:iam::123456789012:user/test",
                "userId": "AIDTEST",
                "id": "123456789012",
            }
        if args.token in ("aws:index/getRegion:getRegion", "aws:index/region:getRegion"):
            return {"name": "us-east-1", "region": "us-east-1", "id": "us-east-1"}
        if args.token == "aws:index/getPartition:getPartition":
            return {"partition": "aws", "dnsSuffix": "amazonaws.com", "id": "aws"}
        if args.token == "aws:iam/getPolicyDocument:getPolicyDocument":
            return {"json": "{}", "id": "doc"}
        return {}

    def by_type(self, typ: str) -> list[Recorded]:
        """Recorded resources of one type token."""
        return [r for r in self.resources if r.typ == typ]

    def one(self, typ: str) -> Recorded:
        """The single recorded resource of a type (fails if not exactly one)."""
        found = self.by_type(typ)
        assert len(found) == 1, f"expected one {typ}, got {[r.name for r in found]}"
        return found[0]


@pytest.fixture
def mocks() -> Iterator[RecordingMocks]:
    """Fresh mocks for one test; the Pulumi runtime is reset around it."""
    m = RecordingMocks()
    pulumi.runtime.set_mocks(m, project="llm-endpoints", stack="test", preview=False)
    yield m
    pulumi.runtime.settings.reset_options()


def resolve(output: Any) -> Any:
    """Wait for an Output (or plain value) and return its value."""
    if not isinstance(output, pulumi.Output):
        return output
    loop = asyncio.get_event_loop()
    return loop.run_until_complete(output.future())


def settle() -> None:
    """Let every registration finish so ``mocks.resources`` is complete.

    Registrations run on the SDK's thread pool, so turning the event loop is
    not enough: wait for the outstanding RPCs themselves.
    """
    loop = asyncio.get_event_loop()
    loop.run_until_complete(pulumi.runtime.stack.wait_for_rpcs())
