"""Cluster: where endpoints run, and the Kubernetes provider that reaches it.

Three modes (:class:`~components.config.ClusterMode`):

* ``dedicated`` — a VPC (public and private subnets over 2-3 AZs, one NAT
  gateway), an EKS cluster (``pulumi_eks.Cluster``, OIDC provider, access
  entries, optional Auto Mode), a small CPU system node group and the add-ons
  an LLM platform needs (:class:`Addons`). A platform stack runs this mode and
  calls :func:`export_platform_outputs`.
* ``shared`` — a ``StackReference`` to such a platform stack: the default for
  self-service endpoints, so an endpoint does not pay 15-20 minutes and a
  control plane of its own.
* ``existing`` — a kubeconfig file, or ``render_dir``: manifests are written to
  a folder and no cluster (and no cloud) is touched.

Attributes that a mode cannot know are ``None``; the table is in
:class:`Cluster`'s docstring.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar

import pulumi
import pulumi_aws as aws
import pulumi_eks as eks
import pulumi_kubernetes as k8s

from components import _versions
from components.accelerator_pool import ACCELERATOR_LABEL, TAINT_KEYS
from components.catalog import Accelerator
from components.config import ClusterMode, ClusterSpec, PlatformSpec

# -- platform stack outputs ----------------------------------------------------
# A shared-mode Cluster reads exactly these outputs of the platform stack, and
# export_platform_outputs writes exactly these: one list, so the two cannot drift.
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
PLATFORM_OUTPUTS: tuple[str, ...] = (
    OUT_KUBECONFIG,
    OUT_CLUSTER_NAME,
    OUT_OIDC_PROVIDER_ARN,
    OUT_OIDC_ISSUER,
    OUT_NODE_ROLE_NAME,
    OUT_NODE_ROLE_ARN,
    OUT_MANAGED_NODE_ROLE_ARN,
    OUT_PRIVATE_SUBNET_IDS,
    OUT_CLUSTER_SECURITY_GROUP_ID,
    OUT_VPC_ID,
    OUT_AUTO_MODE,
)

#: Subnet tag Karpenter's EC2NodeClass selects subnets and security groups by.
DISCOVERY_TAG = "karpenter.sh/discovery"
#: Node label of the system node group (add-on controllers run there).
SYSTEM_LABEL = "llm-endpoints/role"
ADDON_NAMESPACE = "kube-system"

#: AWS managed policies every EC2 node role needs (EKS node IAM role guide).
NODE_POLICIES: tuple[str, ...] = (
    "AmazonEKSWorkerNodePolicy",
    "AmazonEKS_CNI_Policy",
    "AmazonEC2ContainerRegistryReadOnly",
    # Session Manager instead of SSH keys for break-glass access.
    "AmazonSSMManagedInstanceCore",
)
ADMIN_POLICY_ARN = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"


class IamMode(StrEnum):
    """How add-on controllers get AWS credentials.

    ``irsa`` (the default) trusts the cluster's OIDC provider for one service
    account; every add-on supports it. ``pod-identity`` uses EKS Pod Identity
    associations (and installs the agent unless Auto Mode ships it); each
    role's trust policy still pins the namespace and service account through
    the session tags Pod Identity sets.
    """

    IRSA = "irsa"
    POD_IDENTITY = "pod-identity"


@dataclass(frozen=True)
class ServiceAccount:
    """A Kubernetes service account an IAM role is scoped to."""

    namespace: str
    name: str


#: The service account of each add-on that calls AWS APIs.
ADDON_SERVICE_ACCOUNTS: dict[str, ServiceAccount] = {
    "karpenter": ServiceAccount(ADDON_NAMESPACE, "karpenter"),
    "load-balancer-controller": ServiceAccount(ADDON_NAMESPACE, "aws-load-balancer-controller"),
    "aws-fsx-csi-driver": ServiceAccount(ADDON_NAMESPACE, "fsx-csi-controller-sa"),
    "aws-mountpoint-s3-csi-driver": ServiceAccount(ADDON_NAMESPACE, "s3-csi-driver-sa"),
    "aws-efs-csi-driver": ServiceAccount(ADDON_NAMESPACE, "efs-csi-controller-sa"),
}

#: Managed policies of the CSI drivers (each add-on's EKS user-guide page).
CSI_POLICIES: dict[str, tuple[str, ...]] = {
    "aws-fsx-csi-driver": ("arn:aws:iam::aws:policy/AmazonFSxFullAccess",),
    "aws-efs-csi-driver": ("arn:aws:iam::aws:policy/service-role/AmazonEFSCSIDriverPolicy",),
    # Mountpoint has no managed policy: bucket access is granted per bucket
    # (Addons.s3_bucket_arns) or per pod (ModelStorage, authenticationSource: pod).
    "aws-mountpoint-s3-csi-driver": (),
}

#: EventBridge patterns Karpenter's interruption handling consumes
#: (karpenter.sh getting-started CloudFormation template).
INTERRUPTION_EVENTS: dict[str, dict[str, Any]] = {
    "health": {"source": ["aws.health"], "detail-type": ["AWS Health Event"]},
    "spot": {"source": ["aws.ec2"], "detail-type": ["EC2 Spot Instance Interruption Warning"]},
    "rebalance": {"source": ["aws.ec2"], "detail-type": ["EC2 Instance Rebalance Recommendation"]},
    "state": {"source": ["aws.ec2"], "detail-type": ["EC2 Instance State-change Notification"]},
}


@dataclass(frozen=True)
class Addons:
    """Cluster add-ons (dedicated mode; a shared cluster's platform stack owns them).

    ``None`` means "what the cluster needs": Karpenter, the NVIDIA device
    plugin and the AWS Load Balancer Controller are installed unless the
    cluster runs EKS Auto Mode, which brings its own node provisioning, device
    plugins and load balancing.

    Attributes:
        karpenter: Karpenter (controller role, interruption queue, rules).
        nvidia_device_plugin: NVIDIA device plugin DaemonSet.
        neuron: Neuron device plugin and scheduler extension.
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
        return replace(
            self,
            karpenter=default if self.karpenter is None else self.karpenter,
            nvidia_device_plugin=(
                default if self.nvidia_device_plugin is None else self.nvidia_device_plugin
            ),
            load_balancer_controller=(
                default if self.load_balancer_controller is None else self.load_balancer_controller
            ),
        )


#: The add-on switches a platform stack config may set (``addons: {name: bool}``).
ADDONS: tuple[str, ...] = tuple(f.name for f in fields(Addons) if f.name != "s3_bucket_arns")


@dataclass(frozen=True)
class ClusterArgs:
    """Arguments of :class:`Cluster` (plain Python; the AWS region is the provider's).

    Attributes:
        mode: dedicated, shared or existing.
        cluster_name: EKS cluster name (dedicated); defaults to the component name.
        kubernetes_version: EKS Kubernetes version (dedicated).
        auto_mode: dedicated: enable EKS Auto Mode. shared: whether the platform
            cluster runs it (checked against the platform's ``autoMode`` output).
            existing: whether that cluster runs it (declared, not checked).
        availability_zones: How many AZs the VPC spans (dedicated, 2-3).
        vpc_cidr: VPC CIDR (dedicated), /16 to /20.
        system_instance_type: Instance type of the CPU system node group.
        system_nodes: Size of the system node group (none under Auto Mode).
        admin_role_arns: IAM principals given cluster-admin access entries.
        public_access_cidrs: Who may reach the public API endpoint (default all).
        iam_mode: irsa or pod-identity, for the add-ons' roles.
        addons: Add-ons; None: the defaults of :class:`Addons` (dedicated only).
        platform_stack: shared: the platform stack, ``org/project/stack``.
        kubeconfig: existing: path of a kubeconfig file.
        kube_context: existing: context in that kubeconfig.
        render_dir: existing: write manifests here instead of applying them
            (wins over ``kubeconfig``, as in ``EndpointSpec.render_only``).
    """

    mode: ClusterMode
    cluster_name: str | None = None
    kubernetes_version: str = "1.33"
    auto_mode: bool = False
    availability_zones: int = 3
    vpc_cidr: str = "10.0.0.0/16"
    system_instance_type: str = "m6i.large"
    system_nodes: int = 2
    admin_role_arns: tuple[str, ...] = ()
    public_access_cidrs: tuple[str, ...] = ()
    iam_mode: IamMode = IamMode.IRSA
    addons: Addons | None = None
    platform_stack: str | None = None
    kubeconfig: str | None = None
    kube_context: str | None = None
    render_dir: str | None = None

    @classmethod
    def from_spec(cls, spec: ClusterSpec, addons: Addons | None = None) -> ClusterArgs:
        """Build args from an endpoint's validated ``cluster`` section."""
        return cls(
            mode=spec.mode,
            kubernetes_version=spec.kubernetes_version,
            auto_mode=spec.auto_mode,
            availability_zones=spec.availability_zones,
            platform_stack=spec.platform_stack,
            kubeconfig=spec.kubeconfig,
            render_dir=spec.render_dir,
            addons=addons if spec.mode is ClusterMode.DEDICATED else None,
        )

    @classmethod
    def from_platform(cls, spec: PlatformSpec) -> ClusterArgs:
        """Build args for the platform stack's dedicated cluster.

        The AWS region (``spec.region``) configures the provider the caller
        passes in ``opts``; it is not an argument of the component.

        Raises:
            ValueError: naming an unknown add-on (``addons.kuberay``).
        """
        for key in spec.addons:
            if key not in ADDONS:
                raise ValueError(f"addons.{key}: unknown add-on (valid: {', '.join(ADDONS)})")
        flags: dict[str, Any] = dict(spec.addons)
        return cls(
            mode=ClusterMode.DEDICATED,
            cluster_name=spec.name,
            kubernetes_version=spec.kubernetes_version,
            auto_mode=spec.auto_mode,
            availability_zones=spec.availability_zones,
            addons=Addons(**flags),
        )


def _validate(name: str, args: ClusterArgs) -> str | None:
    """Check the args before anything is registered; return kubeconfig text.

    Raises:
        ValueError: naming the bad field.
    """
    if not isinstance(args.mode, ClusterMode):
        raise ValueError(f"mode: {args.mode!r} is not one of {[m.value for m in ClusterMode]}")
    dedicated_only = {
        "cluster_name": args.cluster_name is not None,
        "addons": args.addons is not None,
        "admin_role_arns": bool(args.admin_role_arns),
        "public_access_cidrs": bool(args.public_access_cidrs),
    }
    if args.mode is not ClusterMode.DEDICATED:
        for fld, given in dedicated_only.items():
            if given:
                raise ValueError(
                    f"{fld}: applies only to mode 'dedicated' (a {args.mode.value} cluster's "
                    "owner configures it)"
                )
    if args.mode is not ClusterMode.SHARED and args.platform_stack:
        raise ValueError("platform_stack: applies only to mode 'shared'")
    if args.mode is not ClusterMode.EXISTING and (
        args.kubeconfig or args.render_dir or args.kube_context
    ):
        raise ValueError("kubeconfig: kubeconfig/kube_context/render_dir apply only to 'existing'")

    if args.mode is ClusterMode.DEDICATED:
        _validate_dedicated(name, args)
        return None
    if args.mode is ClusterMode.SHARED:
        if not args.platform_stack:
            raise ValueError("platform_stack: required in mode 'shared' (org/project/stack)")
        return None
    if args.render_dir:
        return None
    if not args.kubeconfig:
        raise ValueError("kubeconfig: mode 'existing' needs kubeconfig or render_dir")
    path = Path(args.kubeconfig).expanduser()
    try:
        return path.read_text()
    except OSError as e:
        raise ValueError(f"kubeconfig: cannot read {str(path)!r} ({e.strerror})") from None


def _validate_dedicated(name: str, args: ClusterArgs) -> None:
    cluster_name = args.cluster_name or name
    # EKS allows 100 characters, but derived IAM and SQS names must stay short.
    if (
        not (1 <= len(cluster_name) <= 40)
        or not cluster_name[0].isalnum()
        or not all(c.isalnum() or c == "-" for c in cluster_name)
    ):
        raise ValueError(
            f"cluster_name: {cluster_name!r} must be 1-40 letters, digits or '-', "
            "starting with a letter or digit"
        )
    if not 2 <= args.availability_zones <= 3:
        raise ValueError(f"availability_zones: must be 2 or 3, got {args.availability_zones}")
    try:
        net = ipaddress.ip_network(args.vpc_cidr, strict=True)
    except ValueError as e:
        raise ValueError(f"vpc_cidr: {args.vpc_cidr!r} is not a network CIDR ({e})") from None
    if net.version != 4 or not 16 <= net.prefixlen <= 20:
        raise ValueError(f"vpc_cidr: must be an IPv4 /16 to /20, got {args.vpc_cidr}")
    if not args.auto_mode and args.system_nodes < 1:
        raise ValueError("system_nodes: add-on controllers need at least one system node")
    if not isinstance(args.iam_mode, IamMode):
        raise ValueError(f"iam_mode: {args.iam_mode!r} is not one of {[m.value for m in IamMode]}")
    for cidr in args.public_access_cidrs:
        try:
            ipaddress.ip_network(cidr, strict=True)
        except ValueError as e:
            raise ValueError(f"public_access_cidrs: {cidr!r} is not a CIDR ({e})") from None
    for arn in args.admin_role_arns:
        if not arn.startswith("arn:aws") or ":iam::" not in arn:
            raise ValueError(f"admin_role_arns: {arn!r} is not an IAM principal ARN")
    addons = args.addons or Addons()
    if args.auto_mode and addons.karpenter:
        raise ValueError(
            "addons.karpenter: an Auto Mode cluster provisions nodes itself; leave it unset"
        )
    for arn in addons.s3_bucket_arns:
        if not arn.startswith("arn:aws:s3:::") or "/" in arn:
            raise ValueError(f"addons.s3_bucket_arns: {arn!r} is not a bucket ARN")
    if addons.s3_bucket_arns and not addons.mountpoint_s3_csi:
        raise ValueError("addons.s3_bucket_arns: applies only with addons.mountpoint_s3_csi")


def _subnet_cidrs(cidr: str, zones: int) -> tuple[list[str], list[str]]:
    """Split the VPC: large private subnets (pods take VPC IPs), small public ones."""
    net = ipaddress.IPv4Network(cidr)
    eighths = list(net.subnets(prefixlen_diff=3))
    private = [str(s) for s in eighths[:zones]]
    public = [str(s) for s in list(eighths[zones].subnets(prefixlen_diff=2))[:zones]]
    return private, public


def irsa_trust_policy(oidc_provider_arn: str, issuer: str, sa: ServiceAccount) -> str:
    """Trust policy letting exactly one service account assume a role (IRSA).

    Args:
        oidc_provider_arn: The cluster's IAM OIDC provider.
        issuer: The issuer without ``https://``.
        sa: The service account.
    """
    issuer = issuer.removeprefix("https://")
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Federated": oidc_provider_arn},
                    "Action": "sts:AssumeRoleWithWebIdentity",
                    "Condition": {
                        "StringEquals": {
                            f"{issuer}:sub": f"system:serviceaccount:{sa.namespace}:{sa.name}",
                            f"{issuer}:aud": "sts.amazonaws.com",
                        }
                    },
                }
            ],
        }
    )


