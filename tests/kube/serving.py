"""The processes behind the pods' ports: what each container would answer, on the pod's IP.

kwok stands in for the kubelet (pods become Running and Ready, but nothing
runs in them). This module stands in for the container processes, the same
way: it watches pods through the API, and for each Running pod whose
container is one of the servers the project deploys it listens on
``podIP:port`` with a tiny HTTP server that answers what that server would.
Scheduling, admission, the controllers, Services and EndpointSlices are all
real; the API server's service proxy and KubeRay (through it) reach these
listeners exactly as they would reach the containers. The pod IPs are in the
cluster's pod range, which ``Cluster`` routes to ``lo`` inside the harness's
network namespace (see ``sim.route_pod_network``).

What is faked, and only this (every other path answers 404, as FastAPI would):

* **vLLM OpenAI server** (a container whose command or args run ``vllm serve``
  or ``vllm.entrypoints.openai.api_server``, also inside a ``bash -c`` script;
  or a vLLM image run with its entrypoint; or one named ``vllm``/``vllm-leader``
  that declares a port), on its ``--port`` (default 8000; ``$(VAR)`` expanded
  from the container's env as Kubernetes does): ``GET /health`` 200;
  ``GET /metrics``; ``GET /v1/models`` listing the ``--served-model-name``
  values (else ``--model``, else ``vllm serve MODEL``); ``POST
  /v1/chat/completions`` and ``/v1/completions`` with a fixed OpenAI-shaped
  reply (``stream`` as SSE), 404 for a model it does not serve. With
  ``--api-key`` or ``VLLM_API_KEY`` in the container's environment (a value, or
  from a Secret/ConfigMap read through the API when the container "starts",
  as the kubelet would), every ``/v1`` request needs ``Authorization: Bearer
  <key>`` or gets vLLM's 401 ``{"error": "Unauthorized"}`` (vLLM's
  AuthenticationMiddleware; non-``/v1`` paths stay open there too). A Secret
  that does not exist yet keeps the "container" from starting (the kubelet's
  CreateContainerConfigError) and is retried. A ``--headless`` vLLM (a
  multi-node worker) serves no HTTP.
* **Ray head** (a KubeRay pod labelled ``ray.io/node-type=head``): the Ray
  dashboard on the container port named ``dashboard`` (default 8265), the
  part KubeRay v1.6.2's RayService controller uses:
  ``GET/PUT/DELETE /api/serve/applications/`` (the Serve REST API,
  ``controllers/ray/utils/dashboardclient``), ``GET /api/gcs_healthz``,
  ``/api/local_raylet_healthz``, ``/api/healthz``, ``GET /api/jobs/``. A PUT
  stores the applications; the next GET reports them ``DEPLOYING``, later ones
  ``RUNNING`` with their deployments ``HEALTHY`` (KubeRay's readiness test is
  every application ``RUNNING``, rayservice_controller.go
  ``getAndCheckServeStatus``).
* **Ray Serve proxy** (Ray head, port named ``serve``, default 8000; Ray
  workers, 8000: Serve runs a proxy on every node): ``GET /-/healthz`` 200
  once applications were deployed (503 before: there is no Serve yet), which
  KubeRay polls through the pods proxy to label the head as serving;
  ``GET /-/routes``; and the OpenAI routes of Ray Serve LLM's app
  (``build_openai_app``; model ids from ``llm_configs[].model_loading_config``)
  under its ``route_prefix``, once it is RUNNING. **No API key is checked**:
  Ray Serve LLM has no authentication and ignores ``VLLM_API_KEY``
  (ray-project/ray#55369, #59578), so neither does this.
* **Open WebUI** (image ``open-webui``), on its container ports (default
  8080): ``GET /health`` 200 ``{"status": true}`` and ``GET /``.
* **nginx** (an ``nginx*`` image run with its entrypoint) is not faked: the
  real nginx runs (``nginx_binary``), on what the image's entrypoint would
  give it: the image's default site, ConfigMap/Secret files mounted in
  ``/etc/nginx/conf.d``, ``*.template`` files in ``/etc/nginx/templates``
  rendered with the container's environment (envsubst of defined variables
  only). Two rewrites put it in the pod: ``listen PORT`` becomes ``listen
  POD_IP:PORT`` and upstreams on ``127.0.0.1``/``localhost`` (the pod itself)
  become the pod's IP. A configuration nginx rejects keeps the "container"
  from starting, with nginx's own error, retried after ``CRASH_BACKOFF_S``.
  Upstreams by Service name do not resolve (no cluster DNS).

Pods do not become Ready later for all this: kwok marks them Ready at once,
whether or not their "process" started; ``PodServers.problems`` (and the
harness's error reports) say which did not.

Anything else (pause containers, the LWS worker's ``ray start``, the Ray GCS
port) listens on nothing, as the real process would not answer HTTP there.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from tests.kube.api import Api, ApiError, SimError

#: The fixed text every fake completion answers with, so a test can tell it.
FAKE_REPLY = "Hello from the kube-sim fake vLLM."
VLLM_PORT = 8000
RAY_DASHBOARD_PORT = 8265
RAY_SERVE_PORT = 8000
WEBUI_PORT = 8080
API_KEY_ENV = "VLLM_API_KEY"
RAY_NODE_TYPE = "ray.io/node-type"
RAY_CLUSTER = "ray.io/cluster"
_VLLM_MODULE = "vllm.entrypoints.openai.api_server"
_VLLM_SERVE = re.compile(r"(?:^|[\s;&|(])vllm\s+serve(?=\s|$)")
# How often pods whose server could not start yet (a missing Secret, an IP
# still held by a deleted pod) are tried again.
RETRY_INTERVAL_S = 1.0
#: How long a container whose program crashed (nginx rejecting its
#: configuration) waits before it is tried again.
CRASH_BACKOFF_S = 10.0


class NotYet(SimError):
    """The container cannot start yet (what the kubelet would retry)."""


class Crashed(NotYet):
    """The container's program exited at start (retried after ``CRASH_BACKOFF_S``)."""


