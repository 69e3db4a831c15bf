"""Every 4-vCPU catalog instance the planner can choose takes its own endpoint's pods.

The tightest nodes: 4 vCPUs, of which the kubelet reserves some and the
platform's DaemonSets take more. For each, the pods the project emits for an
endpoint the planner sizes on it (``build_endpoint`` under Pulumi's mocks, the
same code a stack runs) are created on one node of that type, with the
platform's DaemonSets running there, and must all be scheduled and Ready on
it: a vLLM Deployment's server, and a RayService's Ray head (with its API-key
proxy), worker and Open WebUI, which share the node.
"""

from __future__ import annotations

from typing import Any

import pulumi
import pytest

from components.catalog import INSTANCES
from components.config import parse_spec
from components.endpoint import build_endpoint
from tests.kube.conftest import Scratch
from tests.kube.helpers import Kube
from tests.kube.sim import Cluster
from tests.unit.conftest import RecordingMocks, settle

pytestmark = pytest.mark.kube

FOUR_VCPU = sorted(i.name for i in INSTANCES.values() if i.vcpu == 4)
MODEL = "Qwen/Qwen3-0.6B"


def _templates(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The pod templates ``build_endpoint`` emits for ``spec`` (recorded under mocks)."""
    mocks = RecordingMocks()
    pulumi.runtime.set_mocks(mocks, project="llm-endpoints", stack="fit", preview=False)
    try:
        build_endpoint(parse_spec(spec), api_key=pulumi.Output.secret("llme-" + "f" * 48))
        settle()
    finally:
        pulumi.runtime.settings.reset_options()
    out = []
    for r in mocks.resources:
        inputs = r.inputs
        if r.typ == "kubernetes:apps/v1:Deployment":
            out.append(inputs["spec"]["template"])
        elif r.typ.endswith(":RayService"):
            rc = inputs["spec"]["rayClusterConfig"]
            out.append(rc["headGroupSpec"]["template"])
            out += [g["template"] for g in rc["workerGroupSpecs"]]
    return [_ints(t) for t in out]


def _ints(value: Any) -> Any:
    """Pulumi's mocks carry numbers as floats (protobuf Struct); the API wants ints."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_ints(v) for v in value]
    return value


@pytest.mark.parametrize("serving", ["deployment", "ray-service"])
@pytest.mark.parametrize("instance", FOUR_VCPU)
def test_the_endpoint_fits_its_own_4_vcpu_node(
    instance: str,
    serving: str,
    kube_cluster: Cluster,
    kube: Kube,
    scratch: Scratch,
    platform_daemonsets: list[dict[str, Any]],
) -> None:
    spec = {
        "name": "fit",
        "model": MODEL,
        "instance_type": instance,
        "serving": serving,
        "open_webui": serving == "ray-service",
        "cluster": {"mode": "existing", "kubeconfig": str(kube.kubeconfig)},
        "storage": {"kind": "none"},
        "vllm": {"max_model_len": 4096},
    }
    templates = _templates(spec)
    # Deployment: the server; RayService: head (with its proxy), worker, Open WebUI.
    assert len(templates) == (3 if serving == "ray-service" else 1)
    group = f"{scratch.id}-fit"[:40]
    (node,) = kube_cluster.add_managed_node_group(group, instance, 1, name_prefix=group)
    scratch.nodes.append(node["metadata"]["name"])
    for i, template in enumerate(templates):
        pod_spec = dict(template["spec"])
        # Only this test's node: the pool's taint is tolerated already; select it by name.
        pod_spec["nodeSelector"] = {
            **pod_spec.get("nodeSelector", {}),
            "kubernetes.io/hostname": node["metadata"]["name"],
        }
        pod_spec["terminationGracePeriodSeconds"] = 0
        kube.api.create(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": f"fit-{i}",
                    "namespace": scratch.namespace,
                    "labels": {**template["metadata"]["labels"], "kube-sim/fit": "yes"},
                },
                "spec": pod_spec,
            }
        )
    pods = kube.wait_pods_ready(
        scratch.namespace, "kube-sim/fit=yes", timeout=90, count=len(templates)
    )
    assert {kube.node_of(p)["metadata"]["name"] for p in pods} == {node["metadata"]["name"]}
