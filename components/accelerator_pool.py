"""AcceleratorPool: the nodes a model runs on, and the constraints that reach them.

Four modes (:class:`~components.config.PoolMode`):

* ``karpenter`` — a ``karpenter.sh/v1`` NodePool and a ``karpenter.k8s.aws/v1``
  EC2NodeClass. Nodes come and go with the pods that need them.
* ``auto-mode`` — an EKS Auto Mode NodePool on the built-in ``default`` NodeClass.
* ``managed`` — an EKS managed node group with a launch template: EFA interfaces
  and a cluster placement group in one Availability Zone, for models that span
  nodes (tensor/pipeline parallel over the network).
* ``none`` — an existing cluster's nodes: nothing is created, only the
  scheduling constraints are exposed.

Whatever the mode, the pool exposes plain-Python scheduling constraints
(:attr:`AcceleratorPool.node_selector`, :attr:`AcceleratorPool.tolerations`,
:attr:`AcceleratorPool.resource_name`) computed from the same values as its
taints and labels, so an InferenceService built from them always lands on, and
only on, this pool's nodes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from components import _versions, rules
from components.catalog import Accelerator, InstanceType, get_instance
from components.config import CapacityType, PoolMode
from components.node_hardening import ROOT_VOLUME_RANGE, launch_template, node_class_hardening
from components.pool_rules import check_node_class, check_pool_instances

#: Node label naming the pool; workloads select on it.
POOL_LABEL = "llm-endpoints/pool"
#: Node label naming the accelerator family; cluster add-ons (device plugins,
#: DCGM exporter) use it to run only where the hardware is.
ACCELERATOR_LABEL = "llm-endpoints/accelerator"
#: Labels the pool owns; user labels may not override them.
RESERVED_LABELS = frozenset({POOL_LABEL, ACCELERATOR_LABEL})
#: Karpenter (and Auto Mode) never voluntarily evicts a pod carrying this.
DO_NOT_DISRUPT = "karpenter.sh/do-not-disrupt"

#: The extended resource each accelerator's device plugin advertises.
RESOURCE_NAMES: dict[Accelerator, str] = {
    Accelerator.NVIDIA: "nvidia.com/gpu",
    Accelerator.NEURON: "aws.amazon.com/neuron",
}
#: The taint key each accelerator's nodes carry by default, so that CPU pods
#: never take a node that costs 10-100x more.
TAINT_KEYS: dict[Accelerator, str] = {
    Accelerator.NVIDIA: "nvidia.com/gpu",
    Accelerator.NEURON: "aws.amazon.com/neuron",
}
#: EKS managed node group AMI types (AL2023 ships the driver and the runtime).
MANAGED_AMI_TYPES: dict[Accelerator, str] = {
    Accelerator.NVIDIA: "AL2023_x86_64_NVIDIA",
    Accelerator.NEURON: "AL2023_x86_64_NEURON",
}
#: EKS managed node groups spell capacity types in upper case.
MANAGED_CAPACITY_TYPES: dict[CapacityType, str] = {
    CapacityType.ON_DEMAND: "ON_DEMAND",
    CapacityType.SPOT: "SPOT",
}
#: Well-known label prefixes for instance attributes: Karpenter's own, and the
#: ones EKS Auto Mode accepts in NodePool requirements.
LABEL_PREFIXES: dict[PoolMode, str] = {
    PoolMode.KARPENTER: "karpenter.k8s.aws",
    PoolMode.AUTO_MODE: "eks.amazonaws.com",
}

#: EKS Auto Mode replaces every node within 21 days.
AUTO_MODE_MAX_LIFETIME_H = 21 * 24
#: Default node lifetime per NodePool mode (see AcceleratorPoolArgs.expire_after).
DEFAULT_EXPIRE_AFTER: dict[PoolMode, str] = {
    PoolMode.KARPENTER: "Never",
    PoolMode.AUTO_MODE: "336h",
}


class InstanceSelection(StrEnum):
    """How a Karpenter or Auto Mode NodePool chooses instance types.

    ``types`` allows exactly the planner's instance types (the planner checked
    that the model fits on them). ``category`` allows every instance of their
    categories from their lowest generation up (``instance-category In [g]``,
    ``instance-generation Gt [4]``): more spot and on-demand capacity to draw
    from, at the price of possibly landing on a different accelerator of the
    same family; the pool's device limit still caps the spend.
    """

    TYPES = "types"
    CATEGORY = "category"


@dataclass(frozen=True)
class AcceleratorPoolArgs:
    """Arguments of :class:`AcceleratorPool`.

    Attributes:
        mode: karpenter, auto-mode, managed or none.
        accelerator: nvidia or neuron; every instance type must match it.
        instance_types: EC2 instance types (the planner's choice first); optional
            only in mode ``none``.
        capacity_types: on-demand and/or spot (managed: exactly one).
        max_nodes: Most nodes at once; the pool's device limit is
            ``max_nodes`` x the largest device count of ``instance_types``.
            A managed pool is fixed at this size (nothing autoscales it).
        efa: Attach EFA interfaces and a cluster placement group (managed only;
            ``none``: the existing nodes have EFA).
        cluster_auto_mode: Whether the cluster runs EKS Auto Mode.
        cluster_name: EKS cluster name (karpenter: discovery tag; managed).
        node_role_name: IAM role of Karpenter nodes (karpenter).
        node_role_arn: IAM role of the managed node group (managed).
        subnet_ids: Private subnets (managed); the group uses only
            ``subnet_ids[subnet_index]`` so every node shares one AZ.
        subnet_index: Which subnet (so which AZ) a managed group lands in.
        security_group_ids: Security groups for a managed group's interfaces;
            normally the cluster security group (lets EFA traffic flow).
        taint_key: Taint key; default ``nvidia.com/gpu`` or ``aws.amazon.com/neuron``.
        root_volume_gib: Root volume (gp3, encrypted); 200 GiB holds a ~15 GB
            serving image unpacked plus its layers and the kubelet's headroom.
        labels: Extra node labels.
        selection: How NodePools pick instances; None: ``types`` for karpenter,
            ``category`` for auto-mode (the reference gpt-oss-20b deployment).
        consolidate_after: How long a node must be empty before it is removed.
        expire_after: Node lifetime. None: ``Never`` for karpenter, because
            expiry is forceful in Karpenter v1 and would restart a serving
            model; ``336h`` for auto-mode, whose nodes live at most 21 days
            (AWS: EKS Auto Mode node lifecycle), so a bounded value is required.
        ami_alias: EC2NodeClass AMI alias, pinned in ``_versions``.
        node_class: The NodePool's ``nodeClassRef`` (``group``, ``kind``,
            ``name``) when the cluster's node class exists already (an existing
            cluster whose Karpenter has its own, or Karpenter's KWOK provider);
            None: karpenter makes an EC2NodeClass, auto-mode uses Auto Mode's
            ``default`` NodeClass.
    """

    mode: PoolMode
    accelerator: Accelerator
    instance_types: Sequence[str] = ()
    capacity_types: Sequence[CapacityType] = (CapacityType.ON_DEMAND,)
    max_nodes: int = 1
    efa: bool = False
    cluster_auto_mode: bool = False
    cluster_name: pulumi.Input[str] | None = None
    node_role_name: pulumi.Input[str] | None = None
    node_role_arn: pulumi.Input[str] | None = None
    subnet_ids: pulumi.Input[Sequence[pulumi.Input[str]]] | None = None
    subnet_index: int = 0
    security_group_ids: pulumi.Input[Sequence[pulumi.Input[str]]] | None = None
    taint_key: str | None = None
    root_volume_gib: int = 200
    labels: Mapping[str, str] = field(default_factory=dict)
    selection: InstanceSelection | None = None
    consolidate_after: str = "10m"
    expire_after: str | None = None
    ami_alias: str = _versions.KARPENTER_AMI_ALIAS
    node_class: Mapping[str, str] | None = None


def _instances(args: AcceleratorPoolArgs) -> list[InstanceType]:
    """Resolve and check the instance types (ValueError naming the field)."""
    if not args.instance_types and args.mode is not PoolMode.NONE:
        raise ValueError(f"instance_types: a {args.mode.value!s} pool needs at least one type")
    out: list[InstanceType] = []
    for name in args.instance_types:
        try:
            inst = get_instance(name)
        except ValueError as e:
            raise ValueError(f"instance_types: {e}".replace("instance_type: ", "")) from None
        out.append(inst)
    if len({i.name for i in out}) != len(out):
        raise ValueError("instance_types: duplicate instance type")
    check_pool_instances(
        out,
        mode=args.mode.value,
        accelerator=args.accelerator,
        efa=args.efa,
        max_nodes=args.max_nodes,
    )
    return out


def _validate(name: str, args: AcceleratorPoolArgs) -> list[InstanceType]:
    """Check every argument before anything is registered."""
    if not isinstance(args.mode, PoolMode):
        raise ValueError(f"mode: {args.mode!r} is not one of {[m.value for m in PoolMode]}")
    if not isinstance(args.accelerator, Accelerator):
        raise ValueError(
            f"accelerator: {args.accelerator!r} is not one of {[a.value for a in Accelerator]}"
        )
    if not rules.DNS1123_LABEL_RE.match(name):
        raise ValueError(f"name: {name!r} is not a DNS-1123 label (it names the NodePool)")
    if args.mode is PoolMode.AUTO_MODE and not args.cluster_auto_mode:
        raise ValueError(
            "mode: an 'auto-mode' pool needs an EKS Auto Mode cluster (cluster_auto_mode=True); "
            "use 'karpenter' or 'managed'"
        )
    if args.mode is PoolMode.KARPENTER and args.cluster_auto_mode:
        raise ValueError(
            "mode: an Auto Mode cluster provisions nodes itself and runs no Karpenter of ours; "
            "use 'auto-mode' or 'managed'"
        )
    instances = _instances(args)
    if args.max_nodes < 1:
        raise ValueError(f"max_nodes: must be at least 1, got {args.max_nodes}")
    caps = list(args.capacity_types)
    if not caps or len(set(caps)) != len(caps):
        raise ValueError(f"capacity_types: need one or more distinct values, got {caps}")
    for c in caps:
        if not isinstance(c, CapacityType):
            raise ValueError(
                f"capacity_types: {c!r} is not one of {[t.value for t in CapacityType]}"
            )
    lo, hi = ROOT_VOLUME_RANGE
    if not lo <= args.root_volume_gib <= hi:
        raise ValueError(f"root_volume_gib: must be {lo}..{hi}, got {args.root_volume_gib}")
    if args.taint_key is not None:
        rules.check_taint_key(args.taint_key)
    rules.check_labels(args.labels, reserved=RESERVED_LABELS, reserved_by="the pool")
    for fld in ("consolidate_after", "expire_after"):
        if getattr(args, fld) is not None:
            rules.duration_seconds(getattr(args, fld), fld)
    if (
        args.mode is PoolMode.AUTO_MODE
        and args.expire_after is not None
        and rules.duration_seconds(args.expire_after, "expire_after")
        > AUTO_MODE_MAX_LIFETIME_H * 3600
    ):
        raise ValueError(
            f"expire_after: EKS Auto Mode nodes live at most {AUTO_MODE_MAX_LIFETIME_H}h, "
            f"got {args.expire_after!r}"
        )
    if args.node_class is not None:
        if args.mode not in (PoolMode.KARPENTER, PoolMode.AUTO_MODE):
            raise ValueError("node_class: applies only to karpenter and auto-mode pools")
        check_node_class(args.node_class)
    if args.mode is PoolMode.KARPENTER and args.node_class is None:
        if args.cluster_name is None:
            raise ValueError(
                "cluster_name: a karpenter pool selects subnets by the cluster's discovery tag"
            )
        if args.node_role_name is None:
            raise ValueError("node_role_name: a karpenter pool needs the node IAM role")
        if not args.ami_alias or args.ami_alias.endswith("@latest"):
            raise ValueError(
                f"ami_alias: {args.ami_alias!r} must pin an AMI release, e.g. al2023@v20251023"
            )
    if args.mode is PoolMode.MANAGED:
        _validate_managed(args, instances, caps)
    return instances


def _validate_managed(
    args: AcceleratorPoolArgs, instances: list[InstanceType], caps: list[CapacityType]
) -> None:
    for fld in ("cluster_name", "node_role_arn", "subnet_ids", "security_group_ids"):
        if getattr(args, fld) is None:
            raise ValueError(f"{fld}: required for a managed pool")
    if len(caps) != 1:
        raise ValueError("capacity_types: a managed node group takes exactly one capacity type")
    if args.subnet_index < 0:
        raise ValueError(f"subnet_index: must be >= 0, got {args.subnet_index}")


class AcceleratorPool(pulumi.ComponentResource):
    """Accelerator nodes and the scheduling constraints that reach them.

    Attributes:
        mode: The pool mode.
        accelerator: nvidia or neuron.
        resource_name: Extended resource to request (``nvidia.com/gpu`` or
            ``aws.amazon.com/neuron``).
        node_selector: Node selector that matches only this pool's nodes
            (empty in mode ``none``: the resource request picks the nodes).
        taints: The pool's taints as Kubernetes taint dicts.
        tolerations: Kubernetes tolerations matching exactly ``taints``.
        pod_annotations: Annotations for serving pods (Karpenter's
            do-not-disrupt for NodePool modes).
        labels: Every label the pool puts on its nodes.
        efa: Whether the nodes carry EFA interfaces.
        devices_per_node: Accelerator devices on the largest instance type.
        instance_types: The instance types, as given.
        node_pool_name: NodePool name (karpenter, auto-mode), else None.
        node_group_name: Managed node group name (managed), else None.
    """

    TYPE: ClassVar[str] = "llm-endpoints:components:AcceleratorPool"

    mode: PoolMode
    accelerator: Accelerator
    resource_name: str
    node_selector: dict[str, str]
    taints: list[dict[str, str]]
    tolerations: list[dict[str, str]]
    pod_annotations: dict[str, str]
    labels: dict[str, str]
    efa: bool
    devices_per_node: int
    instance_types: list[str]
    node_pool_name: str | None
    node_group_name: pulumi.Output[str] | None

    def __init__(
        self, name: str, args: AcceleratorPoolArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        instances = _validate(name, args)
        super().__init__(self.TYPE, name, None, opts)
        # Children do not inherit the component's depends_on; forward it so a
        # NodePool waits for (say) the Karpenter release that installs its CRD.
        deps = opts.depends_on if opts else None
        self._deps: list[pulumi.Resource] = (
            [deps] if isinstance(deps, pulumi.Resource) else list(deps or [])  # type: ignore[arg-type]
        )

        self.mode = args.mode
        self.accelerator = args.accelerator
        self.resource_name = RESOURCE_NAMES[args.accelerator]
        self.efa = args.efa
        self.instance_types = [i.name for i in instances]
        self.devices_per_node = max((i.count for i in instances), default=0)
        taint_key = args.taint_key or TAINT_KEYS[args.accelerator]
        self.taints = [{"key": taint_key, "value": "true", "effect": "NoSchedule"}]
        # Derived from the taints, never written twice, so they cannot drift.
        self.tolerations = [
            {"key": t["key"], "operator": "Equal", "value": t["value"], "effect": t["effect"]}
            for t in self.taints
        ]
        self.labels = {
            **dict(args.labels),
            POOL_LABEL: name,
            ACCELERATOR_LABEL: args.accelerator.value,
        }
        self.node_selector = {} if args.mode is PoolMode.NONE else {POOL_LABEL: name}
        self.pod_annotations = (
            {DO_NOT_DISRUPT: "true"}
            if args.mode in (PoolMode.KARPENTER, PoolMode.AUTO_MODE)
            else {}
        )
        self.node_pool_name = None
        self.node_group_name = None

        if args.mode is PoolMode.KARPENTER and args.node_class is None:
            node_class = self._ec2_node_class(name, args)
            self._node_pool(name, args, instances, node_class)
        elif args.mode in (PoolMode.KARPENTER, PoolMode.AUTO_MODE):
            self._node_pool(name, args, instances, None)
        elif args.mode is PoolMode.MANAGED:
            self._managed(name, args, instances)

        outputs: dict[str, Any] = {
            "mode": self.mode.value,
            "accelerator": self.accelerator.value,
            "resourceName": self.resource_name,
            "nodeSelector": self.node_selector,
            "tolerations": self.tolerations,
            "taints": self.taints,
            "efa": self.efa,
            "instanceTypes": self.instance_types,
        }
        if self.node_pool_name:
            outputs["nodePoolName"] = self.node_pool_name
        if self.node_group_name is not None:
            outputs["nodeGroupName"] = self.node_group_name
        self.register_outputs(outputs)

    def _opts(self, *extra: pulumi.Resource) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=self, depends_on=[*self._deps, *extra] or None)

    # -- karpenter / auto-mode ------------------------------------------------

    def _requirements(
        self, args: AcceleratorPoolArgs, instances: list[InstanceType]
    ) -> list[dict[str, Any]]:
        selection = args.selection or (
            InstanceSelection.CATEGORY
            if args.mode is PoolMode.AUTO_MODE
            else InstanceSelection.TYPES
        )
        reqs: list[dict[str, Any]] = []
        if selection is InstanceSelection.TYPES:
            reqs.append(
                {
                    "key": "node.kubernetes.io/instance-type",
                    "operator": "In",
                    "values": [i.name for i in instances],
                }
            )
        else:
            prefix = LABEL_PREFIXES[args.mode]
            reqs += [
                {
                    "key": f"{prefix}/instance-category",
                    "operator": "In",
                    "values": sorted({i.category for i in instances}),
                },
                {
                    "key": f"{prefix}/instance-generation",
                    "operator": "Gt",
                    "values": [str(min(i.generation for i in instances) - 1)],
                },
            ]
        reqs += [
            {
                "key": "karpenter.sh/capacity-type",
                "operator": "In",
                "values": [c.value for c in args.capacity_types],
            },
            # The catalog's instances and the serving images are x86_64 only.
            {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]},
        ]
        if args.mode is PoolMode.KARPENTER:
            # Auto Mode runs Linux only and lists kubernetes.io/os among the labels
            # its NodePools do not support (EKS User Guide, "Create a Node Pool").
            reqs.append({"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]})
        return reqs

    def _node_pool(
        self,
        name: str,
        args: AcceleratorPoolArgs,
        instances: list[InstanceType],
        node_class: k8s.apiextensions.CustomResource | None,
    ) -> None:
        deps: list[pulumi.Resource] = []
        if args.node_class is not None:
            node_class_ref = dict(args.node_class)
        elif node_class is None:
            # Auto Mode's built-in NodeClass: its AMIs carry the device plugins.
            node_class_ref = {"group": "eks.amazonaws.com", "kind": "NodeClass", "name": "default"}
        else:
            node_class_ref = {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": name}
            deps = [node_class]
        spec: dict[str, Any] = {
            "template": {
                "metadata": {"labels": self.labels},
                "spec": {
                    "nodeClassRef": node_class_ref,
                    "requirements": self._requirements(args, instances),
                    "taints": self.taints,
                    "expireAfter": args.expire_after or DEFAULT_EXPIRE_AFTER[args.mode],
                },
            },
            # Caps spend: total devices, whatever instance sizes are picked.
            "limits": {self.resource_name: str(args.max_nodes * self.devices_per_node)},
            "disruption": {
                # Only empty nodes are removed; a node serving a model is never
                # consolidated away under it.
                "consolidationPolicy": "WhenEmpty",
                "consolidateAfter": args.consolidate_after,
                "budgets": [
                    # Drift (e.g. an AMI pin bump) would evict serving pods; roll
                    # those nodes deliberately, not mid-request.
                    {"nodes": "0", "reasons": ["Drifted"]},
                    {"nodes": "1", "reasons": ["Empty"]},
                ],
            },
        }
        k8s.apiextensions.CustomResource(
            f"{name}-nodepool",
            api_version="karpenter.sh/v1",
            kind="NodePool",
            metadata={"name": name, "labels": self.labels},
            spec=spec,
            opts=self._opts(*deps),
        )
        self.node_pool_name = name

    def _ec2_node_class(
        self, name: str, args: AcceleratorPoolArgs
    ) -> k8s.apiextensions.CustomResource:
        discovery = {"karpenter.sh/discovery": args.cluster_name}
        return k8s.apiextensions.CustomResource(
            f"{name}-nodeclass",
            api_version="karpenter.k8s.aws/v1",
            kind="EC2NodeClass",
            metadata={"name": name, "labels": self.labels},
            spec={
                "role": args.node_role_name,
                "amiSelectorTerms": [{"alias": args.ami_alias}],
                # Only the cluster's private subnets and its security group carry
                # the discovery tag, so nodes never land in a public subnet.
                "subnetSelectorTerms": [{"tags": discovery}],
                "securityGroupSelectorTerms": [{"tags": discovery}],
                **node_class_hardening(args.root_volume_gib),
                "tags": {POOL_LABEL: name},
            },
            opts=self._opts(),
        )

    # -- managed ----------------------------------------------------------------

    def _managed(self, name: str, args: AcceleratorPoolArgs, instances: list[InstanceType]) -> None:
        sgs = args.security_group_ids
        placement = None
        network_interfaces = None
        vpc_security_group_ids = None
        if args.efa:
            placement_group = aws.ec2.PlacementGroup(
                f"{name}-placement",
                strategy="cluster",
                tags={POOL_LABEL: name},
                opts=self._opts(),
            )
            placement = aws.ec2.LaunchTemplatePlacementArgs(group_name=placement_group.name)
            # One EFA interface per network card; the primary is device 0 on
            # card 0, the others device 1 on their own card (EC2 EFA guide).
            network_interfaces = [
                aws.ec2.LaunchTemplateNetworkInterfaceArgs(
                    network_card_index=i,
                    device_index=0 if i == 0 else 1,
                    interface_type="efa",
                    delete_on_termination="true",
                    security_groups=sgs,
                )
                for i in range(instances[0].efa)
            ]
        else:
            vpc_security_group_ids = sgs
        template = launch_template(
            f"{name}-lt",
            description=f"llm-endpoints accelerator pool {name}",
            root_volume_gib=args.root_volume_gib,
            fast_root=True,
            network_interfaces=network_interfaces,
            vpc_security_group_ids=vpc_security_group_ids,
            placement=placement,
            instance_tags={POOL_LABEL: name},
            opts=self._opts(),
        )
        index = args.subnet_index
        # One AZ: a cluster placement group cannot span AZs, and cross-AZ
        # traffic between TP/PP ranks is slow and billed.

        def pick(ids: Sequence[str]) -> list[str]:
            return [list(ids)[index]]

        one_subnet = pulumi.Output.from_input(args.subnet_ids).apply(pick)  # type: ignore[arg-type]
        node_group = aws.eks.NodeGroup(
            f"{name}-ng",
            cluster_name=args.cluster_name,
            node_role_arn=args.node_role_arn,
            subnet_ids=one_subnet,
            instance_types=[i.name for i in instances],
            ami_type=MANAGED_AMI_TYPES[args.accelerator],
            capacity_type=MANAGED_CAPACITY_TYPES[next(iter(args.capacity_types))],
            scaling_config=aws.eks.NodeGroupScalingConfigArgs(
                min_size=args.max_nodes, desired_size=args.max_nodes, max_size=args.max_nodes
            ),
            update_config=aws.eks.NodeGroupUpdateConfigArgs(max_unavailable=1),
            launch_template=aws.eks.NodeGroupLaunchTemplateArgs(
                id=template.id, version=template.latest_version.apply(str)
            ),
            labels=self.labels,
            taints=[
                aws.eks.NodeGroupTaintArgs(
                    key=t["key"], value=t["value"], effect=_MANAGED_EFFECTS[t["effect"]]
                )
                for t in self.taints
            ],
            tags={POOL_LABEL: name},
            opts=self._opts(),
        )
        self.node_group_name = node_group.node_group_name


#: Kubernetes taint effects as the EKS node group API spells them.
_MANAGED_EFFECTS = {
    "NoSchedule": "NO_SCHEDULE",
    "NoExecute": "NO_EXECUTE",
    "PreferNoSchedule": "PREFER_NO_SCHEDULE",
}