@dataclass(frozen=True)
class Reply:
    """One HTTP answer of a fake server."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    chunks: Sequence[bytes] = ()

    @staticmethod
    def json(status: int, obj: Any) -> Reply:
        """A JSON answer."""
        return Reply(status, json.dumps(obj).encode())

    @staticmethod
    def text(status: int, text: str) -> Reply:
        """A plain-text answer."""
        return Reply(status, text.encode(), "text/plain; charset=utf-8")


_NOT_FOUND = Reply.json(404, {"detail": "Not Found"})
_NOT_ALLOWED = Reply.json(405, {"detail": "Method Not Allowed"})


class App:
    """What one listener answers; subclasses are the faked servers."""

    kind: ClassVar[str] = "app"

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Reply:
        """Answer one request (``headers`` with lower-cased names)."""
        raise NotImplementedError

    def describe(self) -> str:
        """One line saying what it serves (for logs and reports)."""
        return self.kind


# --------------------------------------------------------------------------- OpenAI


class _OpenAI:
    """The OpenAI-shaped routes shared by the fake vLLM server and Ray Serve LLM."""

    def __init__(self, models: Sequence[str], owner: str) -> None:
        self.models = list(models)
        self.owner = owner
        self._serial = 0
        self._lock = threading.Lock()

    def route(self, method: str, path: str, body: bytes) -> Reply:
        if path == "/v1/models":
            if method != "GET":
                return _NOT_ALLOWED
            now = int(time.time())
            cards = [
                {"id": m, "object": "model", "created": now, "owned_by": self.owner, "root": m}
                for m in self.models
            ]
            return Reply.json(200, {"object": "list", "data": cards})
        if path in ("/v1/chat/completions", "/v1/completions"):
            if method != "POST":
                return _NOT_ALLOWED
            return self._complete(path == "/v1/chat/completions", body)
        return _NOT_FOUND

    def _complete(self, chat: bool, body: bytes) -> Reply:
        try:
            req = json.loads(body or b"{}")
            if not isinstance(req, dict):
                raise ValueError("the body is not a JSON object")
        except ValueError as e:
            return _openai_error(400, "BadRequestError", f"invalid request body: {e}")
        model = req.get("model") or self.models[0]
        if model not in self.models:
            return _openai_error(404, "NotFoundError", f"The model `{model}` does not exist.")
        with self._lock:
            self._serial += 1
            serial = self._serial
        words = len(FAKE_REPLY.split())
        prompt = req.get("messages") if chat else req.get("prompt")
        usage = {
            "prompt_tokens": len(json.dumps(prompt)) // 4,
            "completion_tokens": words,
            "total_tokens": len(json.dumps(prompt)) // 4 + words,
        }
        created = int(time.time())
        if chat:
            ident, obj = f"chatcmpl-kube-sim-{serial}", "chat.completion"
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": FAKE_REPLY},
                "finish_reason": "stop",
            }
        else:
            ident, obj = f"cmpl-kube-sim-{serial}", "text_completion"
            choice = {"index": 0, "text": FAKE_REPLY, "logprobs": None, "finish_reason": "stop"}
        if req.get("stream"):
            delta = (
                {"index": 0, "delta": {"role": "assistant", "content": FAKE_REPLY}}
                if chat
                else {"index": 0, "text": FAKE_REPLY}
            )
            chunk_obj = "chat.completion.chunk" if chat else "text_completion"
            first = {"id": ident, "object": chunk_obj, "created": created, "model": model}
            events = [
                {**first, "choices": [{**delta, "finish_reason": None}]},
                {**first, "choices": [{"index": 0, "finish_reason": "stop", "delta": {}}]},
            ]
            chunks = [f"data: {json.dumps(e)}\n\n".encode() for e in events]
            return Reply(
                200, content_type="text/event-stream", chunks=[*chunks, b"data: [DONE]\n\n"]
            )
        reply = {
            "id": ident,
            "object": obj,
            "created": created,
            "model": model,
            "choices": [choice],
            "usage": usage,
        }
        return Reply.json(200, reply)


def _openai_error(status: int, kind: str, message: str) -> Reply:
    # vLLM's ErrorResponse shape.
    return Reply.json(
        status, {"object": "error", "message": message, "type": kind, "param": None, "code": status}
    )


class VllmApp(App):
    """vLLM's OpenAI-compatible server (``vllm.entrypoints.openai.api_server``)."""

    kind = "vllm"

    def __init__(self, models: Sequence[str], api_keys: Sequence[str] = ()) -> None:
        self.openai = _OpenAI(models, "vllm")
        self.api_keys = [k for k in api_keys if k]

    def describe(self) -> str:
        auth = "API key required" if self.api_keys else "no API key"
        return f"vllm serving {self.openai.models} ({auth})"

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Reply:
        route = urllib.parse.urlsplit(path).path
        # vLLM's AuthenticationMiddleware: every /v1 path but OPTIONS needs the key.
        if self.api_keys and route.startswith("/v1") and method != "OPTIONS":
            given = headers.get("authorization", "")
            if not any(given == f"Bearer {key}" for key in self.api_keys):
                return Reply.json(401, {"error": "Unauthorized"})
        if route == "/health":
            return Reply(200) if method == "GET" else _NOT_ALLOWED
        if route == "/metrics":
            lines = [
                "# kube-sim fake vLLM: no real metrics",
                f'vllm:num_requests_running{{model_name="{self.openai.models[0]}"}} 0',
            ]
            return Reply.text(200, "\n".join(lines) + "\n")
        return self.openai.route(method, route, body)


