"""The five reference stacks, deployed with ``pulumi up`` on the local control plane.

Each stack file's spec, changed only where AWS is needed (tests/kube/stacks.py
says what and why), is deployed by the project's StackService on the real
Pulumi engine. Then, on a real API server, scheduler, controllers and
Karpenter's KWOK provider, with the platform's DaemonSets on every node:

* every pod of the endpoint is Ready on a node of the planned instance type
  (Karpenter launched it for karpenter and auto-mode pools; a managed node
  group's nodes were there), and the stack's ``instance_type`` and
  ``cost_per_hour`` are that node's;
* the namespace is labelled for Pod Security and the API server enforces it;
* the endpoint answers only with its API key;
* ``pulumi destroy`` removes every object, and Karpenter's nodes go.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from components.catalog import INSTANCES
from components.endpoint import ENDPOINT_LABEL
from tests.kube.api import ApiError
from tests.kube.helpers import Kube
from tests.kube.sim import Cluster
from tests.kube.stacks import API_KEY, Engine, on_the_sim, persistent_volume, stack_file_spec

pytestmark = pytest.mark.kube

REFERENCE = [
    "deepseek-r1-llama-8b",
    "gpt-oss-20b",
    "llama3-8b-inf2",
    "deepseek-qwen-32b",
    "local-render",
]
INSTANCE_LABEL = "node.kubernetes.io/instance-type"
PRIVILEGED_POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "psa-probe"},
    "spec": {
        "containers": [
            {"name": "c", "image": "busybox:1.37", "securityContext": {"privileged": True}}
        ]
    },
}


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    return Engine(tmp_path_factory.mktemp("stacks"))


@pytest.fixture
def session_nodes(kube_cluster: Cluster, kube: Kube) -> Iterator[list[str]]:
    """Nodes a test pre-creates outside Karpenter; deleted after it."""
    names: list[str] = []
    yield names
    for name in names:
        kube.api.delete("v1", "Node", name)


def _pods(kube: Kube, namespace: str, endpoint: str) -> list[dict[str, Any]]:
    return kube.pods(namespace, f"{ENDPOINT_LABEL}={endpoint}")


def _serving_checks(kube: Kube, namespace: str, service: str, model: str) -> None:
    """The endpoint's Service answers the OpenAI API with the key, and only with it."""
    denied = kube.service_get(namespace, service, "http", "/v1/models")
    assert denied.status == 401, denied.text
    allowed = kube.service_get(
        namespace, service, "http", "/v1/models", {"Authorization": f"Bearer {API_KEY}"}
    )
    assert allowed.status == 200, allowed.text
    assert model in [m["id"] for m in allowed.json()["data"]], allowed.text
    health = kube.service_get(namespace, service, "http", "/health")
    assert health.status == 200, health.text


@pytest.mark.parametrize("stack", REFERENCE)
def test_reference_stack_schedules_serves_and_goes(
    stack: str,
    kube_cluster: Cluster,
    kube: Kube,
    engine: Engine,
    platform_daemonsets: list[dict[str, Any]],
    session_nodes: list[str],
) -> None:
    raw = stack_file_spec(stack)
    plan = on_the_sim(raw, kube, name=f"ref-{stack}"[:40].rstrip("-"))
    name = plan.spec["name"]
    if plan.managed_nodes is not None:
        instance, count, efa = plan.managed_nodes
        nodes = kube_cluster.add_managed_node_group(
            f"{name}-ng", instance, count, name_prefix=f"{name}-ng"
        )
        session_nodes += [n["metadata"]["name"] for n in nodes]
        assert not efa or all(
            int(n["status"]["allocatable"].get("vpc.amazonaws.com/efa", 0)) > 0 for n in nodes
        )
    if plan.spec["pool"].get("mode", "none") == "none" and plan.managed_nodes is None:
        # An existing cluster's GPU node group, one node of the planned type (local-render).
        nodes = kube_cluster.add_managed_node_group(
            f"{name}-ng", plan.spec["instance_type"], 1, name_prefix=f"{name}-ng"
        )
        session_nodes += [n["metadata"]["name"] for n in nodes]
    if plan.volume_gib:
        persistent_volume(kube, f"{name}-pv", plan.volume_gib)

    deployed = engine.deploy(plan.spec)
    spec, out = deployed.spec, deployed.outputs
    namespace = spec.resolved_namespace
    try:
        pods = _pods(kube, namespace, name)
        serving = [
            p for p in pods if p["metadata"].get("ownerReferences", [{}])[0].get("kind") != "Job"
        ]
        assert serving, kube.pods_report(namespace, "")
        kube.wait_pods_ready(namespace, f"{ENDPOINT_LABEL}={name},app.kubernetes.io/name=vllm")
        # Every pod on a node of the planned type: the one the planner sized and priced.
        for pod in serving:
            node = kube.node_of(pod)
            assert node["metadata"]["labels"][INSTANCE_LABEL] == out["instance_type"], (
                pod["metadata"]["name"],
                kube.pods_report(namespace, ""),
            )
        instance = INSTANCES[out["instance_type"]]
        nodes_per_replica = (
            spec.pipeline_parallel if spec.serving.value == "leader-worker-set" else 1
        )
        assert out["cost_per_hour"] == pytest.approx(
            instance.price_per_hour * nodes_per_replica * spec.replicas, abs=0.001
        )
        # Pod Security: the label the pods allow, and the API server enforces it.
        labels = kube.api.get("v1", "Namespace", namespace)["metadata"]["labels"]
        level = labels["pod-security.kubernetes.io/enforce"]
        assert level in ("restricted", "baseline")
        with pytest.raises(ApiError) as refused:
            kube.api.create(
                {**PRIVILEGED_POD, "metadata": {"name": "psa-probe", "namespace": namespace}}
            )
        assert refused.value.status == 403 and "PodSecurity" in str(refused.value)
        # The OpenAI API behind the key.
        _serving_checks(kube, namespace, out["service"], spec.model)
    finally:
        result = engine.destroy(name)
    assert result.result == "succeeded"
    kube.wait_gone("Namespace", namespace, timeout=180)
    if spec.resolved_pool_mode.value in ("karpenter", "auto-mode"):
        pool = f"{name}-pool"
        kube.wait_gone("NodePool", pool, api_version="karpenter.sh/v1", timeout=120)
        kube.wait_nodepool_empty(pool)


def test_changes_to_reach_the_sim_are_only_aws(kube: Kube) -> None:
    """What on_the_sim changes, per stack: never the model, parallelism, serving
    mode, instance types, capacity types or limits."""
    for stack in REFERENCE:
        raw = stack_file_spec(stack)
        plan = on_the_sim(raw, kube)
        for key in ("model", "instance_type", "tensor_parallel", "pipeline_parallel", "serving",
                    "replicas", "vllm", "open_webui"):  # fmt: skip
            assert plan.spec.get(key) == raw.get(key), (stack, key)
        pool = raw.get("pool") or {}
        if pool.get("mode") in ("karpenter", "auto-mode"):
            for key in ("mode", "capacity_types", "instance_types", "max_nodes"):
                assert plan.spec["pool"].get(key) == pool.get(key), (stack, key)
