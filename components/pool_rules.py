"""Which instance types a node pool can launch: one rule for the spec, the planner and
the pool.

The spec checks the instance types it names, the planner chooses only among
the ones the pool can launch, and :class:`~components.accelerator_pool.AcceleratorPool`
checks its arguments, all with :func:`check_pool_instances`, so a spec the API
accepts is a pool the component builds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from components import rules
from components.catalog import Accelerator, InstanceType

#: Pool modes (values of ``components.config.PoolMode``) the rules refer to.
AUTO_MODE = "auto-mode"
MANAGED = "managed"
NODE_POOL_MODES = ("karpenter", AUTO_MODE)


def refusal(
    inst: InstanceType, *, mode: str, accelerator: Accelerator, efa: bool, max_nodes: int
) -> tuple[str, str] | None:
    """Why a pool cannot launch ``inst``, as ``(field, message)``, or None when it can."""
    if inst.accelerator is not accelerator:
        return (
            "instance_types",
            f"{inst.name} has {inst.accelerator.value} accelerators but the pool's "
            f"accelerator is {accelerator.value}",
        )
    if mode == AUTO_MODE and not inst.auto_mode:
        # Auto Mode offers a fixed list of instance types; p4de and p5en are not on
        # it (docs.aws.amazon.com/eks/latest/userguide/automode-learn-instances.html).
        return (
            "instance_types",
            f"{inst.name} is not offered by EKS Auto Mode; use pool mode 'karpenter' or "
            "'managed', or another instance type",
        )
    if efa and not inst.efa:
        return "efa", f"{inst.name} has no Elastic Fabric Adapter"
    if mode == MANAGED and max_nodes > 1 and not inst.efa:
        # A multi-node managed pool serves one model across nodes (LeaderWorkerSet
        # TP x PP); without EFA the inter-node traffic crawls over TCP.
        return (
            "instance_types",
            f"a multi-node managed pool needs EFA-capable instance types; {inst.name} have none",
        )
    return None


def check_pool_instances(
    instances: Sequence[InstanceType],
    *,
    mode: str,
    accelerator: Accelerator,
    efa: bool,
    max_nodes: int,
    field_prefix: str = "",
) -> None:
    """Raise ValueError, naming the field, unless the pool can launch every instance type.

    Args:
        instances: The pool's instance types.
        mode: ``karpenter``, ``auto-mode``, ``managed`` or ``none``.
        accelerator: The pool's accelerator family.
        efa: Whether the nodes get EFA interfaces (managed pools).
        max_nodes: The pool's size (managed: its fixed size).
        field_prefix: Prefix of field names in errors (``pool.`` in the spec).
    """
    if efa and mode in NODE_POOL_MODES:
        # EFA for multi-node serving needs a cluster placement group, which
        # NodePools cannot express; the managed pool creates one.
        raise ValueError(
            f"{field_prefix}efa: EFA pools need mode 'managed' (EFA interfaces + placement group)"
        )
    for inst in instances:
        why = refusal(inst, mode=mode, accelerator=accelerator, efa=efa, max_nodes=max_nodes)
        if why is not None:
            raise ValueError(f"{field_prefix}{why[0]}: {why[1]}")
    if mode == MANAGED and max_nodes > 1 and not efa:
        raise ValueError(f"{field_prefix}efa: a multi-node managed pool needs efa: true")
    if efa and len({i.efa for i in instances}) > 1:
        raise ValueError(
            f"{field_prefix}instance_types: a launch template has one set of EFA interfaces; "
            "use instance types with the same EFA count"
        )


def check_node_class(ref: Mapping[str, str], field: str = "node_class") -> None:
    """A NodePool's ``nodeClassRef``: exactly group, kind and name, each well formed."""
    if set(ref) != {"group", "kind", "name"}:
        raise ValueError(f"{field}: needs exactly group, kind and name, got {sorted(ref)}")
    if not rules.DNS1123_SUBDOMAIN_RE.match(ref["group"]) or "." not in ref["group"]:
        raise ValueError(f"{field}.group: {ref['group']!r} is not an API group")
    if not re.fullmatch(r"[A-Z][A-Za-z0-9]{0,62}", ref["kind"]):
        raise ValueError(f"{field}.kind: {ref['kind']!r} is not a kind (e.g. EC2NodeClass)")
    if not rules.DNS1123_SUBDOMAIN_RE.match(ref["name"]):
        raise ValueError(f"{field}.name: {ref['name']!r} is not an object name")