class OpenWebUIApp(App):
    """Open WebUI's health route and front page."""

    kind = "open-webui"

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Reply:
        route = urllib.parse.urlsplit(path).path
        if method != "GET":
            return _NOT_ALLOWED
        if route == "/health":
            return Reply.json(200, {"status": True})
        if route == "/":
            page = b"<!doctype html><title>Open WebUI (kube-sim fake)</title>"
            return Reply(200, page, "text/html; charset=utf-8")
        return _NOT_FOUND


# --------------------------------------------------------------------------- Ray


@dataclass
class RayClusterState:
    """What one Ray cluster's dashboard was told (lives as long as its head pod).

    Attributes:
        head_uid: The head pod it belongs to; a new head starts empty (no GCS
            fault tolerance, as KubeRay assumes when it finds no application).
        applications: The applications of the last PUT, by name.
        polls: GETs of the applications since that PUT.
    """

    head_uid: str
    applications: dict[str, dict[str, Any]] = field(default_factory=dict)
    polls: int = 0
    deployed_at: float = 0.0


class RayClusters:
    """The Ray clusters' state, shared by each cluster's dashboard and Serve proxies."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: dict[tuple[str, str], RayClusterState] = {}

    def head_started(self, key: tuple[str, str], head_uid: str) -> None:
        with self._lock:
            state = self._states.get(key)
            if state is None or state.head_uid != head_uid:
                self._states[key] = RayClusterState(head_uid)

    def deploy(self, key: tuple[str, str], applications: dict[str, dict[str, Any]]) -> None:
        with self._lock:
            state = self._states.setdefault(key, RayClusterState(""))
            state.applications = applications
            state.polls = 0
            state.deployed_at = time.time()

    def poll(self, key: tuple[str, str]) -> RayClusterState:
        """The state as the applications GET sees it (counts the poll)."""
        with self._lock:
            state = self._states.setdefault(key, RayClusterState(""))
            if state.applications:
                state.polls += 1
            return RayClusterState(
                state.head_uid, dict(state.applications), state.polls, state.deployed_at
            )

    def peek(self, key: tuple[str, str]) -> RayClusterState:
        """The state without counting a poll."""
        with self._lock:
            state = self._states.get(key) or RayClusterState("")
            return RayClusterState(
                state.head_uid, dict(state.applications), state.polls, state.deployed_at
            )


def _app_running(state: RayClusterState) -> bool:
    # DEPLOYING on the first poll after a PUT, RUNNING from the second on.
    return bool(state.applications) and state.polls >= 2


def _llm_model_ids(app: Mapping[str, Any]) -> list[str]:
    args = app.get("args") or {}
    configs = (args.get("llm_configs") or []) if isinstance(args, dict) else []
    out = []
    for c in configs:
        if isinstance(c, dict):
            loading = c.get("model_loading_config") or {}
            if loading.get("model_id"):
                out.append(str(loading["model_id"]))
    return out


def _deployment_names(app: Mapping[str, Any]) -> list[str]:
    # The config's own deployment names when it lists them; otherwise one
    # named after the builder (the real names come from the application code,
    # which is not run here).
    named = [d["name"] for d in app.get("deployments") or [] if isinstance(d, dict) and "name" in d]
    if named:
        return named
    return [str(app.get("import_path", "app")).rsplit(":", 1)[-1].rsplit(".", 1)[-1]]


class RayDashboardApp(App):
    """The Ray dashboard's Serve REST API and health routes, as KubeRay uses them."""

    kind = "ray-dashboard"

    def __init__(self, clusters: RayClusters, key: tuple[str, str]) -> None:
        self.clusters, self.key = clusters, key

    def describe(self) -> str:
        return f"ray dashboard of {self.key[0]}/{self.key[1]}"

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Reply:
        route = urllib.parse.urlsplit(path).path.rstrip("/")
        if route in ("/api/gcs_healthz", "/api/local_raylet_healthz", "/api/healthz"):
            return Reply.text(200, "success")
        if route == "/api/jobs":
            return Reply.json(200, []) if method == "GET" else _NOT_ALLOWED
        if route != "/api/serve/applications":
            return _NOT_FOUND
        if method == "GET":
            return Reply.json(200, self._details())
        if method == "PUT":
            return self._put(body)
        if method == "DELETE":
            self.clusters.deploy(self.key, {})
            return Reply(200)
        return _NOT_ALLOWED

    def _put(self, body: bytes) -> Reply:
        try:
            config = json.loads(body)
            apps = config["applications"]
            named = {str(a["name"]): dict(a) for a in apps}
            if not named or any("import_path" not in a for a in apps):
                raise ValueError("every application needs a name and an import_path")
        except (ValueError, KeyError, TypeError) as e:
            # Ray Serve answers a config that fails its schema with 400 and the reason.
            return Reply.text(400, f"invalid Serve config: {e}")
        self.clusters.deploy(self.key, named)
        return Reply(200)

    def _details(self) -> dict[str, Any]:
        state = self.clusters.poll(self.key)
        running = _app_running(state)
        applications = {}
        for name, app in state.applications.items():
            deployments = {
                d: {
                    "name": d,
                    "status": "HEALTHY" if running else "UPDATING",
                    "status_trigger": "CONFIG_UPDATE_COMPLETED" if running else "CONFIG_UPDATE",
                    "message": "",
                }
                for d in _deployment_names(app)
            }
            applications[name] = {
                "name": name,
                "route_prefix": app.get("route_prefix", "/"),
                "docs_path": None,
                "status": "RUNNING" if running else "DEPLOYING",
                "message": "",
                "last_deployed_time_s": state.deployed_at,
                "deployed_app_config": app,
                "deployments": deployments,
            }
        return {
            "controller_info": {},
            "proxy_location": "EveryNode",
            "http_options": {"host": "0.0.0.0", "port": RAY_SERVE_PORT},
            "deploy_mode": "MULTI_APP",
            "applications": applications,
        }


