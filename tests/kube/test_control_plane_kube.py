"""The control plane over HTTP on the ``existing`` target: the local control plane is
the cluster, the worker runs the real Pulumi engine and the real builder.

* create -> ready (pods Ready) -> a pod is lost and cannot come back -> the
  endpoint shows not ready, and why -> it comes back -> ready again -> a
  redeploy with a changed vLLM flag rolls the pod -> destroy -> nothing left;
* a spec no node can take fails its operation with the scheduler's reason,
  within a minute of the scheduler's first verdict.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from automation.settings import Settings
from components.endpoint import ENDPOINT_LABEL
from tests.kube.api import wait_for
from tests.kube.helpers import Kube
from tests.kube.sim import Cluster
from tests.support import ALICE, DEAD_HUB, TOKENS_JSON, ThreadServer, request

pytestmark = pytest.mark.kube

OP_TIMEOUT_S = 300.0


@pytest.fixture
def server(tmp_path: Path, kube: Kube) -> Iterator[ThreadServer]:
    settings = Settings(
        state_dir=tmp_path / "state",
        target="existing",
        kubeconfig=kube.kubeconfig,
        tokens_inline=TOKENS_JSON,
        pool_size=2,
        poll_interval_s=0.2,
        op_time_limit_s=900,
        hf_endpoint=DEAD_HUB,
    )
    with ThreadServer(settings) as srv:
        yield srv


@pytest.fixture
def gpu_nodes(kube_cluster: Cluster, kube: Kube) -> Iterator[list[str]]:
    """The existing cluster's GPU node group: two g5.xlarge."""
    nodes = kube_cluster.add_managed_node_group("cp-g5", "g5.xlarge", 2, name_prefix="cp-g5")
    names = [n["metadata"]["name"] for n in nodes]
    yield names
    for name in names:
        kube.api.delete("v1", "Node", name)


def wait_op(c: httpx.Client, op_id: str, timeout: float = OP_TIMEOUT_S) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        op = c.get(f"/v1/operations/{op_id}").json()
        if op["status"] not in ("queued", "running"):
            return op
        if time.monotonic() > deadline:
            log = c.get(f"/v1/operations/{op_id}/events").text[-4000:]
            raise AssertionError(f"operation {op_id} still {op['status']}\n{log}")
        time.sleep(0.5)


def op_log(c: httpx.Client, op_id: str) -> str:
    return c.get(f"/v1/operations/{op_id}/events").text


def health(c: httpx.Client, name: str) -> dict[str, Any]:
    h = c.get(f"/v1/endpoints/{name}").json()["health"]
    assert h is not None, "the existing target shows the pods' health"
    return dict(h)


def _cordon(kube: Kube, nodes: list[str], on: bool) -> None:
    for node in nodes:
        kube.api.merge_patch("v1", "Node", node, {"spec": {"unschedulable": on}})


