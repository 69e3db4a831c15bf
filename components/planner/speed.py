"""Decode and prefill speed, aggregate throughput and $/1M tokens of one replica.

A decode step reads every weight a batch touches and the batch's KV cache,
at a per-chip fraction of the data-sheet bandwidth, and pays a fixed cost per
step (sampling, scheduling, the launch tails of ~10 kernels per layer) and per
MoE layer (routing and the grouped expert GEMMs), plus two all-reduces per
layer with tensor parallelism::

    step = max(bytes / (bandwidth x efficiency), flops / (peak x MFU))
           + STEP_OVERHEAD + MoE layers x MOE_LAYER_OVERHEAD + comm

Aggregate throughput includes the other requests' prefills: in steady state
each step of ``b`` streams also prefills ``b / output_tokens`` new prompts
(chunked prefill mixes them into the decode batches), so

    aggregate(b) = b / (step(b) + b / OUTPUT_TOKENS x prefill(PROMPT_TOKENS))

and $/1M tokens is the instance price over that. Every constant's source is in
its comment; docs/planner.md has the table of predicted vs measured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from components.catalog import Accelerator, InstanceType
from components.models import ModelArch, Shard
from components.planner.memory import KvLayout

#: Fraction of data-sheet HBM/GDDR bandwidth a decode step's weight reads reach.
#: H100 0.77: scripts/calibrate_gpu.py on an H100 SXM (docs/calibration/
#: h100-2026-11-24.json, CUDA-graph decode proxy at batch 1). H200 0.74: the same
#: script on an H200 (docs/calibration/h200-2026-12-01.json, 0.737 at batch 1). A100 0.63 and A10G
#: 0.82: the issue's measurements against published vLLM decode logs ("A100
#: measures ~0.6-0.66, A10G ~0.82"). L4 and L40S: no measurement found; GDDR6
#: like the A10G, so its figure is used.
DECODE_EFFICIENCY = {
    "NVIDIA H100 80GB": 0.77,
    "NVIDIA H200": 0.74,
    "NVIDIA A100 40GB": 0.63,
    "NVIDIA A100 80GB": 0.63,
    "NVIDIA A10G": 0.82,
    "NVIDIA L4": 0.82,
    "NVIDIA L40S": 0.82,
}
#: Chips not listed above (e.g. a GPU of a published log outside the catalog).
DEFAULT_EFFICIENCY = 0.72
#: Neuron: [INF2] data-on-eks vllm-ray-inf2, 7.6 GB per core / 410 GB/s = 18.5 ms
#: at 100 %, logged 53 ms inter-token latency -> 0.35.
NEURON_EFFICIENCY = 0.35

#: Fixed cost of one decode step on NVIDIA (sampler, scheduler, kernel tails):
#: Qwen3-8B on one H100 SXM, vLLM 0.11.0, batch 1: 1.66 s per ShareGPT request
#: (~220 output tokens, 0.06 s TTFT) = 7.2 ms/token, of which 15.1 GB of weights
#: at 0.77 x 3350 GB/s take 5.9 ms (gpustack docs/performance-lab/qwen3-8b/
#: h100-latency.md).
STEP_OVERHEAD_S = 1.3e-3
#: Per MoE layer and step: routing, top-k, the expert GEMM launches. Marlin
#: (MXFP4 on Ampere/Ada): gpt-oss-120b on one A100 80GB, 90 tok/s = 11.1 ms per
#: token where its 5 GB of touched weights take 4 ms (vllm-project/vllm#22331).
#: Triton (MXFP4 on Hopper) and the bf16/FP8 fused-MoE kernels: the issue's
#: measurement of gpt-oss-120b on H200, 4.5 ms per token (no published log).
MOE_LAYER_OVERHEAD_S = {"marlin": 160e-6, "triton": 55e-6, "fused": 55e-6}
#: One all-reduce of a decode step's activations, two per layer with TP > 1:
#: NVLink (p4d/p4de/p5/p5en) and PCIe (g5/g6/g6e multi-GPU). vllm-project/vllm
#: #22331: gpt-oss-120b on A100 80GB NVLink is *slower* at TP 2 and 4 (77-78
#: tok/s) than at TP 1 (90), so the per-layer collective costs more than the
#: halved weight reads save: 40 us per all-reduce fits it.
ALLREDUCE_LATENCY_S = {"nvlink": 40e-6, "pcie": 60e-6}
NVLINK_FAMILIES = frozenset({"p4d", "p4de", "p5", "p5en"})
#: One pipeline hop between nodes (activations of a decode step): EFA vs TCP.
PIPELINE_HOP_S = {"efa": 30e-6, "tcp": 100e-6}

#: Dense BF16 tensor TFLOPS per device (data sheets; A10G: the A10's 125;
#: Inferentia2: 190 per chip, AWS).
PEAK_TFLOPS = {
    "NVIDIA A10G": 125.0,
    "NVIDIA L4": 121.0,
    "NVIDIA L40S": 362.0,
    "NVIDIA A100 40GB": 312.0,
    "NVIDIA A100 80GB": 312.0,
    "NVIDIA H100 80GB": 989.0,
    "NVIDIA H200": 989.0,
    "AWS Inferentia2": 190.0,
}
DECODE_MFU = {Accelerator.NVIDIA: 0.5, Accelerator.NEURON: 0.3}
#: Prefill MFU: 0.4 NVIDIA; Neuron 0.05 is calibrated to [INF2]'s minimum TTFT
#: (0.93 s for 512 tokens on vLLM 0.5 + transformers-neuronx).
PREFILL_MFU = {Accelerator.NVIDIA: 0.4, Accelerator.NEURON: 0.05}

#: The request the throughput figures are for: a 1,024-token prompt and 1,024
#: output tokens (decode context averages 1,024 + 512).
PROMPT_TOKENS = 1024
OUTPUT_TOKENS = 1024
#: Prompt length of the time-to-first-token estimate.
TTFT_PROMPT_TOKENS = 1024
#: HTTP, tokenisation and scheduling per request.
REQUEST_OVERHEAD_S = 0.02


@dataclass(frozen=True)
class Speed:
    """Throughput and latency of one replica.

    Attributes:
        decode_tokens_per_s: One stream's output tokens/s (no other requests).
        decode_ms_per_token: The same as a step time.
        aggregate_tokens_per_s: Output tokens/s of ``concurrency`` streams,
            their prompts' prefills included.
        ttft_s: Time to first token for a TTFT_PROMPT_TOKENS prompt.
    """

    decode_tokens_per_s: float
    decode_ms_per_token: float
    aggregate_tokens_per_s: float
    ttft_s: float


def efficiency(instance: InstanceType) -> float:
    """Bandwidth fraction a decode step reaches on this accelerator."""
    if instance.accelerator is Accelerator.NEURON:
        return NEURON_EFFICIENCY
    return DECODE_EFFICIENCY.get(instance.chip.name, DEFAULT_EFFICIENCY)


def _moe_backend(model: ModelArch, instance: InstanceType) -> str:
    mxfp4 = model.quantization is not None and model.quantization.method == "mxfp4"
    if mxfp4:
        return "triton" if instance.chip.sm >= 90 else "marlin"
    return "fused"


def _embedding_rank_bytes(model: ModelArch, tp: int) -> float:
    """The input embedding on one rank: decode reads one row of it per token."""
    embed = next(g for g in model.weight_groups() if g.shard is Shard.VOCAB)
    return embed.params / tp * model.bytes_per_param(embed)


def weight_bytes_read(
    model: ModelArch, weights: float, experts: float, *, tp: int, pp: int, batch: int
) -> float:
    """Weight bytes one decode step reads on one rank of one stage.

    Args:
        model: The model.
        weights: Weights on the rank (the worst stage).
        experts: Routed-expert bytes on the rank, all layers.
        tp: Tensor-parallel size.
        pp: Pipeline stages.
        batch: Streams in the step.

    Everything but the input embedding; of the routed experts only the share a
    batch touches, 1 - (1 - k/E)^batch.
    """
    total = weights - _embedding_rank_bytes(model, tp) / pp
    if model.moe is None:
        return total
    moe = model.moe
    stage_experts = experts * math.ceil(model.layers / pp) / model.layers
    touched = 1 - (1 - moe.experts_per_token / moe.experts) ** batch
    return total - stage_experts * (1 - touched)


def per_core(instance: InstanceType) -> tuple[float, float]:
    """Memory bandwidth (B/s) and peak dense FLOP/s of one compute unit: a GPU, or
    one NeuronCore (vLLM on Neuron gives each core its own TP rank)."""
    chip = instance.chip
    cores = chip.cores if instance.accelerator is Accelerator.NEURON else 1
    return chip.bandwidth_gbs * 1e9 / cores, PEAK_TFLOPS.get(chip.name, 100.0) * 1e12 / cores


def step_seconds(
    model: ModelArch,
    instance: InstanceType,
    layout: KvLayout,
    weights: tuple[float, float],
    *,
    tp: int,
    pp: int,
    batch: int,
    context: int,
) -> float:
    """One decode step of one pipeline stage for ``batch`` streams at ``context`` tokens."""
    neuron = instance.accelerator is Accelerator.NEURON
    bandwidth, flops = per_core(instance)
    window = min(context, model.sliding_window or 0)
    kv = (
        batch
        * layout.page_bytes
        / 16
        * (layout.full_layers * context + layout.sliding_layers * window)
    )
    read = weight_bytes_read(model, *weights, tp=tp, pp=pp, batch=batch) + kv
    compute = (
        batch * 2 * model.active_params / (tp * pp) / (flops * DECODE_MFU[instance.accelerator])
    )
    step = max(read / bandwidth / efficiency(instance), compute)
    if neuron:
        return step
    layers = math.ceil(model.layers / pp)
    step += STEP_OVERHEAD_S / pp
    if model.moe is not None:
        moe_layers = math.ceil(model.moe.moe_layers / pp)
        step += moe_layers * MOE_LAYER_OVERHEAD_S[_moe_backend(model, instance)]
    if tp > 1:
        link = "nvlink" if instance.family in NVLINK_FAMILIES else "pcie"
        step += 2 * layers * ALLREDUCE_LATENCY_S[link]
    return step


def prefill_seconds(model: ModelArch, instance: InstanceType, tp: int, tokens: int) -> float:
    """Compute time to prefill ``tokens`` prompt tokens (on top of the weight reads)."""
    flops = per_core(instance)[1]
    return 2 * model.active_params * tokens / (tp * flops * PREFILL_MFU[instance.accelerator])


def speed(
    model: ModelArch,
    instance: InstanceType,
    layout: KvLayout,
    weights: tuple[float, float],
    *,
    tp: int,
    pp: int,
    running: int,
    length: int,
) -> Speed:
    """Single-stream and aggregate speed and TTFT of one replica.

    Args:
        model: The model.
        instance: The instance type (one per pipeline stage).
        layout: The KV cache layout of a rank.
        weights: (weight bytes, routed-expert bytes) on one rank.
        tp: Tensor-parallel size.
        pp: Pipeline stages.
        running: Concurrent streams.
        length: max_model_len.
    """
    hop = PIPELINE_HOP_S["efa" if instance.efa else "tcp"]
    prompt = min(PROMPT_TOKENS, length)
    context = min(length, prompt + OUTPUT_TOKENS // 2)

    def trip(batch: int) -> float:
        step = step_seconds(
            model, instance, layout, weights, tp=tp, pp=pp, batch=batch, context=context
        )
        return pp * step + (pp - 1) * hop

    single = trip(1)
    # With PP the streams split into up to pp micro-batches in flight; each
    # advances one token per trip through all stages. pp == 1: one batch.
    in_flight = min(pp, running)
    micro = math.ceil(running / in_flight)
    prefill = prefill_seconds(model, instance, tp * pp, prompt)
    per_step_prefill = micro / OUTPUT_TOKENS * prefill
    aggregate = in_flight * micro / (trip(micro) + per_step_prefill)
    ttft_prompt = min(TTFT_PROMPT_TOKENS, length)
    bandwidth = per_core(instance)[0]
    read = weight_bytes_read(model, *weights, tp=tp, pp=pp, batch=ttft_prompt)
    weights_once = pp * read / bandwidth
    weights_once /= efficiency(instance)
    ttft = (
        max(prefill_seconds(model, instance, tp, ttft_prompt), weights_once)
        + (pp - 1) * hop
        + REQUEST_OVERHEAD_S
    )
    return Speed(1 / single, single * 1e3, aggregate, ttft)


def cost_per_million(cost_per_hour: float, tokens_per_s: float) -> float:
    """$ per million output tokens at ``tokens_per_s``."""
    return cost_per_hour / (tokens_per_s * 3600) * 1e6 if tokens_per_s > 0 else math.inf
