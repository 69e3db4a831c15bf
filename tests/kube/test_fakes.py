"""The harness's fakes and node facts on their own (no cluster needed).

What ``serving.py`` reads from the project's own pod specs (vLLM flags, the
LeaderWorkerSet leader script, Ray Serve LLM's config), how its fake servers
answer, and the node facts of ``nodes.py``.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
from pathlib import Path

import pytest
import yaml

from components import eks_node
from components.serving.scripts import (
    AUTH_PROXY_TEMPLATE,
    multi_node_args,
    serve_config,
    vllm_args,
)
from tests.kube import nodes, serving
from tests.kube.auth_proxy import PROJECT_KEY
from tests.kube.sim import ClusterConfig, SimError, karpenter_instance_types, toolchain_dir

MODEL = "openai/gpt-oss-20b"


def _project_args() -> list[str]:
    return vllm_args(
        model="/models/gpt-oss-20b",
        served_model_name=MODEL,
        tensor_parallel=1,
        pipeline_parallel=1,
        max_model_len=8192,
        gpu_memory_utilization=0.9,
        max_num_seqs=16,
    )


def test_reads_the_deployment_containers_vllm_flags() -> None:
    container = {
        "name": "vllm",
        "image": "vllm/vllm-openai:v0.10.2",
        "command": ["python3", "-m", "vllm.entrypoints.openai.api_server"],
        "args": [*_project_args(), "--api-key", "k1"],
    }
    tokens = serving.vllm_tokens(container)
    assert tokens is not None
    flags = serving.parse_vllm_flags(tokens)
    assert (flags.models, flags.port, flags.api_keys) == ([MODEL], 8000, ["k1"])


def test_reads_the_multi_node_leader_and_skips_the_headless_worker() -> None:
    env = serving.EnvReader(None)  # type: ignore[arg-type]  # no reference to read
    leader = {
        "name": "vllm-leader",
        "command": ["vllm", "serve"],
        "args": multi_node_args(_project_args(), nodes=2, leader=True),
        "ports": [{"name": "http", "containerPort": 8000}],
    }
    worker = {
        "name": "vllm-worker",
        "command": ["vllm", "serve"],
        "args": multi_node_args(_project_args(), nodes=2, leader=False),
    }
    spec = {"containers": [leader, worker]}
    (listener,) = serving.plan_container("ns", spec, leader, env).listeners
    assert (listener.port, listener.app.describe()) == (
        8000,
        f"vllm serving ['{MODEL}'] (no API key)",
    )
    assert serving.plan_container("ns", spec, worker, env) == serving.PodPlan()
    # `vllm serve MODEL` names the model positionally; $(VAR) comes from the env.
    serve = {
        "name": "x",
        "command": ["vllm", "serve", "Qwen/Qwen3-0.6B", "--port", "$(PORT)"],
        "env": [{"name": "PORT", "value": "9000"}],
    }
    (listener,) = serving.plan_container("ns", {}, serve, env).listeners
    assert listener.port == 9000


def test_fake_vllm_requires_the_key_on_v1_only() -> None:
    app = serving.VllmApp([MODEL], ["secret"])
    assert app.handle("GET", "/v1/models", {}, b"").status == 401
    assert app.handle("GET", "/health", {}, b"").status == 200
    ok = app.handle("GET", "/v1/models", {"authorization": "Bearer secret"}, b"")
    assert [m["id"] for m in json.loads(ok.body)["data"]] == [MODEL]
    body = json.dumps({"model": MODEL, "prompt": "hi", "stream": True}).encode()
    streamed = app.handle("POST", "/v1/completions", {"authorization": "Bearer secret"}, body)
    assert streamed.content_type == "text/event-stream"
    assert streamed.chunks[-1] == b"data: [DONE]\n\n"


def test_open_webui_answers_health_on_its_port() -> None:
    env = serving.EnvReader(None)  # type: ignore[arg-type]  # no reference to read
    webui = {
        "name": "open-webui",
        "image": "ghcr.io/open-webui/open-webui:v0.6.26",
        "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
    }
    (listener,) = serving.plan_container("ns", {}, webui, env).listeners
    assert listener.port == 8080
    assert json.loads(listener.app.handle("GET", "/health", {}, b"").body) == {"status": True}


def test_fake_ray_dashboard_deploys_then_runs_the_serve_config() -> None:
    clusters = serving.RayClusters()
    key = ("ns", "rc")
    clusters.head_started(key, "uid-1")
    dashboard = serving.RayDashboardApp(clusters, key)
    proxy = serving.RayServeApp(clusters, key)
    assert proxy.handle("GET", "/-/healthz", {}, b"").status == 503
    config = yaml.safe_load(
        serve_config(
            model_id=MODEL,
            model_source="/models/gpt-oss-20b",
            tensor_parallel=1,
            pipeline_parallel=1,
            max_model_len=8192,
            gpu_memory_utilization=0.9,
            max_num_seqs=16,
            replicas=1,
        )
    )
    assert dashboard.handle("PUT", "/api/serve/applications/", {}, json.dumps(config).encode())
    statuses = []
    for _ in range(3):
        details = json.loads(dashboard.handle("GET", "/api/serve/applications/", {}, b"").body)
        statuses.append(details["applications"]["llm"]["status"])
    assert statuses == ["DEPLOYING", "RUNNING", "RUNNING"]
    assert proxy.handle("GET", "/-/healthz", {}, b"").status == 200
    models = json.loads(proxy.handle("GET", "/v1/models", {}, b"").body)
    assert [m["id"] for m in models["data"]] == [MODEL]
    # A new head pod starts with nothing deployed (no GCS fault tolerance).
    clusters.head_started(key, "uid-2")
    assert proxy.handle("GET", "/-/healthz", {}, b"").status == 503


def test_auto_mode_labels_follow_karpenters() -> None:
    labels = nodes.auto_mode_instance_labels("g6.xlarge")
    assert labels["eks.amazonaws.com/instance-category"] == "g"
    assert labels["eks.amazonaws.com/instance-generation"] == "6"
    assert labels["eks.amazonaws.com/instance-gpu-name"] == "l4"
    assert "eks.amazonaws.com/instance-cpu-sustained-clock-speed-mhz" not in labels
    # Auto Mode does not offer p4de.24xlarge (catalog auto_mode=False).
    assert nodes.auto_mode_instance_labels("p4de.24xlarge") == {}


def test_instance_types_file_carries_auto_mode_labels() -> None:
    def offering_labels(config: ClusterConfig, name: str) -> dict[str, str]:
        (it,) = [t for t in karpenter_instance_types(config) if t["name"] == name]
        reqs = it["offerings"][0]["Requirements"]
        return {r["key"]: r["values"][0] for r in reqs}

    plain = offering_labels(ClusterConfig(), "g6.xlarge")
    assert plain["eks.amazonaws.com/instance-family"] == "g6"
    assert "eks.amazonaws.com/compute-type" not in plain
    auto = offering_labels(ClusterConfig(auto_mode=True), "g6.xlarge")
    assert auto["eks.amazonaws.com/compute-type"] == "auto"
    assert "eks.amazonaws.com/instance-family" not in offering_labels(
        ClusterConfig(), "p4de.24xlarge"
    )


def test_m6i_large_system_node_shape() -> None:
    shape = nodes.cpu_node_shape(nodes.M6I_LARGE)
    assert shape.eni_max_pods == 29
    assert shape.allocatable.quantities() == {
        "cpu": "1930m",
        "memory": "6903Mi",
        "ephemeral-storage": "17408Mi",
        "pods": "29",
    }


def test_platform_daemonsets_land_where_eks_node_says() -> None:
    manifests = {m["metadata"]["name"]: m for m in nodes.platform_daemonset_manifests()}
    assert set(manifests) == {d.name for d in eks_node.PLATFORM_DAEMONSETS}
    dcgm = manifests["dcgm-exporter"]["spec"]["template"]["spec"]
    (term,) = dcgm["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    types = set(term["matchExpressions"][0]["values"])
    assert "g5.xlarge" in types and "inf2.xlarge" not in types
    assert dcgm["containers"][0]["resources"]["requests"] == {"cpu": "100m", "memory": "128Mi"}
    assert "affinity" not in manifests["kube-proxy"]["spec"]["template"]["spec"]
    efa = manifests["aws-efa-k8s-device-plugin"]["spec"]["template"]["spec"]
    efa_types = efa["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert set(efa_types["nodeSelectorTerms"][0]["matchExpressions"][0]["values"]) == {
        "p4d.24xlarge",
        "p4de.24xlarge",
        "p5.48xlarge",
        "p5en.48xlarge",
    }
    # Without the Neuron plugin there is no Neuron DaemonSet.
    without = nodes.platform_daemonset_manifests(plugins={eks_node.DevicePlugin.NVIDIA})
    assert "neuron-device-plugin" not in {m["metadata"]["name"] for m in without}


# -- nginx (the auth proxy in front of Ray Serve) -----------------------------------


def _nginx() -> str | None:
    try:
        share: Path | None = toolchain_dir() / "share"
    except SimError:
        share = None
    return serving.nginx_binary(share)


NGINX = _nginx()
#: Fails, never skips, without nginx: scripts/install-kube-sim unpacks one.
needs_nginx = pytest.mark.usefixtures("require_nginx")


@pytest.fixture
def require_nginx() -> str:
    if NGINX is None:
        pytest.fail(
            "no nginx: run scripts/install-kube-sim (it unpacks Debian's), or set "
            "KUBE_SIM_NGINX to an nginx program",
            pytrace=False,
        )
    return NGINX


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _render(template: str, upstream_port: int, listen: int) -> dict[str, str]:
    env = {
        "API_KEY": PROJECT_KEY,
        "UPSTREAM": f"127.0.0.1:{upstream_port}",
        "LISTEN_PORT": str(listen),
    }
    return {"default.conf": serving.envsubst(template, env)}


@needs_nginx
def test_project_auth_proxy_template_starts_in_nginx(tmp_path: Path) -> None:
    assert NGINX is not None
    sites = _render(AUTH_PROXY_TEMPLATE, _free_port(), _free_port())
    serving.start_nginx(NGINX, tmp_path / "nginx", sites, "127.0.0.1").close()


@needs_nginx
def test_nginx_auth_proxy_checks_the_key_in_front_of_ray_serve(tmp_path: Path) -> None:
    assert NGINX is not None
    clusters = serving.RayClusters()
    key = ("ns", "rc")
    clusters.deploy(
        key,
        {
            "llm": {
                "name": "llm",
                "import_path": "x:y",
                "route_prefix": "/",
                "args": {"llm_configs": [{"model_loading_config": {"model_id": MODEL}}]},
            }
        },
    )
    for _ in range(2):
        clusters.poll(key)  # RUNNING from the second poll on
    upstream_port, listen = _free_port(), _free_port()
    upstream = serving.PodServer(
        ("127.0.0.1", upstream_port), serving.RayServeApp(clusters, key), lambda _: None
    )
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    proc = serving.start_nginx(
        NGINX, tmp_path / "nginx", _render(AUTH_PROXY_TEMPLATE, upstream_port, listen), "127.0.0.1"
    )
    try:

        def get(path: str, auth: str | None = None) -> tuple[int, bytes]:
            conn = http.client.HTTPConnection("127.0.0.1", listen, timeout=5)
            try:
                conn.request("GET", path, headers={"Authorization": auth} if auth else {})
                resp = conn.getresponse()
                return resp.status, resp.read()
            finally:
                conn.close()

        assert get("/health")[0] == 200
        assert get("/v1/models")[0] == 401
        assert get("/v1/models", f"bearer {PROJECT_KEY}")[0] == 401
        status, body = get("/v1/models", f"Bearer {PROJECT_KEY}")
        assert status == 200 and json.loads(body)["data"][0]["id"] == MODEL
    finally:
        proc.close()
        upstream.close_all()
