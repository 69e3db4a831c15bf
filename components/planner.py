"""Sizing, memory, throughput, cost and cold start of a vLLM endpoint (pure Python).

Given a model (:class:`~components.catalog.ModelArch`) and an instance type, the
planner predicts what vLLM will do at start-up (how much memory the weights,
activations and runtime take, how many KV-cache tokens are left, whether vLLM
will refuse to start) and what the endpoint delivers: tokens per second, time
to first token, dollars per hour and per million tokens, and how long a cold
start takes. With no instance given, :func:`choose` picks the cheapest that fits.

The memory model follows the vLLM V1 engine of the pinned image
(``vllm/vllm-openai:v0.10.2``): at start-up ``gpu_worker.determine_available_memory``
runs one profiling forward pass of ``max_num_batched_tokens`` tokens plus a
dummy sampler pass over ``max_num_seqs`` sequences, and sizes the KV cache as::

    total GPU memory x gpu_memory_utilization
      - weights - peak activation - non-torch increase   (= KV cache)

The CUDA context exists before the baseline snapshot and the CUDA graphs are
captured after the KV cache is allocated, so neither comes out of that budget:
both must fit in the ``(1 - gpu_memory_utilization)`` headroom instead. The
planner reports ``cuda_graph_gib`` and refuses when the headroom is too small,
but does not subtract it from the KV cache (doing so would predict 3.69 GiB,
not the 4.17 GiB that vLLM logs for the reference below).

How each constant was derived
=============================

Reference logs (the tests reproduce all of them):

* [DS] data-on-eks ``ray-vllm-deepseek``: DeepSeek-R1-Distill-Llama-8B on one
  A10G, vLLM 0.7.0, ``max_model_len=8192``, ``max_num_seqs=4``: "total GPU memory
  (22.30 GiB) x utilization (0.90) = 20.07 GiB; Model weights: 14.99 GiB |
  Activation memory: 0.85 GiB | KV Cache: 4.17 GiB", "~29 tokens/sec".
* [PR] vllm-project/vllm PR #10511: Llama-3-8B on H100, max_model_len 8192,
  256 seqs: weights 14.96 GiB, activation peak 1.26 GiB.
* [RAY] ray-project/ray issue #52377: Llama-3.1-8B, TP=2: weights 7.51 GiB,
  non_torch 0.32 GiB per GPU.
* [INF2] data-on-eks ``vllm-ray-inf2``: Llama-3-8B on inf2.8xlarge, TP=2 cores,
  max_model_len 4096, max_num_seqs 10, 2 concurrent, 512-token prompts:
  inter-token latency 0.053 s, 18.7 tokens/s per request, 35.8 tokens/s total,
  TTFT 0.93 s (min) to 1.85 s; "10 mins 40 secs to load" with "21.3GB
  accelerator memory".

Constants:

* Weights = checkpoint bytes / (TP x PP) + the rotary cos/sin cache
  (max_position_embeddings x head_dim x 2 bytes, one per process). That cache is
  the whole 14.99 vs 14.96 GiB gap in [DS] (131,072 positions: +0.031 GiB) and
  is absent in [PR] (8,192 positions: +0.002 GiB); [RAY]: 7.48 + 0.03 = 7.51.
* Activation peak = T x (3 x I/TP + 3 x H) x 2 bytes + S x vocab x 14 bytes
  (:data:`SAMPLER_BYTES_PER_LOGIT`), T = max_num_batched_tokens, S = max_num_seqs.
  The first term is the MLP at the peak of the profiling pass (gate_up output
  2I, SiLU-and-mul output I, layer input, residual and down-projection output H,
  all bf16); the second is the dummy sampler run (bf16 logits plus three fp32
  tensors: upcast logits, probabilities, log-probabilities). [DS] T=8192, S=4:
  0.844 + 0.007 = 0.85 GiB (log 0.85). [PR] T=8192, S=256: 0.844 + 0.428 =
  1.27 GiB (log 1.26). T and S default to vLLM 0.10.2's OpenAI-server defaults
  (``EngineArgs._set_default_args``: 2048/256, or 8192/1024 on GPUs with
  >= 70 GiB other than A100); S is then replaced by the planner's max_num_seqs.
* Non-torch increase = 0.06 GiB at TP=1 ([DS]: 20.07 - 14.99 - 0.85 - 4.17 =
  0.06) + 0.26 GiB per doubling of TP (NCCL communicators and custom all-reduce
  buffers; [RAY]: 0.32 GiB at TP=2) + 0.10 GiB with PP > 1 (point-to-point
  communicators; an estimate, no log).
* CUDA context 0.45 GiB (PyTorch + CUDA 12 with lazy module loading,
  typically 0.3-0.5 GiB); CUDA graphs 0.10 GiB + 0.012 GiB per layer at hidden
  4096 for 67 capture sizes (1..512), scaled by hidden size and by the share of
  capture sizes that ``max_num_seqs`` keeps (vLLM captures up to
  ``min(2 x max_num_seqs, 512)``). The graph figure only feeds the headroom
  check; it is a rough figure from vLLM "Graph capturing finished ... took" logs.
* KV bytes/token/GPU = 2 x full-attention layers per stage x ceil(kv_heads/TP)
  x head_dim x 2 bytes; tokens = floor(KV / (16 x bytes/token)) x 16.
  Sliding-window layers (gpt-oss: 12 of 24, window 128) are a second group in
  vLLM's hybrid KV-cache manager: the shared pool is sized in blocks of the
  full-attention group, and each running request also holds
  ceil((window - 1) / 16) + 1 blocks for its sliding layers, so a request of
  max_model_len needs ``ceil(len/16)*16 + 16 x that`` tokens.
* Decode step = bytes read / bandwidth / efficiency (+ 2 all-reduces per layer
  for TP > 1: 10 us over NVLink, 30 us over PCIe). Bytes read = weights without
  the input embedding (only one row per token is read; MoE: dense part + the
  share of experts a batch touches, 1 - (1 - k/E)^batch) + the batch's KV.
  NVIDIA efficiency 0.72: [DS] 15.01 GB / 600 GB/s = 25.0 ms at 100 % -> 40
  tok/s; logged ~29 tok/s -> 0.72. Cross-checked on a real H100 with
  scripts/calibrate_gpu.py (docs/calibration/h100-2026-11-24.json): a
  CUDA-graph decode proxy streaming Llama-3-8B-shaped bf16 weights reached 0.77
  of data-sheet bandwidth at batch 1 (0.75 at batch 32), an upper bound since
  it leaves out attention, sampling and scheduling. Neuron efficiency 0.35: [INF2] 7.6 GB per
  core / 410 GB/s = 18.5 ms at 100 %; logged 53 ms -> 0.35.
* Compute floors: dense bf16 tensor TFLOPS from the data sheets
  (:data:`PEAK_TFLOPS`); decode MFU 0.5, prefill MFU 0.4 (NVIDIA). Neuron
  prefill MFU 0.05 is calibrated to the [INF2] minimum TTFT (0.93 s for 512
  tokens on vLLM 0.5 + transformers-neuronx; newer NxD Inference is faster, so
  this is pessimistic).
* max_num_seqs (what the planner passes to vLLM) = min(256, max(1, KV tokens //
  min(max_model_len, 2048))), the KV tokens taken from a first profile at vLLM's
  default max_num_seqs (re-profiling with the pick only frees sampler memory,
  so the pick stays valid): enough concurrent sequences that a typical
  2k-token request always has KV blocks, and no more, because every extra
  sequence grows the sampler's profiled memory and the CUDA graph set. Neuron
  allocates the KV cache statically, one max_model_len slot per sequence, so
  there it is min(32, KV tokens // max_model_len).
* Neuron memory: per NeuronCore 16 GiB of HBM (32 GB per Inferentia2, 2 cores);
  weights and KV are sharded over TP cores; 0.5 GiB scratchpad (reported as
  activation) + 0.5 GiB runtime (reported as non-torch) per core.
  ``gpu_memory_utilization`` does not apply. [INF2] "21.3GB": 16.06 GB weights +
  10 x 4096 x 128 KiB = 5.37 GB KV = 21.4 GB. vLLM-neuron has no MXFP4/FP8
  expert kernels, so quantized MoE experts (gpt-oss) are counted as bf16 there.
* Host memory: vLLM on NVIDIA streams safetensors shards through mmap (8 GiB
  for the process); the Neuron SDK loads, shards and compiles the whole
  checkpoint in host memory (2 x weights + 8 GiB), which is why [INF2] runs on
  inf2.8xlarge (128 GiB) and not inf2.xlarge (16 GiB). 2 GiB per node is
  reserved for the kubelet and system pods.
* Cold start: node launch 100 s (g), 110 s (inf), 180 s (p: EFA, 8 GPUs,
  longer boot), from EC2 launch to a Ready node with the device plugin up under
  Karpenter; image pull at 150 MB/s (9 GB vLLM CUDA image, 7 GB Neuron image,
  compressed); weights: ``none`` downloads from the Hub at 100 MB/s (the root
  gp3 volume's 125 MiB/s baseline is the bottleneck) then loads from page cache
  at 2 GB/s; ``s3`` Mountpoint 600 MB/s; ``fsx`` SCRATCH_2 burst (1.3 GB/s per
  TiB) ~1000 MB/s; ``efs`` 300 MB/s per client; ``pvc`` gp3 125 MB/s. Volumes
  are assumed prefetched. Engine init 60 s on NVIDIA (profile, torch.compile,
  CUDA graph capture); Neuron compile+load 640 s for 8B on 32 vCPUs ([INF2]
  "10 mins 40 secs"), scaled by parameters and by sqrt(32 / vCPUs) ([INF2]: 3
  minutes on inf2.48xlarge).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from components.catalog import (
    BYTES_PER_ELEMENT,
    GIB,
    INSTANCES,
    Accelerator,
    InstanceType,
    ModelArch,
    get_instance,
    get_model,
)
from components.config import StorageKind
from components.pool_rules import refusal as pool_refusal

if TYPE_CHECKING:
    from components.config import EndpointSpec

# --- vLLM behaviour (v0.10.2, V1 engine) ---------------------------------------

#: KV-cache block size in tokens (vLLM default on CUDA).
BLOCK_SIZE = 16
#: Activations are computed in the model dtype (bf16/fp16).
ACTIVATION_BYTES = 2
#: Rotary cos/sin cache element size (kept in the model dtype).
ROPE_CACHE_BYTES = 2
#: Dummy sampler: bf16 logits + fp32 upcast, probabilities and log-probabilities.
SAMPLER_BYTES_PER_LOGIT = 14
#: vLLM's OpenAI-server defaults (``EngineArgs._set_default_args``, PR #17885).
LARGE_GPU_GIB = 70.0
DEFAULT_BATCHED_TOKENS = 2048
DEFAULT_BATCHED_TOKENS_LARGE_GPU = 8192
DEFAULT_MAX_NUM_SEQS = 256
DEFAULT_MAX_NUM_SEQS_LARGE_GPU = 1024
#: Largest CUDA graph batch vLLM captures by default.
MAX_CAPTURE_SIZE = 512

# --- Memory constants (NVIDIA) --------------------------------------------------

NON_TORCH_BASE_GIB = 0.06
NON_TORCH_PER_TP_DOUBLING_GIB = 0.26
NON_TORCH_PIPELINE_GIB = 0.10
CUDA_CONTEXT_GIB = 0.45
CUDA_GRAPH_BASE_GIB = 0.10
CUDA_GRAPH_PER_LAYER_GIB = 0.012

# --- Neuron ---------------------------------------------------------------------

NEURON_SCRATCH_GIB = 0.5
NEURON_RUNTIME_GIB = 0.5
NEURON_MAX_SEQS = 32

# --- Planner choices ------------------------------------------------------------

#: Upper bound on the max_num_seqs the planner passes to vLLM.
MAX_PLANNED_SEQS = 256
#: The request length max_num_seqs is sized for (prompt + output).
TYPICAL_REQUEST_TOKENS = 2048
#: Average context per sequence while decoding, for the throughput figures.
DECODE_CONTEXT_TOKENS = 1024
#: Prompt length of the time-to-first-token estimate.
TTFT_PROMPT_TOKENS = 1024
#: HTTP, tokenisation and scheduling per request.
REQUEST_OVERHEAD_S = 0.02

# --- Speed ----------------------------------------------------------------------

DECODE_EFFICIENCY = {Accelerator.NVIDIA: 0.72, Accelerator.NEURON: 0.35}
DECODE_MFU = {Accelerator.NVIDIA: 0.5, Accelerator.NEURON: 0.3}
PREFILL_MFU = {Accelerator.NVIDIA: 0.4, Accelerator.NEURON: 0.05}
#: Dense BF16 tensor TFLOPS per device. A10G: NVIDIA publishes no A10G sheet;
#: the A10's 125 is used. Inferentia2: 190 TFLOPS FP16/BF16 per chip (AWS).
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
#: Instance families whose GPUs talk over NVLink/NVSwitch (the rest use PCIe).
NVLINK_FAMILIES = frozenset({"p4d", "p4de", "p5", "p5en"})
ALLREDUCE_LATENCY_S = {"nvlink": 10e-6, "pcie": 30e-6}
#: One pipeline hop between nodes (activations of a decode step): EFA vs TCP.
PIPELINE_HOP_S = {"efa": 30e-6, "tcp": 100e-6}

# --- Host memory ----------------------------------------------------------------

HOST_RESERVED_GIB = 2.0
HOST_NVIDIA_PROCESS_GIB = 8.0
HOST_NEURON_BASE_GIB = 8.0
HOST_NEURON_WEIGHT_FACTOR = 2.0

# --- Cold start -----------------------------------------------------------------

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
NEURON_COMPILE_REF_PARAMS = 8.03e9
NEURON_COMPILE_REF_VCPU = 32


class PlanError(ValueError):
    """No candidate fits; the message shows the numbers and what would fit."""


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
        devices_per_node: Devices each pod requests (``nvidia.com/gpu``, or
            ``aws.amazon.com/neuron`` devices of 2 NeuronCores each).
        max_model_len: Context length vLLM is started with.
        gpu_memory_utilization: vLLM's fraction (ignored by Neuron).
        weights_gib: Weights per device, as vLLM logs them.
        activation_gib: Peak activation in the profiling run.
        non_torch_gib: Non-torch memory increase (NCCL, cuBLAS workspaces).
        cuda_graph_gib: CUDA graph pool (outside the budget; see module doc).
        kv_cache_gib: Memory left for the KV cache.
        kv_tokens: KV-cache capacity in tokens (a multiple of the block size).
        max_concurrency: Full-length requests the KV cache holds at once.
        max_num_seqs: What to pass as ``--max-num-seqs``.
        fits: Whether vLLM will start and serve one max_model_len request.
        reason: Why it fits or does not, with the numbers.
        decode_tokens_per_s: Output tokens/s of a single stream.
        aggregate_tokens_per_s: Output tokens/s of all streams at ``concurrency``.
        concurrency: Streams the aggregate figure is for (the requested
            concurrency, capped by max_num_seqs and the KV cache).
        ttft_s: Time to first token for a TTFT_PROMPT_TOKENS (1024) prompt.
        cost_per_hour: Instance price x nodes (one replica).
        cost_per_million_tokens: At the aggregate throughput.
        cold_start_s: Node launch + image pull + weights + engine start.
        cold_start_breakdown: The parts of cold_start_s, in seconds.
        max_num_batched_tokens: The profiling batch (vLLM default unless given).
        usable_gib: Device memory as the runtime reports it.
        budget_gib: usable x utilization (Neuron: per-core HBM).
        kv_bytes_per_token: KV bytes per token per device.
        host_memory_gib: Host memory a node needs to load the model.
        storage: Where the weights come from.
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
        return args

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON: enums as their values, floats rounded."""
        out = asdict(self)
        out["accelerator"] = self.accelerator.value
        for k, v in out.items():
            if isinstance(v, float):
                out[k] = round(v, 4)
        out["cold_start_breakdown"] = {k: round(v, 1) for k, v in self.cold_start_breakdown.items()}
        return out


