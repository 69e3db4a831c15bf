"""Memory and fit of one configuration: NVIDIA through vLLM's profile, Neuron static.

The planner's own choices live here too: ``max_num_seqs`` (the largest whose own
profile leaves KV cache for that many typical requests) and vLLM's batch defaults.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from components._versions import VLLM_NEURON_IMAGE
from components.catalog import Accelerator, InstanceType
from components.config import StorageKind
from components.models import BYTES_PER_ELEMENT, GIB, ModelArch, Quantization
from components.planner.memory import (
    Memory,
    expert_bytes_per_rank,
    kv_layout,
    profile_memory,
)
from components.planner.vllm_profile import VllmProfile

#: vLLM's OpenAI-server batch defaults (``engine/arg_utils.py:2973-3006``,
#: 0.33.0; ``:2698-2760`` at 0.29.0; the same table at 0.19.0): >= 160 GiB ->
#: 16384 tokens / 1024 seqs; >= 70 GiB and not an A100 -> 8192 / 1024; else
#: 2048 / 256. Then ``min(max_num_seqs x max_model_len, default)`` (:3221-3224).
LARGE_GPU_GIB = 70.0
HUGE_GPU_GIB = 160.0
#: The planner's max_num_seqs: at most this many...
MAX_PLANNED_SEQS = 256
#: ...and no more than a KV cache holding this many tokens per sequence allows.
TYPICAL_REQUEST_TOKENS = 2048

# --- Neuron ---------------------------------------------------------------------

NEURON_SCRATCH_GIB = 0.5
NEURON_RUNTIME_GIB = 0.5
NEURON_MAX_SEQS = 32
#: The Neuron image's vLLM: the version part of its tag (``components/_versions.py``).
NEURON_VLLM = VLLM_NEURON_IMAGE.rsplit(":", 1)[-1].split("-py")[0]

# --- Host memory ----------------------------------------------------------------

HOST_RESERVED_GIB = 2.0
HOST_NVIDIA_PROCESS_GIB = 8.0
HOST_NEURON_BASE_GIB = 8.0
HOST_NEURON_WEIGHT_FACTOR = 2.0

ONLINE_QUANTIZATION = {"fp8": Quantization("fp8", 8)}
KV_CACHE_DTYPES = ("auto", "fp8", "fp8_e4m3", "fp8_e5m2", "bfloat16", "float16")


def units(instance: InstanceType) -> int:
    """What tensor parallelism counts on an instance: GPUs, or NeuronCores."""
    if instance.accelerator is Accelerator.NEURON:
        return instance.count * instance.chip.cores
    return instance.count


def valid_tensor_parallel(model: ModelArch, instance: InstanceType) -> list[int]:
    """Tensor-parallel sizes vLLM accepts for this model on this instance.

    Powers of two that divide the instance's GPUs (NeuronCores on Neuron) and
    the attention heads; KV heads must divide evenly or be replicated evenly
    (vLLM: ``num_heads % tp == 0``; ``kv_heads % tp == 0 or tp % kv_heads == 0``).
    """
    count = units(instance)
    out = []
    tp = 1
    while tp <= count:
        if (
            count % tp == 0
            and model.heads % tp == 0
            and (model.kv_heads % tp == 0 or tp % model.kv_heads == 0)
        ):
            out.append(tp)
        tp *= 2
    return out


def default_batch(instance: InstanceType) -> tuple[int, int]:
    """vLLM's default (max_num_batched_tokens, max_num_seqs) on this GPU."""
    chip = instance.chip
    if chip.usable_gib >= HUGE_GPU_GIB:
        return 16384, 1024
    if chip.usable_gib >= LARGE_GPU_GIB and "A100" not in chip.name:
        return 8192, 1024
    return 2048, 256


@dataclass(frozen=True)
class Setup:
    """The configuration being estimated (validated)."""

    model: ModelArch
    instance: InstanceType
    tp: int
    pp: int
    length: int
    util: float
    concurrency: int
    storage: StorageKind
    profile: VllmProfile
    online: str | None = None
    kv_cache_dtype: str = "auto"
    eager: bool = False


@dataclass(frozen=True)
class Sizing:
    """The memory side of an estimate, per device."""

    weights: float
    experts: float
    activation: float
    non_torch: float
    graphs: float
    sampler_state: float
    kv: float
    tokens: int
    blocks: int
    concurrency: float
    layout: Any
    seqs: int
    batch_tokens: int
    usable: float
    budget: float
    host_need: float
    fits: bool
    reason: str


def check_storage(storage: str | StorageKind) -> StorageKind:
    """The storage kind, or a ValueError naming the valid ones."""
    try:
        return StorageKind(storage)
    except ValueError:
        valid = ", ".join(k.value for k in StorageKind)
        raise ValueError(f"storage: unknown storage kind {storage!r} (valid: {valid})") from None


