"""The argument lists and scripts the serving pods run (pure functions, no Pulumi).

* :func:`vllm_args`: the vLLM OpenAI server's flags, in a stable order.
* :data:`WORKER_SCRIPT` and :func:`leader_script`: a LeaderWorkerSet group's
  Ray cluster (the leader runs the Ray head, then vLLM over Ray).
* :func:`serve_config`: Ray Serve LLM's ``serveConfigV2`` for a RayService.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import Any

import yaml

from components.vllm_flags import flag_to_kwarg

#: The OpenAI-compatible port, in every mode (vLLM server and Ray Serve).
PORT = 8000
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


#: Workers wait for the leader's Ray head (LWS_LEADER_ADDRESS is injected by the
#: LeaderWorkerSet controller), then join it and stay in the foreground.
WORKER_SCRIPT = "\n".join(
    [
        "set -u",
        f'until ray health-check --address="${{LWS_LEADER_ADDRESS}}:{RAY_GCS_PORT}" '
        ">/dev/null 2>&1; do",
        '  echo "waiting for the Ray head at ${LWS_LEADER_ADDRESS}"; sleep 5',
        "done",
        f'exec ray start --address="${{LWS_LEADER_ADDRESS}}:{RAY_GCS_PORT}" --block',
    ]
)


def leader_script(vllm: Sequence[str], wait_s: int) -> str:
    """The leader: start the Ray head, wait for the group's pods, then run vLLM."""
    count = (
        'python3 -c \'import ray; ray.init(address="auto"); '
        'print(sum(1 for n in ray.nodes() if n["Alive"]))\' 2>/dev/null || echo 0'
    )
    return "\n".join(
        [
            "set -euo pipefail",
            f"ray start --head --port={RAY_GCS_PORT} --disable-usage-stats",
            # vLLM places pipeline stages on the workers: all must have joined.
            f"for _ in $(seq 1 {max(1, wait_s // 5)}); do",
            f"  alive=$({count})",
            '  [ "$alive" -ge "$LWS_GROUP_SIZE" ] && break',
            '  echo "waiting for Ray workers: $alive/$LWS_GROUP_SIZE"; sleep 5',
            "done",
            "exec python3 -m vllm.entrypoints.openai.api_server " + shlex.join(vllm),
        ]
    )


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