def test_http_flow_on_an_existing_cluster(
    server: ThreadServer, kube: Kube, gpu_nodes: list[str], platform_daemonsets: Any
) -> None:
    with server.client(ALICE) as c:
        r = c.post("/v1/endpoints", json=request("flow"))
        assert r.status_code == 202, r.text
        op = wait_op(c, r.json()["operation"]["id"])
        assert op["status"] == "succeeded", op_log(c, op["id"])
        shown = c.get("/v1/endpoints/flow").json()
        namespace = shown["spec"]["namespace"]
        assert shown["status"] == "ready" and shown["health"]["serving"], shown
        (pod,) = kube.pods(namespace, f"{ENDPOINT_LABEL}=flow,app.kubernetes.io/name=vllm")
        assert kube.node_of(pod)["metadata"]["name"] in gpu_nodes
        key = c.get("/v1/endpoints/flow/api-key").json()["api_key"]
        models = kube.service_get(
            namespace, "flow", "http", "/v1/models", {"Authorization": f"Bearer {key}"}
        )
        assert models.status == 200, models.text

        # The pod is lost while no node can take its replacement: not ready, and why.
        _cordon(kube, gpu_nodes, True)
        try:
            kube.delete_pod(namespace, pod["metadata"]["name"])

            def not_serving() -> dict[str, Any] | None:
                h = health(c, "flow")
                return None if h["serving"] else h

            waiting = wait_for(
                "the endpoint to show it is not serving", not_serving, timeout=60, interval=0.5
            )
            assert "not scheduled" in waiting["detail"] and "unschedulable" in waiting["detail"]
            assert c.get("/v1/endpoints/flow").json()["status"] == "ready"  # the record stands
        finally:
            _cordon(kube, gpu_nodes, False)
        wait_for(
            "the endpoint to serve again",
            lambda: health(c, "flow")["serving"] or None,
            timeout=60,
            interval=0.5,
        )

        # A changed vLLM flag: the pod is replaced by one that has it.
        (before,) = kube.pods(namespace, f"{ENDPOINT_LABEL}=flow,app.kubernetes.io/name=vllm")
        vllm = {**shown["spec"]["vllm"], "extra_args": ["--enable-prefix-caching"]}
        r = c.post("/v1/endpoints/flow/redeploy", json={"vllm": vllm})
        assert r.status_code == 202, r.text
        op = wait_op(c, r.json()["operation"]["id"])
        assert op["status"] == "succeeded", op_log(c, op["id"])
        after = kube.wait_pods_ready(
            namespace, f"{ENDPOINT_LABEL}=flow,app.kubernetes.io/name=vllm", count=1
        )
        assert after[0]["metadata"]["uid"] != before["metadata"]["uid"]
        args = after[0]["spec"]["containers"][0]["args"]
        assert "--enable-prefix-caching" in args
        assert c.get("/v1/endpoints/flow").json()["spec"]["vllm"]["extra_args"] == [
            "--enable-prefix-caching"
        ]

        r = c.delete("/v1/endpoints/flow")
        op = wait_op(c, r.json()["operation"]["id"])
        assert op["status"] == "succeeded", op_log(c, op["id"])
        assert c.get("/v1/endpoints/flow").json()["status"] == "destroyed"
    kube.wait_gone("Namespace", namespace, timeout=180)
    left = [
        o["metadata"]["name"]
        for kind in ("Pod", "Service", "Secret")
        for o in kube.api.list_objects("v1", kind, selector=f"{ENDPOINT_LABEL}=flow")
    ]
    assert left == []


def test_a_spec_no_node_can_take_fails_with_the_schedulers_reason(
    server: ThreadServer, kube: Kube, gpu_nodes: list[str]
) -> None:
    """g6e.xlarge is a fine plan, but this cluster has only g5 nodes."""
    with server.client(ALICE) as c:
        r = c.post("/v1/endpoints", json=request("nofit", instance_type="g6e.xlarge"))
        assert r.status_code == 202, r.text
        op = wait_op(c, r.json()["operation"]["id"])
        namespace = c.get("/v1/endpoints/nofit").json()["spec"]["namespace"]
        events = [
            e
            for e in kube.api.list_objects("v1", "Event", namespace=namespace)
            if e.get("reason") == "FailedScheduling"
        ]
        assert op["status"] == "failed", op
        assert "cannot be scheduled" in op["error"], op["error"]
        assert "node affinity" in op["error"] or "didn't match" in op["error"], op["error"]
        assert events, "the scheduler gave a verdict"
        first = min(_when(e) for e in events)
        finished = datetime.fromisoformat(op["finished_at"].replace("Z", "+00:00"))
        took = (finished - first).total_seconds()
        print(f"\n[nofit] failed {took:.1f}s after the scheduler's first verdict: {op['error']}")
        assert took <= 60, took
        # It fails, it does not hang: and what it made can be destroyed.
        d = c.delete("/v1/endpoints/nofit")
        assert wait_op(c, d.json()["operation"]["id"])["status"] == "succeeded"
    kube.wait_gone("Namespace", namespace, timeout=180)


def _when(event: dict[str, Any]) -> datetime:
    stamp = (
        event.get("eventTime")
        or event.get("firstTimestamp")
        or event["metadata"]["creationTimestamp"]
    )
    return datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