def _host_need_gib(model: ModelArch, instance: InstanceType, pp: int) -> float:
    if instance.accelerator is Accelerator.NEURON:
        return (
            HOST_NEURON_BASE_GIB
            + HOST_NEURON_WEIGHT_FACTOR * _neuron_weight_bytes(model) / GIB / pp
        )
    return HOST_NVIDIA_PROCESS_GIB


def _neuron_weight_bytes(model: ModelArch) -> float:
    """vLLM-neuron (NxD Inference) has no MXFP4/FP8 expert kernels: bf16 experts."""
    dtype = BYTES_PER_ELEMENT[model.dtype]
    return sum(g.params * max(dtype, model.bytes_per_param(g)) for g in model.weight_groups())


# --- NVIDIA ---------------------------------------------------------------------


def _memory(s: Setup, seqs: int, batch_tokens: int) -> Memory:
    chip = s.instance.chip
    return profile_memory(
        s.model,
        total_gib=chip.usable_gib,
        sm=chip.sm,
        tp=s.tp,
        pp=s.pp,
        length=s.length,
        util=s.util,
        seqs=seqs,
        batched_tokens=batch_tokens,
        profile=s.profile,
        online=ONLINE_QUANTIZATION.get(s.online or ""),
        kv_cache_dtype=s.kv_cache_dtype,
        eager=s.eager,
    )