class RayServeApp(App):
    """A Ray Serve proxy: its health routes and Ray Serve LLM's OpenAI routes."""

    kind = "ray-serve"

    def __init__(self, clusters: RayClusters, key: tuple[str, str]) -> None:
        self.clusters, self.key = clusters, key

    def describe(self) -> str:
        return (
            f"ray serve proxy of {self.key[0]}/{self.key[1]} (no API key: Ray Serve LLM has none)"
        )

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Reply:
        route = urllib.parse.urlsplit(path).path
        state = self.clusters.peek(self.key)
        if route == "/-/healthz":
            if state.applications:
                return Reply.text(200, "success")
            return Reply.text(503, "Serve is not running on this node (no application deployed)")
        if route == "/-/routes":
            routes = {a.get("route_prefix", "/"): n for n, a in state.applications.items()}
            return Reply.json(200, routes)
        prefixes = sorted(
            state.applications.items(),
            key=lambda item: len(str(item[1].get("route_prefix", "/"))),
            reverse=True,
        )
        for _, app in prefixes:
            prefix = str(app.get("route_prefix", "/")).rstrip("/")
            if route == prefix or route.startswith(prefix + "/"):
                if not _app_running(state):
                    return Reply.text(503, "the application is still deploying")
                models = _llm_model_ids(app)
                if not models:
                    return _NOT_FOUND
                return _OpenAI(models, "ray-serve-llm").route(method, route[len(prefix) :], body)
        return _NOT_FOUND


# --------------------------------------------------------------------------- vLLM's command line


def _argv(container: Mapping[str, Any]) -> list[str]:
    return [*(container.get("command") or []), *(container.get("args") or [])]


def vllm_tokens(container: Mapping[str, Any]) -> list[str] | None:
    """The vLLM server's own arguments if this container runs it, else None.

    Handles ``python3 -m vllm.entrypoints.openai.api_server ARGS``,
    ``vllm serve MODEL ARGS``, either inside a ``bash -c`` script (the line that
    runs it), and a vLLM image run with its entrypoint (``args`` only).
    """
    argv = _argv(container)
    for i, arg in enumerate(argv):
        if arg == _VLLM_MODULE:
            return argv[i + 1 :]
        if arg == "vllm" and argv[i + 1 : i + 2] == ["serve"]:
            return argv[i + 2 :]
        for line in arg.splitlines():
            if _VLLM_MODULE in line:
                return shlex.split(line.split(_VLLM_MODULE, 1)[1])
            match = _VLLM_SERVE.search(line)
            if match:
                return shlex.split(line[match.end() :])
    image = str(container.get("image", "")).lower()
    if not container.get("command") and "vllm" in image:
        return list(container.get("args") or [])
    if container.get("name") in ("vllm", "vllm-leader") and container.get("ports"):
        return list(container.get("args") or [])
    return None


@dataclass(frozen=True)
class VllmFlags:
    """What the fake needs from vLLM's command line."""

    models: list[str]
    port: int
    api_keys: list[str]


def parse_vllm_flags(tokens: Sequence[str]) -> VllmFlags:
    """The served names, port and API keys in vLLM's arguments.

    ``--served-model-name`` (all its values) or else ``--model`` or else the
    positional model of ``vllm serve MODEL``; ``--port``; ``--api-key``.
    """
    served: list[str] = []
    keys: list[str] = []
    model = ""
    port = VLLM_PORT
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if not tok.startswith("-"):
            if i == 0:
                model = tok  # `vllm serve MODEL`
            i += 1
            continue
        name, eq, value = tok.partition("=")
        if eq:
            values = [value]
            i += 1
        else:
            j = i + 1
            while j < len(tokens) and not tokens[j].startswith("-"):
                j += 1
            values = list(tokens[i + 1 : j])
            i = j
        if name == "--served-model-name":
            served += values
        elif name == "--model" and values:
            model = values[0]
        elif name == "--port" and values:
            port = int(values[0])
        elif name == "--api-key":
            keys += values
    return VllmFlags(served or [model or "unknown-model"], port, keys)


class EnvReader:
    """A container's environment as the kubelet builds it, read through the API."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def environment(self, namespace: str, container: Mapping[str, Any]) -> dict[str, str]:
        """Every variable of ``env`` and ``envFrom`` (env over envFrom, later over earlier).

        Field references (``fieldRef``, ``resourceFieldRef``) are left out:
        nothing faked here reads them.

        Raises:
            NotYet: when a non-optional Secret/ConfigMap (or key) it needs is
                missing, which keeps the kubelet from starting the container.
        """
        out: dict[str, str] = {}
        for source in container.get("envFrom") or []:
            prefix = source.get("prefix", "")
            for kind, ref_key in (("Secret", "secretRef"), ("ConfigMap", "configMapRef")):
                ref = source.get(ref_key)
                if ref:
                    data = self.data(namespace, kind, ref["name"], bool(ref.get("optional")))
                    out.update({prefix + k: v for k, v in (data or {}).items()})
        for env in container.get("env") or []:
            name = env.get("name", "")
            if "value" in env:
                out[name] = _expand(str(env["value"]), out)
                continue
            value_from = env.get("valueFrom") or {}
            for kind, ref_key in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
                ref = value_from.get(ref_key)
                if not ref:
                    continue
                optional = bool(ref.get("optional"))
                data = self.data(namespace, kind, ref["name"], optional)
                if data is not None and ref["key"] in data:
                    out[name] = data[ref["key"]]
                elif not optional:
                    raise NotYet(
                        f"{kind} {namespace}/{ref['name']} has no key {ref['key']!r} "
                        "(the kubelet would fail the container: CreateContainerConfigError)"
                    )
        return out

    def data(self, namespace: str, kind: str, name: str, optional: bool) -> dict[str, str] | None:
        """A Secret's (decoded) or ConfigMap's data; None when optional and missing.

        Raises:
            NotYet: when it is missing and not optional.
        """
        try:
            obj = self.api.get("v1", kind, name, namespace)
        except ApiError as e:
            if e.status == 404:
                if optional:
                    return None
                raise NotYet(
                    f"{kind} {namespace}/{name} does not exist (the kubelet would not start "
                    "the container: CreateContainerConfigError / volume not mounted)"
                ) from None
            raise
        if kind == "Secret":
            return {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
        return dict(obj.get("data") or {})


_DEPENDENT_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def _expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion in command, args and env values (``$$`` escapes)."""

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _DEPENDENT_VAR.sub(one, text)


