"""AcceleratorPool: NodePools, EC2NodeClass, managed EFA groups, constraints, validation."""

from __future__ import annotations

import asyncio
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pytest

from components import _versions
from components.accelerator_pool import (
    ACCELERATOR_LABEL,
    DO_NOT_DISRUPT,
    POOL_LABEL,
    AcceleratorPool,
    AcceleratorPoolArgs,
    InstanceSelection,
)
from components.catalog import Accelerator
from components.config import CapacityType, PoolMode
from tests.unit.conftest import RecordingMocks, resolve, settle

CR = {
    "NodePool": "kubernetes:karpenter.sh/v1:NodePool",
    "EC2NodeClass": "kubernetes:karpenter.k8s.aws/v1:EC2NodeClass",
}
NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
PLACEMENT = "aws:ec2/placementGroup:PlacementGroup"
SUBNETS = ["subnet-a", "subnet-b", "subnet-c"]
NV, NE = Accelerator.NVIDIA, Accelerator.NEURON


def drain() -> None:
    """Wait for every registration (they run on a thread pool) and output."""
    settle()
    asyncio.get_event_loop().run_until_complete(pulumi.runtime.stack.wait_for_rpcs())


def karpenter(**kw: Any) -> AcceleratorPoolArgs:
    base: dict[str, Any] = dict(
        mode=PoolMode.KARPENTER,
        accelerator=NV,
        instance_types=("g5.xlarge",),
        cluster_name="llm-platform",
        node_role_name="karpenter-node",
        max_nodes=4,
    )
    return AcceleratorPoolArgs(**{**base, **kw})


def managed(**kw: Any) -> AcceleratorPoolArgs:
    base: dict[str, Any] = dict(
        mode=PoolMode.MANAGED,
        accelerator=NV,
        instance_types=("p4d.24xlarge",),
        max_nodes=2,
        efa=True,
        cluster_name="llm-platform",
        node_role_arn="arn:aws:iam::123456789012:role/managed-node",
        subnet_ids=SUBNETS,
        security_group_ids=["sg-cluster"],
    )
    return AcceleratorPoolArgs(**{**base, **kw})


def build(args: AcceleratorPoolArgs, name: str = "pool") -> AcceleratorPool:
    pool = AcceleratorPool(name, args)
    drain()
    return pool


def kind(mocks: RecordingMocks, k: str) -> dict[str, Any]:
    return mocks.one(CR[k]).inputs


def tolerates(toleration: dict[str, str], taint: dict[str, str]) -> bool:
    """Kubernetes' toleration matching rule (v1.Toleration.ToleratesTaint)."""
    if toleration.get("effect") and toleration["effect"] != taint["effect"]:
        return False
    if toleration.get("key") != taint["key"]:
        return False
    if toleration.get("operator", "Equal") == "Exists":
        return True
    return toleration.get("value") == taint.get("value")


def requirement(reqs: list[dict[str, Any]], key: str) -> dict[str, Any]:
    found = [r for r in reqs if r["key"] == key]
    assert len(found) == 1, key
    return found[0]


# -- karpenter ----------------------------------------------------------------------


