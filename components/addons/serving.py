"""The serving controllers: KubeRay (RayService) and LeaderWorkerSet (multi-node)."""

from __future__ import annotations

import pulumi

from components import _versions
from components.addons.base import Addon, ClusterContext


class KubeRay(Addon):
    """The KubeRay operator (RayService, RayCluster)."""

    TYPE = "llm-endpoints:addons:KubeRay"
    SUFFIX = "kuberay"
    NAMESPACE = "kuberay-system"

    def __init__(self, ctx: ClusterContext, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(ctx, opts)
        self._release(
            "kuberay",
            _versions.KUBERAY_CHART,
            _versions.KUBERAY_VERSION,
            self.NAMESPACE,
            {},
            repo=_versions.KUBERAY_REPO,
        )
        self._done()


class LeaderWorkerSet(Addon):
    """The LeaderWorkerSet controller and its webhook."""

    TYPE = "llm-endpoints:addons:LeaderWorkerSet"
    SUFFIX = "lws"
    NAMESPACE = "lws-system"

    def __init__(self, ctx: ClusterContext, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(ctx, opts)
        self._release("lws", _versions.LWS_CHART, _versions.LWS_VERSION, self.NAMESPACE, {})
        self._done()
