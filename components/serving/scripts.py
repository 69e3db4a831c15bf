"""The argument lists and scripts the serving pods run (pure functions, no Pulumi).

* :func:`vllm_args`: the vLLM OpenAI server's flags, in a stable order.
* :func:`multi_node_args`: a LeaderWorkerSet group as one vLLM over several
  nodes (vLLM's own multi-node mode).
* :data:`AUTH_PROXY_TEMPLATE`: the API-key check in front of Ray Serve.
* :func:`serve_config`: Ray Serve LLM's ``serveConfigV2`` for a RayService.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

from components.vllm_flags import flag_to_kwarg

#: The OpenAI-compatible port, in every mode (vLLM server and Ray Serve).
PORT = 8000
#: Ray Serve's proxy health route (Ray Serve LLM's app has no /health).
RAY_HEALTH_PATH = "/-/healthz"
#: The Ray head's GCS port (LeaderWorkerSet groups, RayService).
RAY_GCS_PORT = 6379


def vllm_args(
    *,
    model: str,
    served_model_name: str,
    tensor_parallel: int,
    pipeline_parallel: int,
    max_model_len: int,
    gpu_memory_utilization: float,
    max_num_seqs: int,
    extra_args: Sequence[str] = (),
    distributed_executor_backend: str | None = None,
    trust_remote_code: bool = False,
) -> list[str]:
    """The vLLM OpenAI server's arguments, in a stable order."""
    args = [
        "--model", model,
        "--served-model-name", served_model_name,
        "--tensor-parallel-size", str(tensor_parallel),
    ]  # fmt: skip
    if pipeline_parallel > 1:
        args += ["--pipeline-parallel-size", str(pipeline_parallel)]
    args += [
        "--max-model-len", str(max_model_len),
        "--gpu-memory-utilization", str(gpu_memory_utilization),
        "--max-num-seqs", str(max_num_seqs),
        "--port", str(PORT),
    ]  # fmt: skip
    if distributed_executor_backend:
        args += ["--distributed-executor-backend", distributed_executor_backend]
    if trust_remote_code:
        args.append("--trust-remote-code")
    return args + list(extra_args)


#: torch.distributed's rendezvous port on a multi-node group's leader.
MASTER_PORT = 29501
#: Kubernetes expands these in container args from the variables the
#: LeaderWorkerSet controller injects into every pod of a group.
LEADER_ADDRESS_REF = "$(LWS_LEADER_ADDRESS)"
WORKER_INDEX_REF = "$(LWS_WORKER_INDEX)"


def multi_node_args(vllm: Sequence[str], *, nodes: int, leader: bool) -> list[str]:
    """vLLM's own multi-node mode over one LeaderWorkerSet group (no Ray).

    Every pod runs ``vllm serve`` with the same engine flags; the leader (rank
    0) serves the API, each worker joins it headless as the rank the
    LeaderWorkerSet gives it.
    """
    args = [
        *vllm,
        "--distributed-executor-backend", "mp",
        "--nnodes", str(nodes),
        "--master-addr", LEADER_ADDRESS_REF,
        "--master-port", str(MASTER_PORT),
    ]  # fmt: skip
    if leader:
        return [*args, "--node-rank", "0"]
    return [*args, "--node-rank", WORKER_INDEX_REF, "--headless"]


#: nginx in front of Ray Serve (which has no API keys): ``/health`` open for
#: probes and load balancers, everything else only with the endpoint's key.
#: nginx's image renders it with envsubst at start, filling only ``${API_KEY}``,
#: ``${UPSTREAM}`` and ``${LISTEN_PORT}`` (its own ``$variables`` are not
#: environment variables). The key is compared with ``if``: exact and
#: case-sensitive (a ``map`` matches ignoring case, and a 60-byte key overflows
#: its default hash bucket); ``default_type`` may not stand inside the ``if``.
#: tests/kube checks that the real nginx starts on it and enforces the key.
AUTH_PROXY_TEMPLATE = """\
server {
    listen ${LISTEN_PORT};
    client_max_body_size 16m;
    location = /health {
        proxy_pass http://${UPSTREAM}@RAY_HEALTH_PATH@;
    }
    location / {
        default_type application/json;
        if ($http_authorization != "Bearer ${API_KEY}") {
            return 401 '{"error": "a valid API key is required (Authorization: Bearer ...)"}';
        }
        proxy_pass http://${UPSTREAM};
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_buffering off;
        proxy_read_timeout 600s;
    }
}
""".replace("@RAY_HEALTH_PATH@", RAY_HEALTH_PATH)


def serve_config(
    *,
    model_id: str,
    model_source: str,
    tensor_parallel: int,
    pipeline_parallel: int,
    max_model_len: int,
    gpu_memory_utilization: float,
    max_num_seqs: int,
    replicas: int,
    extra_args: Sequence[str] = (),
    neuron_cores: int = 0,
    trust_remote_code: bool = False,
) -> str:
    """Ray Serve ``serveConfigV2``: Ray Serve LLM's OpenAI app over vLLM."""
    engine: dict[str, Any] = {
        "tensor_parallel_size": tensor_parallel,
        "max_model_len": max_model_len,
        "gpu_memory_utilization": gpu_memory_utilization,
        "max_num_seqs": max_num_seqs,
    }
    if pipeline_parallel > 1:
        engine["pipeline_parallel_size"] = pipeline_parallel
    if trust_remote_code:
        engine["trust_remote_code"] = True
    engine.update(flag_to_kwarg(f) for f in extra_args)
    llm: dict[str, Any] = {
        "model_loading_config": {"model_id": model_id, "model_source": model_source},
        "engine_kwargs": engine,
        "deployment_config": {
            # Fixed size: one replica per worker pod, as many as there are pods.
            "autoscaling_config": {
                "min_replicas": replicas,
                "initial_replicas": replicas,
                "max_replicas": replicas,
            },
        },
    }
    if neuron_cores:
        # Ray schedules the engine on NeuronCores instead of its default GPU bundles.
        llm["placement_group_config"] = {
            "bundles": [{"CPU": 1, "neuron_cores": neuron_cores}],
            "strategy": "STRICT_PACK",
        }
    config = {
        "applications": [
            {
                "name": "llm",
                "import_path": "ray.serve.llm:build_openai_app",
                "route_prefix": "/",
                "args": {"llm_configs": [llm]},
            }
        ]
    }
    return yaml.safe_dump(config, sort_keys=False)
