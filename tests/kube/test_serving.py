"""Serving pods that answer: the fake container processes (serving.py) behind real Services.

Each test deploys workloads shaped like the project's (vLLM Deployment with
an API key from a Secret, a KubeRay RayService) and checks what the cluster
did and what its Services answer. Deadlines are generous polls, never timing
assertions.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import yaml

from components import eks_node
from components.serving.scripts import AUTH_PROXY_TEMPLATE
from tests.kube.api import wait_for
from tests.kube.auth_proxy import PROJECT_KEY
from tests.kube.conftest import Scratch
from tests.kube.helpers import Kube, condition
from tests.kube.serving import FAKE_REPLY
from tests.kube.sim import POD_NETWORK, SimError
from tests.kube.test_fakes import needs_nginx, require_nginx  # noqa: F401 (its fixture)

pytestmark = pytest.mark.kube

NVIDIA = {eks_node.DevicePlugin.NVIDIA}
MODEL = "Qwen/Qwen3-0.6B"
KEY = "sk-kube-sim-0123456789"


def _vllm_deployment(scratch: Scratch, name: str) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": "vllm", "app.kubernetes.io/instance": name}
    container = {
        "name": "vllm",
        "image": "vllm/vllm-openai:v0.10.2",
        "command": ["python3", "-m", "vllm.entrypoints.openai.api_server"],
        "args": ["--model", "/models/qwen", "--served-model-name", MODEL, "--port", "8000"],
        "ports": [{"name": "http", "containerPort": 8000, "protocol": "TCP"}],
        "env": [
            {"name": "VLLM_NO_USAGE_STATS", "value": "1"},
            {
                "name": "VLLM_API_KEY",
                "valueFrom": {"secretKeyRef": {"name": f"{name}-api-key", "key": "api-key"}},
            },
        ],
        "resources": {
            "requests": {"cpu": "3", "memory": "12Gi", "nvidia.com/gpu": "1"},
            "limits": {"nvidia.com/gpu": "1"},
        },
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": scratch.namespace, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": scratch.pod_spec([container])},
        },
    }


def _service(scratch: Scratch, name: str, selector: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": scratch.namespace},
        "spec": {
            "selector": selector,
            "ports": [{"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def test_vllm_api_key_from_secret_guards_v1_routes(scratch: Scratch, kube: Kube) -> None:
    scratch.node("g5.xlarge", plugins=NVIDIA)
    api, ns, name = kube.api, scratch.namespace, "llm"
    api.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"{name}-api-key", "namespace": ns},
            "data": {"api-key": base64.b64encode(KEY.encode()).decode()},
        }
    )
    deployment = _vllm_deployment(scratch, name)
    api.create(deployment)
    api.create(_service(scratch, name, deployment["spec"]["selector"]["matchLabels"]))

    (pod,) = kube.wait_pods_ready(ns, f"app.kubernetes.io/instance={name}", count=1)
    assert pod["status"]["podIP"].startswith(POD_NETWORK.split(".0.0/")[0] + ".")

    # Through the API server's service proxy: the pod's own 401 comes back.
    resp = _retry_until_listening(lambda: kube.proxy_get(ns, name, 8000, "/v1/models"))
    assert resp.status == 401, resp.text
    assert resp.json() == {"error": "Unauthorized"}
    ((ip, port, pod_name),) = kube.service_endpoints(ns, name, "http")
    assert (ip, port, pod_name) == (pod["status"]["podIP"], 8000, pod["metadata"]["name"])
    # vLLM leaves the non-/v1 routes open.
    assert kube.proxy_get(ns, name, "http", "/health").status == 200
    # The proxy strips Authorization, so the harness refuses to pretend it sends it.
    with pytest.raises(SimError, match="strips Authorization"):
        kube.proxy_get(ns, name, 8000, "/v1/models", {"Authorization": f"Bearer {KEY}"})

    # As an in-cluster client through the Service's ready endpoints.
    assert kube.service_get(ns, name, 8000, "/v1/models").status == 401
    wrong = kube.service_get(ns, name, 8000, "/v1/models", {"Authorization": "Bearer nope"})
    assert wrong.status == 401
    ok = kube.service_get(ns, name, 8000, "/v1/models", {"Authorization": f"Bearer {KEY}"})
    assert ok.status == 200, ok.text
    assert [m["id"] for m in ok.json()["data"]] == [MODEL]
    chat = kube.service_request(
        "POST",
        ns,
        name,
        8000,
        "/v1/chat/completions",
        body=json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}).encode(),
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert chat.status == 200, chat.text
    assert chat.json()["choices"][0]["message"]["content"] == FAKE_REPLY
    unknown = kube.service_request(
        "POST",
        ns,
        name,
        8000,
        "/v1/completions",
        body=json.dumps({"model": "other", "prompt": "hi"}).encode(),
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert unknown.status == 404

    # The pod goes, its listener with it; the Deployment's replacement serves again.
    kube.delete_pod(ns, pod["metadata"]["name"])
    (again,) = kube.wait_pods_ready(ns, f"app.kubernetes.io/instance={name}", count=1)
    assert again["metadata"]["uid"] != pod["metadata"]["uid"]
    resp = _retry_until_listening(
        lambda: kube.service_get(ns, name, 8000, "/v1/models", {"Authorization": f"Bearer {KEY}"})
    )
    assert resp.status == 200


def _retry_until_listening(call: Any) -> Any:
    """Call until the pod's fake server answers (it starts when the pod is Running).

    The answer may briefly be the API server's 503 (no ready endpoint yet in
    the EndpointSlice) or a refused connection (listener not bound yet).
    """

    def answered() -> Any:
        try:
            resp = call()
        except (SimError, OSError):
            return None
        return resp if resp.status not in (502, 503) else None

    return wait_for("the pod's server to answer", answered, timeout=60, interval=0.3)


def _ray_container(name: str, ports: list[dict[str, Any]], **requests: str) -> dict[str, Any]:
    return {
        "name": name,
        "image": "rayproject/ray-llm:2.49.0-py311-cu128",
        "ports": ports,
        "resources": {"requests": dict(requests), "limits": {}},
    }


def _ray_service(
    scratch: Scratch,
    name: str,
    *,
    head_sidecars: list[dict[str, Any]] | None = None,
    head_volumes: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A RayService shaped like the project's: CPU head on a system node, one GPU worker."""
    serve_config = {
        "applications": [
            {
                "name": "llm",
                "import_path": "ray.serve.llm:build_openai_app",
                "route_prefix": "/",
                "args": {
                    "llm_configs": [
                        {"model_loading_config": {"model_id": MODEL, "model_source": MODEL}}
                    ]
                },
            }
        ]
    }
    head_ports = [
        {"name": "gcs", "containerPort": 6379},
        {"name": "dashboard", "containerPort": 8265},
        {"name": "client", "containerPort": 10001},
        {"name": "serve", "containerPort": 8000},
    ]
    head = _ray_container("ray-head", head_ports, cpu="500m", memory="1Gi")
    worker = _ray_container("ray-worker", [], cpu="2", memory="8Gi", **{"nvidia.com/gpu": "1"})
    worker["resources"]["limits"] = {"nvidia.com/gpu": "1"}
    # The head is CPU-only and goes where the project runs it: the system nodes.
    head_spec = scratch.pod_spec([head, *(head_sidecars or [])])
    head_spec["nodeSelector"] = {**scratch.node_selector, "llm-endpoints/role": "system"}
    if head_volumes:
        head_spec["volumes"] = head_volumes
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": name, "namespace": scratch.namespace},
        "spec": {
            "serveConfigV2": yaml.safe_dump(serve_config, sort_keys=False),
            "rayClusterConfig": {
                "headGroupSpec": {
                    "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
                    "template": {
                        "metadata": {"labels": {"app.kubernetes.io/component": "ray-head"}},
                        "spec": head_spec,
                    },
                },
                "workerGroupSpecs": [
                    {
                        "groupName": "gpu",
                        "replicas": 1,
                        "minReplicas": 1,
                        "maxReplicas": 1,
                        "rayStartParams": {"num-gpus": "1"},
                        "template": {"spec": scratch.pod_spec([worker])},
                    }
                ],
            },
        },
    }