# --- Helpers --------------------------------------------------------------------


def _gib(n_bytes: float) -> float:
    return n_bytes / GIB


def _units(instance: InstanceType) -> int:
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
    units = _units(instance)
    out = []
    tp = 1
    while tp <= units:
        if (
            units % tp == 0
            and model.heads % tp == 0
            and (model.kv_heads % tp == 0 or tp % model.kv_heads == 0)
        ):
            out.append(tp)
        tp *= 2
    return out


def _embedding_bytes(model: ModelArch) -> float:
    """One vocab x hidden table (input embedding or LM head) in the model dtype."""
    return model.vocab_size * model.hidden_size * BYTES_PER_ELEMENT[model.dtype]


def _expert_bytes_per_param(model: ModelArch, acc: Accelerator) -> float:
    """Bytes per expert parameter as loaded.

    vLLM on Neuron (0.9.1, NxD Inference) has no MXFP4/FP8 expert kernels, so
    quantized experts are loaded as bf16 there.
    """
    assert model.moe is not None
    if acc is Accelerator.NEURON:
        return max(BYTES_PER_ELEMENT[model.moe.expert_dtype], BYTES_PER_ELEMENT[model.dtype])
    return BYTES_PER_ELEMENT[model.moe.expert_dtype]


def _weight_bytes(model: ModelArch, acc: Accelerator) -> float:
    """All weights as the accelerator loads them."""
    if model.moe is None:
        return model.weight_bytes
    dense = (model.params - model.moe.expert_params) * BYTES_PER_ELEMENT[model.dtype]
    return dense + model.moe.expert_params * _expert_bytes_per_param(model, acc)