def _port_named(container: Mapping[str, Any], name: str, default: int) -> int:
    for p in container.get("ports") or []:
        if p.get("name") == name:
            return int(p["containerPort"])
    return default


# --------------------------------------------------------------------------- nginx

#: Where nginx images read templates and configuration (docker-nginx's
#: entrypoint renders /etc/nginx/templates/*.template into /etc/nginx/conf.d).
NGINX_TEMPLATES = "/etc/nginx/templates"
NGINX_CONF_D = "/etc/nginx/conf.d"
_ENVSUBST = re.compile(r"\$(\{)?([A-Za-z_][A-Za-z0-9_]*)(?(1)\})")
_LISTEN = re.compile(r"(^|[;{}\s])listen\s+([^;]+);")
_LOCAL_UPSTREAM = re.compile(
    r"(\b(?:proxy_pass\s+https?://|server\s+))(127\.0\.0\.1|localhost)(?=[:/;\s])"
)


#: Where the toolchain would keep an nginx unpacked from a package (searched
#: after $KUBE_SIM_NGINX, before PATH), relative to its share/ folder.
TOOLCHAIN_NGINX = Path("nginx/usr/sbin/nginx")


def nginx_binary(share: Path | None = None) -> str | None:
    """The nginx program that runs nginx containers.

    ``$KUBE_SIM_NGINX``, else ``<toolchain share>/nginx/usr/sbin/nginx``, else
    ``nginx`` on PATH (or in /usr/sbin); None when there is none.
    """
    explicit = os.environ.get("KUBE_SIM_NGINX")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    if share is not None and os.access(share / TOOLCHAIN_NGINX, os.X_OK):
        return str(share / TOOLCHAIN_NGINX)
    return shutil.which("nginx", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


def is_nginx(container: Mapping[str, Any]) -> bool:
    """Whether a container runs an nginx image (official, unprivileged, bitnami...)."""
    image = str(container.get("image", "")).rsplit("/", 1)[-1].split(":", 1)[0]
    return image.startswith("nginx")


def envsubst(template: str, env: Mapping[str, str]) -> str:
    """What docker-nginx's 20-envsubst-on-templates.sh does: only defined variables."""

    def one(m: re.Match[str]) -> str:
        return env.get(m.group(2), m.group(0))

    return _ENVSUBST.sub(one, template)


def nginx_site_files(
    namespace: str, pod_spec: Mapping[str, Any], container: Mapping[str, Any], env: EnvReader
) -> dict[str, str]:
    """The files an nginx container's conf.d holds once its entrypoint ran.

    The image's own ``default.conf`` (a welcome page on 8080 in the
    unprivileged images, 80 in the official ones), then what the pod mounts:
    ConfigMap/Secret files in ``conf.d`` as they are, ``*.template`` files in
    ``templates`` rendered with the container's environment (only defined
    variables, as envsubst does there) into ``conf.d`` without the suffix.

    Raises:
        NotYet: a mounted ConfigMap/Secret or an env source is missing.
    """
    unprivileged = "unprivileged" in str(container.get("image", ""))
    files = {
        "default.conf": "server {\n    listen "
        + str(8080 if unprivileged else 80)
        + ";\n    location / { return 200 'nginx'; }\n}\n"
    }
    variables = env.environment(namespace, container)
    volumes = {v["name"]: v for v in pod_spec.get("volumes") or []}
    for mount in container.get("volumeMounts") or []:
        path = mount["mountPath"].rstrip("/")
        folder, sub = path, mount.get("subPath")
        if sub:
            folder = path.rsplit("/", 1)[0]
        if folder not in (NGINX_TEMPLATES, NGINX_CONF_D):
            continue
        contents = _volume_files(namespace, volumes.get(mount["name"]) or {}, env)
        if sub:
            contents = {path.rsplit("/", 1)[1]: contents[sub]} if sub in contents else {}
        for name, text in contents.items():
            if folder == NGINX_TEMPLATES and name.endswith(".template"):
                files[name.removesuffix(".template")] = envsubst(text, variables)
            elif folder == NGINX_CONF_D:
                files[name] = text
    return {name: text for name, text in files.items() if name.endswith(".conf")}


def _volume_files(namespace: str, volume: Mapping[str, Any], env: EnvReader) -> dict[str, str]:
    for kind, key, name_key in (
        ("ConfigMap", "configMap", "name"),
        ("Secret", "secret", "secretName"),
    ):
        source = volume.get(key)
        if source:
            data = env.data(namespace, kind, source[name_key], bool(source.get("optional"))) or {}
            items = source.get("items")
            if items:
                return {i["path"]: data[i["key"]] for i in items if i["key"] in data}
            return data
    return {}


def rewrite_for_pod(conf: str, ip: str) -> tuple[str, list[int]]:
    """Put an nginx site on the pod's IP: its ``listen`` and its localhost upstreams.

    In a pod, ``listen 8443`` binds the pod's own interfaces and ``127.0.0.1``
    is the pod itself (its containers share one network namespace); here many
    pods share the harness's namespace, so both become the pod's IP. IPv6
    listens are dropped (pods here are IPv4 only).

    Returns:
        The rewritten text and the ports it listens on.
    """
    ports: list[int] = []

    def listen(m: re.Match[str]) -> str:
        address, *params = m.group(2).split()
        if address.startswith("[") or address.startswith("unix:"):
            return f"{m.group(1)}# (kube-sim dropped) listen {m.group(2)};"
        port = int(address.rsplit(":", 1)[-1])
        ports.append(port)
        return f"{m.group(1)}listen {ip}:{port}{''.join(' ' + p for p in params)};"

    text = _LISTEN.sub(listen, conf)
    return _LOCAL_UPSTREAM.sub(lambda m: m.group(1) + ip, text), ports


_NGINX_MAIN = """\
# Written by tests/kube/serving.py: the shape of the nginx images' own
# nginx.conf, with every path in this folder.
{user}worker_processes 1;
error_log {dir}/error.log notice;
pid {dir}/nginx.pid;
events {{ worker_connections 256; }}
http {{
    default_type application/octet-stream;
    access_log {dir}/access.log;
    sendfile on;
    keepalive_timeout 65;
    client_body_temp_path {dir}/client_temp;
    proxy_temp_path {dir}/proxy_temp;
    fastcgi_temp_path {dir}/fastcgi_temp;
    uwsgi_temp_path {dir}/uwsgi_temp;
    scgi_temp_path {dir}/scgi_temp;
    include {dir}/conf.d/*.conf;
}}
"""


class NginxProcess:
    """A real nginx serving one container's configuration on the pod's IP."""

    kind = "nginx"

    def __init__(self, popen: subprocess.Popen[bytes], folder: Path, ip: str, ports: list[int]):
        self.popen, self.folder, self.ip, self.ports = popen, folder, ip, ports

    def describe(self) -> str:
        return f"nginx (pid {self.popen.pid}) on {self.ip}:{self.ports}"

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=3)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()