def test_karpenter_nvidia_nodepool_taints_match_exposed_tolerations(
    mocks: RecordingMocks,
) -> None:
    pool = build(karpenter())
    spec = kind(mocks, "NodePool")["spec"]
    taints = spec["template"]["spec"]["taints"]
    assert taints == [{"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}]
    assert taints == pool.taints
    assert pool.tolerations == [
        {"key": "nvidia.com/gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"}
    ]
    # Every taint is tolerated by the exposed tolerations, and nothing else is.
    assert all(any(tolerates(t, taint) for t in pool.tolerations) for taint in taints)
    assert len(pool.tolerations) == len(taints)
    assert pool.resource_name == "nvidia.com/gpu"


def test_karpenter_nodepool_selects_by_pool_label(mocks: RecordingMocks) -> None:
    pool = build(karpenter(labels={"team": "research"}))
    labels = kind(mocks, "NodePool")["spec"]["template"]["metadata"]["labels"]
    assert pool.node_selector == {POOL_LABEL: "pool"}
    assert pool.node_selector.items() <= labels.items()
    assert labels == {"team": "research", POOL_LABEL: "pool", ACCELERATOR_LABEL: "nvidia"}
    assert pool.pod_annotations == {DO_NOT_DISRUPT: "true"}


def test_karpenter_nodepool_requirements_limits_and_disruption(mocks: RecordingMocks) -> None:
    build(
        karpenter(
            instance_types=("g5.12xlarge", "g6e.12xlarge"),
            capacity_types=(CapacityType.SPOT, CapacityType.ON_DEMAND),
            max_nodes=3,
        )
    )
    pool = kind(mocks, "NodePool")
    assert pool["metadata"]["name"] == "pool"
    spec = pool["spec"]
    reqs = spec["template"]["spec"]["requirements"]
    assert requirement(reqs, "node.kubernetes.io/instance-type")["values"] == [
        "g5.12xlarge",
        "g6e.12xlarge",
    ]
    assert requirement(reqs, "karpenter.sh/capacity-type") == {
        "key": "karpenter.sh/capacity-type",
        "operator": "In",
        "values": ["spot", "on-demand"],
    }
    assert requirement(reqs, "kubernetes.io/arch")["values"] == ["amd64"]
    # 3 nodes x 4 GPUs.
    assert spec["limits"] == {"nvidia.com/gpu": "12"}
    disruption = spec["disruption"]
    assert disruption["consolidationPolicy"] == "WhenEmpty"
    assert disruption["consolidateAfter"] == "10m"
    assert {"nodes": "0", "reasons": ["Drifted"]} in disruption["budgets"]
    assert spec["template"]["spec"]["expireAfter"] == "Never"
    assert spec["template"]["spec"]["nodeClassRef"] == {
        "group": "karpenter.k8s.aws",
        "kind": "EC2NodeClass",
        "name": "pool",
    }


def test_karpenter_category_selection(mocks: RecordingMocks) -> None:
    build(
        karpenter(instance_types=("g5.xlarge", "g6.xlarge"), selection=InstanceSelection.CATEGORY)
    )
    reqs = kind(mocks, "NodePool")["spec"]["template"]["spec"]["requirements"]
    assert requirement(reqs, "karpenter.k8s.aws/instance-category")["values"] == ["g"]
    assert requirement(reqs, "karpenter.k8s.aws/instance-generation") == {
        "key": "karpenter.k8s.aws/instance-generation",
        "operator": "Gt",
        "values": ["4"],
    }
    assert not [r for r in reqs if r["key"] == "node.kubernetes.io/instance-type"]


def test_ec2_node_class_imdsv2_discovery_ami_and_root_volume(mocks: RecordingMocks) -> None:
    build(karpenter())
    node_class = kind(mocks, "EC2NodeClass")
    assert node_class["metadata"]["name"] == "pool"
    spec = node_class["spec"]
    assert spec["metadataOptions"]["httpTokens"] == "required"
    assert spec["metadataOptions"]["httpPutResponseHopLimit"] == 1
    discovery = [{"tags": {"karpenter.sh/discovery": "llm-platform"}}]
    assert spec["subnetSelectorTerms"] == discovery
    assert spec["securityGroupSelectorTerms"] == discovery
    assert spec["role"] == "karpenter-node"
    assert spec["amiSelectorTerms"] == [{"alias": _versions.KARPENTER_AMI_ALIAS}]
    assert not _versions.KARPENTER_AMI_ALIAS.endswith("@latest")
    (bdm,) = spec["blockDeviceMappings"]
    assert bdm["deviceName"] == "/dev/xvda"
    assert bdm["ebs"]["volumeSize"] == "200Gi"
    assert bdm["ebs"]["volumeType"] == "gp3"
    assert bdm["ebs"]["encrypted"] is True


def test_karpenter_neuron_pool(mocks: RecordingMocks) -> None:
    pool = build(karpenter(accelerator=NE, instance_types=("inf2.8xlarge",), max_nodes=2))
    spec = kind(mocks, "NodePool")["spec"]
    assert spec["template"]["spec"]["taints"] == [
        {"key": "aws.amazon.com/neuron", "value": "true", "effect": "NoSchedule"}
    ]
    assert pool.resource_name == "aws.amazon.com/neuron"
    assert spec["limits"] == {"aws.amazon.com/neuron": "2"}
    assert pool.tolerations == [
        {
            "key": "aws.amazon.com/neuron",
            "operator": "Equal",
            "value": "true",
            "effect": "NoSchedule",
        }
    ]
    assert spec["template"]["metadata"]["labels"][ACCELERATOR_LABEL] == "neuron"


def test_custom_taint_key_flows_to_tolerations(mocks: RecordingMocks) -> None:
    pool = build(karpenter(taint_key="example.com/gpu-pool"))
    taints = kind(mocks, "NodePool")["spec"]["template"]["spec"]["taints"]
    assert taints[0]["key"] == "example.com/gpu-pool"
    assert pool.tolerations[0]["key"] == "example.com/gpu-pool"
    assert all(any(tolerates(t, taint) for t in pool.tolerations) for taint in taints)


# -- auto-mode ----------------------------------------------------------------------


def test_auto_mode_pool_matches_the_gpt_oss_reference(mocks: RecordingMocks) -> None:
    pool = build(
        AcceleratorPoolArgs(
            mode=PoolMode.AUTO_MODE,
            accelerator=NV,
            instance_types=("g5.xlarge", "g6e.xlarge"),
            capacity_types=(CapacityType.SPOT, CapacityType.ON_DEMAND),
            cluster_auto_mode=True,
            max_nodes=2,
        )
    )
    assert not mocks.by_type(CR["EC2NodeClass"])
    spec = kind(mocks, "NodePool")["spec"]
    template = spec["template"]["spec"]
    assert template["nodeClassRef"] == {
        "group": "eks.amazonaws.com",
        "kind": "NodeClass",
        "name": "default",
    }
    reqs = template["requirements"]
    assert requirement(reqs, "eks.amazonaws.com/instance-category") == {
        "key": "eks.amazonaws.com/instance-category",
        "operator": "In",
        "values": ["g"],
    }
    assert requirement(reqs, "eks.amazonaws.com/instance-generation") == {
        "key": "eks.amazonaws.com/instance-generation",
        "operator": "Gt",
        "values": ["4"],
    }
    assert requirement(reqs, "karpenter.sh/capacity-type")["values"] == ["spot", "on-demand"]
    assert template["taints"] == pool.taints
    assert spec["limits"] == {"nvidia.com/gpu": "2"}
    # Auto Mode caps node lifetime at 21 days; the default stays under it.
    assert template["expireAfter"] == "336h"


# -- managed ------------------------------------------------------------------------


def test_managed_efa_group_has_efa_interfaces_placement_group_and_one_az(
    mocks: RecordingMocks,
) -> None:
    pool = build(managed())
    placement = mocks.one(PLACEMENT).inputs
    assert placement["strategy"] == "cluster"
    lt = mocks.one(LAUNCH_TEMPLATE).inputs
    nics = lt["networkInterfaces"]
    # p4d.24xlarge: 4 EFA interfaces, one per network card.
    assert [n["interfaceType"] for n in nics] == ["efa"] * 4
    assert [n["networkCardIndex"] for n in nics] == [0, 1, 2, 3]
    assert [n["deviceIndex"] for n in nics] == [0, 1, 1, 1]
    assert all(n["securityGroups"] == ["sg-cluster"] for n in nics)
    assert lt["placement"] == {"groupName": "pool-placement-pg"}
    assert lt["metadataOptions"] == {
        "httpEndpoint": "enabled",
        "httpTokens": "required",
        "httpPutResponseHopLimit": 1,
    }
    ebs = lt["blockDeviceMappings"][0]["ebs"]
    assert (ebs["volumeSize"], ebs["volumeType"], ebs["encrypted"]) == (200, "gp3", "true")

    ng = mocks.one(NODE_GROUP).inputs
    assert ng["subnetIds"] == ["subnet-a"]
    assert ng["amiType"] == "AL2023_x86_64_NVIDIA"
    assert ng["instanceTypes"] == ["p4d.24xlarge"]
    assert ng["capacityType"] == "ON_DEMAND"
    assert ng["scalingConfig"] == {"minSize": 2, "desiredSize": 2, "maxSize": 2}
    assert ng["launchTemplate"]["id"] == "pool-lt-id"
    assert ng["taints"] == [{"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"}]
    assert ng["labels"][POOL_LABEL] == "pool"
    assert pool.efa is True
    assert pool.node_selector == {POOL_LABEL: "pool"}
    assert pool.pod_annotations == {}
    # The managed taint, spelled the Kubernetes way, is what the tolerations match.
    k8s_taints = [{**t, "effect": "NoSchedule"} for t in ng["taints"]]
    assert k8s_taints == pool.taints


def test_managed_subnet_index_picks_the_az(mocks: RecordingMocks) -> None:
    build(managed(subnet_index=2))
    assert mocks.one(NODE_GROUP).inputs["subnetIds"] == ["subnet-c"]


def test_managed_neuron_single_node_without_efa(mocks: RecordingMocks) -> None:
    pool = build(
        managed(
            accelerator=NE,
            instance_types=("inf2.48xlarge",),
            max_nodes=1,
            efa=False,
            capacity_types=(CapacityType.SPOT,),
        )
    )
    assert not mocks.by_type(PLACEMENT)
    lt = mocks.one(LAUNCH_TEMPLATE).inputs
    assert "networkInterfaces" not in lt
    assert lt["vpcSecurityGroupIds"] == ["sg-cluster"]
    ng = mocks.one(NODE_GROUP).inputs
    assert ng["amiType"] == "AL2023_x86_64_NEURON"
    assert ng["capacityType"] == "SPOT"
    assert ng["taints"][0]["key"] == "aws.amazon.com/neuron"
    assert pool.resource_name == "aws.amazon.com/neuron"


# -- none ---------------------------------------------------------------------------


def test_none_mode_creates_nothing_but_exposes_constraints(mocks: RecordingMocks) -> None:
    pool = build(AcceleratorPoolArgs(mode=PoolMode.NONE, accelerator=NV))
    assert [r.typ for r in mocks.resources] == [AcceleratorPool.TYPE]
    assert pool.node_selector == {}
    assert pool.tolerations == [
        {"key": "nvidia.com/gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"}
    ]
    assert pool.resource_name == "nvidia.com/gpu"
    assert pool.node_pool_name is None and pool.node_group_name is None


# -- structure ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        karpenter(),
        managed(),
        AcceleratorPoolArgs(
            mode=PoolMode.AUTO_MODE,
            accelerator=NV,
            instance_types=("g6.xlarge",),
            cluster_auto_mode=True,
        ),
    ],
    ids=["karpenter", "managed", "auto-mode"],
)
def test_every_child_is_parented_to_the_pool(
    mocks: RecordingMocks, args: AcceleratorPoolArgs
) -> None:
    pool = build(args)
    children = {c._name for c in pool._childResources}
    recorded = {r.name for r in mocks.resources if r.typ != AcceleratorPool.TYPE}
    assert recorded and recorded == children
    assert all(name.startswith("pool-") for name in children)