def pod_identity_trust_policy(cluster_name: str, sa: ServiceAccount) -> str:
    """Trust policy for EKS Pod Identity, pinned to one cluster, namespace and SA.

    The association already binds the role to one service account; the session
    tags Pod Identity sets make the trust policy say so too, so a stray
    association elsewhere cannot use the role.
    """
    return json.dumps(
        {
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
    )


def _ec2_trust_policy() -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "ec2.amazonaws.com"},
                    "Action": "sts:AssumeRole",
                }
            ],
        }
    )


def karpenter_controller_policy(
    partition: str,
    region: str,
    account: str,
    cluster: str,
    queue_arn: str,
    node_role_arn: str,
) -> dict[str, Any]:
    """Karpenter v1 controller policy, scoped to this cluster's tags.

    Condensed from the karpenter.sh v1 getting-started CloudFormation template.
    """
    p, r = partition, region
    owned_req = {f"aws:RequestTag/kubernetes.io/cluster/{cluster}": "owned"}
    owned_res = {f"aws:ResourceTag/kubernetes.io/cluster/{cluster}": "owned"}
    named_req = {"aws:RequestTag/eks:eks-cluster-name": cluster}
    region_req = {"aws:RequestTag/topology.kubernetes.io/region": r}
    region_res = {"aws:ResourceTag/topology.kubernetes.io/region": r}
    created = [
        f"arn:{p}:ec2:{r}:*:{kind}/*"
        for kind in (
            "fleet",
            "instance",
            "volume",
            "network-interface",
            "launch-template",
            "spot-instances-request",
        )
    ]
    profile = f"arn:{p}:iam::{account}:instance-profile/*"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "AllowScopedEC2InstanceAccessActions",
                "Effect": "Allow",
                "Action": ["ec2:RunInstances", "ec2:CreateFleet"],
                "Resource": [
                    f"arn:{p}:ec2:{r}::image/*",
                    f"arn:{p}:ec2:{r}::snapshot/*",
                    f"arn:{p}:ec2:{r}:*:security-group/*",
                    f"arn:{p}:ec2:{r}:*:subnet/*",
                    f"arn:{p}:ec2:{r}:*:capacity-reservation/*",
                ],
            },
            {
                "Sid": "AllowScopedEC2LaunchTemplateAccessActions",
                "Effect": "Allow",
                "Action": ["ec2:RunInstances", "ec2:CreateFleet"],
                "Resource": f"arn:{p}:ec2:{r}:*:launch-template/*",
                "Condition": {
                    "StringEquals": owned_res,
                    "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"},
                },
            },
            {
                "Sid": "AllowScopedEC2InstanceActionsWithTags",
                "Effect": "Allow",
                "Action": ["ec2:RunInstances", "ec2:CreateFleet", "ec2:CreateLaunchTemplate"],
                "Resource": created,
                "Condition": {
                    "StringEquals": {**owned_req, **named_req},
                    "StringLike": {"aws:RequestTag/karpenter.sh/nodepool": "*"},
                },
            },
            {
                "Sid": "AllowScopedResourceCreationTagging",
                "Effect": "Allow",
                "Action": "ec2:CreateTags",
                "Resource": created,
                "Condition": {
                    "StringEquals": {
                        **owned_req,
                        **named_req,
                        "ec2:CreateAction": ["RunInstances", "CreateFleet", "CreateLaunchTemplate"],
                    },
                    "StringLike": {"aws:RequestTag/karpenter.sh/nodepool": "*"},
                },
            },
            {
                "Sid": "AllowScopedResourceTagging",
                "Effect": "Allow",
                "Action": "ec2:CreateTags",
                "Resource": f"arn:{p}:ec2:{r}:*:instance/*",
                "Condition": {
                    "StringEquals": owned_res,
                    "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"},
                    "StringEqualsIfExists": named_req,
                    "ForAllValues:StringEquals": {
                        "aws:TagKeys": ["eks:eks-cluster-name", "karpenter.sh/nodeclaim", "Name"]
                    },
                },
            },
            {
                "Sid": "AllowScopedDeletion",
                "Effect": "Allow",
                "Action": ["ec2:TerminateInstances", "ec2:DeleteLaunchTemplate"],
                "Resource": [
                    f"arn:{p}:ec2:{r}:*:instance/*",
                    f"arn:{p}:ec2:{r}:*:launch-template/*",
                ],
                "Condition": {
                    "StringEquals": owned_res,
                    "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"},
                },
            },
            {
                "Sid": "AllowRegionalReadActions",
                "Effect": "Allow",
                "Action": [
                    "ec2:DescribeCapacityReservations",
                    "ec2:DescribeImages",
                    "ec2:DescribeInstances",
                    "ec2:DescribeInstanceTypeOfferings",
                    "ec2:DescribeInstanceTypes",
                    "ec2:DescribeLaunchTemplates",
                    "ec2:DescribeSecurityGroups",
                    "ec2:DescribeSpotPriceHistory",
                    "ec2:DescribeSubnets",
                    "ec2:DescribeAvailabilityZones",
                ],
                "Resource": "*",
                "Condition": {"StringEquals": {"aws:RequestedRegion": r}},
            },
            {
                "Sid": "AllowSSMReadActions",
                "Effect": "Allow",
                "Action": "ssm:GetParameter",
                "Resource": f"arn:{p}:ssm:{r}::parameter/aws/service/*",
            },
            {
                "Sid": "AllowPricingReadActions",
                "Effect": "Allow",
                "Action": "pricing:GetProducts",
                "Resource": "*",
            },
            {
                "Sid": "AllowInterruptionQueueActions",
                "Effect": "Allow",
                "Action": ["sqs:DeleteMessage", "sqs:GetQueueUrl", "sqs:ReceiveMessage"],
                "Resource": queue_arn,
            },
            {
                "Sid": "AllowPassingInstanceRole",
                "Effect": "Allow",
                "Action": "iam:PassRole",
                "Resource": node_role_arn,
                "Condition": {"StringEquals": {"iam:PassedToService": ["ec2.amazonaws.com"]}},
            },
            {
                "Sid": "AllowScopedInstanceProfileCreationActions",
                "Effect": "Allow",
                "Action": "iam:CreateInstanceProfile",
                "Resource": profile,
                "Condition": {
                    "StringEquals": {**owned_req, **named_req, **region_req},
                    "StringLike": {"aws:RequestTag/karpenter.k8s.aws/ec2nodeclass": "*"},
                },
            },
            {
                "Sid": "AllowScopedInstanceProfileTagActions",
                "Effect": "Allow",
                "Action": "iam:TagInstanceProfile",
                "Resource": profile,
                "Condition": {
                    "StringEquals": {
                        **owned_res,
                        **region_res,
                        **owned_req,
                        **named_req,
                        **region_req,
                    },
                    "StringLike": {
                        "aws:ResourceTag/karpenter.k8s.aws/ec2nodeclass": "*",
                        "aws:RequestTag/karpenter.k8s.aws/ec2nodeclass": "*",
                    },
                },
            },
            {
                "Sid": "AllowScopedInstanceProfileActions",
                "Effect": "Allow",
                "Action": [
                    "iam:AddRoleToInstanceProfile",
                    "iam:RemoveRoleFromInstanceProfile",
                    "iam:DeleteInstanceProfile",
                ],
                "Resource": profile,
                "Condition": {
                    "StringEquals": {**owned_res, **region_res},
                    "StringLike": {"aws:ResourceTag/karpenter.k8s.aws/ec2nodeclass": "*"},
                },
            },
            {
                "Sid": "AllowInstanceProfileReadActions",
                "Effect": "Allow",
                "Action": "iam:GetInstanceProfile",
                "Resource": profile,
            },
            {
                "Sid": "AllowAPIServerEndpointDiscovery",
                "Effect": "Allow",
                "Action": "eks:DescribeCluster",
                "Resource": f"arn:{p}:eks:{r}:{account}:cluster/{cluster}",
            },
        ],
    }


