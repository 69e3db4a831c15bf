"""What every add-on shares: the cluster it goes on, and how it installs charts.

An add-on is a small ``ComponentResource`` built from a :class:`ClusterContext`
(usually through its ``from_cluster`` factory, which reads the context off a
:class:`~components.cluster.Cluster`). Its resources keep the logical names
they had when the cluster built them itself, and carry an alias to the cluster
as their old parent, so platform stacks created before add-ons were components
update in place instead of replacing their controllers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

import pulumi
import pulumi_kubernetes as k8s

from components.iam import WorkloadIdentity

#: Namespace of the controllers that run on every cluster.
ADDON_NAMESPACE = "kube-system"
#: Node label of the system node group (add-on controllers run there).
SYSTEM_LABEL = "llm-endpoints/role"
#: How long a chart may take to become ready before its install fails.
RELEASE_TIMEOUT_S = 600


@dataclass(frozen=True)
class ClusterContext:
    """What an add-on needs from the cluster it is installed on.

    Attributes:
        prefix: Prefix of every logical name (the cluster component's name).
        cluster_name: The EKS cluster's name; an Output that resolves once the
            control plane exists, so consumers wait for it.
        k8s_provider: The Kubernetes provider of the cluster.
        identity: How service accounts get IAM roles there.
        vpc_id: The cluster's VPC (load balancer controller), if known.
        auto_mode: Whether the cluster runs EKS Auto Mode.
        depends_on: What add-ons wait for (the system node group, the Pod
            Identity agent).
        parent: The component the add-ons' resources used to be children of
            (their alias), normally the cluster.
    """

    prefix: str
    cluster_name: pulumi.Input[str]
    k8s_provider: k8s.Provider
    identity: WorkloadIdentity
    vpc_id: pulumi.Input[str] | None = None
    auto_mode: bool = False
    depends_on: Sequence[pulumi.Resource] = field(default_factory=list)
    parent: pulumi.Resource | None = None


class Addon(pulumi.ComponentResource):
    """Base of the add-on components.

    Attributes:
        ctx: The cluster context it was built with.
        installed: What consumers should wait for (Helm releases, EKS add-ons)
            before creating objects whose CRDs, webhooks or devices it provides.
    """

    TYPE: ClassVar[str]
    #: Suffix of the add-on's name after the cluster prefix (``plat-karpenter``).
    SUFFIX: ClassVar[str]

    ctx: ClusterContext
    installed: list[pulumi.Resource]

    def __init__(
        self,
        ctx: ClusterContext,
        opts: pulumi.ResourceOptions | None = None,
        *,
        suffix: str | None = None,
    ) -> None:
        super().__init__(self.TYPE, f"{ctx.prefix}-{suffix or self.SUFFIX}", None, opts)
        self.ctx = ctx
        self.installed = []

    @classmethod
    def from_cluster(cls, cluster: Any, **kwargs: Any) -> Self:
        """Install the add-on on a :class:`~components.cluster.Cluster`, as its child.

        Args:
            cluster: The cluster component (its ``addon_context()`` is used).
            kwargs: The add-on's own arguments.
        """
        return cls(cluster.addon_context(), **kwargs, opts=pulumi.ResourceOptions(parent=cluster))

    def _child(self, *, depends_on: Sequence[pulumi.Resource] = ()) -> pulumi.ResourceOptions:
        aliases = [pulumi.Alias(parent=self.ctx.parent)] if self.ctx.parent is not None else None
        return pulumi.ResourceOptions(parent=self, aliases=aliases, depends_on=list(depends_on))

    def _on_cluster(self, *, depends_on: Sequence[pulumi.Resource] = ()) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions.merge(
            self._child(depends_on=depends_on),
            pulumi.ResourceOptions(provider=self.ctx.k8s_provider),
        )

    def _release(
        self,
        suffix: str,
        chart: str,
        version: str,
        namespace: str,
        values: Mapping[str, Any],
        *,
        repo: str | None = None,
        depends_on: Sequence[pulumi.Resource] = (),
    ) -> k8s.helm.v3.Release:
        """Install a pinned chart; fail (and roll back) rather than half-install it."""
        release = k8s.helm.v3.Release(
            f"{self.ctx.prefix}-{suffix}",
            chart=chart,
            version=version,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=repo) if repo else None,
            namespace=namespace,
            create_namespace=namespace != ADDON_NAMESPACE,
            values=dict(values),
            atomic=True,
            timeout=RELEASE_TIMEOUT_S,
            opts=self._on_cluster(depends_on=[*self.ctx.depends_on, *depends_on]),
        )
        self.installed.append(release)
        return release

    def _done(self, **outputs: Any) -> None:
        self.register_outputs(outputs)