def _weights_per_device_bytes(
    model: ModelArch, tp: int, pp: int, acc: Accelerator = Accelerator.NVIDIA
) -> float:
    """Weights on one device of the worst pipeline stage (without the rope cache).

    With PP > 1 the first stage holds the input embedding and the last the LM
    head, on top of their share of the layers.
    """
    total = _weight_bytes(model, acc)
    if pp == 1:
        return total / tp
    emb = _embedding_bytes(model)
    return (total - 2 * emb) / (tp * pp) + emb / tp


def _full_attention_layers(model: ModelArch) -> int:
    return model.layers - (model.sliding_window_layers if model.sliding_window else 0)


def _kv_bytes_per_token(model: ModelArch, tp: int, pp: int, *, sliding: bool = False) -> int:
    """KV bytes per token per device for the full (or the sliding-window) layers."""
    layers = model.sliding_window_layers if sliding else _full_attention_layers(model)
    per_stage = math.ceil(layers / pp)
    kv_heads = math.ceil(model.kv_heads / tp)
    return int(2 * per_stage * kv_heads * model.head_dim * BYTES_PER_ELEMENT[model.dtype])


def _sliding_tokens_per_request(model: ModelArch) -> int:
    """Pool tokens each running request holds for its sliding-window layers."""
    if not model.sliding_window or not model.sliding_window_layers:
        return 0
    return (math.ceil((model.sliding_window - 1) / BLOCK_SIZE) + 1) * BLOCK_SIZE