def _lbc_policy() -> dict[str, Any]:
    """AWS Load Balancer Controller policy (its docs/install/iam_policy.json, v2.13).

    Mutations are limited to load balancers, target groups and security groups
    tagged ``elbv2.k8s.aws/cluster``, i.e. those the controller created.
    """
    tagged_req = {"Null": {"aws:RequestTag/elbv2.k8s.aws/cluster": "false"}}
    tagged_res = {"Null": {"aws:ResourceTag/elbv2.k8s.aws/cluster": "false"}}
    untouched = {
        "Null": {
            "aws:RequestTag/elbv2.k8s.aws/cluster": "true",
            "aws:ResourceTag/elbv2.k8s.aws/cluster": "false",
        }
    }
    elb = "arn:aws:elasticloadbalancing:*:*"
    lbs = [f"{elb}:targetgroup/*/*", f"{elb}:loadbalancer/net/*/*", f"{elb}:loadbalancer/app/*/*"]
    sg = "arn:aws:ec2:*:*:security-group/*"

    def allow(actions: list[str], resource: Any = "*", **cond: Any) -> dict[str, Any]:
        st: dict[str, Any] = {"Effect": "Allow", "Action": actions, "Resource": resource}
        if cond:
            st["Condition"] = cond["condition"]
        return st

    return {
        "Version": "2012-10-17",
        "Statement": [
            allow(
                ["iam:CreateServiceLinkedRole"],
                condition={
                    "StringEquals": {"iam:AWSServiceName": "elasticloadbalancing.amazonaws.com"}
                },
            ),
            allow(
                [
                    "ec2:DescribeAccountAttributes",
                    "ec2:DescribeAddresses",
                    "ec2:DescribeAvailabilityZones",
                    "ec2:DescribeInternetGateways",
                    "ec2:DescribeVpcs",
                    "ec2:DescribeVpcPeeringConnections",
                    "ec2:DescribeSubnets",
                    "ec2:DescribeSecurityGroups",
                    "ec2:DescribeInstances",
                    "ec2:DescribeNetworkInterfaces",
                    "ec2:DescribeTags",
                    "ec2:GetCoipPoolUsage",
                    "ec2:DescribeCoipPools",
                    "ec2:GetSecurityGroupsForVpc",
                    "ec2:DescribeIpamPools",
                    "ec2:DescribeRouteTables",
                    "elasticloadbalancing:Describe*",
                ]
            ),
            allow(
                [
                    "cognito-idp:DescribeUserPoolClient",
                    "acm:ListCertificates",
                    "acm:DescribeCertificate",
                    "iam:ListServerCertificates",
                    "iam:GetServerCertificate",
                    "waf-regional:GetWebACL",
                    "waf-regional:GetWebACLForResource",
                    "waf-regional:AssociateWebACL",
                    "waf-regional:DisassociateWebACL",
                    "wafv2:GetWebACL",
                    "wafv2:GetWebACLForResource",
                    "wafv2:AssociateWebACL",
                    "wafv2:DisassociateWebACL",
                    "shield:GetSubscriptionState",
                    "shield:DescribeProtection",
                    "shield:CreateProtection",
                    "shield:DeleteProtection",
                ]
            ),
            allow(["ec2:AuthorizeSecurityGroupIngress", "ec2:RevokeSecurityGroupIngress"]),
            allow(["ec2:CreateSecurityGroup"]),
            allow(
                ["ec2:CreateTags"],
                sg,
                condition={
                    "StringEquals": {"ec2:CreateAction": "CreateSecurityGroup"},
                    **tagged_req,
                },
            ),
            allow(["ec2:CreateTags", "ec2:DeleteTags"], sg, condition=untouched),
            allow(
                [
                    "ec2:AuthorizeSecurityGroupIngress",
                    "ec2:RevokeSecurityGroupIngress",
                    "ec2:DeleteSecurityGroup",
                ],
                condition=tagged_res,
            ),
            allow(
                [
                    "elasticloadbalancing:CreateLoadBalancer",
                    "elasticloadbalancing:CreateTargetGroup",
                ],
                condition=tagged_req,
            ),
            allow(
                [
                    "elasticloadbalancing:CreateListener",
                    "elasticloadbalancing:DeleteListener",
                    "elasticloadbalancing:CreateRule",
                    "elasticloadbalancing:DeleteRule",
                ]
            ),
            allow(
                ["elasticloadbalancing:AddTags", "elasticloadbalancing:RemoveTags"],
                lbs,
                condition=untouched,
            ),
            allow(
                ["elasticloadbalancing:AddTags", "elasticloadbalancing:RemoveTags"],
                [
                    f"{elb}:listener/net/*/*/*",
                    f"{elb}:listener/app/*/*/*",
                    f"{elb}:listener-rule/net/*/*/*",
                    f"{elb}:listener-rule/app/*/*/*",
                ],
            ),
            allow(
                [
                    "elasticloadbalancing:ModifyLoadBalancerAttributes",
                    "elasticloadbalancing:SetIpAddressType",
                    "elasticloadbalancing:SetSecurityGroups",
                    "elasticloadbalancing:SetSubnets",
                    "elasticloadbalancing:DeleteLoadBalancer",
                    "elasticloadbalancing:ModifyTargetGroup",
                    "elasticloadbalancing:ModifyTargetGroupAttributes",
                    "elasticloadbalancing:DeleteTargetGroup",
                    "elasticloadbalancing:ModifyListenerAttributes",
                    "elasticloadbalancing:ModifyCapacityReservation",
                    "elasticloadbalancing:ModifyIpPools",
                ],
                condition=tagged_res,
            ),
            allow(
                ["elasticloadbalancing:AddTags"],
                lbs,
                condition={
                    "StringEquals": {
                        "elasticloadbalancing:CreateAction": [
                            "CreateTargetGroup",
                            "CreateLoadBalancer",
                        ]
                    },
                    **tagged_req,
                },
            ),
            allow(
                ["elasticloadbalancing:RegisterTargets", "elasticloadbalancing:DeregisterTargets"],
                f"{elb}:targetgroup/*/*",
            ),
            allow(
                [
                    "elasticloadbalancing:SetWebAcl",
                    "elasticloadbalancing:ModifyListener",
                    "elasticloadbalancing:AddListenerCertificates",
                    "elasticloadbalancing:RemoveListenerCertificates",
                    "elasticloadbalancing:ModifyRule",
                    "elasticloadbalancing:SetRulePriorities",
                ]
            ),
        ],
    }


