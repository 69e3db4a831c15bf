"""vLLM's start-up memory profile on one NVIDIA GPU, following the vLLM source.

The KV cache is what is left of ``ceil(total x gpu_memory_utilization)`` after
(constants and citations in :mod:`components.planner.vllm_profile`):

* **weights**, per tensor-parallel rank: every weight group of the model split
  the way vLLM splits it (columns/rows over TP, K/V over KV heads with
  replication past them, vocabularies padded to 64), in its stored dtype or
  quantization, MXFP4 experts padded as the chosen MoE backend pads them, plus
  the rotary cos/sin cache;
* **activation**: the larger of the forward pass's peak (MLP / MoE
  workspaces of ``max_num_batched_tokens`` tokens) and the dummy sampler pass
  over ``min(max_num_batched_tokens, max_num_seqs)`` rows; the two do not add
  up because the forward activations are freed before the sampler runs;
* **sampler state** (V2 runner): the penalty tensors, max_num_seqs x vocab;
* **non-torch** growth (workspaces, lazily created NCCL buffers);
* **CUDA graphs** (0.29 and 0.33 subtract the estimate; earlier versions
  capture them afterwards, outside the budget).

The KV cache is then cut into blocks of 16 tokens of one layer group each,
grouped as vLLM's hybrid KV-cache manager groups full and sliding-window
layers, and checked against one ``max_model_len`` request as vLLM checks it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from components.models import GIB, ModelArch, Quantization, Shard, WeightGroup
from components.planner import vllm_profile as vp
from components.planner.vllm_profile import BLOCK_SIZE, VllmProfile

#: MXFP4 MoE kernels (``fused_moe/oracle/mxfp4.py:402-437``, 0.33.0): the OpenAI
#: Triton kernels need compute capability 9.0-12.x
#: (``fused_moe/experts/gpt_oss_triton_kernels_moe.py:47-53``); Ampere and Ada
#: (A10G, L4, L40S, A100) fall through to Marlin.
TRITON_MIN_SM = 90
#: The Triton path logs more than its unpadded tensors: gpt-oss-20b 13.64 GiB
#: at TP 1 and 7.01 GiB at TP 2 on H100 (llm-d 0.19.0 logs) where the tensors
#: above are 10.26 and 5.32 GiB of experts. Its Hopper swizzle only pads to small
#: tiles, so the excess is not in the padding rules; two terms fit both logs:
#: 7.1 % of the expert bytes, plus 0.18 MiB per expert and layer that TP does
#: not split. Checked on a third log, gpt-oss-120b TP 1 at 0.14.1
#: (vllm-project/vllm#33155, 64.38 GiB): +1.9 %.
TRITON_MXFP4_FACTOR = 1.071
TRITON_MXFP4_PER_EXPERT_BYTES = 0.18 * 2**20


def cdiv(a: int, b: int) -> int:
    """Ceiling division, as vLLM's ``cdiv``."""
    return -(-a // b)


def round_up(x: int, m: int) -> int:
    """``round_up`` of vLLM's utils."""
    return cdiv(x, m) * m


def mxfp4_backend(sm: int) -> str:
    """The MXFP4 MoE backend vLLM picks for gpt-oss on this compute capability."""
    return "triton" if sm >= TRITON_MIN_SM else "marlin"


# --- Weights ------------------------------------------------------------------


def _shard(group: WeightGroup, model: ModelArch, tp: int) -> float:
    """Parameters of ``group`` on one TP rank."""
    if group.shard is Shard.SPLIT:
        return group.params / tp
    if group.shard is Shard.KV_HEADS:
        return group.params / min(tp, model.kv_heads)
    if group.shard is Shard.VOCAB:
        rows = round_up(model.vocab_size, vp.VOCAB_PADDING * tp) / tp
        return group.params / model.vocab_size * rows
    return group.params


def _mxfp4_experts_bytes(model: ModelArch, tp: int, sm: int) -> float:
    """MXFP4 expert tensors of all layers on one rank, padded as vLLM pads them.

    ``quantization/mxfp4.py:200-292`` (0.33.0): ``w13`` (E, 2 I_p, H_p / 2) and
    ``w2`` (E, H_p, I_p / 2) uint8, with one uint8 scale per 32 values. I_p is
    the per-rank intermediate size rounded up to 128 (Marlin) or 64 (Triton),
    H_p the hidden size rounded to 256 for Marlin
    (``fused_moe/oracle/mxfp4.py:865-870, 915-916``).
    """
    assert model.moe is not None
    inter = model.moe.expert_intermediate_size // tp
    hidden = model.hidden_size
    per_value = 0.5 + 1 / 32
    experts = model.moe.experts * model.moe.moe_layers
    if mxfp4_backend(sm) == "marlin":
        return experts * 3 * round_up(inter, 128) * round_up(hidden, 256) * per_value
    tensors = experts * 3 * round_up(inter, 64) * hidden * per_value
    return tensors * TRITON_MXFP4_FACTOR + experts * TRITON_MXFP4_PER_EXPERT_BYTES


def expert_bytes_per_rank(model: ModelArch, tp: int, sm: int) -> float:
    """Routed-expert bytes on one rank (all layers), as loaded on NVIDIA."""
    if model.moe is None:
        return 0.0
    if model.quantization is not None and model.quantization.method == "mxfp4":
        return _mxfp4_experts_bytes(model, tp, sm)
    return sum(
        _shard(g, model, tp) * model.bytes_per_param(g) for g in model.weight_groups() if g.expert
    )


@lru_cache(maxsize=4096)
def weights_per_rank_bytes(
    model: ModelArch, tp: int, pp: int, sm: int, online: Quantization | None = None
) -> float:
    """Bytes "Model loading took" reports on the worst rank (rotary cache included).

    Args:
        model: The model.
        tp: Tensor-parallel size.
        pp: Pipeline stages; the worst stage holds ceil(layers / pp) layers plus
            the embedding (first stage) or the LM head (last stage).
        sm: Compute capability x 10 (picks the MXFP4 MoE backend).
        online: ``--quantization`` applied at load (FP8 of a bf16 checkpoint).
    """
    layer_share = math.ceil(model.layers / pp) / model.layers
    layer_bytes, first, last = 0.0, 0.0, 0.0
    mxfp4 = model.quantization is not None and model.quantization.method == "mxfp4"
    for g in model.weight_groups():
        if mxfp4 and g.name == "experts":
            size = _mxfp4_experts_bytes(model, tp, sm)
        else:
            size = _shard(g, model, tp) * model.bytes_per_param(g, online)
        if g.layer_scoped:
            layer_bytes += size * layer_share
        elif g.name in ("embed_tokens", "vision"):
            first += size  # the first pipeline stage
        else:
            last += size  # LM head and final norm: the last stage
    if pp == 1:
        ends = first + last
    else:
        # A tied LM head on another stage than the embedding is its own copy.
        embed = model.weight_groups()[0]
        tied = _shard(embed, model, tp) * model.bytes_per_param(embed)
        tied = tied if model.tie_word_embeddings else 0.0
        ends = max(first, last + tied)
    rope = model.rope_positions * model.rotary_dim * vp.ROPE_CACHE_BYTES
    return layer_bytes + ends + rope


# --- Activation ---------------------------------------------------------------


def forward_peak_bytes(model: ModelArch, tp: int, tokens: int) -> float:
    """Largest transient of the profiling forward pass of ``tokens`` tokens.

    Dense MLP: gate_up output (2 I/TP), SiLU-and-mul output (I/TP), the layer
    input, residual and down-projection output (3 H), all in the model dtype:
    T x (3 I/TP + 3 H) x 2 B. This reproduces the V0 logs of
    vllm-project/vllm#10517 where the MLP is the peak: 2.06 vs 2.07 GiB at
    20,000 tokens and 2.99 vs 2.99 GiB at 29,000 for Llama-3.1-8B. MoE: the
    fused-MoE caches of T x top-k rows, scaled by ``MOE_WORKSPACE_FACTOR``.
    """
    h = model.hidden_size
    dense = tokens * (3 * model.intermediate_size / tp + 3 * h) * vp.ACTIVATION_BYTES
    if model.moe is None:
        return dense
    moe = model.moe
    shared = 3 * moe.shared_expert_intermediate_size / tp
    rows = tokens * moe.experts_per_token
    caches = rows * (3 * moe.expert_intermediate_size / tp + h) + tokens * (shared + 3 * h)
    return max(dense, caches * vp.ACTIVATION_BYTES * vp.MOE_WORKSPACE_FACTOR)


def sampler_peak_bytes(model: ModelArch, profile: VllmProfile, tokens: int, seqs: int) -> float:
    """The dummy sampler pass: one row per dummy request, ``min(T, S)`` rows.

    ``_dummy_run`` spreads ``max_num_batched_tokens`` over
    ``min(num_tokens, max_num_reqs)`` requests (``gpu/model_runner.py:862``,
    0.33.0), and the sampler gets one logits row per request over the whole
    vocabulary (all-gathered on every TP rank).
    """
    return min(tokens, seqs) * model.vocab_size * profile.sampler_bytes_per_logit


# --- KV cache layout ----------------------------------------------------------


@dataclass(frozen=True)
class KvLayout:
    """How vLLM lays the KV cache of one rank out in blocks.

    Attributes:
        page_bytes: One layer's K and V for one block of 16 tokens.
        full_layers: Full-attention layers on the rank's stage.
        sliding_layers: Sliding-window layers on the stage.
        group_size: Layers per KV-cache group (every group draws from one pool
            whose block holds ``group_size`` pages).
        full_groups: Groups of full-attention layers.
        sliding_groups: Groups of sliding-window layers.
    """

    page_bytes: int
    full_layers: int
    sliding_layers: int
    group_size: int
    full_groups: int
    sliding_groups: int

    @property
    def bytes_per_block(self) -> int:
        """Bytes of one pool block (``kv_cache_planning.py:574-606``, 0.33.0)."""
        return self.group_size * self.page_bytes

    @property
    def groups(self) -> int:
        return self.full_groups + self.sliding_groups

    @property
    def bytes_per_token(self) -> int:
        """KV bytes one token of context adds (full-attention layers)."""
        return self.full_layers * self.page_bytes // BLOCK_SIZE


def kv_layout(model: ModelArch, tp: int, pp: int, kv_bytes: float) -> KvLayout:
    """Pages and groups as vLLM builds them.

    Page = block_size x KV heads per rank x head size x (K and V) x dtype
    (``AttentionSpec.page_size_bytes``, ``v1/kv_cache_interface.py:593-601``);
    KV heads per rank are ``max(1, kv_heads // tp)``; MLA stores one latent
    vector of ``kv_lora_rank + qk_rope_head_dim`` per token, replicated.
    Groups (``v1/core/kv_cache_planning.py:416-558``): the group size is the
    smallest layer count of the attention types (the largest when it is under
    1.5x the smallest), and each type is split into ceil(count / size) groups.
    """
    if model.mla is not None:
        values = model.kv_values_per_token_layer
    else:
        values = 2 * max(1, model.kv_heads // tp) * model.head_dim
    page = int(BLOCK_SIZE * values * kv_bytes)
    full = math.ceil(model.full_attention_layers / pp)
    sliding = math.ceil(model.sliding_window_layers / pp)
    counts = [c for c in (full, sliding) if c]
    low, high = min(counts), max(counts)
    size = high if high < 1.5 * low else low
    return KvLayout(page, full, sliding, size, cdiv(full, size), cdiv(sliding, size))


def sliding_blocks_per_request(
    model: ModelArch, profile: VllmProfile, length: int, batched_tokens: int
) -> int:
    """Blocks one request holds per sliding-window layer.

    ``cdiv(min(window - 1 + in_flight_batches x T, L), 16) + 1``
    (``v1/kv_cache_interface.py:918-944`` at 0.33.0 with two batches in flight
    under async scheduling; one batch at 0.10-0.19, ``:263`` of 0.19.0).
    """
    if not model.sliding_window or not model.sliding_window_layers:
        return 0
    tokens = model.sliding_window - 1 + profile.sliding_in_flight_batches * batched_tokens
    return cdiv(min(tokens, length), BLOCK_SIZE) + 1


@dataclass(frozen=True)
class KvCapacity:
    """What the KV cache of one rank holds.

    Attributes:
        blocks: Pool blocks (``available // bytes_per_block``).
        blocks_per_request: Pool blocks one max_model_len request needs.
        tokens: "KV cache size" as the version logs it.
        max_concurrency: max_model_len requests the pool holds at once.
        needed_bytes: What vLLM's fit check needs for one request.
        fits: vLLM's check passes (one block is kept back as the null block).
    """

    blocks: int
    blocks_per_request: int
    tokens: int
    max_concurrency: float
    needed_bytes: int
    fits: bool


def kv_capacity(
    layout: KvLayout,
    model: ModelArch,
    profile: VllmProfile,
    kv_bytes: float,
    length: int,
    batched_tokens: int,
) -> KvCapacity:
    """Blocks, tokens, concurrency and vLLM's fit check for ``kv_bytes`` of cache."""
    blocks = max(0, int(kv_bytes // layout.bytes_per_block)) if kv_bytes > 0 else 0
    full_blocks = cdiv(length, BLOCK_SIZE)
    sliding = sliding_blocks_per_request(model, profile, length, batched_tokens)
    per_request = layout.full_groups * full_blocks + layout.sliding_groups * sliding
    concurrency = blocks / per_request
    if profile.hybrid_tokens_per_group:
        tokens = blocks // layout.groups * BLOCK_SIZE
    else:
        tokens = int(concurrency * length)
    needed = (layout.full_layers * full_blocks + layout.sliding_layers * sliding) * (
        layout.page_bytes
    )
    fits = kv_bytes > 0 and needed <= kv_bytes - layout.bytes_per_block
    return KvCapacity(blocks, per_request, tokens, concurrency, needed, fits)


def cuda_graph_bytes(
    model: ModelArch, pp: int, seqs: int, batched_tokens: int, *, eager: bool
) -> float:
    """The CUDA-graph pool (PIECEWISE + FULL graphs of every capture size).

    Fit to the 0.19.0 logs (``vllm_profile.GRAPH_*``), scaled by the number of
    graphs, which :func:`vllm_profile.capture_sizes` gives for this max_num_seqs.
    """
    if eager:
        return 0.0
    gpt_oss = model.architecture.startswith("GptOss")
    graphs = 2 * len(vp.capture_sizes(seqs, batched_tokens, gpt_oss=gpt_oss))
    layers = math.ceil(model.layers / pp)
    moe_layers = math.ceil(model.moe.moe_layers / pp) if model.moe else 0
    per_graph_set = vp.GRAPH_PER_LAYER_GIB * layers + vp.GRAPH_PER_MOE_LAYER_GIB * moe_layers
    return (vp.GRAPH_BASE_GIB + per_graph_set * graphs / vp.GRAPH_REFERENCE_COUNT) * GIB


# --- The profile --------------------------------------------------------------


@dataclass(frozen=True)
class Memory:
    """One rank's start-up memory, in GiB unless noted.

    Attributes:
        total: Device memory as the CUDA runtime reports it.
        requested: ``ceil(total x gpu_memory_utilization)``.
        baseline: In use before the snapshot (context, NCCL): outside the budget.
        weights: "Model loading took".
        activation: Profiled transient peak.
        sampler_state: Persistent V2 sampler tensors.
        non_torch: Non-torch growth during the profile.
        cuda_graphs: The graph pool (inside the budget at 0.29/0.33).
        kv: "Available KV cache memory" (negative: nothing is left).
        layout: Blocks and groups.
        capacity: Tokens, concurrency and the fit check.
    """

    total: float
    requested: float
    baseline: float
    weights: float
    activation: float
    sampler_state: float
    non_torch: float
    cuda_graphs: float
    kv: float
    layout: KvLayout
    capacity: KvCapacity

    @property
    def starts(self) -> bool:
        """vLLM's start check: free memory at start covers the request
        (``v1/worker/utils.py:764-771``)."""
        return self.total - self.baseline >= self.requested

    @property
    def graphs_fit_outside(self) -> bool:
        """Versions that capture graphs after the KV cache need them in the headroom."""
        return self.total - self.requested >= self.baseline + self.cuda_graphs


def profile_memory(
    model: ModelArch,
    *,
    total_gib: float,
    sm: int,
    tp: int,
    pp: int,
    length: int,
    util: float,
    seqs: int,
    batched_tokens: int,
    profile: VllmProfile,
    online: Quantization | None = None,
    kv_cache_dtype: str = "auto",
    eager: bool = False,
) -> Memory:
    """Predict what vLLM logs at start-up for one configuration (see module doc)."""
    total = total_gib * GIB
    requested = math.ceil(total * util)
    weights = weights_per_rank_bytes(model, tp, pp, sm, online)
    activation = max(
        forward_peak_bytes(model, tp, batched_tokens),
        sampler_peak_bytes(model, profile, batched_tokens, seqs),
    )
    state = vp.PENALTIES_BYTES_PER_LOGIT * seqs * model.vocab_size if profile.penalties_state else 0
    non_torch = profile.non_torch_gib(tp, pp) * GIB
    graphs = cuda_graph_bytes(model, pp, seqs, batched_tokens, eager=eager)
    in_budget_graphs = graphs if profile.subtracts_cudagraph_estimate else 0.0
    kv = requested - weights - activation - state - non_torch - in_budget_graphs
    fp8_kv = kv_cache_dtype.startswith("fp8") or (
        kv_cache_dtype == "auto"
        and model.quantization is not None
        and model.quantization.kv_cache_fp8
    )
    kv_bytes = 1.0 if fp8_kv else 2.0
    layout = kv_layout(model, tp, pp, kv_bytes)
    capacity = kv_capacity(layout, model, profile, kv, length, batched_tokens)
    baseline = vp.BASELINE_TP1_GIB if tp == 1 and pp == 1 else vp.BASELINE_MULTI_GIB
    return Memory(
        total=total_gib,
        requested=requested / GIB,
        baseline=baseline,
        weights=weights / GIB,
        activation=activation / GIB,
        sampler_state=state / GIB,
        non_torch=non_torch / GIB,
        cuda_graphs=graphs / GIB,
        kv=kv / GIB,
        layout=layout,
        capacity=capacity,
    )
