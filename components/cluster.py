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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pulumi
import pulumi_aws as aws
import pulumi_eks as eks
import pulumi_kubernetes as k8s

from components import _versions
from components import addons as addon_components
from components.addons import ADDONS, Addons, ClusterContext
from components.addons.base import SYSTEM_LABEL
from components.config import ClusterMode, ClusterSpec, PlatformSpec
from components.iam import IamMode, WorkloadIdentity, ec2_trust_policy
from components.network import DISCOVERY_TAG, build_network, check_vpc_cidr
from components.node_hardening import launch_template
from components.platform import (
    OUT_CLUSTER_NAME,
    OUT_CLUSTER_SECURITY_GROUP_ID,
    OUT_KUBECONFIG,
    OUT_MANAGED_NODE_ROLE_ARN,
    OUT_NODE_ROLE_ARN,
    OUT_NODE_ROLE_NAME,
    OUT_OIDC_ISSUER,
    OUT_OIDC_PROVIDER_ARN,
    OUT_PRIVATE_SUBNET_IDS,
    OUT_VPC_ID,
    kubeconfig_text,
    read_platform,
)
from components.rules import NAME_MAX_LEN

#: Cluster and its arguments; Addons and IamMode, which ClusterArgs takes, for
#: callers that build one.
__all__ = ["Addons", "Cluster", "ClusterArgs", "IamMode"]

#: AWS managed policies every EC2 node role needs (EKS node IAM role guide).
NODE_POLICIES: tuple[str, ...] = (
    "AmazonEKSWorkerNodePolicy",
    "AmazonEKS_CNI_Policy",
    "AmazonEC2ContainerRegistryReadOnly",
    # Session Manager instead of SSH keys for break-glass access.
    "AmazonSSMManagedInstanceCore",
)
ADMIN_POLICY_ARN = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
#: Root volume of the system nodes (add-on controllers, no model images).
SYSTEM_ROOT_VOLUME_GIB = 50


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
    kubernetes_version: str = _versions.EKS_KUBERNETES_VERSION
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
        not (1 <= len(cluster_name) <= NAME_MAX_LEN)
        or not cluster_name[0].isalnum()
        or not all(c.isalnum() or c == "-" for c in cluster_name)
    ):
        raise ValueError(
            f"cluster_name: {cluster_name!r} must be 1-{NAME_MAX_LEN} letters, digits or '-', "
            "starting with a letter or digit"
        )
    if not 2 <= args.availability_zones <= 3:
        raise ValueError(f"availability_zones: must be 2 or 3, got {args.availability_zones}")
    check_vpc_cidr(args.vpc_cidr)
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
    (args.addons or Addons()).check(args.auto_mode)


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
        self.installed_addons: list[addon_components.Addon] = []
        self._system: list[pulumi.Resource] = []
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
        assert args.platform_stack is not None
        for attribute, value in read_platform(
            ref, declared_auto_mode=args.auto_mode, platform_stack=args.platform_stack
        ).items():
            setattr(self, attribute, value)
        kubeconfig: pulumi.Output[str] = pulumi.Output.secret(
            ref.require_output(OUT_KUBECONFIG).apply(kubeconfig_text)
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

        network = build_network(
            name, cluster_name, args.vpc_cidr, args.availability_zones, parent=self
        )
        vpc_id, private_ids, public_ids = (
            network.vpc_id,
            network.private_subnet_ids,
            network.public_subnet_ids,
        )
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
        self._system = system
        self.installed_addons = addon_components.install(
            self.addon_context(),
            addons,
            karpenter_node_role=karpenter_role,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.addon_resources = [r for a in self.installed_addons for r in a.installed]

    def addon_context(self) -> ClusterContext:
        """What add-ons need from this cluster (``Addon.from_cluster``).

        Raises:
            ValueError: for a render-only cluster (no API server to install on) or
                one whose name is unknown (an existing cluster).
        """
        if self.render_only or self.cluster_name is None:
            raise ValueError(
                "cluster: add-ons need a dedicated or shared cluster (its name and identity "
                "provider); an existing or render-only cluster's owner installs them"
            )
        return ClusterContext(
            prefix=self._name,
            cluster_name=self.cluster_name,
            k8s_provider=self.k8s_provider,
            identity=WorkloadIdentity(
                mode=self.iam_mode,
                cluster_name=self.cluster_name,
                oidc_provider_arn=self.oidc_provider_arn,
                oidc_issuer=self.oidc_issuer,
            ),
            vpc_id=self.vpc_id,
            auto_mode=self.auto_mode,
            depends_on=list(self._system),
            parent=self,
        )

    def _node_role(
        self, name: str, purpose: str
    ) -> tuple[aws.iam.Role, list[aws.iam.RolePolicyAttachment]]:
        role = aws.iam.Role(
            name,
            description=f"llm-endpoints {purpose}",
            assume_role_policy=json.dumps(ec2_trust_policy()),
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
        template = launch_template(
            f"{name}-system-lt", root_volume_gib=SYSTEM_ROOT_VOLUME_GIB, opts=child
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
