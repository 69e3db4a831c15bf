"""Fixtures for tests against the local Kubernetes control plane (tests/kube/sim.py).

One cluster per session (start-up takes several seconds). These tests fail,
rather than skip, outside a loopback-only network namespace or without the
installed control plane: a silently skipped cluster test would hide exactly the
breakage it exists to catch. Run them as::

    unshare -n sh -c 'ip link set lo up && exec .venv/bin/pytest tests/kube'

Fixtures: ``kube_cluster`` (the ``Cluster``), ``kube`` (``helpers.Kube``: its
kubeconfig, an API client and the waits and requests a stack test needs),
``scratch`` (a namespace and nodes of one test) and ``platform_daemonsets``
(the platform's DaemonSets for one test).

The session's cluster follows two environment variables (``1`` to turn on):
``KUBE_SIM_DAEMONSETS`` creates the platform's DaemonSets for the whole
session, ``KUBE_SIM_AUTO_MODE`` makes it an EKS Auto Mode cluster (every
Karpenter node also labelled ``eks.amazonaws.com/compute-type: auto``).
``KUBE_SIM_NGINX`` names the nginx program nginx containers run (else
``nginx`` on PATH; tests of the auth proxy skip without one).
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import pytest

from components import eks_node
from tests.kube.helpers import Kube
from tests.kube.sim import Cluster, ClusterConfig, SimError


@pytest.fixture(scope="session")
def kube_cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """A running local control plane, shared by the session."""
    capture = request.config.pluginmanager.getplugin("capturemanager")

    def say(message: str) -> None:
        # Start-up takes seconds: show its progress even while output is captured.
        if capture is not None:
            with capture.global_and_fixture_disabled():
                print(message, file=sys.stderr, flush=True)
        else:
            print(message, file=sys.stderr, flush=True)

    config = ClusterConfig(
        platform_daemonsets=os.environ.get("KUBE_SIM_DAEMONSETS") == "1",
        auto_mode=os.environ.get("KUBE_SIM_AUTO_MODE") == "1",
    )
    cluster = Cluster(config, log=say)
    error = None
    try:
        cluster.start()
    except SimError as e:
        error = str(e)
    if error is not None:
        # Stopped; its folder stays when it holds the logs the error names.
        cluster.abandon()
        pytest.fail(f"local Kubernetes control plane: {error}", pytrace=False)
    yield cluster
    rss = cluster.status()["rss_total_mib"]
    say(f"[kube-sim] control plane resident memory at the end: {rss} MiB")
    if request.session.testsfailed:
        # Something failed: keep every component's log for reading.
        cluster.stop()
        say(f"[kube-sim] tests failed; logs kept in {cluster.workdir / 'logs'}")
    else:
        cluster.cleanup()


@pytest.fixture(scope="session")
def kube(kube_cluster: Cluster) -> Kube:
    """The session's cluster for a stack test: kubeconfig, API client, waits, requests."""
    return Kube(kube_cluster)


@pytest.fixture
def platform_daemonsets(kube_cluster: Cluster) -> Iterator[list[dict[str, Any]]]:
    """The platform's DaemonSets (``eks_node.PLATFORM_DAEMONSETS``) for one test.

    Created before the test (their pods Ready on every node they land on,
    including nodes the test adds later) and deleted after it. For a whole
    session, start the cluster with ``ClusterConfig(platform_daemonsets=True)``.
    """
    if kube_cluster.config.platform_daemonsets:
        # The session has them already (KUBE_SIM_DAEMONSETS): leave them be.
        yield kube_cluster.install_platform_daemonsets()
        return
    created = kube_cluster.install_platform_daemonsets()
    yield created
    kube_cluster.remove_platform_daemonsets()


_serial = itertools.count(1)