def start_nginx(binary: str, folder: Path, sites: Mapping[str, str], ip: str) -> NginxProcess:
    """Run nginx on a pod's sites (rewritten onto ``ip``) and wait until it listens.

    Raises:
        NotYet: when nginx rejects the configuration or exits (its error log
            says why: what the container's crash loop would show).
    """
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "conf.d").mkdir(parents=True)
    ports: list[int] = []
    for name, text in sites.items():
        rewritten, found = rewrite_for_pod(text, ip)
        (folder / "conf.d" / name).write_text(rewritten)
        ports += found
    user = "user root root;\n" if os.geteuid() == 0 else ""
    (folder / "nginx.conf").write_text(_NGINX_MAIN.format(dir=folder, user=user))
    argv = [binary, "-p", str(folder), "-e", str(folder / "error.log"),
            "-c", str(folder / "nginx.conf"), "-g", "daemon off;"]  # fmt: skip
    with (folder / "stdout.log").open("wb") as out:
        popen = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    proc = NginxProcess(popen, folder, ip, ports)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            break
        if all(_listening(ip, p) for p in ports):
            return proc
        time.sleep(0.05)
    proc.close()
    log = ""
    for name in ("error.log", "stdout.log"):
        with contextlib.suppress(OSError):
            log += (folder / name).read_text(errors="replace")
    emerg = [line for line in log.splitlines() if "[emerg]" in line] or log.splitlines()[-3:]
    raise Crashed(
        f"nginx exited (status {popen.returncode}; a real pod would crash-loop): "
        + " | ".join(emerg)
        + f" (config in {folder})"
    )


def _listening(ip: str, port: int) -> bool:
    try:
        socket.create_connection((ip, port), timeout=0.2).close()
        return True
    except OSError:
        return False


# --------------------------------------------------------------------------- what a pod runs


@dataclass(frozen=True)
class Listener:
    """One port of a pod and the fake server answering there."""

    container: str
    port: int
    app: App


@dataclass(frozen=True)
class NginxPlan:
    """One nginx container: its sites, run by the real nginx."""

    container: str
    sites: Mapping[str, str]


@dataclass
class PodPlan:
    """Everything that listens on one pod's IP."""

    listeners: list[Listener] = field(default_factory=list)
    nginx: list[NginxPlan] = field(default_factory=list)


def plan_container(
    namespace: str, pod_spec: Mapping[str, Any], c: Mapping[str, Any], env: EnvReader
) -> PodPlan:
    """What one (non-Ray) container of a pod serves: vLLM, Open WebUI, nginx, or nothing.

    Raises:
        NotYet: when it cannot start yet (a Secret or ConfigMap is missing).
    """
    plan = PodPlan()
    tokens = vllm_tokens(c)
    if tokens is not None:
        variables = env.environment(namespace, c)
        tokens = [_expand(t, variables) for t in tokens]
        if "--headless" in tokens:
            # A multi-node worker: it joins the leader and serves no HTTP.
            return plan
        flags = parse_vllm_flags(tokens)
        keys = flags.api_keys
        if not keys and variables.get(API_KEY_ENV):
            keys = [variables[API_KEY_ENV]]
        plan.listeners.append(Listener(c["name"], flags.port, VllmApp(flags.models, keys)))
    elif "open-webui" in str(c.get("image", "")):
        ports = [
            int(p["containerPort"])
            for p in c.get("ports") or []
            if p.get("protocol", "TCP") == "TCP"
        ]
        plan.listeners += [Listener(c["name"], p, OpenWebUIApp()) for p in ports or [WEBUI_PORT]]
    elif is_nginx(c):
        if c.get("command"):
            raise NotYet(
                f"container {c['name']}: an nginx image with its own command is not simulated "
                "(only the image's entrypoint: templates, then nginx)"
            )
        plan.nginx.append(NginxPlan(c["name"], nginx_site_files(namespace, pod_spec, c, env)))
    return plan