def _planned_seqs(s: Setup, batch_for: Any) -> int:
    """The largest max_num_seqs whose own profile leaves KV for that many 2k-token requests.

    Every extra sequence grows the profiled sampler, the V2 penalty state and
    the CUDA-graph set, so more sequences mean fewer KV tokens; the condition
    is monotone and a bisection finds the largest that holds.
    """
    per_seq = min(s.length, TYPICAL_REQUEST_TOKENS)

    def holds(seqs: int) -> bool:
        return _memory(s, seqs, batch_for(seqs)).capacity.tokens // per_seq >= seqs

    lo, hi = 1, MAX_PLANNED_SEQS
    if not holds(lo):
        return 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if holds(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def size_nvidia(s: Setup, forced_seqs: int | None, forced_batch: int | None) -> Sizing:
    """Memory and fit of one NVIDIA configuration, as the vLLM version sizes it."""
    chip = s.instance.chip
    default_tokens, _ = default_batch(s.instance)

    def batch_for(seqs: int) -> int:
        return forced_batch or min(seqs * s.length, default_tokens)

    seqs = forced_seqs if forced_seqs is not None else _planned_seqs(s, batch_for)
    batch_tokens = batch_for(seqs)
    mem = _memory(s, seqs, batch_tokens)
    cap, layout = mem.capacity, mem.layout
    experts = expert_bytes_per_rank(s.model, s.tp, chip.sm)
    host_need = _host_need_gib(s.model, s.instance, s.pp)
    host_have = s.instance.memory_gib - HOST_RESERVED_GIB
    budget_text = f"{mem.requested:.2f} GiB budget ({mem.total:.2f} GiB x {s.util:.2f})"
    parts = (
        f"weights {mem.weights:.2f} GiB + activation {mem.activation:.2f} + non-torch "
        f"{mem.non_torch:.2f}"
        + (f" + sampler state {mem.sampler_state:.2f}" if mem.sampler_state else "")
        + (
            f" + CUDA graphs {mem.cuda_graphs:.2f}"
            if s.profile.subtracts_cudagraph_estimate and mem.cuda_graphs
            else ""
        )
    )
    bpt = layout.bytes_per_token
    if not mem.starts:
        fits = False
        reason = (
            f"does not fit: gpu_memory_utilization {s.util:.2f} asks for {mem.requested:.2f} GiB "
            f"but only {mem.total - mem.baseline:.2f} GiB of {mem.total:.2f} are free at start "
            f"(the CUDA context{' and NCCL' if s.tp > 1 or s.pp > 1 else ''} take "
            f"~{mem.baseline:.2f} GiB, which the 1 - utilization headroom must hold); vLLM "
            "would refuse to start; lower gpu_memory_utilization"
        )
    elif mem.kv <= 0:
        fits = False
        reason = (
            f"does not fit: {parts} per GPU exceed the {budget_text} at TP={s.tp}"
            f"{f' x PP={s.pp}' if s.pp > 1 else ''}; nothing is left for the KV cache"
        )
    elif not cap.fits:
        fits = False
        reason = (
            f"does not fit: max_model_len {s.length:,} needs {cap.needed_bytes / GIB:.2f} GiB "
            f"of KV cache ({cap.blocks_per_request:,} blocks) but only {cap.tokens:,} tokens fit "
            f"({mem.kv:.2f} GiB KV cache at {bpt // 1024} KiB/token/GPU, after {parts} GiB "
            f"of the {budget_text}); vLLM would refuse to start"
        )
    elif seqs > batch_tokens:
        fits = False
        reason = (
            f"does not fit: max_num_seqs {seqs} exceeds max_num_batched_tokens "
            f"{batch_tokens}; vLLM would refuse to start"
        )
    elif not s.profile.subtracts_cudagraph_estimate and not mem.graphs_fit_outside:
        fits = False
        reason = (
            f"does not fit: gpu_memory_utilization {s.util:.2f} leaves "
            f"{mem.total - mem.requested:.2f} GiB of headroom outside vLLM's budget, but the "
            f"CUDA context (~{mem.baseline:.2f} GiB) and CUDA graphs (~{mem.cuda_graphs:.2f} "
            "GiB) need it; lower gpu_memory_utilization"
        )
    elif host_have < host_need:
        fits = False
        reason = (
            f"does not fit: {s.instance.name} has {host_have:.0f} GiB of host memory for "
            f"pods, loading needs ~{host_need:.0f} GiB"
        )
    else:
        fits = True
        reason = (
            f"fits: {parts} per GPU leave {mem.kv:.2f} GiB of the {budget_text} for the "
            f"KV cache: {cap.tokens:,} tokens at {bpt // 1024} KiB/token, "
            f"{cap.max_concurrency:.2f}x max_model_len {s.length:,} (vLLM {s.profile.version})"
        )
    return Sizing(
        weights=mem.weights,
        experts=experts / GIB,
        activation=mem.activation,
        non_torch=mem.non_torch,
        graphs=mem.cuda_graphs,
        sampler_state=mem.sampler_state,
        kv=mem.kv,
        tokens=cap.tokens if mem.kv > 0 else 0,
        blocks=cap.blocks,
        concurrency=cap.max_concurrency,
        layout=layout,
        seqs=seqs,
        batch_tokens=batch_tokens,
        usable=mem.total,
        budget=mem.requested,
        host_need=host_need,
        fits=fits,
        reason=reason,
    )


# --- Neuron ---------------------------------------------------------------------


def size_neuron(s: Setup, forced_seqs: int | None) -> Sizing:
    """Neuron: weights and a static KV cache of max_num_seqs x max_model_len per core."""
    model, tp, pp, length = s.model, s.tp, s.pp, s.length
    chip = s.instance.chip
    per_core = chip.usable_gib / chip.cores
    layout = kv_layout(model, tp, pp, BYTES_PER_ELEMENT[model.dtype])
    bpt = layout.bytes_per_token
    weights = _neuron_weight_bytes(model) / (tp * pp) / GIB
    runtime = NEURON_SCRATCH_GIB + NEURON_RUNTIME_GIB
    kv = per_core - weights - runtime
    tokens = max(0, math.floor(kv * GIB / (16 * bpt)) * 16) if kv > 0 else 0
    slots = tokens // length
    seqs = forced_seqs if forced_seqs is not None else max(1, min(NEURON_MAX_SEQS, slots))
    host_need = _host_need_gib(model, s.instance, pp)
    host_have = s.instance.memory_gib - HOST_RESERVED_GIB
    budget_text = f"{per_core:.2f} GiB of HBM per NeuronCore"
    if kv <= 0:
        fits, reason = (
            False,
            (
                f"does not fit: weights {weights:.2f} GiB + runtime {runtime:.2f} per "
                f"NeuronCore exceed the {budget_text} at TP={tp} cores"
            ),
        )
    elif seqs * length > tokens:
        fits, reason = (
            False,
            (
                f"does not fit: Neuron allocates max_num_seqs x max_model_len = {seqs} x "
                f"{length:,} KV tokens statically but only {tokens:,} fit ({kv:.2f} GiB per "
                f"core at {bpt // 1024} KiB/token)"
            ),
        )
    elif host_have < host_need:
        fits, reason = (
            False,
            (
                f"does not fit: {s.instance.name} has {host_have:.0f} GiB of host memory for "
                f"pods; the Neuron SDK loads and compiles the whole checkpoint there "
                f"(~{host_need:.0f} GiB)"
            ),
        )
    else:
        fits, reason = (
            True,
            (
                f"fits: weights {weights:.2f} GiB + runtime {runtime:.2f} per NeuronCore leave "
                f"{kv:.2f} GiB of the {budget_text} for the KV cache: {tokens:,} tokens = "
                f"{slots} static slots of max_model_len {length:,}"
            ),
        )
    # Neuron compiles for fixed shapes: the profiling batch is one full sequence.
    return Sizing(
        weights=weights,
        experts=0.0,
        activation=NEURON_SCRATCH_GIB,
        non_torch=NEURON_RUNTIME_GIB,
        graphs=0.0,
        sampler_state=0.0,
        kv=kv,
        tokens=tokens,
        blocks=tokens // 16,
        concurrency=tokens / length,
        layout=layout,
        seqs=seqs,
        batch_tokens=length,
        usable=per_core,
        budget=per_core,
        host_need=host_need,
        fits=fits,
        reason=reason,
    )