def test_rayservice_becomes_ready_with_serve_service(scratch: Scratch, kube: Kube) -> None:
    scratch.system_nodes(1)
    scratch.node("g5.xlarge", plugins=NVIDIA)
    api, ns, name = kube.api, scratch.namespace, "ray-llm"
    api.create(_ray_service(scratch, name))

    svc = kube.wait_condition("ray.io/v1", "RayService", name, ns, timeout=180)
    ready = condition(svc, "Ready")
    assert ready is not None and ready["reason"] == "NonZeroServeEndpoints", ready
    active = svc["status"]["activeServiceStatus"]
    assert active["applicationStatuses"]["llm"]["status"] == "RUNNING"
    assert svc["status"]["numServeEndpoints"] >= 1

    serve_svc = api.get("v1", "Service", f"{name}-serve-svc", ns)
    assert [p["port"] for p in serve_svc["spec"]["ports"]] == [8000]
    # The head joins the serve Service once KubeRay saw its proxy healthy.
    heads = kube.pods(ns, "ray.io/node-type=head")
    assert [p["metadata"]["labels"].get("ray.io/serve") for p in heads] == ["true"]
    assert kube.node_of(heads[0])["metadata"]["labels"]["llm-endpoints/role"] == "system"

    models = kube.proxy_get(ns, f"{name}-serve-svc", 8000, "/v1/models")
    assert models.status == 200, models.text
    assert [m["id"] for m in models.json()["data"]] == [MODEL]
    assert any("UpdatedServeApplications" in e for e in kube.events_of(ns, name))

    # KubeRay's finalizer removes the RayCluster first, then lets the RayService go.
    api.delete("ray.io/v1", "RayService", name, ns)
    kube.wait_gone("RayService", name, ns)
    assert not kube.pods(ns, "ray.io/node-type=head")