def test_depends_on_is_forwarded_to_children(
    mocks: RecordingMocks, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Children do not inherit a component's depends_on; a NodePool must still
    # wait for whatever installs its CRD (the Karpenter release).
    captured: dict[str, pulumi.ResourceOptions] = {}
    real = k8s.apiextensions.CustomResource

    def spy(name: str, *a: Any, opts: pulumi.ResourceOptions, **kw: Any) -> Any:
        captured[name] = opts
        return real(name, *a, opts=opts, **kw)

    monkeypatch.setattr(k8s.apiextensions, "CustomResource", spy)
    gate = pulumi.CustomResource("test:index:Gate", "gate", {})
    AcceleratorPool("pool", karpenter(), pulumi.ResourceOptions(depends_on=[gate]))
    drain()
    node_class_deps = list(captured["pool-nodeclass"].depends_on)  # type: ignore[arg-type]
    node_pool_deps = list(captured["pool-nodepool"].depends_on)  # type: ignore[arg-type]
    assert node_class_deps == [gate]
    assert node_pool_deps[0] is gate
    assert [d._name for d in node_pool_deps[1:]] == ["pool-nodeclass"]


def test_outputs_registered_once(mocks: RecordingMocks, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []
    original = AcceleratorPool.register_outputs

    def spy(self: AcceleratorPool, outputs: dict[str, Any]) -> None:
        calls.append(outputs)
        original(self, outputs)

    monkeypatch.setattr(AcceleratorPool, "register_outputs", spy)
    pool = build(managed())
    assert len(calls) == 1
    out = calls[0]
    assert out["resourceName"] == "nvidia.com/gpu"
    assert out["tolerations"] == pool.tolerations
    assert out["nodeSelector"] == {POOL_LABEL: "pool"}
    assert out["efa"] is True
    assert "nodeGroupName" in out
    resolve(out["nodeGroupName"])


# -- validation ---------------------------------------------------------------------

BAD = [
    (karpenter(instance_types=("inf2.8xlarge",)), "instance_types", "neuron accelerators"),
    (
        karpenter(accelerator=NE, instance_types=("g5.xlarge",)),
        "instance_types",
        "nvidia accelerators",
    ),
    (karpenter(instance_types=("g5.mega",)), "instance_types", "unknown instance type"),
    (karpenter(instance_types=()), "instance_types", "at least one"),
    (
        AcceleratorPoolArgs(mode=PoolMode.AUTO_MODE, accelerator=NV, instance_types=("g5.xlarge",)),
        "mode",
        "Auto Mode cluster",
    ),
    (karpenter(cluster_auto_mode=True), "mode", "Auto Mode cluster provisions"),
    (
        AcceleratorPoolArgs(
            mode=PoolMode.AUTO_MODE,
            accelerator=NV,
            cluster_auto_mode=True,
            instance_types=("p4de.24xlarge",),
        ),
        "instance_types",
        "not offered",
    ),
    (
        AcceleratorPoolArgs(
            mode=PoolMode.AUTO_MODE,
            accelerator=NV,
            cluster_auto_mode=True,
            instance_types=("p5en.48xlarge",),
        ),
        "instance_types",
        "not offered",
    ),
    (managed(instance_types=("g5.48xlarge",)), "efa", "no Elastic Fabric Adapter"),
    (managed(instance_types=("g5.48xlarge",), efa=False), "instance_types", "EFA-capable"),
    (managed(efa=False), "efa", "multi-node"),
    (karpenter(efa=True, instance_types=("p5.48xlarge",)), "efa", "mode 'managed'"),
    (
        managed(capacity_types=(CapacityType.SPOT, CapacityType.ON_DEMAND)),
        "capacity_types",
        "exactly one",
    ),
    (managed(subnet_ids=None), "subnet_ids", "required"),
    (managed(security_group_ids=None), "security_group_ids", "required"),
    (managed(node_role_arn=None), "node_role_arn", "required"),
    (karpenter(cluster_name=None), "cluster_name", "discovery"),
    (karpenter(node_role_name=None), "node_role_name", "node IAM role"),
    (karpenter(ami_alias="al2023@latest"), "ami_alias", "pin"),
    (karpenter(root_volume_gib=10), "root_volume_gib", "20..16384"),
    (karpenter(max_nodes=0), "max_nodes", "at least 1"),
    (karpenter(capacity_types=()), "capacity_types", "one or more"),
    (karpenter(labels={POOL_LABEL: "other"}), "labels", "set by the pool"),
    (karpenter(labels={"bad key!": "x"}), "labels", "not a valid"),
    (karpenter(taint_key="not a key"), "taint_key", "qualified"),
    (karpenter(consolidate_after="soon"), "consolidate_after", "duration"),
    (karpenter(accelerator="amd"), "accelerator", "not one of"),
    (
        AcceleratorPoolArgs(
            mode=PoolMode.AUTO_MODE,
            accelerator=NV,
            cluster_auto_mode=True,
            instance_types=("g5.xlarge",),
            expire_after="Never",
        ),
        "expire_after",
        "at most 504h",
    ),
    (
        AcceleratorPoolArgs(
            mode=PoolMode.AUTO_MODE,
            accelerator=NV,
            cluster_auto_mode=True,
            instance_types=("g5.xlarge",),
            expire_after="600h",
        ),
        "expire_after",
        "at most 504h",
    ),
]


@pytest.mark.parametrize(("args", "field", "why"), BAD)
def test_bad_args_fail_at_construction_naming_the_field(
    mocks: RecordingMocks, args: AcceleratorPoolArgs, field: str, why: str
) -> None:
    with pytest.raises(ValueError) as err:
        AcceleratorPool("pool", args)
    assert str(err.value).startswith(f"{field}: "), str(err.value)
    assert why in str(err.value)
    drain()
    assert mocks.resources == []


def test_bad_name_fails(mocks: RecordingMocks) -> None:
    with pytest.raises(ValueError, match=r"^name: 'Pool_1'"):
        AcceleratorPool("Pool_1", karpenter())
    drain()
    assert mocks.resources == []


KWOK_CLASS = {"group": "karpenter.kwok.sh", "kind": "KWOKNodeClass", "name": "default"}


def test_a_given_node_class_is_referenced_not_created(mocks: RecordingMocks) -> None:
    """An existing cluster's Karpenter has its node classes: no EC2NodeClass (nor
    its role and discovery tags) is needed."""
    build(karpenter(cluster_name=None, node_role_name=None, node_class=KWOK_CLASS))
    assert kind(mocks, "NodePool")["spec"]["template"]["spec"]["nodeClassRef"] == KWOK_CLASS
    assert not mocks.by_type(CR["EC2NodeClass"])


@pytest.mark.parametrize(
    ("ref", "field"),
    [
        ({"group": "karpenter.kwok.sh", "kind": "KWOKNodeClass"}, "node_class"),
        ({**KWOK_CLASS, "group": "kwok"}, "node_class.group"),
        ({**KWOK_CLASS, "kind": "kwok-class"}, "node_class.kind"),
        ({**KWOK_CLASS, "name": "Default!"}, "node_class.name"),
    ],
)
def test_bad_node_class_refs_name_the_field(
    mocks: RecordingMocks, ref: dict[str, str], field: str
) -> None:
    with pytest.raises(ValueError, match=rf"^{field}:"):
        build(karpenter(node_class=ref))
    assert not mocks.resources


def test_karpenter_pools_keep_their_nodes_under_serving_pods(mocks: RecordingMocks) -> None:
    assert build(karpenter()).pod_annotations == {"karpenter.sh/do-not-disrupt": "true"}


def test_auto_mode_pools_ask_only_for_labels_auto_mode_supports(mocks: RecordingMocks) -> None:
    build(karpenter(mode=PoolMode.AUTO_MODE, cluster_auto_mode=True))
    keys = {r["key"] for r in kind(mocks, "NodePool")["spec"]["template"]["spec"]["requirements"]}
    assert "kubernetes.io/os" not in keys and "kubernetes.io/arch" in keys
