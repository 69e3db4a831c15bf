"""The NVIDIA DCGM exporter: GPU metrics, annotated for Prometheus scraping."""

from __future__ import annotations

import pulumi

from components import _versions
from components.addons.base import Addon, ClusterContext
from components.addons.device_plugins import accelerator_affinity, accelerator_tolerations
from components.catalog import Accelerator

NAMESPACE = "monitoring"
METRICS_PORT = 9400


class DcgmExporter(Addon):
    """The DCGM exporter DaemonSet on the NVIDIA pools' nodes."""

    TYPE = "llm-endpoints:addons:DcgmExporter"
    SUFFIX = "dcgm-exporter"

    def __init__(self, ctx: ClusterContext, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(ctx, opts)
        self._release(
            "dcgm-exporter",
            _versions.DCGM_EXPORTER_CHART,
            _versions.DCGM_EXPORTER_VERSION,
            NAMESPACE,
            {
                "affinity": accelerator_affinity(Accelerator.NVIDIA),
                "tolerations": accelerator_tolerations(Accelerator.NVIDIA),
                # Plain annotations: no dependency on the Prometheus operator CRDs.
                "serviceMonitor": {"enabled": False},
                "podAnnotations": {
                    "prometheus.io/scrape": "true",
                    "prometheus.io/port": str(METRICS_PORT),
                    "prometheus.io/path": "/metrics",
                },
            },
            repo=_versions.DCGM_EXPORTER_REPO,
        )
        self._done()