@needs_nginx
def test_rayservice_behind_nginx_auth_proxy_needs_the_key(scratch: Scratch, kube: Kube) -> None:
    scratch.system_nodes(1)
    scratch.node("g5.xlarge", plugins=NVIDIA)
    api, ns, name = kube.api, scratch.namespace, "ray-auth"
    api.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"{name}-api-key", "namespace": ns},
            "stringData": {"api-key": PROJECT_KEY},
        }
    )
    api.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"{name}-auth-proxy", "namespace": ns},
            "data": {"default.conf.template": AUTH_PROXY_TEMPLATE},
        }
    )
    proxy = {
        "name": "auth-proxy",
        "image": "nginxinc/nginx-unprivileged:1.29.3-alpine",
        "ports": [{"name": "http", "containerPort": 8443, "protocol": "TCP"}],
        "env": [
            {
                "name": "API_KEY",
                "valueFrom": {"secretKeyRef": {"name": f"{name}-api-key", "key": "api-key"}},
            },
            {"name": "UPSTREAM", "value": "127.0.0.1:8000"},
            {"name": "LISTEN_PORT", "value": "8443"},
        ],
        "volumeMounts": [{"name": "auth-proxy", "mountPath": "/etc/nginx/templates"}],
    }
    volume = {"name": "auth-proxy", "configMap": {"name": f"{name}-auth-proxy"}}
    api.create(_ray_service(scratch, name, head_sidecars=[proxy], head_volumes=[volume]))
    api.create(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "selector": {"app.kubernetes.io/component": "ray-head"},
                "ports": [{"name": "http", "port": 8000, "targetPort": "http"}],
            },
        }
    )
    kube.wait_condition("ray.io/v1", "RayService", name, ns, timeout=180)

    # nginx's open /health, through the API server's proxy, is Ray Serve's /-/healthz.
    health = _retry_until_listening(lambda: kube.proxy_get(ns, name, 8000, "/health"))
    assert health.status == 200, health.text
    assert kube.service_get(ns, name, 8000, "/v1/models").status == 401
    ok = kube.service_get(ns, name, 8000, "/v1/models", {"Authorization": f"Bearer {PROJECT_KEY}"})
    assert ok.status == 200, ok.text
    assert [m["id"] for m in ok.json()["data"]] == [MODEL]
