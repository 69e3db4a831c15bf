"""Cluster component: every mode, the network, IAM scoping, add-ons, validation."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml

from components import _versions
from components import platform as P
from components.accelerator_pool import ACCELERATOR_LABEL
from components.addons import ADDON_SERVICE_ACCOUNTS, ADDONS
from components.cluster import Addons, Cluster, ClusterArgs
from components.config import ClusterMode, ClusterSpec, PlatformSpec
from components.iam import IamMode
from components.network import DISCOVERY_TAG
from tests.unit.conftest import ZONES, RecordingMocks, resolve, settle

ISSUER = "oidc.eks.us-east-1.amazonaws.com/id/ABC"
OIDC_ARN = f"arn:aws:iam::123456789012:oidc-provider/{ISSUER}"
ALL_ADDONS = Addons(
    neuron=True,
    efa_device_plugin=True,
    fsx_csi=True,
    mountpoint_s3_csi=True,
    efs_csi=True,
    leader_worker_set=True,
    kuberay=True,
    dcgm_exporter=True,
    s3_bucket_arns=("arn:aws:s3:::model-weights",),
)
RELEASE = "kubernetes:helm.sh/v3:Release"
ROLE = "aws:iam/role:Role"
STACK_FILE = Path(__file__).resolve().parents[2] / "stacks" / "Pulumi.platform.yaml"


def drain(mocks: RecordingMocks) -> None:
    """Wait until every registration and output has finished.

    Registrations run on a thread pool, so turning the event loop (``settle``)
    is not enough; this waits for the runtime's outstanding RPCs and outputs.
    """
    settle()
    asyncio.get_event_loop().run_until_complete(pulumi.runtime.stack.wait_for_rpcs())


def dedicated(mocks: RecordingMocks, name: str = "plat", **kw: Any) -> Cluster:
    cluster = Cluster(name, ClusterArgs(mode=ClusterMode.DEDICATED, **kw))
    drain(mocks)
    return cluster


def releases(mocks: RecordingMocks) -> dict[str, dict[str, Any]]:
    return {r.name: r.inputs for r in mocks.by_type(RELEASE)}


def roles(mocks: RecordingMocks) -> dict[str, dict[str, Any]]:
    return {r.name: r.inputs for r in mocks.by_type(ROLE)}


def trust(role_inputs: dict[str, Any]) -> dict[str, Any]:
    doc = json.loads(role_inputs["assumeRolePolicy"])
    assert len(doc["Statement"]) == 1
    return doc["Statement"][0]


SECRET_SIG = "4dabf18193072939515e22adb298388d"  # Pulumi's secret envelope marker


def unsecret(value: Any) -> Any:
    """The plaintext of a secret input, failing if the input is not secret."""
    assert isinstance(value, dict) and SECRET_SIG in value, f"not a secret: {value!r}"
    return value["value"]


def as_json(value: Any) -> Any:
    """Provider inputs that look like JSON reach the mocks decoded or not."""
    return json.loads(value) if isinstance(value, str) else value


def platform_stack_outputs(**over: Any) -> dict[str, Any]:
    out = {
        P.OUT_KUBECONFIG: '{"apiVersion": "v1", "kind": "Config"}',
        P.OUT_CLUSTER_NAME: "llm-platform",
        P.OUT_OIDC_PROVIDER_ARN: OIDC_ARN,
        P.OUT_OIDC_ISSUER: ISSUER,
        P.OUT_NODE_ROLE_NAME: "karpenter-node",
        P.OUT_NODE_ROLE_ARN: "arn:aws:iam::123456789012:role/karpenter-node",
        P.OUT_MANAGED_NODE_ROLE_ARN: "arn:aws:iam::123456789012:role/managed-node",
        P.OUT_PRIVATE_SUBNET_IDS: ["subnet-a", "subnet-b", "subnet-c"],
        P.OUT_CLUSTER_SECURITY_GROUP_ID: "sg-cluster",
        P.OUT_VPC_ID: "vpc-1",
        P.OUT_AUTO_MODE: False,
    }
    out.update(over)
    return out


# -- dedicated: network -------------------------------------------------------------


def test_dedicated_vpc_spans_three_azs_with_tagged_subnets(mocks: RecordingMocks) -> None:
    dedicated(mocks)
    subnets = {r.name: r.inputs for r in mocks.by_type("aws:ec2/subnet:Subnet")}
    private = [subnets[f"plat-private-{i}"] for i in range(3)]
    public = [subnets[f"plat-public-{i}"] for i in range(3)]
    assert len(subnets) == 6
    assert [s["availabilityZone"] for s in private] == ZONES[:3]
    assert [s["availabilityZone"] for s in public] == ZONES[:3]
    for s in private:
        assert s["tags"]["kubernetes.io/role/internal-elb"] == "1"
        assert s["tags"][DISCOVERY_TAG] == "plat"
        assert "kubernetes.io/role/elb" not in s["tags"]
        assert not s.get("mapPublicIpOnLaunch")
    for s in public:
        assert s["tags"]["kubernetes.io/role/elb"] == "1"
        # Karpenter must never find a public subnet.
        assert DISCOVERY_TAG not in s["tags"]
    cidrs = [s["cidrBlock"] for s in private + public]
    assert len(set(cidrs)) == 6
    assert cidrs[:3] == ["10.0.0.0/19", "10.0.32.0/19", "10.0.64.0/19"]


def test_dedicated_private_subnets_route_through_nat(mocks: RecordingMocks) -> None:
    dedicated(mocks)
    nat = mocks.one("aws:ec2/natGateway:NatGateway")
    assert nat.inputs["subnetId"] == "plat-public-0-id"
    tables = {r.name: r.inputs for r in mocks.by_type("aws:ec2/routeTable:RouteTable")}
    assert tables["plat-private-rt"]["routes"][0]["natGatewayId"] == "plat-nat-id"
    assert tables["plat-public-rt"]["routes"][0]["gatewayId"] == "plat-igw-id"
    assocs = {
        r.name: r.inputs
        for r in mocks.by_type("aws:ec2/routeTableAssociation:RouteTableAssociation")
    }
    assert assocs["plat-private-1"]["routeTableId"] == "plat-private-rt-id"


def test_dedicated_two_azs(mocks: RecordingMocks) -> None:
    cluster = dedicated(mocks, availability_zones=2)
    assert len(mocks.by_type("aws:ec2/subnet:Subnet")) == 4
    assert resolve(cluster.private_subnet_ids) == ["plat-private-0-id", "plat-private-1-id"]


# -- dedicated: cluster -------------------------------------------------------------


def test_dedicated_eks_cluster_uses_api_auth_oidc_and_private_nodes(
    mocks: RecordingMocks,
) -> None:
    cluster = dedicated(mocks, cluster_name="llm-platform")
    eks = mocks.one("eks:index:Cluster").inputs
    assert eks["name"] == "llm-platform"
    assert eks["version"] == _versions.EKS_KUBERNETES_VERSION
    assert eks["authenticationMode"] == "API"
    assert eks["createOidcProvider"] is True
    assert eks["skipDefaultNodeGroup"] is True
    assert eks["nodeAssociatePublicIpAddress"] is False
    assert eks["privateSubnetIds"] == [f"plat-private-{i}-id" for i in range(3)]
    assert "autoMode" not in eks
    entry = eks["accessEntries"]["karpenter-nodes"]
    assert entry["type"] == "EC2_LINUX"
    assert entry["principalArn"] == resolve(cluster.node_role_arn)
    assert resolve(cluster.cluster_name) == "llm-platform"
    assert resolve(cluster.oidc_provider_arn) == OIDC_ARN
    assert resolve(cluster.oidc_issuer) == ISSUER
    assert resolve(cluster.cluster_security_group_id) == "sg-cluster"
    assert resolve(cluster.vpc_id) == "plat-vpc-id"
    assert cluster.auto_mode is False and cluster.render_only is False
    tag = mocks.one("aws:ec2/tag:Tag").inputs
    assert tag == {"resourceId": "sg-cluster", "key": DISCOVERY_TAG, "value": "llm-platform"}


def test_dedicated_kubernetes_provider_uses_cluster_kubeconfig(mocks: RecordingMocks) -> None:
    cluster = dedicated(mocks)
    provider = mocks.one("pulumi:providers:kubernetes").inputs
    assert as_json(unsecret(provider["kubeconfig"])) == {"apiVersion": "v1", "kind": "Config"}
    assert isinstance(cluster.k8s_provider, pulumi.ProviderResource)
    for release in mocks.by_type(RELEASE):
        assert release.provider is not None and "plat-k8s" in release.provider


def test_admin_roles_get_cluster_admin_access_entries(mocks: RecordingMocks) -> None:
    arn = "arn:aws:iam::123456789012:role/platform-admins"
    dedicated(mocks, admin_role_arns=(arn,))
    entry = mocks.one("eks:index:Cluster").inputs["accessEntries"]["admin-0"]
    assert entry["principalArn"] == arn
    policy = entry["accessPolicies"]["admin"]
    assert policy["policyArn"].endswith("AmazonEKSClusterAdminPolicy")
    assert policy["accessScope"] == {"type": "cluster"}


def test_system_node_group_is_small_cpu_in_private_subnets(mocks: RecordingMocks) -> None:
    cluster = dedicated(mocks)
    ng = mocks.one("aws:eks/nodeGroup:NodeGroup").inputs
    assert ng["instanceTypes"] == ["m6i.large"]
    assert ng["amiType"] == "AL2023_x86_64_STANDARD"
    assert ng["scalingConfig"]["desiredSize"] == 2
    assert ng["subnetIds"] == [f"plat-private-{i}-id" for i in range(3)]
    assert ng["clusterName"] == "plat"
    assert ng["nodeRoleArn"] == resolve(cluster.managed_node_role_arn)
    lt = mocks.one("aws:ec2/launchTemplate:LaunchTemplate").inputs
    assert lt["metadataOptions"]["httpTokens"] == "required"
    assert lt["metadataOptions"]["httpPutResponseHopLimit"] == 1


def test_node_roles_are_ec2_roles_with_worker_policies(mocks: RecordingMocks) -> None:
    dedicated(mocks)
    found = roles(mocks)
    for role in ("plat-karpenter-node", "plat-managed-node"):
        st = trust(found[role])
        assert st["Principal"] == {"Service": "ec2.amazonaws.com"}
        attached = {
            r.inputs["policyArn"].rsplit("/", 1)[1]
            for r in mocks.by_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
            if r.name.startswith(role)
        }
        assert {"AmazonEKSWorkerNodePolicy", "AmazonEKS_CNI_Policy"} <= attached


def test_auto_mode_cluster_has_no_karpenter_or_system_group(mocks: RecordingMocks) -> None:
    cluster = dedicated(mocks, auto_mode=True)
    eks = mocks.one("eks:index:Cluster").inputs
    assert eks["autoMode"]["enabled"] is True
    assert eks["autoMode"]["computeConfig"]["nodePools"] == ["general-purpose", "system"]
    assert "accessEntries" not in eks
    assert not mocks.by_type("aws:sqs/queue:Queue")
    assert not mocks.by_type("aws:eks/nodeGroup:NodeGroup")
    # Auto Mode ships the device plugins and load balancing.
    assert releases(mocks) == {}
    assert cluster.auto_mode is True
    assert cluster.node_role_name is None and cluster.node_role_arn is None
    assert cluster.managed_node_role_arn is not None


# -- dedicated: Karpenter -----------------------------------------------------------


def test_karpenter_interruption_queue_and_rules(mocks: RecordingMocks) -> None:
    dedicated(mocks)
    queue = mocks.one("aws:sqs/queue:Queue").inputs
    assert queue["name"] == "plat-karpenter"
    rules = {
        r.name: json.loads(r.inputs["eventPattern"])
        for r in mocks.by_type("aws:cloudwatch/eventRule:EventRule")
    }
    # The five rules of Karpenter v1.14's getting-started template (it added the
    # capacity-reservation warning to the four earlier releases had).
    assert {p["detail-type"][0] for p in rules.values()} == {
        "AWS Health Event",
        "EC2 Spot Instance Interruption Warning",
        "EC2 Instance Rebalance Recommendation",
        "EC2 Instance State-change Notification",
        "EC2 Capacity Reservation Instance Interruption Warning",
    }
    targets = mocks.by_type("aws:cloudwatch/eventTarget:EventTarget")
    assert len(targets) == 5
    assert {t.inputs["arn"] for t in targets} == {
        "arn:aws:sqs:us-east-1:123456789012:plat-karpenter"
    }
    policy = json.loads(mocks.one("aws:sqs/queuePolicy:QueuePolicy").inputs["policy"])
    allow = policy["Statement"][0]
    assert allow["Principal"]["Service"] == ["events.amazonaws.com", "sqs.amazonaws.com"]


def test_karpenter_release_and_controller_role(mocks: RecordingMocks) -> None:
    cluster = dedicated(mocks)
    rel = releases(mocks)["plat-karpenter"]
    assert rel["chart"] == _versions.KARPENTER_CHART
    assert rel["version"] == _versions.KARPENTER_VERSION
    assert rel["namespace"] == "kube-system"
    values = rel["values"]
    assert values["settings"] == {"clusterName": "plat", "interruptionQueue": "plat-karpenter"}
    role_arn = "arn:aws:iam:us-east-1:123456789012:plat-karpenter"
    assert values["serviceAccount"]["name"] == "karpenter"
    assert values["serviceAccount"]["annotations"] == {"eks.amazonaws.com/role-arn": role_arn}

    policies = {
        r.name: json.loads(r.inputs["policy"])
        for r in mocks.by_type("aws:iam/rolePolicy:RolePolicy")
    }
    statements = {s["Sid"]: s for s in policies["plat-karpenter"]["Statement"]}
    # The controller may pass only the Karpenter node role, only to EC2.
    pass_role = statements["AllowPassingInstanceRole"]
    assert pass_role["Resource"] == resolve(cluster.node_role_arn)
    # EC2 only (upstream's template names the service in every partition).
    passed_to = pass_role["Condition"]["StringEquals"]["iam:PassedToService"]
    assert set(passed_to) == {"ec2.amazonaws.com", "ec2.amazonaws.com.cn"}
    # Deletion only of what this cluster's Karpenter created.
    deletion = statements["AllowScopedDeletion"]["Condition"]["StringEquals"]
    assert deletion == {"aws:ResourceTag/kubernetes.io/cluster/plat": "owned"}
    assert statements["AllowAPIServerEndpointDiscovery"]["Resource"] == (
        "arn:aws:eks:us-east-1:123456789012:cluster/plat"
    )
    assert statements["AllowInterruptionQueueActions"]["Resource"] == (
        "arn:aws:sqs:us-east-1:123456789012:plat-karpenter"
    )


# -- dedicated: IAM scoping ---------------------------------------------------------

#: Component role name -> the add-on whose service account it must name.
ROLE_ADDON = {
    "plat-karpenter": "karpenter",
    "plat-lbc": "load-balancer-controller",
    "plat-fsx-csi": "aws-fsx-csi-driver",
    "plat-mountpoint-s3-csi": "aws-mountpoint-s3-csi-driver",
    "plat-efs-csi": "aws-efs-csi-driver",
}


def test_irsa_roles_trust_only_their_service_account(mocks: RecordingMocks) -> None:
    dedicated(mocks, addons=ALL_ADDONS)
    found = roles(mocks)
    assert set(ROLE_ADDON) <= set(found)
    for role, addon in ROLE_ADDON.items():
        sa = ADDON_SERVICE_ACCOUNTS[addon]
        st = trust(found[role])
        assert st["Principal"] == {"Federated": OIDC_ARN}
        assert st["Action"] == "sts:AssumeRoleWithWebIdentity"
        assert st["Condition"] == {
            "StringEquals": {
                f"{ISSUER}:sub": f"system:serviceaccount:{sa.namespace}:{sa.name}",
                f"{ISSUER}:aud": "sts.amazonaws.com",
            }
        }
    # No role other than the EC2 node roles lacks a service-account condition.
    for name, inputs in found.items():
        st = trust(inputs)
        if st["Principal"] != {"Service": "ec2.amazonaws.com"}:
            assert "Condition" in st, name


def test_pod_identity_roles_and_associations_are_per_service_account(
    mocks: RecordingMocks,
) -> None:
    dedicated(mocks, iam_mode=IamMode.POD_IDENTITY, addons=ALL_ADDONS)
    found = roles(mocks)
    for role, addon in ROLE_ADDON.items():
        sa = ADDON_SERVICE_ACCOUNTS[addon]
        st = trust(found[role])
        assert st["Principal"] == {"Service": "pods.eks.amazonaws.com"}
        assert st["Action"] == ["sts:AssumeRole", "sts:TagSession"]
        assert st["Condition"]["StringEquals"] == {
            "aws:RequestTag/eks-cluster-name": "plat",
            "aws:RequestTag/kubernetes-namespace": sa.namespace,
            "aws:RequestTag/kubernetes-service-account": sa.name,
        }
    assocs = {
        r.name: r.inputs
        for r in mocks.by_type("aws:eks/podIdentityAssociation:PodIdentityAssociation")
    }
    assert assocs["plat-karpenter"]["namespace"] == "kube-system"
    assert assocs["plat-karpenter"]["serviceAccount"] == "karpenter"
    assert assocs["plat-karpenter"]["roleArn"].endswith(":plat-karpenter")
    assert assocs["plat-lbc"]["serviceAccount"] == "aws-load-balancer-controller"
    addons = {r.inputs["addonName"]: r.inputs for r in mocks.by_type("aws:eks/addon:Addon")}
    assert "eks-pod-identity-agent" in addons
    fsx = addons["aws-fsx-csi-driver"]
    assert fsx["podIdentityAssociations"] == [
        {
            "roleArn": "arn:aws:iam:us-east-1:123456789012:plat-fsx-csi",
            "serviceAccount": "fsx-csi-controller-sa",
        }
    ]
    assert "serviceAccountRoleArn" not in fsx
    # Pod Identity: no IRSA annotation on the chart's service account.
    assert "annotations" not in releases(mocks)["plat-karpenter"]["values"]["serviceAccount"]


def test_csi_addons_with_irsa_roles_and_scoped_policies(mocks: RecordingMocks) -> None:
    dedicated(mocks, addons=ALL_ADDONS)
    addons = {r.inputs["addonName"]: r.inputs for r in mocks.by_type("aws:eks/addon:Addon")}
    assert set(addons) == {
        "aws-fsx-csi-driver",
        "aws-mountpoint-s3-csi-driver",
        "aws-efs-csi-driver",
    }
    for addon_name, short in (
        ("aws-fsx-csi-driver", "fsx"),
        ("aws-mountpoint-s3-csi-driver", "mountpoint-s3"),
        ("aws-efs-csi-driver", "efs"),
    ):
        assert addons[addon_name]["serviceAccountRoleArn"].endswith(f":plat-{short}-csi")
        assert addons[addon_name]["clusterName"] == "plat"
    attached = {
        r.inputs["policyArn"]
        for r in mocks.by_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
        if "-csi-" in r.name
    }
    assert attached == {
        "arn:aws:iam::aws:policy/AmazonFSxFullAccess",
        "arn:aws:iam::aws:policy/service-role/AmazonEFSCSIDriverPolicy",
    }
    s3 = {
        r.name: json.loads(r.inputs["policy"])
        for r in mocks.by_type("aws:iam/rolePolicy:RolePolicy")
    }["plat-mountpoint-s3-csi"]
    assert s3["Statement"][0]["Resource"] == ["arn:aws:s3:::model-weights"]
    assert s3["Statement"][1] == {
        "Effect": "Allow",
        "Action": "s3:GetObject",
        "Resource": ["arn:aws:s3:::model-weights/*"],
    }


# -- dedicated: Helm add-ons --------------------------------------------------------


def test_all_helm_addons_are_pinned(mocks: RecordingMocks) -> None:
    dedicated(mocks, addons=ALL_ADDONS)
    rel = releases(mocks)
    expected = {
        "plat-karpenter": (_versions.KARPENTER_CHART, _versions.KARPENTER_VERSION),
        "plat-aws-load-balancer-controller": (
            _versions.AWS_LB_CONTROLLER_CHART,
            _versions.AWS_LB_CONTROLLER_VERSION,
        ),
        "plat-nvidia-device-plugin": (
            _versions.NVIDIA_DEVICE_PLUGIN_CHART,
            _versions.NVIDIA_DEVICE_PLUGIN_VERSION,
        ),
        "plat-neuron": (_versions.NEURON_CHART, _versions.NEURON_CHART_VERSION),
        "plat-lws": (_versions.LWS_CHART, _versions.LWS_VERSION),
        "plat-kuberay": (_versions.KUBERAY_CHART, _versions.KUBERAY_VERSION),
        "plat-dcgm-exporter": (_versions.DCGM_EXPORTER_CHART, _versions.DCGM_EXPORTER_VERSION),
        "plat-aws-efa-k8s-device-plugin": (
            _versions.EFA_DEVICE_PLUGIN_CHART,
            _versions.EFA_DEVICE_PLUGIN_VERSION,
        ),
    }
    assert {k: (v["chart"], v["version"]) for k, v in rel.items()} == expected
    # Every extended resource a serving pod requests has a plugin advertising it:
    # the EFA plugin runs on the (tainted) accelerator nodes too.
    efa = rel["plat-aws-efa-k8s-device-plugin"]
    assert efa["namespace"] == "kube-system"
    tolerated = {t["key"] for t in efa["values"]["tolerations"]}
    assert {"nvidia.com/gpu", "aws.amazon.com/neuron"} <= tolerated
    for inputs in rel.values():
        assert "latest" not in inputs["version"]
    assert rel["plat-neuron"]["values"]["scheduler"] == {"enabled": True}
    assert rel["plat-neuron"]["values"]["devicePlugin"]["enabled"] is True


def test_gpu_daemonsets_target_accelerator_nodes_and_tolerate_taint(
    mocks: RecordingMocks,
) -> None:
    dedicated(mocks, addons=ALL_ADDONS)
    rel = releases(mocks)
    for name in ("plat-nvidia-device-plugin", "plat-dcgm-exporter"):
        values = rel[name]["values"]
        term = values["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
            "nodeSelectorTerms"
        ][0]
        assert term["matchExpressions"] == [
            {"key": ACCELERATOR_LABEL, "operator": "In", "values": ["nvidia"]}
        ]
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in (
            values["tolerations"]
        )
    assert rel["plat-dcgm-exporter"]["values"]["podAnnotations"]["prometheus.io/scrape"] == "true"


def test_load_balancer_controller_values(mocks: RecordingMocks) -> None:
    dedicated(mocks)
    values = releases(mocks)["plat-aws-load-balancer-controller"]["values"]
    assert values["clusterName"] == "plat"
    assert values["vpcId"] == "plat-vpc-id"
    assert values["region"] == "us-east-1"
    assert values["serviceAccount"]["name"] == "aws-load-balancer-controller"


def test_addons_are_optional(mocks: RecordingMocks) -> None:
    dedicated(
        mocks,
        addons=Addons(karpenter=False, nvidia_device_plugin=False, load_balancer_controller=False),
    )
    assert releases(mocks) == {}
    assert not mocks.by_type("aws:eks/addon:Addon")
    assert not mocks.by_type("aws:sqs/queue:Queue")
    assert set(roles(mocks)) == {"plat-managed-node"}


# -- structure ----------------------------------------------------------------------


def test_every_child_is_parented_to_the_cluster(mocks: RecordingMocks) -> None:
    cluster = dedicated(mocks, addons=ALL_ADDONS)

    def descendants(res: pulumi.Resource) -> set[str]:
        # Add-ons are components of their own under the cluster.
        out = set()
        for child in res._childResources:
            out |= {child._name, *descendants(child)}
        return out

    children = descendants(cluster)
    recorded = {r.name for r in mocks.resources if r.typ != Cluster.TYPE}
    assert recorded <= children
    assert all(name.startswith("plat-") for name in children)


def test_outputs_registered_once(mocks: RecordingMocks, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []
    original = Cluster.register_outputs

    def spy(self: Cluster, outputs: dict[str, Any]) -> None:
        calls.append(outputs)
        original(self, outputs)

    monkeypatch.setattr(Cluster, "register_outputs", spy)
    dedicated(mocks)
    assert len(calls) == 1
    out = calls[0]
    assert out["mode"] == "dedicated"
    assert resolve(out[P.OUT_CLUSTER_NAME]) == "plat"
    assert resolve(out[P.OUT_OIDC_ISSUER]) == ISSUER
    assert resolve(out[P.OUT_PRIVATE_SUBNET_IDS]) == [f"plat-private-{i}-id" for i in range(3)]


# -- shared -------------------------------------------------------------------------


def test_shared_reads_the_platform_stack(mocks: RecordingMocks) -> None:
    mocks.stack_outputs = platform_stack_outputs()
    cluster = Cluster(
        "ep", ClusterArgs(mode=ClusterMode.SHARED, platform_stack="acme/llm-endpoints/platform")
    )
    drain(mocks)
    ref = mocks.one("pulumi:pulumi:StackReference")
    assert ref.inputs["name"] == "acme/llm-endpoints/platform"
    assert ref.name == "ep-platform"
    assert resolve(cluster.cluster_name) == "llm-platform"
    assert resolve(cluster.name) == "llm-platform"
    assert resolve(cluster.oidc_provider_arn) == OIDC_ARN
    assert resolve(cluster.oidc_issuer) == ISSUER
    assert resolve(cluster.node_role_name) == "karpenter-node"
    assert resolve(cluster.managed_node_role_arn).endswith("role/managed-node")
    assert resolve(cluster.private_subnet_ids) == ["subnet-a", "subnet-b", "subnet-c"]
    assert resolve(cluster.cluster_security_group_id) == "sg-cluster"
    provider = mocks.one("pulumi:providers:kubernetes").inputs
    assert as_json(unsecret(provider["kubeconfig"]))["kind"] == "Config"
    # An endpoint stack creates no AWS resources of its own for the cluster.
    assert not [r for r in mocks.resources if r.typ.startswith(("aws:", "eks:"))]
    assert {c._name for c in cluster._childResources} == {"ep-platform", "ep-k8s"}


def test_shared_auto_mode_mismatch_fails_the_deployment(mocks: RecordingMocks) -> None:
    mocks.stack_outputs = platform_stack_outputs(**{P.OUT_AUTO_MODE: True})
    Cluster("ep", ClusterArgs(mode=ClusterMode.SHARED, platform_stack="a/b/c"))
    with pytest.raises(
        ValueError,
        match="auto_mode: declared False but platform stack 'a/b/c' reports autoMode=True",
    ):
        drain(mocks)


def test_platform_exports_exactly_what_shared_mode_reads(
    mocks: RecordingMocks, monkeypatch: pytest.MonkeyPatch
) -> None:
    exported: dict[str, Any] = {}
    monkeypatch.setattr(pulumi, "export", lambda k, v: exported.__setitem__(k, v))
    cluster = dedicated(mocks, cluster_name="llm-platform")
    P.export_platform_outputs(cluster)
    assert tuple(exported) == P.PLATFORM_OUTPUTS
    values = {k: resolve(v) for k, v in exported.items()}
    assert values[P.OUT_CLUSTER_NAME] == "llm-platform"
    assert values[P.OUT_AUTO_MODE] is False
    assert values[P.OUT_NODE_ROLE_ARN].endswith(":plat-karpenter-node")
    # Every output has a value; role names are the engine's auto-names.
    assert [k for k, v in values.items() if v is None] == []
    assert values[P.OUT_NODE_ROLE_NAME].startswith("plat-karpenter-node-")

    # Round trip: a shared cluster built on those outputs sees the same values.
    mocks.stack_outputs = values
    shared = Cluster("ep", ClusterArgs(mode=ClusterMode.SHARED, platform_stack="a/b/platform"))
    drain(mocks)
    assert resolve(shared.cluster_name) == "llm-platform"
    assert resolve(shared.node_role_arn) == values[P.OUT_NODE_ROLE_ARN]
    assert resolve(shared.private_subnet_ids) == values[P.OUT_PRIVATE_SUBNET_IDS]


def test_export_refuses_a_non_platform_cluster(mocks: RecordingMocks, tmp_path: Path) -> None:
    cluster = Cluster("r", ClusterArgs(mode=ClusterMode.EXISTING, render_dir=str(tmp_path)))
    with pytest.raises(ValueError, match=r"^cluster: only a dedicated"):
        P.export_platform_outputs(cluster)


# -- existing -----------------------------------------------------------------------


def test_existing_kubeconfig_file(mocks: RecordingMocks, tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text("apiVersion: v1\nkind: Config\n")
    cluster = Cluster(
        "ex", ClusterArgs(mode=ClusterMode.EXISTING, kubeconfig=str(path), kube_context="gpu")
    )
    drain(mocks)
    provider = mocks.one("pulumi:providers:kubernetes").inputs
    assert unsecret(provider["kubeconfig"]) == "apiVersion: v1\nkind: Config\n"
    assert provider["context"] == "gpu"
    assert cluster.render_only is False
    assert cluster.cluster_name is None and cluster.oidc_provider_arn is None
    assert cluster.private_subnet_ids is None and cluster.node_role_name is None
    assert [r.typ for r in mocks.resources] == [Cluster.TYPE, "pulumi:providers:kubernetes"]


def test_existing_render_dir_touches_no_cluster(mocks: RecordingMocks, tmp_path: Path) -> None:
    cluster = Cluster("r", ClusterArgs(mode=ClusterMode.EXISTING, render_dir=str(tmp_path)))
    drain(mocks)
    provider = mocks.one("pulumi:providers:kubernetes").inputs
    assert provider["renderYamlToDirectory"] == str(tmp_path)
    # Provider config reaches the engine as strings.
    assert provider["enableServerSideApply"] in (False, "false")
    assert "kubeconfig" not in provider
    assert cluster.render_only is True
    assert cluster.mode is ClusterMode.EXISTING
    assert cluster.cluster_name is None and cluster.vpc_id is None
    assert cluster.k8s_provider in cluster._childResources


def test_from_spec_maps_the_endpoint_cluster_section() -> None:
    spec = ClusterSpec(mode=ClusterMode.SHARED, platform_stack="o/p/s", auto_mode=True)
    args = ClusterArgs.from_spec(spec)
    assert args.mode is ClusterMode.SHARED
    assert args.platform_stack == "o/p/s" and args.auto_mode is True
    assert args.addons is None


# -- validation ---------------------------------------------------------------------

BAD_ARGS = [
    (dict(mode=ClusterMode.SHARED), "platform_stack"),
    (dict(mode=ClusterMode.EXISTING), "kubeconfig"),
    (dict(mode=ClusterMode.EXISTING, kubeconfig="/nonexistent/kubeconfig"), "kubeconfig"),
    (dict(mode=ClusterMode.DEDICATED, availability_zones=4), "availability_zones"),
    (dict(mode=ClusterMode.DEDICATED, availability_zones=1), "availability_zones"),
    (dict(mode=ClusterMode.DEDICATED, vpc_cidr="10.0.0.0/24"), "vpc_cidr"),
    (dict(mode=ClusterMode.DEDICATED, vpc_cidr="not-a-cidr"), "vpc_cidr"),
    (dict(mode=ClusterMode.DEDICATED, cluster_name="bad_name!"), "cluster_name"),
    (dict(mode=ClusterMode.DEDICATED, system_nodes=0), "system_nodes"),
    (
        dict(mode=ClusterMode.DEDICATED, auto_mode=True, addons=Addons(karpenter=True)),
        "addons.karpenter",
    ),
    (
        dict(mode=ClusterMode.DEDICATED, addons=Addons(s3_bucket_arns=("arn:aws:s3:::b",))),
        "addons.s3_bucket_arns",
    ),
    (dict(mode=ClusterMode.DEDICATED, admin_role_arns=("admin",)), "admin_role_arns"),
    (dict(mode=ClusterMode.DEDICATED, public_access_cidrs=("10.0.0.1/8",)), "public_access_cidrs"),
    (dict(mode=ClusterMode.DEDICATED, platform_stack="a/b/c"), "platform_stack"),
    (dict(mode=ClusterMode.DEDICATED, render_dir="out"), "kubeconfig"),
    (dict(mode=ClusterMode.SHARED, platform_stack="a/b/c", addons=Addons()), "addons"),
    (dict(mode=ClusterMode.SHARED, platform_stack="a/b/c", cluster_name="x"), "cluster_name"),
    (dict(mode="dedicated"), "mode"),
]


@pytest.mark.parametrize(("kw", "field"), BAD_ARGS)
def test_bad_args_fail_at_construction_naming_the_field(
    mocks: RecordingMocks, kw: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValueError) as err:
        Cluster("bad", ClusterArgs(**kw))
    assert str(err.value).startswith(f"{field}: ")
    drain(mocks)
    assert mocks.resources == []


# -- platform stack config ----------------------------------------------------------


def test_platform_stack_file_maps_to_a_dedicated_cluster() -> None:
    config = yaml.safe_load(STACK_FILE.read_text())["config"]
    spec = PlatformSpec.model_validate(config["llm-endpoints:platform"])
    args = ClusterArgs.from_platform(spec)
    assert spec.region == "us-east-1"
    assert args.mode is ClusterMode.DEDICATED
    assert args.cluster_name == "llm-platform"
    assert args.auto_mode is False
    assert args.kubernetes_version == _versions.EKS_KUBERNETES_VERSION
    assert args.addons is not None
    addons = args.addons.resolved(args.auto_mode)
    # What the shared reference endpoints need: g5 + KubeRay, inf2 + Neuron.
    assert addons.karpenter and addons.nvidia_device_plugin and addons.kuberay
    assert addons.neuron and addons.leader_worker_set and addons.mountpoint_s3_csi
    assert set(config["llm-endpoints:platform"]["addons"]) <= set(ADDONS)


def test_platform_stack_builds(mocks: RecordingMocks) -> None:
    config = yaml.safe_load(STACK_FILE.read_text())["config"]
    args = ClusterArgs.from_platform(PlatformSpec.model_validate(config["llm-endpoints:platform"]))
    cluster = Cluster("platform", args)
    drain(mocks)
    assert resolve(cluster.cluster_name) == "llm-platform"
    assert "platform-neuron" in releases(mocks)


def test_from_platform_rejects_unknown_addons() -> None:
    spec = PlatformSpec(addons={"karpentr": True})
    with pytest.raises(ValueError, match=r"^addons\.karpentr: unknown add-on"):
        ClusterArgs.from_platform(spec)