def _s3_read_policy(bucket_arns: Sequence[str]) -> str:
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


def _kubeconfig_text(kubeconfig: Any) -> str:
    """pulumi_eks exports a JSON string; accept an object too."""
    return kubeconfig if isinstance(kubeconfig, str) else json.dumps(kubeconfig)


def _accelerator_affinity(accelerator: Accelerator) -> dict[str, Any]:
    """Run a DaemonSet only on the pools' nodes of one accelerator family."""
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {
                                "key": ACCELERATOR_LABEL,
                                "operator": "In",
                                "values": [accelerator.value],
                            }
                        ]
                    }
                ]
            }
        }
    }


def _accelerator_tolerations(accelerator: Accelerator) -> list[dict[str, str]]:
    return [
        {"key": TAINT_KEYS[accelerator], "operator": "Exists", "effect": "NoSchedule"},
        {"key": "CriticalAddonsOnly", "operator": "Exists"},
    ]


class Cluster(pulumi.ComponentResource):
    """An EKS cluster (or a reference to one) and a Kubernetes provider for it.

    Attributes (None where a mode cannot know them):

    ================================  =========  ======  ==================
    attribute                         dedicated  shared  existing
    ================================  =========  ======  ==================
    k8s_provider                      yes        yes     yes
    cluster_name / name               yes        yes     None
    oidc_provider_arn, oidc_issuer    yes        yes     None
    node_role_name, node_role_arn     Karpenter  yes     None
    managed_node_role_arn             yes        yes     None
    private_subnet_ids, vpc_id        yes        yes     None
    cluster_security_group_id         yes        yes     None
    kubeconfig                        yes        yes     None
    ================================  =========  ======  ==================

    ``node_role_*`` is the role of Karpenter-launched nodes (it has an
    EC2_LINUX access entry); ``managed_node_role_arn`` is the role managed node
    groups use (EKS creates their access entries itself, which is why the two
    are kept apart). ``oidc_issuer`` has no ``https://``.

    Attributes:
        mode: The cluster mode.
        auto_mode: Whether the cluster runs EKS Auto Mode.
        render_only: True when manifests go to a folder and no cluster exists.
        iam_mode: How add-on roles are assumed (dedicated).
        addons: The resolved add-ons (dedicated), else None.
        addon_resources: Helm releases and EKS add-ons; depend on them before
            creating objects whose CRDs or webhooks they install.
    """

    TYPE: ClassVar[str] = "llm-endpoints:components:Cluster"

    mode: ClusterMode
    auto_mode: bool
    render_only: bool
    iam_mode: IamMode
    addons: Addons | None
    k8s_provider: k8s.Provider
    cluster_name: pulumi.Output[str] | None
    kubeconfig: pulumi.Output[Any] | None
    oidc_provider_arn: pulumi.Output[str] | None
    oidc_issuer: pulumi.Output[str] | None
    node_role_name: pulumi.Output[str] | None
    node_role_arn: pulumi.Output[str] | None
    managed_node_role_arn: pulumi.Output[str] | None
    private_subnet_ids: pulumi.Output[list[str]] | None
    cluster_security_group_id: pulumi.Output[str] | None
    vpc_id: pulumi.Output[str] | None
    addon_resources: list[pulumi.Resource]

    def __init__(
        self, name: str, args: ClusterArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        kubeconfig_text = _validate(name, args)
        super().__init__(self.TYPE, name, None, opts)
        self.mode = args.mode
        self.auto_mode = args.auto_mode
        self.iam_mode = args.iam_mode
        self.render_only = args.mode is ClusterMode.EXISTING and bool(args.render_dir)
        self.addons = None
        self.addon_resources = []
        self.cluster_name = self.kubeconfig = None
        self.oidc_provider_arn = self.oidc_issuer = None
        self.node_role_name = self.node_role_arn = self.managed_node_role_arn = None
        self.private_subnet_ids = self.cluster_security_group_id = self.vpc_id = None

        if args.mode is ClusterMode.DEDICATED:
            self._dedicated(name, args)
        elif args.mode is ClusterMode.SHARED:
            self._shared(name, args)
        else:
            self._existing(name, args, kubeconfig_text)

        self.register_outputs(
            {
                k: v
                for k, v in {
                    "mode": self.mode.value,
                    "autoMode": self.auto_mode,
                    "renderOnly": self.render_only,
                    OUT_CLUSTER_NAME: self.cluster_name,
                    OUT_OIDC_PROVIDER_ARN: self.oidc_provider_arn,
                    OUT_OIDC_ISSUER: self.oidc_issuer,
                    OUT_NODE_ROLE_NAME: self.node_role_name,
                    OUT_NODE_ROLE_ARN: self.node_role_arn,
                    OUT_MANAGED_NODE_ROLE_ARN: self.managed_node_role_arn,
                    OUT_PRIVATE_SUBNET_IDS: self.private_subnet_ids,
                    OUT_CLUSTER_SECURITY_GROUP_ID: self.cluster_security_group_id,
                    OUT_VPC_ID: self.vpc_id,
                }.items()
                if v is not None
            }
        )

    @property
    def name(self) -> pulumi.Output[str] | None:
        """Alias of :attr:`cluster_name`."""
        return self.cluster_name

    # -- existing -----------------------------------------------------------------

    def _existing(self, name: str, args: ClusterArgs, kubeconfig_text: str | None) -> None:
        if args.render_dir:
            # Nothing to apply against: server-side apply needs an API server.
            self.k8s_provider = k8s.Provider(
                f"{name}-k8s",
                render_yaml_to_directory=args.render_dir,
                enable_server_side_apply=False,
                opts=pulumi.ResourceOptions(parent=self),
            )
            return
        self.k8s_provider = k8s.Provider(
            f"{name}-k8s",
            # Kubeconfigs often carry client keys or tokens.
            kubeconfig=pulumi.Output.secret(kubeconfig_text or ""),
            context=args.kube_context,
            opts=pulumi.ResourceOptions(parent=self),
        )

    # -- shared -------------------------------------------------------------------

    def _shared(self, name: str, args: ClusterArgs) -> None:
        ref = pulumi.StackReference(
            f"{name}-platform",
            stack_name=args.platform_stack,
            opts=pulumi.ResourceOptions(parent=self),
        )
        declared = args.auto_mode
        platform = args.platform_stack

        def check_auto_mode(values: list[Any]) -> str:
            # Pools are validated against the declared auto_mode at construction;
            # fail the deployment if the platform says otherwise.
            cluster_name, actual = values
            if actual is not None and bool(actual) != declared:
                raise ValueError(
                    f"auto_mode: declared {declared} but platform stack {platform!r} "
                    f"reports autoMode={actual}"
                )
            return str(cluster_name)

        self.cluster_name = pulumi.Output.all(
            ref.require_output(OUT_CLUSTER_NAME), ref.get_output(OUT_AUTO_MODE)
        ).apply(check_auto_mode)
        self.kubeconfig = ref.require_output(OUT_KUBECONFIG)
        self.oidc_provider_arn = ref.get_output(OUT_OIDC_PROVIDER_ARN)
        self.oidc_issuer = ref.get_output(OUT_OIDC_ISSUER)
        self.node_role_name = ref.get_output(OUT_NODE_ROLE_NAME)
        self.node_role_arn = ref.get_output(OUT_NODE_ROLE_ARN)
        self.managed_node_role_arn = ref.get_output(OUT_MANAGED_NODE_ROLE_ARN)
        self.private_subnet_ids = ref.require_output(OUT_PRIVATE_SUBNET_IDS)
        self.cluster_security_group_id = ref.get_output(OUT_CLUSTER_SECURITY_GROUP_ID)
        self.vpc_id = ref.get_output(OUT_VPC_ID)
        kubeconfig: pulumi.Output[str] = pulumi.Output.secret(
            ref.require_output(OUT_KUBECONFIG).apply(_kubeconfig_text)
        )
        self.k8s_provider = k8s.Provider(
            f"{name}-k8s",
            kubeconfig=kubeconfig,
            opts=pulumi.ResourceOptions(parent=self),
        )

    # -- dedicated ----------------------------------------------------------------

    def _dedicated(self, name: str, args: ClusterArgs) -> None:
        cluster_name = args.cluster_name or name
        addons = (args.addons or Addons()).resolved(args.auto_mode)
        self.addons = addons
        child = pulumi.ResourceOptions(parent=self)

        vpc_id, private_ids, public_ids = self._network(name, cluster_name, args)
        self.vpc_id = vpc_id
        self.private_subnet_ids = pulumi.Output.all(*private_ids)

        # Roles first: the Karpenter node role needs an EC2_LINUX access entry,
        # which the cluster creates with itself.
        managed_role, managed_policies = self._node_role(
            f"{name}-managed-node", "managed node groups"
        )
        self.managed_node_role_arn = managed_role.arn
        karpenter_role = None
        access_entries: dict[str, eks.AccessEntryArgs] = {}
        if addons.karpenter:
            karpenter_role, _ = self._node_role(f"{name}-karpenter-node", "Karpenter nodes")
            self.node_role_name = karpenter_role.name
            self.node_role_arn = karpenter_role.arn
            access_entries["karpenter-nodes"] = eks.AccessEntryArgs(
                principal_arn=karpenter_role.arn, type=eks.AccessEntryType.EC2_LINUX
            )
        for i, arn in enumerate(args.admin_role_arns):
            access_entries[f"admin-{i}"] = eks.AccessEntryArgs(
                principal_arn=arn,
                access_policies={
                    "admin": eks.AccessPolicyAssociationArgs(
                        policy_arn=ADMIN_POLICY_ARN,
                        access_scope=aws.eks.AccessPolicyAssociationAccessScopeArgs(type="cluster"),
                    )
                },
            )

        cluster = eks.Cluster(
            f"{name}-eks",
            name=cluster_name,
            version=args.kubernetes_version,
            vpc_id=vpc_id,
            public_subnet_ids=public_ids,
            private_subnet_ids=private_ids,
            node_associate_public_ip_address=False,
            endpoint_private_access=True,
            endpoint_public_access=True,
            public_access_cidrs=list(args.public_access_cidrs) or None,
            create_oidc_provider=True,
            authentication_mode=eks.AuthenticationMode.API,
            access_entries=access_entries or None,
            # Node groups are created below (system) and by AcceleratorPools;
            # the EKS-created cluster security group then covers every node.
            skip_default_node_group=True,
            skip_default_security_groups=True,
            auto_mode=(
                eks.AutoModeOptionsArgs(
                    enabled=True,
                    create_node_role=True,
                    compute_config=eks.ClusterComputeConfigArgs(
                        node_pools=["general-purpose", "system"]
                    ),
                )
                if args.auto_mode
                else None
            ),
            enabled_cluster_log_types=["api", "audit", "authenticator"],
            tags={"llm-endpoints/cluster": cluster_name},
            opts=child,
        )
        # The name is known up front, but consumers (node groups, add-ons,
        # pools) must wait for the control plane: carry the dependency.
        self.cluster_name = cluster.kubeconfig_json.apply(lambda _: cluster_name)
        self.kubeconfig = pulumi.Output.secret(cluster.kubeconfig_json)
        self.oidc_provider_arn = cluster.oidc_provider_arn
        self.oidc_issuer = cluster.oidc_issuer
        self.cluster_security_group_id = cluster.cluster_security_group_id
        self.k8s_provider = k8s.Provider(f"{name}-k8s", kubeconfig=self.kubeconfig, opts=child)
        # Karpenter's EC2NodeClass finds security groups by the discovery tag.
        aws.ec2.Tag(
            f"{name}-sg-discovery",
            resource_id=cluster.cluster_security_group_id,
            key=DISCOVERY_TAG,
            value=cluster_name,
            opts=child,
        )

        system: list[pulumi.Resource] = []
        if not args.auto_mode:
            system.append(
                self._system_node_group(name, args, managed_role, managed_policies, private_ids)
            )
        self._install_addons(name, cluster_name, args, addons, karpenter_role, system)

    def _network(
        self, name: str, cluster_name: str, args: ClusterArgs
    ) -> tuple[pulumi.Output[str], list[pulumi.Output[str]], list[pulumi.Output[str]]]:
        child = pulumi.ResourceOptions(parent=self)
        zones = aws.get_availability_zones_output(
            state="available",
            # Local and Wavelength zones lack most instance types.
            filters=[{"name": "opt-in-status", "values": ["opt-in-not-required"]}],
            opts=pulumi.InvokeOutputOptions(parent=self),
        )
        n = args.availability_zones

        def zone(i: int) -> pulumi.Output[str]:
            def pick(names: list[str]) -> str:
                if len(names) < n:
                    raise ValueError(
                        f"availability_zones: {n} requested, the region has {len(names)}"
                    )
                return names[i]

            return zones.names.apply(pick)

        private_cidrs, public_cidrs = _subnet_cidrs(args.vpc_cidr, n)
        vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=args.vpc_cidr,
            enable_dns_hostnames=True,
            enable_dns_support=True,
            tags={"Name": f"{cluster_name}-vpc"},
            opts=child,
        )
        igw = aws.ec2.InternetGateway(
            f"{name}-igw", vpc_id=vpc.id, tags={"Name": f"{cluster_name}-igw"}, opts=child
        )
        public_rt = aws.ec2.RouteTable(
            f"{name}-public-rt",
            vpc_id=vpc.id,
            routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", gateway_id=igw.id)],
            tags={"Name": f"{cluster_name}-public"},
            opts=child,
        )

        def subnets(
            tier: str, cidrs: list[str], route_table: aws.ec2.RouteTable, tags: dict[str, str]
        ) -> list[aws.ec2.Subnet]:
            """One subnet per zone, each associated with the tier's route table."""
            out = []
            for i, cidr in enumerate(cidrs):
                subnet = aws.ec2.Subnet(
                    f"{name}-{tier}-{i}",
                    vpc_id=vpc.id,
                    cidr_block=cidr,
                    availability_zone=zone(i),
                    map_public_ip_on_launch=True if tier == "public" else None,
                    tags={"Name": f"{cluster_name}-{tier}-{i}", **tags},
                    opts=child,
                )
                aws.ec2.RouteTableAssociation(
                    f"{name}-{tier}-{i}",
                    subnet_id=subnet.id,
                    route_table_id=route_table.id,
                    opts=child,
                )
                out.append(subnet)
            return out

        public = subnets("public", public_cidrs, public_rt, {"kubernetes.io/role/elb": "1"})
        # One NAT gateway: a per-AZ NAT triples a fixed cost for an outage mode
        # (one AZ down) that a single-AZ GPU placement does not survive anyway.
        eip = aws.ec2.Eip(f"{name}-nat", domain="vpc", opts=child)
        nat = aws.ec2.NatGateway(
            f"{name}-nat",
            allocation_id=eip.id,
            subnet_id=public[0].id,
            tags={"Name": f"{cluster_name}-nat"},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[igw]),
        )
        private_rt = aws.ec2.RouteTable(
            f"{name}-private-rt",
            vpc_id=vpc.id,
            routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", nat_gateway_id=nat.id)],
            tags={"Name": f"{cluster_name}-private"},
            opts=child,
        )
        # Only private subnets are discoverable: nodes never get public IPs.
        private = subnets(
            "private",
            private_cidrs,
            private_rt,
            {"kubernetes.io/role/internal-elb": "1", DISCOVERY_TAG: cluster_name},
        )
        return vpc.id, [s.id for s in private], [s.id for s in public]

    def _node_role(
        self, name: str, purpose: str
    ) -> tuple[aws.iam.Role, list[aws.iam.RolePolicyAttachment]]:
        role = aws.iam.Role(
            name,
            description=f"llm-endpoints {purpose}",
            assume_role_policy=_ec2_trust_policy(),
            opts=pulumi.ResourceOptions(parent=self),
        )
        attachments = [
            aws.iam.RolePolicyAttachment(
                f"{name}-{policy}",
                role=role.name,
                policy_arn=f"arn:aws:iam::aws:policy/{policy}",
                opts=pulumi.ResourceOptions(parent=self),
            )
            for policy in NODE_POLICIES
        ]
        return role, attachments

    def _system_node_group(
        self,
        name: str,
        args: ClusterArgs,
        role: aws.iam.Role,
        role_policies: list[aws.iam.RolePolicyAttachment],
        private_ids: list[pulumi.Output[str]],
    ) -> aws.eks.NodeGroup:
        child = pulumi.ResourceOptions(parent=self)
        template = aws.ec2.LaunchTemplate(
            f"{name}-system-lt",
            update_default_version=True,
            metadata_options=aws.ec2.LaunchTemplateMetadataOptionsArgs(
                http_endpoint="enabled", http_tokens="required", http_put_response_hop_limit=1
            ),
            block_device_mappings=[
                aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
                    device_name="/dev/xvda",
                    ebs=aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(
                        volume_size=50, volume_type="gp3", encrypted="true"
                    ),
                )
            ],
            opts=child,
        )
        return aws.eks.NodeGroup(
            f"{name}-system",
            cluster_name=self.cluster_name,
            node_role_arn=role.arn,
            subnet_ids=private_ids,
            instance_types=[args.system_instance_type],
            ami_type="AL2023_x86_64_STANDARD",
            capacity_type="ON_DEMAND",
            scaling_config=aws.eks.NodeGroupScalingConfigArgs(
                min_size=args.system_nodes,
                desired_size=args.system_nodes,
                max_size=args.system_nodes + 1,
            ),
            update_config=aws.eks.NodeGroupUpdateConfigArgs(max_unavailable=1),
            launch_template=aws.eks.NodeGroupLaunchTemplateArgs(
                id=template.id, version=template.latest_version.apply(str)
            ),
            labels={SYSTEM_LABEL: "system"},
            # Nodes cannot join until the role can pull images and run the CNI.
            opts=pulumi.ResourceOptions(parent=self, depends_on=role_policies),
        )

    # -- IAM for add-ons -----------------------------------------------------------

    def _service_role(
        self,
        name: str,
        cluster_name: str,
        sa: ServiceAccount,
        args: ClusterArgs,
    ) -> aws.iam.Role:
        """A role only ``sa`` can assume (IRSA or Pod Identity, per ``iam_mode``)."""
        if args.iam_mode is IamMode.IRSA:
            assert self.oidc_provider_arn is not None and self.oidc_issuer is not None
            trust: pulumi.Input[str] = pulumi.Output.all(
                self.oidc_provider_arn, self.oidc_issuer
            ).apply(lambda v: irsa_trust_policy(v[0], v[1], sa))
        else:
            trust = pod_identity_trust_policy(cluster_name, sa)
        return aws.iam.Role(
            name,
            description=f"llm-endpoints {sa.namespace}/{sa.name}",
            assume_role_policy=trust,
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _bind(
        self,
        name: str,
        sa: ServiceAccount,
        role: aws.iam.Role,
        args: ClusterArgs,
    ) -> tuple[dict[str, Any], list[pulumi.Resource]]:
        """Helm service-account values, and the association to wait for (Pod Identity)."""
        if args.iam_mode is IamMode.IRSA:
            return {
                "create": True,
                "name": sa.name,
                "annotations": {"eks.amazonaws.com/role-arn": role.arn},
            }, []
        assoc = aws.eks.PodIdentityAssociation(
            name,
            cluster_name=self.cluster_name,
            namespace=sa.namespace,
            service_account=sa.name,
            role_arn=role.arn,
            opts=pulumi.ResourceOptions(parent=self),
        )
        return {"create": True, "name": sa.name}, [assoc]

    # -- add-ons -------------------------------------------------------------------

    def _release(
        self,
        name: str,
        chart: str,
        version: str,
        namespace: str,
        values: Mapping[str, Any],
        depends_on: Sequence[pulumi.Resource],
        repo: str | None = None,
    ) -> k8s.helm.v3.Release:
        release = k8s.helm.v3.Release(
            name,
            chart=chart,
            version=version,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=repo) if repo else None,
            namespace=namespace,
            create_namespace=namespace != ADDON_NAMESPACE,
            values=dict(values),
            # Fail (and roll back) rather than leave a half-installed controller.
            atomic=True,
            timeout=600,
            opts=pulumi.ResourceOptions(
                parent=self, provider=self.k8s_provider, depends_on=list(depends_on)
            ),
        )
        self.addon_resources.append(release)
        return release

    def _install_addons(
        self,
        name: str,
        cluster_name: str,
        args: ClusterArgs,
        addons: Addons,
        karpenter_role: aws.iam.Role | None,
        system: list[pulumi.Resource],
    ) -> None:
        child = pulumi.ResourceOptions(parent=self)
        if args.iam_mode is IamMode.POD_IDENTITY and not args.auto_mode:
            # Auto Mode runs the Pod Identity agent itself.
            agent = aws.eks.Addon(
                f"{name}-pod-identity-agent",
                cluster_name=self.cluster_name,
                addon_name="eks-pod-identity-agent",
                addon_version=_versions.EKS_ADDONS["eks-pod-identity-agent"],
                opts=pulumi.ResourceOptions(parent=self, depends_on=system),
            )
            self.addon_resources.append(agent)
            system = [*system, agent]

        if addons.karpenter:
            assert karpenter_role is not None
            self._karpenter(name, cluster_name, args, karpenter_role, system)
        if addons.load_balancer_controller:
            sa = ADDON_SERVICE_ACCOUNTS["load-balancer-controller"]
            role = self._service_role(f"{name}-lbc", cluster_name, sa, args)
            aws.iam.RolePolicy(
                f"{name}-lbc", role=role.id, policy=json.dumps(_lbc_policy()), opts=child
            )
            sa_values, deps = self._bind(f"{name}-lbc", sa, role, args)
            region = aws.get_region_output(opts=pulumi.InvokeOutputOptions(parent=self)).region
            self._release(
                f"{name}-aws-load-balancer-controller",
                _versions.AWS_LB_CONTROLLER_CHART,
                _versions.AWS_LB_CONTROLLER_VERSION,
                ADDON_NAMESPACE,
                {
                    "clusterName": cluster_name,
                    # Given explicitly: IMDS hop limit 1 hides them from pods.
                    "region": region,
                    "vpcId": self.vpc_id,
                    "serviceAccount": sa_values,
                },
                [*system, *deps],
                repo=_versions.AWS_LB_CONTROLLER_REPO,
            )
        for addon_name, enabled in (
            ("aws-fsx-csi-driver", addons.fsx_csi),
            ("aws-mountpoint-s3-csi-driver", addons.mountpoint_s3_csi),
            ("aws-efs-csi-driver", addons.efs_csi),
        ):
            if enabled:
                self._csi_addon(name, cluster_name, addon_name, args, addons, system)
        if addons.nvidia_device_plugin:
            self._release(
                f"{name}-nvidia-device-plugin",
                _versions.NVIDIA_DEVICE_PLUGIN_CHART,
                _versions.NVIDIA_DEVICE_PLUGIN_VERSION,
                ADDON_NAMESPACE,
                {
                    # The chart's default affinity wants NFD labels we do not run.
                    "affinity": _accelerator_affinity(Accelerator.NVIDIA),
                    "tolerations": _accelerator_tolerations(Accelerator.NVIDIA),
                },
                system,
                repo=_versions.NVIDIA_DEVICE_PLUGIN_REPO,
            )
        if addons.neuron:
            self._release(
                f"{name}-neuron",
                _versions.NEURON_CHART,
                _versions.NEURON_CHART_VERSION,
                ADDON_NAMESPACE,
                {
                    "devicePlugin": {
                        "enabled": True,
                        "tolerations": _accelerator_tolerations(Accelerator.NEURON),
                    },
                    # Allocates contiguous NeuronCores, which tensor-parallel needs.
                    "scheduler": {"enabled": True},
                    "npd": {"enabled": False},
                },
                system,
            )
        if addons.leader_worker_set:
            self._release(
                f"{name}-lws",
                _versions.LWS_CHART,
                _versions.LWS_VERSION,
                "lws-system",
                {},
                system,
            )
        if addons.kuberay:
            self._release(
                f"{name}-kuberay",
                _versions.KUBERAY_CHART,
                _versions.KUBERAY_VERSION,
                "kuberay-system",
                {},
                system,
                repo=_versions.KUBERAY_REPO,
            )
        if addons.dcgm_exporter:
            self._release(
                f"{name}-dcgm-exporter",
                _versions.DCGM_EXPORTER_CHART,
                _versions.DCGM_EXPORTER_VERSION,
                "monitoring",
                {
                    "affinity": _accelerator_affinity(Accelerator.NVIDIA),
                    "tolerations": _accelerator_tolerations(Accelerator.NVIDIA),
                    # Plain annotations: no dependency on the Prometheus operator CRDs.
                    "serviceMonitor": {"enabled": False},
                    "podAnnotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": "9400",
                        "prometheus.io/path": "/metrics",
                    },
                },
                system,
                repo=_versions.DCGM_EXPORTER_REPO,
            )

    def _csi_addon(
        self,
        name: str,
        cluster_name: str,
        addon_name: str,
        args: ClusterArgs,
        addons: Addons,
        system: list[pulumi.Resource],
    ) -> None:
        sa = ADDON_SERVICE_ACCOUNTS[addon_name]
        short = addon_name.removeprefix("aws-").removesuffix("-csi-driver")
        role = self._service_role(f"{name}-{short}-csi", cluster_name, sa, args)
        child = pulumi.ResourceOptions(parent=self)
        for i, policy_arn in enumerate(CSI_POLICIES[addon_name]):
            aws.iam.RolePolicyAttachment(
                f"{name}-{short}-csi-{i}", role=role.name, policy_arn=policy_arn, opts=child
            )
        if addon_name == "aws-mountpoint-s3-csi-driver" and addons.s3_bucket_arns:
            aws.iam.RolePolicy(
                f"{name}-{short}-csi",
                role=role.id,
                policy=_s3_read_policy(addons.s3_bucket_arns),
                opts=child,
            )
        if args.iam_mode is IamMode.IRSA:
            identity: dict[str, Any] = {"service_account_role_arn": role.arn}
        else:
            identity = {
                "pod_identity_associations": [
                    aws.eks.AddonPodIdentityAssociationArgs(
                        role_arn=role.arn, service_account=sa.name
                    )
                ]
            }
        addon = aws.eks.Addon(
            f"{name}-{short}-csi",
            cluster_name=self.cluster_name,
            addon_name=addon_name,
            addon_version=_versions.EKS_ADDONS[addon_name],
            resolve_conflicts_on_create="OVERWRITE",
            resolve_conflicts_on_update="OVERWRITE",
            **identity,
            opts=pulumi.ResourceOptions(parent=self, depends_on=system),
        )
        self.addon_resources.append(addon)

    def _karpenter(
        self,
        name: str,
        cluster_name: str,
        args: ClusterArgs,
        node_role: aws.iam.Role,
        system: list[pulumi.Resource],
    ) -> None:
        child = pulumi.ResourceOptions(parent=self)
        queue = aws.sqs.Queue(
            f"{name}-karpenter",
            # Karpenter's settings.interruptionQueue takes the queue name.
            name=f"{cluster_name}-karpenter",
            message_retention_seconds=300,
            sqs_managed_sse_enabled=True,
            opts=child,
        )
        aws.sqs.QueuePolicy(
            f"{name}-karpenter",
            queue_url=queue.url,
            policy=queue.arn.apply(
                lambda arn: json.dumps(
                    {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Effect": "Allow",
                                "Principal": {
                                    "Service": ["events.amazonaws.com", "sqs.amazonaws.com"]
                                },
                                "Action": "sqs:SendMessage",
                                "Resource": arn,
                            },
                            {
                                "Sid": "DenyHTTP",
                                "Effect": "Deny",
                                "Principal": "*",
                                "Action": "sqs:*",
                                "Resource": arn,
                                "Condition": {"Bool": {"aws:SecureTransport": False}},
                            },
                        ],
                    }
                )
            ),
            opts=child,
        )
        for key, pattern in INTERRUPTION_EVENTS.items():
            rule = aws.cloudwatch.EventRule(
                f"{name}-karpenter-{key}",
                description=f"Karpenter interruption: {pattern['detail-type'][0]}",
                event_pattern=json.dumps(pattern),
                opts=child,
            )
            aws.cloudwatch.EventTarget(
                f"{name}-karpenter-{key}",
                rule=rule.name,
                arn=queue.arn,
                target_id="KarpenterInterruptionQueue",
                opts=child,
            )

        sa = ADDON_SERVICE_ACCOUNTS["karpenter"]
        role = self._service_role(f"{name}-karpenter", cluster_name, sa, args)
        invoke = pulumi.InvokeOutputOptions(parent=self)
        policy = pulumi.Output.all(
            aws.get_partition_output(opts=invoke).partition,
            aws.get_region_output(opts=invoke).region,
            aws.get_caller_identity_output(opts=invoke).account_id,
            queue.arn,
            node_role.arn,
        ).apply(
            lambda v: json.dumps(
                karpenter_controller_policy(v[0], v[1], v[2], cluster_name, v[3], v[4])
            )
        )
        aws.iam.RolePolicy(f"{name}-karpenter", role=role.id, policy=policy, opts=child)
        sa_values, deps = self._bind(f"{name}-karpenter", sa, role, args)
        self._release(
            f"{name}-karpenter",
            _versions.KARPENTER_CHART,
            _versions.KARPENTER_VERSION,
            ADDON_NAMESPACE,
            {
                "settings": {"clusterName": cluster_name, "interruptionQueue": queue.name},
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
            [*system, *deps],
        )


def export_platform_outputs(cluster: Cluster) -> None:
    """Export what shared-mode clusters read (call from the platform stack).

    Raises:
        ValueError: when ``cluster`` is not a dedicated cluster.
    """
    if cluster.mode is not ClusterMode.DEDICATED:
        raise ValueError(f"cluster: only a dedicated cluster is a platform, got {cluster.mode}")
    values: dict[str, Any] = {
        # Cluster-admin credentials: never in plain text in state or outputs.
        OUT_KUBECONFIG: pulumi.Output.secret(cluster.kubeconfig),
        OUT_CLUSTER_NAME: cluster.cluster_name,
        OUT_OIDC_PROVIDER_ARN: cluster.oidc_provider_arn,
        OUT_OIDC_ISSUER: cluster.oidc_issuer,
        OUT_NODE_ROLE_NAME: cluster.node_role_name,
        OUT_NODE_ROLE_ARN: cluster.node_role_arn,
        OUT_MANAGED_NODE_ROLE_ARN: cluster.managed_node_role_arn,
        OUT_PRIVATE_SUBNET_IDS: cluster.private_subnet_ids,
        OUT_CLUSTER_SECURITY_GROUP_ID: cluster.cluster_security_group_id,
        OUT_VPC_ID: cluster.vpc_id,
        OUT_AUTO_MODE: cluster.auto_mode,
    }
    assert set(values) == set(PLATFORM_OUTPUTS)
    for key in PLATFORM_OUTPUTS:
        pulumi.export(key, values[key])