class Scratch:
    """Per-test objects in the shared cluster: a namespace and tainted fake nodes.

    Each test's nodes carry the taint and label ``kube-sim/test=<id>``, so only
    that test's pods (which tolerate and select it) land on them; everything is
    deleted when the test ends.

    Attributes:
        cluster: The session's cluster.
        id: A short unique name for this test.
        namespace: The test's namespace (its ``default`` ServiceAccount exists).
    """

    KEY = "kube-sim/test"

    def __init__(self, cluster: Cluster, name: str) -> None:
        self.cluster = cluster
        self.id = f"t{next(_serial)}-{name}".lower().replace("_", "-")[:40].rstrip("-")
        self.namespace = self.id
        self.nodes: list[str] = []
        cluster.create_namespace(self.namespace)

    @property
    def toleration(self) -> dict[str, str]:
        """The toleration of this test's node taint."""
        return {"key": self.KEY, "operator": "Equal", "value": self.id, "effect": "NoSchedule"}

    @property
    def node_selector(self) -> dict[str, str]:
        """The node selector of this test's nodes."""
        return {self.KEY: self.id}

    def node(
        self,
        instance_type: str,
        *,
        plugins: Iterable[eks_node.DevicePlugin],
        suffix: str = "",
        provisioner: eks_node.Provisioner = eks_node.Provisioner.KARPENTER,
        capacity_type: eks_node.CapacityType = eks_node.CapacityType.ON_DEMAND,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Add a fake node of this test (tainted and labelled for it), Ready."""
        name = f"{self.id}-{instance_type.replace('.', '-')}{suffix}"
        self.nodes.append(name)
        return self.cluster.add_node(
            instance_type,
            name=name,
            provisioner=provisioner,
            capacity_type=capacity_type,
            plugins=plugins,
            labels={self.KEY: self.id, **kwargs.pop("labels", {})},
            taints=[{"key": self.KEY, "value": self.id, "effect": "NoSchedule"}],
            **kwargs,
        )

    def managed_node_group(
        self, instance_type: str, count: int, *, suffix: str = "-mng", **kwargs: Any
    ) -> list[dict[str, Any]]:
        """Nodes of a managed node group (``Cluster.add_managed_node_group``) of this test.

        Named and labelled for this test, so they are deleted with it; not
        tainted for it: the pool's own taint keeps other pods off.
        """
        group = f"{self.id}{suffix}"
        nodes = self.cluster.add_managed_node_group(
            group,
            instance_type,
            count,
            labels={self.KEY: self.id, **kwargs.pop("labels", {})},
            **kwargs,
        )
        self.nodes += [n["metadata"]["name"] for n in nodes]
        return nodes

    def system_nodes(self, count: int = 1, **kwargs: Any) -> list[dict[str, Any]]:
        """CPU system nodes (``Cluster.add_system_nodes``) of this test, tainted for it."""
        nodes = self.cluster.add_system_nodes(
            count,
            nodegroup=f"{self.id}-system",
            labels={self.KEY: self.id, **kwargs.pop("labels", {})},
            taints=[{"key": self.KEY, "value": self.id, "effect": "NoSchedule"}],
            **kwargs,
        )
        self.nodes += [n["metadata"]["name"] for n in nodes]
        return nodes

    def pod_spec(self, containers: list[Mapping[str, Any]], **extra: Any) -> dict[str, Any]:
        """A pod spec pinned to this test's nodes."""
        return {
            "containers": list(containers),
            "tolerations": [self.toleration],
            "nodeSelector": self.node_selector,
            # kwok deletes pods at once; no grace period to wait out.
            "terminationGracePeriodSeconds": 0,
            **extra,
        }

    def cleanup(self) -> None:
        api = self.cluster.api
        api.delete("v1", "Namespace", self.namespace)
        for name in self.nodes:
            api.delete("v1", "Node", name)


@pytest.fixture
def scratch(kube_cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[Scratch]:
    """A namespace and node set of this test alone, removed afterwards."""
    s = Scratch(kube_cluster, request.node.name.removeprefix("test_"))
    yield s
    s.cleanup()