def _tokens_needed(model: ModelArch, max_model_len: int) -> int:
    """KV tokens one request of max_model_len needs (what vLLM checks at start)."""
    return math.ceil(max_model_len / BLOCK_SIZE) * BLOCK_SIZE + _sliding_tokens_per_request(model)


def _forward_activation_bytes(model: ModelArch, tp: int, tokens: int) -> float:
    """Peak activation of one profiling forward pass of ``tokens`` tokens."""
    h = model.hidden_size
    if model.moe is None:
        mlp = 3 * model.intermediate_size / tp + 3 * h
    else:
        # Fused-MoE intermediate caches per routed token: 2I (gate_up), I (act),
        # H (per-expert output), plus the residual stream.
        k = model.moe.experts_per_token
        mlp = k * (3 * model.intermediate_size / tp + h) + 3 * h
    q = model.heads * model.head_dim / tp
    kv = 2 * math.ceil(model.kv_heads / tp) * model.head_dim
    attn = q + kv + q + 2 * h  # qkv output, attention output, input and residual
    return tokens * max(mlp, attn) * ACTIVATION_BYTES


def _sampler_bytes(model: ModelArch, seqs: int) -> float:
    return seqs * model.vocab_size * SAMPLER_BYTES_PER_LOGIT


def _capture_sizes(max_num_seqs: int) -> list[int]:
    top = min(2 * max_num_seqs, MAX_CAPTURE_SIZE)
    return [s for s in (1, 2, 4) if s <= top] + list(range(8, top + 1, 8))


def _cuda_graph_gib(model: ModelArch, pp: int, max_num_seqs: int) -> float:
    share = sum(_capture_sizes(max_num_seqs)) / sum(_capture_sizes(MAX_CAPTURE_SIZE))
    layers = math.ceil(model.layers / pp)
    return (
        CUDA_GRAPH_BASE_GIB + CUDA_GRAPH_PER_LAYER_GIB * layers * (model.hidden_size / 4096) * share
    )


def _non_torch_gib(tp: int, pp: int) -> float:
    return (
        NON_TORCH_BASE_GIB
        + NON_TORCH_PER_TP_DOUBLING_GIB * math.log2(tp)
        + (NON_TORCH_PIPELINE_GIB if pp > 1 else 0.0)
    )


def _default_batch(instance: InstanceType) -> tuple[int, int]:
    """vLLM's default (max_num_batched_tokens, max_num_seqs) on this GPU."""
    chip = instance.chip
    if chip.usable_gib >= LARGE_GPU_GIB and "A100" not in chip.name:
        return DEFAULT_BATCHED_TOKENS_LARGE_GPU, DEFAULT_MAX_NUM_SEQS_LARGE_GPU
    return DEFAULT_BATCHED_TOKENS, DEFAULT_MAX_NUM_SEQS


def _kv_tokens(kv_gib: float, bytes_per_token: int) -> int:
    if kv_gib <= 0:
        return 0
    blocks = math.floor(kv_gib * GIB / (BLOCK_SIZE * bytes_per_token))
    return blocks * BLOCK_SIZE


def _bytes_read_per_step(
    model: ModelArch, tp: int, pp: int, batch: int, acc: Accelerator = Accelerator.NVIDIA
) -> float:
    """Weight bytes one decode step reads per device (one stage)."""
    emb = _embedding_bytes(model)  # input embedding: one row per token is read
    if model.moe is None:
        body = model.weight_bytes - emb
    else:
        moe = model.moe
        dense = (model.params - moe.expert_params) * BYTES_PER_ELEMENT[model.dtype] - emb
        experts = moe.expert_params * _expert_bytes_per_param(model, acc)
        touched = 1 - (1 - moe.experts_per_token / moe.experts) ** batch
        body = dense + experts * touched
    return body / (tp * pp)