def plan_pod(pod: Mapping[str, Any], env: EnvReader, ray: RayClusters) -> PodPlan:
    """What listens on a Running pod's IP, by what its containers are.

    Raises:
        NotYet: when a container cannot start yet (a Secret or ConfigMap is missing).
    """
    meta, spec = pod["metadata"], pod["spec"]
    labels = meta.get("labels") or {}
    namespace = meta["namespace"]
    containers = list(spec.get("containers") or [])
    plan = PodPlan()
    node_type = labels.get(RAY_NODE_TYPE)
    if node_type in ("head", "worker") and RAY_CLUSTER in labels and containers:
        key = (namespace, labels[RAY_CLUSTER])
        # KubeRay's Ray container is the first (utils.RayContainerIndex); the
        # others are sidecars, planned like any container.
        ray_container = containers.pop(0)
        name = ray_container["name"]
        if node_type == "worker":
            plan.listeners.append(Listener(name, RAY_SERVE_PORT, RayServeApp(ray, key)))
        else:
            ray.head_started(key, meta["uid"])
            dashboard = _port_named(ray_container, "dashboard", RAY_DASHBOARD_PORT)
            serve = _port_named(ray_container, "serve", RAY_SERVE_PORT)
            plan.listeners += [
                Listener(name, dashboard, RayDashboardApp(ray, key)),
                Listener(name, serve, RayServeApp(ray, key)),
            ]
    for c in containers:
        one = plan_container(namespace, spec, c, env)
        plan.listeners += one.listeners
        plan.nginx += one.nginx
    return plan


# --------------------------------------------------------------------------- the listeners


class _Handler(http.server.BaseHTTPRequestHandler):
    server: PodServer
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        super().finish()

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            reply = self.server.app.handle(self.command, self.path, headers, body)
        except Exception as e:  # a bug here must answer, not hang the caller
            reply = Reply.text(500, f"kube-sim fake server error: {e!r}")
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        data = b"".join(reply.chunks) if reply.chunks else reply.body
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.server.record(f"{self.command} {self.path} -> {reply.status}")

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _serve

    def log_message(self, format: str, *args: Any) -> None:
        # Requests are recorded by _serve in the harness's own log.
        pass


