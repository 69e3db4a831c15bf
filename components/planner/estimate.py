"""One configuration's estimate: memory, fit, speed, cost and cold start.

:func:`estimate` sizes a model on an instance type at a tensor/pipeline
parallelism, the way the chosen vLLM version does it (``memory`` and
``vllm_profile``), then adds speed (``speed``), cost and cold start. On
Neuron the KV cache is static (one max_model_len slot per sequence) and the
GPU profile does not apply.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from components.catalog import Accelerator, InstanceType
from components.config import StorageKind
from components.models import GIB, ModelArch
from components.planner import speed as sp
from components.planner.sizing import (
    KV_CACHE_DTYPES,
    NEURON_VLLM,
    ONLINE_QUANTIZATION,
    Setup,
    Sizing,
    check_storage,
    size_neuron,
    size_nvidia,
    valid_tensor_parallel,
)
from components.planner.vllm_profile import PINNED, get_profile

# --- Cold start (see docs/planner.md) -------------------------------------------

NODE_LAUNCH_S = {"g": 100.0, "inf": 110.0, "p": 180.0}
IMAGE_GB = {Accelerator.NVIDIA: 9.0, Accelerator.NEURON: 7.0}
IMAGE_PULL_MBPS = 150.0
HUB_DOWNLOAD_MBPS = 100.0
PAGE_CACHE_LOAD_MBPS = 2000.0
STORAGE_LOAD_MBPS = {
    StorageKind.S3: 600.0,
    StorageKind.FSX: 1000.0,
    StorageKind.EFS: 300.0,
    StorageKind.PVC: 125.0,
}
ENGINE_INIT_S = 60.0
NEURON_COMPILE_S_8B = 640.0
#: Llama-3-8B, the [INF2] reference run (8,030,261,248 parameters from its config).
NEURON_COMPILE_REF_PARAMS = 8_030_261_248
NEURON_COMPILE_REF_VCPU = 32


@dataclass(frozen=True)
class Estimate:
    """What vLLM will do with one model on one instance type.

    Memory figures are per accelerator (GPU, or NeuronCore on Neuron) of the
    worst pipeline stage. Throughput is for one replica.

    Attributes:
        model_id: Hugging Face id.
        instance_type: EC2 instance type.
        accelerator: nvidia or neuron.
        tensor_parallel: vLLM ``--tensor-parallel-size`` (GPUs, or NeuronCores).
        pipeline_parallel: vLLM ``--pipeline-parallel-size`` (one node per stage).
        nodes: Nodes per replica (= pipeline_parallel).
        devices_per_node: Devices each pod requests.
        max_model_len: Context length vLLM is started with.
        gpu_memory_utilization: vLLM's fraction (ignored by Neuron).
        weights_gib: "Model loading took" per device.
        activation_gib: Profiled activation peak.
        non_torch_gib: Non-torch memory growth during the profile.
        cuda_graph_gib: CUDA-graph pool (inside the budget from vLLM 0.20 on).
        kv_cache_gib: "Available KV cache memory".
        kv_tokens: "KV cache size" in tokens, as the vLLM version logs it.
        max_concurrency: max_model_len requests the KV cache holds at once.
        max_num_seqs: What to pass as ``--max-num-seqs``.
        fits: Whether vLLM will start and serve one max_model_len request.
        reason: Why it fits or does not, with the numbers.
        decode_tokens_per_s: Output tokens/s of a single stream.
        aggregate_tokens_per_s: Output tokens/s of ``concurrency`` streams,
            their prompts' prefills included.
        concurrency: Streams the aggregate figure is for.
        ttft_s: Time to first token for a 1,024-token prompt.
        cost_per_hour: Instance price x nodes (one replica).
        cost_per_million_tokens: $ per million output tokens at the aggregate.
        cold_start_s: Node launch + image pull + weights + engine start.
        cold_start_breakdown: The parts of cold_start_s, in seconds.
        max_num_batched_tokens: The profiling batch (vLLM default unless given).
        usable_gib: Device memory as the runtime reports it.
        budget_gib: ``ceil(usable x utilization)`` (Neuron: per-core HBM).
        kv_bytes_per_token: KV bytes per token of context per device.
        host_memory_gib: Host memory a node needs to load the model.
        storage: Where the weights come from.
        vllm_version: The vLLM whose behaviour this predicts.
        sampler_state_gib: Persistent sampler tensors (V2 runner).
        kv_blocks: KV-cache blocks of 16 tokens.
        decode_ms_per_token: One stream's step time.
        batched_tokens_set: max_num_batched_tokens was given, not vLLM's default.
        quantization: Online ``--quantization`` (None: as the checkpoint is).
        kv_cache_dtype: ``--kv-cache-dtype``.
    """

    model_id: str
    instance_type: str
    accelerator: Accelerator
    tensor_parallel: int
    pipeline_parallel: int
    nodes: int
    devices_per_node: int
    max_model_len: int
    gpu_memory_utilization: float
    weights_gib: float
    activation_gib: float
    non_torch_gib: float
    cuda_graph_gib: float
    kv_cache_gib: float
    kv_tokens: int
    max_concurrency: float
    max_num_seqs: int
    fits: bool
    reason: str
    decode_tokens_per_s: float
    aggregate_tokens_per_s: float
    concurrency: int
    ttft_s: float
    cost_per_hour: float
    cost_per_million_tokens: float
    cold_start_s: float
    cold_start_breakdown: dict[str, float] = field(default_factory=dict)
    max_num_batched_tokens: int = 0
    usable_gib: float = 0.0
    budget_gib: float = 0.0
    kv_bytes_per_token: int = 0
    host_memory_gib: float = 0.0
    storage: str = StorageKind.NONE.value
    vllm_version: str = PINNED
    sampler_state_gib: float = 0.0
    kv_blocks: int = 0
    decode_ms_per_token: float = 0.0
    batched_tokens_set: bool = False
    quantization: str | None = None
    kv_cache_dtype: str = "auto"

    def vllm_args(self) -> list[str]:
        """The vLLM flags this estimate stands for (the planner's part of them)."""
        args = [
            f"--tensor-parallel-size={self.tensor_parallel}",
            f"--max-model-len={self.max_model_len}",
            f"--max-num-seqs={self.max_num_seqs}",
        ]
        if self.pipeline_parallel > 1:
            args.append(f"--pipeline-parallel-size={self.pipeline_parallel}")
        if self.accelerator is Accelerator.NVIDIA:
            args.append(f"--gpu-memory-utilization={self.gpu_memory_utilization}")
            if self.batched_tokens_set:
                args.append(f"--max-num-batched-tokens={self.max_num_batched_tokens}")
            if self.quantization:
                args.append(f"--quantization={self.quantization}")
            if self.kv_cache_dtype != "auto":
                args.append(f"--kv-cache-dtype={self.kv_cache_dtype}")
        return args

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON: enums as their values, floats rounded."""
        out = asdict(self)
        out["accelerator"] = self.accelerator.value
        for k, v in out.items():
            if isinstance(v, float):
                out[k] = round(v, 4) if math.isfinite(v) else None
        out["cold_start_breakdown"] = {k: round(v, 1) for k, v in self.cold_start_breakdown.items()}
        return out


def _validate(s: Setup, max_num_seqs: int | None, max_num_batched_tokens: int | None) -> None:
    model = s.model
    if not 1 <= s.length <= model.max_context:
        raise ValueError(
            f"max_model_len: must be between 1 and {model.max_context} "
            f"(the context of {model.id}), got {s.length}"
        )
    if not (isinstance(s.util, int | float) and 0 < s.util <= 1):
        raise ValueError(f"gpu_memory_utilization: must be in (0, 1], got {s.util}")
    if s.concurrency < 1:
        raise ValueError(f"concurrency: must be >= 1, got {s.concurrency}")
    if s.pp < 1:
        raise ValueError(f"pipeline_parallel: must be >= 1, got {s.pp}")
    valid = valid_tensor_parallel(model, s.instance)
    if s.tp not in valid:
        raise ValueError(
            f"tensor_parallel: {s.tp} is not valid for {model.id} on {s.instance.name}; "
            f"valid: {', '.join(map(str, valid))}"
        )
    if max_num_seqs is not None and max_num_seqs < 1:
        raise ValueError(f"max_num_seqs: must be >= 1, got {max_num_seqs}")
    if max_num_batched_tokens is not None and max_num_batched_tokens < 1:
        raise ValueError(f"max_num_batched_tokens: must be >= 1, got {max_num_batched_tokens}")
    if s.online is not None and s.online not in ONLINE_QUANTIZATION:
        valid_q = ", ".join(ONLINE_QUANTIZATION)
        raise ValueError(f"quantization: {s.online!r} is not supported (valid: {valid_q})")
    if s.kv_cache_dtype not in KV_CACHE_DTYPES:
        raise ValueError(
            f"kv_cache_dtype: {s.kv_cache_dtype!r} is not valid "
            f"(valid: {', '.join(KV_CACHE_DTYPES)})"
        )


# --- Cold start and the estimate ------------------------------------------------


def cold_start(
    model: ModelArch, instance: InstanceType, pp: int, storage: StorageKind
) -> dict[str, float]:
    """Node launch, image pull, weights and engine start, in seconds."""
    parts: dict[str, float] = {
        "node_launch": NODE_LAUNCH_S.get(instance.category, NODE_LAUNCH_S["g"]),
        "image_pull": IMAGE_GB[instance.accelerator] * 1000 / IMAGE_PULL_MBPS,
    }
    checkpoint_mb = model.checkpoint_gib * GIB / 1e6
    if storage is StorageKind.NONE:
        # Every node downloads the whole snapshot, then reads its stage.
        parts["weights_download"] = checkpoint_mb / HUB_DOWNLOAD_MBPS
        parts["weights_load"] = checkpoint_mb / pp / PAGE_CACHE_LOAD_MBPS
    else:
        parts["weights_load"] = checkpoint_mb / pp / STORAGE_LOAD_MBPS[storage]
    if instance.accelerator is Accelerator.NEURON:
        parts["neuron_compile"] = (
            NEURON_COMPILE_S_8B
            * (model.params / NEURON_COMPILE_REF_PARAMS)
            * math.sqrt(NEURON_COMPILE_REF_VCPU / instance.vcpu)
        )
    else:
        parts["engine_init"] = ENGINE_INIT_S
    return parts


def estimate(
    model: ModelArch,
    instance: InstanceType,
    *,
    tensor_parallel: int,
    pipeline_parallel: int = 1,
    max_model_len: int | None = None,
    gpu_memory_utilization: float = 0.90,
    concurrency: int = 1,
    storage: str = "none",
    max_num_seqs: int | None = None,
    max_num_batched_tokens: int | None = None,
    vllm_version: str = PINNED,
    quantization: str | None = None,
    kv_cache_dtype: str = "auto",
    enforce_eager: bool = False,
) -> Estimate:
    """Predict memory, speed, cost and cold start of one configuration.

    Args:
        model: The model.
        instance: The instance type (one per pipeline stage).
        tensor_parallel: GPUs (NeuronCores on Neuron) per stage.
        pipeline_parallel: Stages, one node each.
        max_model_len: Context length; None: the model's full context.
        gpu_memory_utilization: vLLM's fraction of device memory, in (0, 1].
        concurrency: Concurrent streams for the aggregate throughput.
        storage: Where weights come from (``none``, ``s3``, ``fsx``, ``efs``, ``pvc``).
        max_num_seqs: Force vLLM's ``--max-num-seqs``; None: planner's choice.
        max_num_batched_tokens: Force ``--max-num-batched-tokens``; None: vLLM's default.
        vllm_version: Whose start-up to predict (``vllm_profile``): the pinned
            0.33.0, Ray's 0.29.0, or a reference version of a published log.
        quantization: Online ``--quantization`` of an unquantized checkpoint (``fp8``).
        kv_cache_dtype: ``--kv-cache-dtype`` (``auto`` or ``fp8``).
        enforce_eager: ``--enforce-eager`` (no CUDA graphs).

    Raises:
        ValueError: naming the bad argument and its valid range.
    """
    setup = Setup(
        model=model,
        instance=instance,
        tp=tensor_parallel,
        pp=pipeline_parallel,
        length=model.max_context if max_model_len is None else max_model_len,
        util=gpu_memory_utilization,
        concurrency=concurrency,
        storage=check_storage(storage),
        profile=get_profile(vllm_version),
        online=quantization,
        kv_cache_dtype=kv_cache_dtype,
        eager=enforce_eager,
    )
    _validate(setup, max_num_seqs, max_num_batched_tokens)
    neuron = instance.accelerator is Accelerator.NEURON
    if neuron:
        sizing = size_neuron(setup, max_num_seqs)
    else:
        sizing = size_nvidia(setup, max_num_seqs, max_num_batched_tokens)
    return _finish(setup, sizing, forced_batch=max_num_batched_tokens is not None)


def _finish(s: Setup, z: Sizing, *, forced_batch: bool) -> Estimate:
    """Throughput, latency, cost and cold start, common to both accelerators."""
    model, instance, tp, pp = s.model, s.instance, s.tp, s.pp
    neuron = instance.accelerator is Accelerator.NEURON
    context = min(s.length, sp.PROMPT_TOKENS + sp.OUTPUT_TOKENS // 2)
    cap = max(1, min(z.seqs, z.tokens // context if z.tokens else 1))
    running = min(s.concurrency, cap)
    speed = sp.speed(
        model,
        instance,
        z.layout,
        (z.weights * GIB, z.experts * GIB),
        tp=tp,
        pp=pp,
        running=running,
        length=s.length,
    )
    reason = z.reason
    if running < s.concurrency:
        reason += (
            f"; concurrency {s.concurrency} capped at {running} by max_num_seqs {z.seqs} and "
            f"the KV cache"
        )
    cost = instance.price_per_hour * pp
    parts = cold_start(model, instance, pp, s.storage)
    return Estimate(
        model_id=model.id,
        instance_type=instance.name,
        accelerator=instance.accelerator,
        tensor_parallel=tp,
        pipeline_parallel=pp,
        nodes=pp,
        devices_per_node=math.ceil(tp / instance.chip.cores) if neuron else tp,
        max_model_len=s.length,
        gpu_memory_utilization=s.util,
        weights_gib=z.weights,
        activation_gib=z.activation,
        non_torch_gib=z.non_torch,
        cuda_graph_gib=z.graphs,
        kv_cache_gib=max(0.0, z.kv),
        kv_tokens=z.tokens,
        max_concurrency=z.concurrency,
        max_num_seqs=z.seqs,
        fits=z.fits,
        reason=reason,
        decode_tokens_per_s=speed.decode_tokens_per_s,
        aggregate_tokens_per_s=speed.aggregate_tokens_per_s,
        concurrency=running,
        ttft_s=speed.ttft_s,
        cost_per_hour=cost,
        cost_per_million_tokens=sp.cost_per_million(cost, speed.aggregate_tokens_per_s),
        cold_start_s=sum(parts.values()),
        cold_start_breakdown=parts,
        max_num_batched_tokens=z.batch_tokens,
        usable_gib=z.usable,
        budget_gib=z.budget,
        kv_bytes_per_token=z.layout.bytes_per_token,
        host_memory_gib=z.host_need,
        storage=s.storage.value,
        vllm_version=NEURON_VLLM if neuron else s.profile.version,
        sampler_state_gib=z.sampler_state,
        kv_blocks=z.blocks,
        decode_ms_per_token=speed.decode_ms_per_token,
        batched_tokens_set=forced_batch and not neuron,
        quantization=s.online,
        kv_cache_dtype=s.kv_cache_dtype,
    )