def _host_memory_needed_gib(model: ModelArch, instance: InstanceType, pp: int) -> float:
    if instance.accelerator is Accelerator.NEURON:
        weights = _gib(_weight_bytes(model, instance.accelerator)) / pp
        return HOST_NEURON_BASE_GIB + HOST_NEURON_WEIGHT_FACTOR * weights
    return HOST_NVIDIA_PROCESS_GIB


def _check_storage(storage: str | StorageKind) -> StorageKind:
    try:
        return StorageKind(storage)
    except ValueError:
        valid = ", ".join(k.value for k in StorageKind)
        raise ValueError(f"storage: unknown storage kind {storage!r} (valid: {valid})") from None


def _validate(s: _Setup, max_num_seqs: int | None, max_num_batched_tokens: int | None) -> None:
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


def _cold_start(
    model: ModelArch, instance: InstanceType, pp: int, storage: StorageKind
) -> dict[str, float]:
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


# --- The estimate ---------------------------------------------------------------


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
        max_num_batched_tokens: The profiling batch; None: vLLM's default.

    Raises:
        ValueError: naming the bad argument and its valid range.
    """
    setup = _Setup(
        model=model,
        instance=instance,
        tp=tensor_parallel,
        pp=pipeline_parallel,
        length=model.max_context if max_model_len is None else max_model_len,
        util=gpu_memory_utilization,
        concurrency=concurrency,
        storage=_check_storage(storage),
    )
    _validate(setup, max_num_seqs, max_num_batched_tokens)
    if instance.accelerator is Accelerator.NEURON:
        sizing = _size_neuron(setup, max_num_seqs)
    else:
        sizing = _size_nvidia(setup, max_num_seqs, max_num_batched_tokens)
    return _finish(setup, sizing)


@dataclass(frozen=True)
class _Setup:
    """The configuration being estimated (validated)."""

    model: ModelArch
    instance: InstanceType
    tp: int
    pp: int
    length: int
    util: float
    concurrency: int
    storage: StorageKind


@dataclass(frozen=True)
class _Memory:
    weights: float
    activation: float
    non_torch: float
    kv: float
    tokens: int


@dataclass(frozen=True)
class _Sizing:
    """The memory side of an estimate, per device."""

    mem: _Memory
    graphs: float
    seqs: int
    batch_tokens: int
    bytes_per_token: int
    usable: float
    budget: float
    host_need: float
    fits: bool
    reason: str


def _size_nvidia(s: _Setup, forced_seqs: int | None, forced_batch: int | None) -> _Sizing:
    model, tp, pp, length, util = s.model, s.tp, s.pp, s.length, s.util
    usable = s.instance.chip.usable_gib
    budget = usable * util
    default_tokens, default_seqs = _default_batch(s.instance)
    batch_tokens = forced_batch or default_tokens
    bpt = _kv_bytes_per_token(model, tp, pp)
    rope = _gib(model.max_context * model.head_dim * ROPE_CACHE_BYTES)
    weights = _gib(_weights_per_device_bytes(model, tp, pp)) + rope
    non_torch = _non_torch_gib(tp, pp)

    def memory(seqs: int) -> _Memory:
        act = _gib(_forward_activation_bytes(model, tp, batch_tokens) + _sampler_bytes(model, seqs))
        kv = budget - weights - act - non_torch
        return _Memory(weights, act, non_torch, kv, _kv_tokens(kv, bpt))

    # vLLM profiles the sampler with max_num_seqs sequences, and the planner
    # sizes max_num_seqs from the KV tokens: profile at vLLM's default first,
    # pick, then re-profile with the pick (it can only free memory, so the pick
    # stays valid).
    if forced_seqs is not None:
        seqs = forced_seqs
    else:
        first = memory(default_seqs)
        seqs = min(MAX_PLANNED_SEQS, max(1, first.tokens // min(length, TYPICAL_REQUEST_TOKENS)))
    mem = memory(seqs)
    graphs = _cuda_graph_gib(model, pp, seqs)
    headroom = usable * (1 - util)
    needed = _tokens_needed(model, length)
    max_conc = mem.tokens / (length + _sliding_tokens_per_request(model))
    host_need = _host_memory_needed_gib(model, s.instance, pp)
    host_have = s.instance.memory_gib - HOST_RESERVED_GIB

    budget_text = f"{budget:.2f} GiB budget ({usable:.2f} GiB x {util:.2f})"
    if mem.kv <= 0:
        fits = False
        reason = (
            f"does not fit: weights {mem.weights:.2f} GiB + activation {mem.activation:.2f} "
            f"+ non-torch {mem.non_torch:.2f} per GPU exceed the {budget_text} at TP={tp}"
            f"{f' x PP={pp}' if pp > 1 else ''}; nothing is left for the KV cache"
        )
    elif mem.tokens < needed:
        fits = False
        reason = (
            f"does not fit: max_model_len {length:,} needs {needed:,} KV tokens but only "
            f"{mem.tokens:,} fit ({mem.kv:.2f} GiB KV cache at {bpt // 1024} KiB/token/GPU, "
            f"after weights {mem.weights:.2f} + activation {mem.activation:.2f} + non-torch "
            f"{mem.non_torch:.2f} GiB of the {budget_text}); vLLM would refuse to start"
        )
    elif seqs > batch_tokens:
        fits = False
        reason = (
            f"does not fit: max_num_seqs {seqs} exceeds max_num_batched_tokens "
            f"{batch_tokens}; vLLM would refuse to start"
        )
    elif headroom < CUDA_CONTEXT_GIB + graphs:
        fits = False
        reason = (
            f"does not fit: gpu_memory_utilization {util:.2f} leaves {headroom:.2f} GiB of "
            f"headroom outside vLLM's budget, but the CUDA context (~{CUDA_CONTEXT_GIB:.2f} "
            f"GiB) and CUDA graphs (~{graphs:.2f} GiB) need "
            f"{CUDA_CONTEXT_GIB + graphs:.2f} GiB there; lower gpu_memory_utilization"
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
            f"fits: weights {mem.weights:.2f} GiB + activation {mem.activation:.2f} + "
            f"non-torch {mem.non_torch:.2f} per GPU leave {mem.kv:.2f} GiB of the "
            f"{budget_text} for the KV cache: {mem.tokens:,} tokens at {bpt // 1024} "
            f"KiB/token, {max_conc:.2f}x max_model_len {length:,}"
        )
    return _Sizing(mem, graphs, seqs, batch_tokens, bpt, usable, budget, host_need, fits, reason)


def _size_neuron(s: _Setup, forced_seqs: int | None) -> _Sizing:
    model, tp, pp, length = s.model, s.tp, s.pp, s.length
    chip = s.instance.chip
    per_core = chip.usable_gib / chip.cores
    bpt = _kv_bytes_per_token(model, tp, pp)
    weights = _gib(_weights_per_device_bytes(model, tp, pp, Accelerator.NEURON))
    runtime = NEURON_SCRATCH_GIB + NEURON_RUNTIME_GIB
    kv = per_core - weights - runtime
    tokens = _kv_tokens(kv, bpt)
    mem = _Memory(weights, NEURON_SCRATCH_GIB, NEURON_RUNTIME_GIB, kv, tokens)
    slots = tokens // length
    seqs = forced_seqs if forced_seqs is not None else max(1, min(NEURON_MAX_SEQS, slots))
    host_need = _host_memory_needed_gib(model, s.instance, pp)
    host_have = s.instance.memory_gib - HOST_RESERVED_GIB
    budget_text = f"{per_core:.2f} GiB of HBM per NeuronCore"
    if kv <= 0:
        fits = False
        reason = (
            f"does not fit: weights {weights:.2f} GiB + runtime {runtime:.2f} per "
            f"NeuronCore exceed the {budget_text} at TP={tp} cores"
        )
    elif seqs * length > tokens:
        fits = False
        reason = (
            f"does not fit: Neuron allocates max_num_seqs x max_model_len = {seqs} x "
            f"{length:,} KV tokens statically but only {tokens:,} fit ({kv:.2f} GiB per "
            f"core at {bpt // 1024} KiB/token)"
        )
    elif host_have < host_need:
        fits = False
        reason = (
            f"does not fit: {s.instance.name} has {host_have:.0f} GiB of host memory for "
            f"pods; the Neuron SDK loads and compiles the whole checkpoint there "
            f"(~{host_need:.0f} GiB)"
        )
    else:
        fits = True
        reason = (
            f"fits: weights {weights:.2f} GiB + runtime {runtime:.2f} per NeuronCore leave "
            f"{kv:.2f} GiB of the {budget_text} for the KV cache: {tokens:,} tokens = "
            f"{slots} static slots of max_model_len {length:,}"
        )
    # Neuron compiles for fixed shapes: the profiling batch is one full sequence.
    return _Sizing(mem, 0.0, seqs, length, bpt, per_core, per_core, host_need, fits, reason)


def _finish(s: _Setup, z: _Sizing) -> Estimate:
    """Throughput, latency, cost and cold start, common to both accelerators."""
    model, instance, tp, pp = s.model, s.instance, s.tp, s.pp
    acc = instance.accelerator
    chip = instance.chip
    neuron = acc is Accelerator.NEURON
    bandwidth = chip.bandwidth_gbs * 1e9 / (chip.cores if neuron else 1)
    flops = PEAK_TFLOPS.get(chip.name, 100.0) * 1e12 / (chip.cores if neuron else 1)
    eff = DECODE_EFFICIENCY[acc]
    ctx = min(s.length, DECODE_CONTEXT_TOKENS)
    sliding_bpt = _kv_bytes_per_token(model, tp, pp, sliding=True) if model.sliding_window else 0
    window = min(ctx, model.sliding_window or 0)
    if tp > 1 and not neuron:
        link = "nvlink" if instance.family in NVLINK_FAMILIES else "pcie"
        comm = 2 * math.ceil(model.layers / pp) * ALLREDUCE_LATENCY_S[link]
    else:
        comm = 0.0
    hop = PIPELINE_HOP_S["efa" if instance.efa else "tcp"]

    def stage_step(batch: int) -> float:
        read = _bytes_read_per_step(model, tp, pp, batch, acc) + batch * (
            ctx * z.bytes_per_token + window * sliding_bpt
        )
        compute = batch * 2 * model.active_params / (tp * pp) / (flops * DECODE_MFU[acc])
        return max(read / bandwidth / eff, compute) + comm

    single = 1 / (pp * stage_step(1) + (pp - 1) * hop)
    tokens = z.mem.tokens
    cap = max(1, min(z.seqs, tokens // ctx if tokens else 1))
    running = min(s.concurrency, cap)
    # With PP the streams split into up to pp micro-batches in flight; each
    # advances one token per trip through all stages. pp == 1: one batch.
    in_flight = min(pp, running)
    micro = math.ceil(running / in_flight)
    aggregate = in_flight * micro / (pp * stage_step(micro) + (pp - 1) * hop)
    reason = z.reason
    if running < s.concurrency:
        reason += (
            f"; concurrency {s.concurrency} capped at {running} by max_num_seqs {z.seqs} and "
            f"the KV cache"
        )

    prompt = min(TTFT_PROMPT_TOKENS, s.length)
    prefill = 2 * model.active_params * prompt / (tp * flops * PREFILL_MFU[acc])
    weights_once = pp * _bytes_read_per_step(model, tp, pp, prompt, acc) / bandwidth / eff
    ttft = max(prefill, weights_once) + (pp - 1) * hop + REQUEST_OVERHEAD_S

    cost = instance.price_per_hour * pp
    parts = _cold_start(model, instance, pp, s.storage)
    return Estimate(
        model_id=model.id,
        instance_type=instance.name,
        accelerator=acc,
        tensor_parallel=tp,
        pipeline_parallel=pp,
        nodes=pp,
        devices_per_node=math.ceil(tp / chip.cores) if neuron else tp,
        max_model_len=s.length,
        gpu_memory_utilization=s.util,
        weights_gib=z.mem.weights,
        activation_gib=z.mem.activation,
        non_torch_gib=z.mem.non_torch,
        cuda_graph_gib=z.graphs,
        kv_cache_gib=max(0.0, z.mem.kv),
        kv_tokens=tokens,
        max_concurrency=tokens / (s.length + _sliding_tokens_per_request(model)),
        max_num_seqs=z.seqs,
        fits=z.fits,
        reason=reason,
        decode_tokens_per_s=single,
        aggregate_tokens_per_s=aggregate,
        concurrency=running,
        ttft_s=ttft,
        cost_per_hour=cost,
        cost_per_million_tokens=cost / (aggregate * 3600) * 1e6,
        cold_start_s=sum(parts.values()),
        cold_start_breakdown=parts,
        max_num_batched_tokens=z.batch_tokens,
        usable_gib=z.usable,
        budget_gib=z.budget,
        kv_bytes_per_token=z.bytes_per_token,
        host_memory_gib=z.host_need,
        storage=s.storage.value,
    )


# --- Choosing -------------------------------------------------------------------


def _resolve_accelerator(
    accelerator: Accelerator | str | None, instance: InstanceType | None
) -> Accelerator:
    if accelerator is not None:
        try:
            acc = Accelerator(accelerator)
        except ValueError:
            valid = ", ".join(a.value for a in Accelerator)
            raise ValueError(f"accelerator: {accelerator!r} is not one of {valid}") from None
        if instance is not None and instance.accelerator is not acc:
            raise ValueError(
                f"accelerator: {instance.name} has {instance.accelerator.value} "
                f"accelerators but accelerator is {acc.value}"
            )
        return acc
    return instance.accelerator if instance is not None else Accelerator.NVIDIA


def _sort_key(e: Estimate) -> tuple[bool, float, float, int]:
    return (not e.fits, e.cost_per_hour, e.cost_per_million_tokens, e.tensor_parallel)


def candidates(
    model: ModelArch,
    *,
    accelerator: Accelerator | str | None = None,
    max_model_len: int | None = None,
    gpu_memory_utilization: float = 0.90,
    concurrency: int = 1,
    storage: str = "none",
    instance: InstanceType | None = None,
    tensor_parallel: int | None = None,
    pipeline_parallel: int = 1,
    max_num_seqs: int | None = None,
    max_num_batched_tokens: int | None = None,
    allowed: Callable[[InstanceType], bool] | None = None,
) -> list[Estimate]:
    """Every (instance, valid TP) considered, fitting first, then by $/h.

    ``accelerator`` None means the instance's accelerator when an instance is
    given, NVIDIA otherwise (the same default as ``EndpointSpec``). ``allowed``
    limits the instance types to those a node pool can launch.

    Raises:
        ValueError: a bad argument, or a tensor_parallel no instance accepts.
    """
    acc = _resolve_accelerator(accelerator, instance)
    pool = (
        [instance]
        if instance is not None
        else [
            i
            for i in INSTANCES.values()
            if i.accelerator is acc and (allowed is None or allowed(i))
        ]
    )
    if not pool:
        raise PlanError(f"instance_type: the node pool can launch no {acc.value} instance type")
    out = []
    for inst in pool:
        valid = valid_tensor_parallel(model, inst)
        if tensor_parallel is not None:
            if tensor_parallel not in valid:
                if instance is not None:
                    raise ValueError(
                        f"tensor_parallel: {tensor_parallel} is not valid for {model.id} on "
                        f"{inst.name}; valid: {', '.join(map(str, valid))}"
                    )
                continue
            sizes = [tensor_parallel]
        else:
            sizes = valid
        for tp in sizes:
            out.append(
                estimate(
                    model,
                    inst,
                    tensor_parallel=tp,
                    pipeline_parallel=pipeline_parallel,
                    max_model_len=max_model_len,
                    gpu_memory_utilization=gpu_memory_utilization,
                    concurrency=concurrency,
                    storage=storage,
                    max_num_seqs=max_num_seqs,
                    max_num_batched_tokens=max_num_batched_tokens,
                )
            )
    if not out:
        raise ValueError(
            f"tensor_parallel: {tensor_parallel} is not valid for {model.id} on any "
            f"{acc.value} instance type"
        )
    return sorted(out, key=_sort_key)


def largest_max_model_len(model: ModelArch, instance: InstanceType, **kwargs: Any) -> int | None:
    """The largest max_model_len that fits this configuration, or None.

    Takes :func:`estimate`'s keyword arguments (without ``max_model_len``).
    """
    if not estimate(model, instance, max_model_len=1, **kwargs).fits:
        return None
    lo, hi = 1, model.max_context
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if estimate(model, instance, max_model_len=mid, **kwargs).fits:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _describe(estimates: Iterable[Estimate], n: int = 4) -> str:
    """The first ``n`` instance types (best TP of each), with TP and price."""
    seen: set[str] = set()
    items = []
    for e in estimates:
        if e.instance_type in seen:
            continue
        seen.add(e.instance_type)
        pp = f" x PP {e.pipeline_parallel}" if e.pipeline_parallel > 1 else ""
        items.append(f"{e.instance_type} (TP {e.tensor_parallel}{pp}, ${e.cost_per_hour:.3f}/h)")
    return ", ".join(items[:n])


def choose(
    model: ModelArch,
    *,
    accelerator: Accelerator | str | None = None,
    max_model_len: int | None = None,
    gpu_memory_utilization: float = 0.90,
    concurrency: int = 1,
    storage: str = "none",
    instance: InstanceType | None = None,
    tensor_parallel: int | None = None,
    pipeline_parallel: int = 1,
    max_num_seqs: int | None = None,
    max_num_batched_tokens: int | None = None,
    allowed: Callable[[InstanceType], bool] | None = None,
) -> Estimate:
    """The cheapest candidate that fits (see :func:`candidates` for the arguments).

    max_model_len None means the model's full context, and the planner never
    shortens it silently: when the full context fits nowhere among the
    candidates, :class:`PlanError` names the largest max_model_len that fits on
    the cheapest candidate and the instance types that fit the full context.

    Raises:
        PlanError: no candidate fits; the message has the numbers.
        ValueError: a bad argument.
    """
    common: dict[str, Any] = {
        "gpu_memory_utilization": gpu_memory_utilization,
        "concurrency": concurrency,
        "storage": storage,
        "max_num_seqs": max_num_seqs,
        "max_num_batched_tokens": max_num_batched_tokens,
    }
    cands = candidates(
        model,
        accelerator=accelerator,
        max_model_len=max_model_len,
        instance=instance,
        tensor_parallel=tensor_parallel,
        pipeline_parallel=pipeline_parallel,
        allowed=allowed,
        **common,
    )
    if cands[0].fits:
        return cands[0]
    raise PlanError(
        _no_fit_message(
            model, cands, max_model_len, instance, tensor_parallel, pipeline_parallel, common
        )
    )


def _no_fit_message(
    model: ModelArch,
    cands: list[Estimate],
    max_model_len: int | None,
    instance: InstanceType | None,
    tensor_parallel: int | None,
    pipeline_parallel: int,
    common: dict[str, Any],
) -> str:
    length = cands[0].max_model_len
    acc = cands[0].accelerator
    where = instance.name if instance is not None else f"any {acc.value} instance type"
    if tensor_parallel is not None:
        where += f" with tensor_parallel {tensor_parallel}"
    head = f"{model.id} at max_model_len {length:,} fits no candidate on {where}"
    cheapest = cands[0]
    parts = [
        f"cheapest candidate {cheapest.instance_type} TP {cheapest.tensor_parallel}: "
        f"{cheapest.reason}"
    ]
    shorter = None
    for c in cands:
        best = largest_max_model_len(
            model,
            INSTANCES[c.instance_type],
            tensor_parallel=c.tensor_parallel,
            pipeline_parallel=c.pipeline_parallel,
            **common,
        )
        if best is not None:
            shorter = (c, best)
            break
    if shorter is not None:
        c, best = shorter
        parts.append(
            f"the largest max_model_len that fits on {c.instance_type} (TP "
            f"{c.tensor_parallel}) is {best:,}"
        )
    # What would fit the requested context anywhere (either accelerator).
    others = []
    for a in Accelerator:
        try:
            others += [
                e
                for e in candidates(
                    model,
                    accelerator=a,
                    max_model_len=length,
                    pipeline_parallel=pipeline_parallel,
                    **common,
                )
                if e.fits
            ]
        except ValueError:
            continue
    others.sort(key=_sort_key)
    context = "the full context" if max_model_len is None else f"max_model_len {length:,}"
    if others:
        parts.append(f"instance types that fit {context}: {_describe(others)}")
    else:
        parts.append(
            f"no catalog instance type fits {context} with pipeline_parallel {pipeline_parallel}"
        )
    field_name = (
        "max_model_len"
        if shorter is not None
        else ("instance_type" if instance is not None else "model")
    )
    return f"{field_name}: {head}; " + "; ".join(parts)


# --- From an endpoint spec ------------------------------------------------------


def model_for_spec(spec: EndpointSpec) -> ModelArch:
    """The catalog model, or a ModelArch built from ``spec.custom_model``."""
    cm = spec.custom_model
    if cm is None:
        return get_model(spec.model)
    return ModelArch(
        id=cm.id,
        params=cm.params,
        layers=cm.layers,
        hidden_size=cm.hidden_size,
        heads=cm.heads,
        kv_heads=cm.kv_heads,
        head_dim=cm.head_dim,
        intermediate_size=cm.intermediate_size,
        vocab_size=cm.vocab_size,
        max_context=cm.max_context,
        dtype=cm.dtype,
        checkpoint_gib=cm.params * BYTES_PER_ELEMENT[cm.dtype] / GIB,
        source="custom_model in the endpoint spec",
    )


def plan_for_spec(spec: EndpointSpec) -> Estimate:
    """Plan an endpoint spec: its model, accelerator, instance, TP/PP, context, storage.

    Anything the spec leaves None is chosen (:func:`choose`); anything it sets
    is kept and checked.

    Raises:
        PlanError: nothing fits, with the numbers and what would.
        ValueError: a bad field.
    """
    acc = spec.resolved_accelerator
    mode = spec.resolved_pool_mode.value

    def why_not(inst: InstanceType) -> tuple[str, str] | None:
        if mode == "none":  # an existing cluster's nodes: whatever it has
            return None
        return pool_refusal(
            inst, mode=mode, accelerator=acc, efa=spec.pool.efa, max_nodes=spec.pool_max_nodes
        )

    instance = get_instance(spec.instance_type) if spec.instance_type else None
    if instance is not None and (why := why_not(instance)) is not None:
        raise ValueError(f"instance_type: {why[1]}")
    return choose(
        model_for_spec(spec),
        accelerator=acc,
        instance=instance,
        tensor_parallel=spec.tensor_parallel,
        pipeline_parallel=spec.pipeline_parallel,
        max_model_len=spec.vllm.max_model_len,
        gpu_memory_utilization=spec.vllm.gpu_memory_utilization,
        storage=spec.storage.kind.value,
        max_num_seqs=spec.vllm.max_num_seqs,
        allowed=lambda i: why_not(i) is None,
    )