class PodServer(http.server.ThreadingHTTPServer):
    """One fake server on ``ip:port``, answering with its ``App``."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], app: App, record: Callable[[str], None]) -> None:
        self.app = app
        self.ip, self.port = address
        self._record = record
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def record(self, line: str) -> None:
        self._record(f"{self.ip}:{self.port} {line}")

    def close_all(self) -> None:
        """Stop listening and cut every open connection, as a dying process does.

        Without the cut, a client's kept-alive connection (the API server's
        proxy pools them) would go on being answered by this pod's handler
        after kwok gave its IP to a new pod.
        """
        self.shutdown()
        self.server_close()
        with self.connections_lock:
            open_now = list(self.connections)
        for conn in open_now:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                conn.close()


@dataclass
class _Served:
    pod: str
    uid: str
    ip: str
    servers: list[PodServer]
    processes: list[NginxProcess] = field(default_factory=list)


class PodServers:
    """The fake container processes of every Running pod, kept in step with the API.

    A thread lists the pods, then watches them; each Running pod with an IP
    gets the listeners ``plan_pod`` gives it, and loses them when it is deleted
    (or its deletion starts) or leaves Running. A pod whose server cannot start
    yet is tried again every ``RETRY_INTERVAL_S``.

    Args:
        api: A client of the API server (reads pods, Secrets, ConfigMaps).
        log: Where started listeners, problems and each request are written.
        rundir: Where the real programs run for containers (nginx) keep their
            configuration and logs; next to ``log`` if None.
        share: The toolchain's share/ folder (where an nginx may be unpacked).
    """

    def __init__(
        self, api: Api, log: Path, rundir: Path | None = None, share: Path | None = None
    ) -> None:
        self.api = api
        self.log = log
        self.rundir = rundir or log.parent / "pod-processes"
        self.share = share
        self.ray = RayClusters()
        self._env = EnvReader(api)
        self._lock = threading.Lock()
        # One pod change at a time: the watch and the retry loop must not bind
        # the same address twice, nor close what the other just opened.
        self._ops = threading.Lock()
        self._log_lock = threading.Lock()
        self._served: dict[str, _Served] = {}
        self._waiting: dict[str, dict[str, Any]] = {}
        self._problems: dict[str, str] = {}
        self._retry_at: dict[str, float] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.synced = threading.Event()

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        """Start watching pods (returns at once; ``synced`` is set after the first list)."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        for target, name in (
            (self._watch_loop, "pod-servers-watch"),
            (self._retry_loop, "pod-servers-retry"),
        ):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        """Stop watching and close every listener."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
        with self._lock:
            served = list(self._served.values())
            self._served.clear()
        for s in served:
            self._close(s)

    # -- what is served -----------------------------------------------------------

    def served(self) -> dict[str, list[str]]:
        """Per pod (``ns/name``): ``ip:port what`` of each listener."""
        with self._lock:
            return {
                s.pod: [f"{srv.ip}:{srv.port} {srv.app.describe()}" for srv in s.servers]
                + [proc.describe() for proc in s.processes]
                for s in self._served.values()
            }

    def problems(self) -> dict[str, str]:
        """Per pod (``ns/name``): why its servers are not up (yet)."""
        with self._lock:
            return dict(self._problems)

    def describe(self) -> str:
        """What is served and what could not start, for error messages."""
        lines = ["fake pod servers (tests/kube/serving.py):"]
        for pod, listeners in sorted(self.served().items()):
            lines += [f"  {pod}: {item}" for item in listeners]
        for pod, why in sorted(self.problems().items()):
            lines.append(f"  {pod}: NOT STARTED: {why}")
        try:
            tail = self.log.read_text(errors="replace").splitlines()[-15:]
        except OSError:
            tail = []
        if tail:
            lines.append(f"  last lines of {self.log}:")
            lines += [f"    {line}" for line in tail]
        return "\n".join(lines)

    # -- the loops ------------------------------------------------------------------

    def _record(self, line: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        with self._log_lock, self.log.open("a") as f:
            f.write(f"{stamp} {line}\n")

    def _watch_loop(self) -> None:
        while not self._stop.is_set():
            try:
                listed = self.api.request("GET", "/api/v1/pods")
                self._sync_all(listed["items"])
                self.synced.set()
                version = listed["metadata"]["resourceVersion"]
                for event in self.api.watch("/api/v1/pods", version, stop=self._stop):
                    kind, pod = event.get("type"), event.get("object") or {}
                    if kind == "ERROR":
                        break  # e.g. 410 Gone: list again
                    if kind == "BOOKMARK":
                        continue
                    self._on_pod(pod, deleted=kind == "DELETED")
            except (SimError, OSError, ValueError, KeyError) as e:
                if self._stop.is_set():
                    return
                self._record(f"watch interrupted ({e!r}); listing again")
                self._stop.wait(1.0)

    def _retry_loop(self) -> None:
        while not self._stop.wait(RETRY_INTERVAL_S):
            with self._lock:
                waiting = list(self._waiting.values())
            for pod in waiting:
                self._on_pod(pod, deleted=False)

    def _sync_all(self, pods: list[dict[str, Any]]) -> None:
        uids = {p["metadata"]["uid"] for p in pods}
        with self._lock:
            gone = [s for uid, s in self._served.items() if uid not in uids]
            for s in gone:
                del self._served[s.uid]
            for uid in [u for u in self._waiting if u not in uids]:
                self._forget(uid)
        with self._ops:
            for s in gone:
                self._close(s)
        for pod in pods:
            self._on_pod(pod, deleted=False)

    def _forget(self, uid: str) -> None:
        self._retry_at.pop(uid, None)
        pod = self._waiting.pop(uid, None)
        if pod is not None:
            self._problems.pop(_pod_name(pod), None)

    def _on_pod(self, pod: dict[str, Any], *, deleted: bool) -> None:
        with self._ops:
            self._change(pod, deleted=deleted)

    def _change(self, pod: dict[str, Any], *, deleted: bool) -> None:
        meta, status = pod.get("metadata") or {}, pod.get("status") or {}
        uid = meta.get("uid", "")
        ip = status.get("podIP", "")
        running = (
            not deleted
            and not meta.get("deletionTimestamp")
            and status.get("phase") == "Running"
            and bool(ip)
        )
        with self._lock:
            current = self._served.get(uid)
            if running and current is not None and current.ip == ip:
                return
            if current is not None:
                del self._served[uid]
            if not running:
                self._forget(uid)
        if current is not None:
            self._close(current)
        if running:
            self._open(pod, uid, ip)

    def _open(self, pod: dict[str, Any], uid: str, ip: str) -> None:
        name = _pod_name(pod)
        with self._lock:
            if time.monotonic() < self._retry_at.get(uid, 0.0):
                self._waiting[uid] = pod
                return
        servers: list[PodServer] = []
        processes: list[NginxProcess] = []
        try:
            plan = plan_pod(pod, self._env, self.ray)
            for listener in plan.listeners:
                try:
                    servers.append(PodServer((ip, listener.port), listener.app, self._record))
                except OSError as e:
                    raise NotYet(f"cannot listen on {ip}:{listener.port}: {e}") from None
            for nginx in plan.nginx:
                binary = nginx_binary(self.share)
                if binary is None:
                    raise Crashed(
                        f"container {nginx.container} runs nginx, and no nginx program is "
                        "here to run it: install nginx (apt-get install nginx-light) or set "
                        "KUBE_SIM_NGINX to its path"
                    )
                folder = self.rundir / f"{name.replace('/', '_')}_{nginx.container}"
                processes.append(start_nginx(binary, folder, nginx.sites, ip))
        except (NotYet, ApiError, OSError) as e:
            for srv in servers:
                srv.server_close()
            for proc in processes:
                proc.close()
            with self._lock:
                first = name not in self._problems or self._problems[name] != str(e)
                self._waiting[uid] = pod
                self._problems[name] = str(e)
                if isinstance(e, Crashed):
                    # A crashing program is retried after a back-off, as the kubelet does.
                    self._retry_at[uid] = time.monotonic() + CRASH_BACKOFF_S
            if first:
                self._record(f"{name}: not started: {e}")
            return
        for srv in servers:
            threading.Thread(
                target=srv.serve_forever,
                kwargs={"poll_interval": 0.2},
                name=f"pod-server-{name}-{srv.port}",
                daemon=True,
            ).start()
            self._record(f"{name}: listening on {ip}:{srv.port}: {srv.app.describe()}")
        for proc in processes:
            self._record(f"{name}: running {proc.describe()}")
        with self._lock:
            self._forget(uid)
            if servers or processes:
                self._served[uid] = _Served(name, uid, ip, servers, processes)

    def _close(self, served: _Served) -> None:
        for srv in served.servers:
            with contextlib.suppress(OSError):
                srv.close_all()
        for proc in served.processes:
            proc.close()
        self._record(f"{served.pod}: stopped ({served.ip})")


def _pod_name(pod: Mapping[str, Any]) -> str:
    meta = pod.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"
