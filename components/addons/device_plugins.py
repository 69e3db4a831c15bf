"""Device plugins: what makes a node advertise its accelerators to the scheduler.

A pod may ask only for a resource that a plugin installed here advertises:
``nvidia.com/gpu`` (the NVIDIA device plugin), ``aws.amazon.com/neuron`` (the
Neuron device plugin, with the Neuron scheduler extension that hands out
contiguous NeuronCores), ``vpc.amazonaws.com/efa`` (the EFA device plugin).
Each plugin's DaemonSet runs only on the pools' nodes of its accelerator and
tolerates their taint.
"""

from __future__ import annotations

from typing import Any

import pulumi

from components import _versions
from components.accelerator_pool import ACCELERATOR_LABEL, TAINT_KEYS
from components.addons.base import ADDON_NAMESPACE, Addon, ClusterContext
from components.catalog import Accelerator


def accelerator_affinity(accelerator: Accelerator) -> dict[str, Any]:
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


def accelerator_tolerations(accelerator: Accelerator) -> list[dict[str, str]]:
    """Tolerate the accelerator pools' taint (and the system nodes' critical-add-on taint)."""
    return [
        {"key": TAINT_KEYS[accelerator], "operator": "Exists", "effect": "NoSchedule"},
        {"key": "CriticalAddonsOnly", "operator": "Exists"},
    ]


class NvidiaDevicePlugin(Addon):
    """The NVIDIA device plugin DaemonSet (advertises ``nvidia.com/gpu``)."""

    TYPE = "llm-endpoints:addons:NvidiaDevicePlugin"
    SUFFIX = "nvidia-device-plugin"

    def __init__(self, ctx: ClusterContext, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(ctx, opts)
        self._release(
            "nvidia-device-plugin",
            _versions.NVIDIA_DEVICE_PLUGIN_CHART,
            _versions.NVIDIA_DEVICE_PLUGIN_VERSION,
            ADDON_NAMESPACE,
            {
                # The chart's default affinity wants NFD labels we do not run.
                "affinity": accelerator_affinity(Accelerator.NVIDIA),
                "tolerations": accelerator_tolerations(Accelerator.NVIDIA),
            },
            repo=_versions.NVIDIA_DEVICE_PLUGIN_REPO,
        )
        self._done()


class NeuronDevicePlugin(Addon):
    """The Neuron device plugin and scheduler extension (``aws.amazon.com/neuron``)."""

    TYPE = "llm-endpoints:addons:NeuronDevicePlugin"
    SUFFIX = "neuron"

    def __init__(self, ctx: ClusterContext, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(ctx, opts)
        self._release(
            "neuron",
            _versions.NEURON_CHART,
            _versions.NEURON_CHART_VERSION,
            ADDON_NAMESPACE,
            {
                "devicePlugin": {
                    "enabled": True,
                    "tolerations": accelerator_tolerations(Accelerator.NEURON),
                },
                # Allocates contiguous NeuronCores, which tensor-parallel needs.
                "scheduler": {"enabled": True},
                "npd": {"enabled": False},
            },
        )
        self._done()


class EfaDevicePlugin(Addon):
    """The EFA device plugin DaemonSet (advertises ``vpc.amazonaws.com/efa``).

    The chart selects EFA-capable instance types itself
    (``supportedInstanceLabels``); it is given the accelerator pools' taints.
    """

    TYPE = "llm-endpoints:addons:EfaDevicePlugin"
    SUFFIX = "efa-device-plugin"
    #: Where the chart's own documentation installs it (and PLATFORM_DAEMONSETS counts it).
    NAMESPACE = "kube-system"

    def __init__(self, ctx: ClusterContext, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(ctx, opts)
        self._release(
            "aws-efa-k8s-device-plugin",
            _versions.EFA_DEVICE_PLUGIN_CHART,
            _versions.EFA_DEVICE_PLUGIN_VERSION,
            self.NAMESPACE,
            {
                "tolerations": [
                    *accelerator_tolerations(Accelerator.NVIDIA),
                    *accelerator_tolerations(Accelerator.NEURON)[:1],
                ],
            },
            repo=_versions.EFA_DEVICE_PLUGIN_REPO,
        )
        self._done()
