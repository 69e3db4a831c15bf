"""The architecture facts of a model that drive its memory and speed.

A :class:`ModelArch` is what :func:`components.models.parse_config` reads out of
a Hugging Face ``config.json``: the decoder's shape (layers, hidden size, heads,
KV heads, head size, MLP width, vocabulary, context), its checkpoint dtype and
quantization, mixture-of-experts facts, multi-head latent attention (DeepSeek)
and which layers use a sliding window. :meth:`ModelArch.weight_groups` lists
the parameters by how vLLM shards them, so the planner can size each tensor
parallel rank exactly (the published start-up logs are reproduced to 0.2 %
this way; see docs/planner.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

GIB = 1024**3


class DType(StrEnum):
    """Weight and KV-cache data types, with their size in bytes."""

    BF16 = "bfloat16"
    FP16 = "float16"
    FP8 = "fp8"
    MXFP4 = "mxfp4"


BYTES_PER_ELEMENT: dict[DType, float] = {
    DType.BF16: 2.0,
    DType.FP16: 2.0,
    DType.FP8: 1.0,
    # MXFP4: 4-bit values plus one shared 8-bit exponent per 32 values.
    # Source: OCP Microscaling Formats (MX) v1.0 spec, section 5.
    DType.MXFP4: 4.25 / 8,
}


class Shard(StrEnum):
    """How vLLM splits a weight over tensor-parallel ranks."""

    #: Split evenly (ColumnParallelLinear / RowParallelLinear / experts' MLP dim).
    SPLIT = "split"
    #: K/V projections: split over KV heads, replicated once TP exceeds them
    #: (vLLM QKVParallelLinear: ``max(1, kv_heads // tp)`` heads per rank).
    KV_HEADS = "kv_heads"
    #: Embedding / LM head: vocabulary padded to 64, then split
    #: (VocabParallelEmbedding, DEFAULT_VOCAB_PADDING_SIZE = 64).
    VOCAB = "vocab"
    #: Whole copy on every rank (norms, routers, MLA down-projections).
    REPLICATED = "replicated"


@dataclass(frozen=True)
class WeightGroup:
    """Parameters that vLLM stores and shards the same way.

    Attributes:
        name: What they are (``embed_tokens``, ``attn.qkv``, ``experts`` ...).
        params: Parameter count over all layers of the model.
        shard: How tensor parallelism splits them.
        quantizable: Whether a checkpoint or online quantization applies
            (linear layers; never embeddings, norms, routers or biases).
        expert: Whether they live in routed-expert MLPs.
        layer_scoped: Whether they are per layer (split over pipeline stages)
            rather than the input embedding, LM head and final norm.
    """

    name: str
    params: float
    shard: Shard
    quantizable: bool = False
    expert: bool = False
    layer_scoped: bool = True


@dataclass(frozen=True)
class Quantization:
    """How the checkpoint's weights (or KV cache) are quantized.

    Attributes:
        method: vLLM's quantization method (``fp8``, ``mxfp4``, ``awq``,
            ``gptq``, ``compressed-tensors``, ``modelopt``, ``fbgemm_fp8``).
        weight_bits: Bits per quantized weight (8 or 4).
        group_size: Values that share one scale (None: per channel, tensor or
            a 128x128 block, whose scale bytes are negligible).
        experts_only: Only the routed experts are quantized (gpt-oss MXFP4).
        float_weights: FP8/FP4 floats (True) or integers (AWQ/GPTQ).
        kv_cache_fp8: The checkpoint also quantizes the KV cache to FP8.
    """

    method: str
    weight_bits: int
    group_size: int | None = None
    experts_only: bool = False
    float_weights: bool = True
    kv_cache_fp8: bool = False

    @property
    def bytes_per_param(self) -> float:
        """Bytes per quantized parameter as vLLM stores it (scales included).

        * 8-bit (FP8 / INT8): 1 byte; per-channel or 128x128-block fp32 scales
          add under 0.1 %, left out.
        * 4-bit integer, group g (AWQ / GPTQ / compressed-tensors W4A16):
          int32-packed values 0.5 B + an fp16 scale per group (2/g) + packed
          4-bit zero points (0.5/g) -> 0.5195 B at g = 128.
        * MXFP4: 0.5 B + one uint8 E8M0 scale per 32 values (OCP MX v1.0).
        * NVFP4 (modelopt): 0.5 B + one FP8 scale per 16 values.
        """
        if self.weight_bits >= 8:
            return self.weight_bits / 8
        values = self.weight_bits / 8
        group = self.group_size or 128
        if self.method == "mxfp4":
            return values + 1 / 32
        if self.float_weights:
            return values + 1 / group
        return values + 2 / group + 0.5 / group


@dataclass(frozen=True)
class MoE:
    """Mixture-of-experts facts.

    Attributes:
        experts: Routed experts per MoE layer.
        experts_per_token: Experts each token is routed to (top-k).
        expert_intermediate_size: MLP width of one expert.
        moe_layers: How many layers are MoE (the rest are dense).
        shared_expert_intermediate_size: Width of the always-on shared expert(s),
            0 if none.
        shared_expert_gate: A sigmoid gate on the shared expert (Qwen2-MoE).
        expert_bias: Experts' projections carry biases (gpt-oss).
        router_bias: The router carries a bias (gpt-oss).
    """

    experts: int
    experts_per_token: int
    expert_intermediate_size: int
    moe_layers: int
    shared_expert_intermediate_size: int = 0
    shared_expert_gate: bool = False
    expert_bias: bool = False
    router_bias: bool = False


@dataclass(frozen=True)
class MLA:
    """DeepSeek multi-head latent attention (``config.json`` field names).

    The KV cache holds one ``kv_lora_rank + qk_rope_head_dim`` vector per token
    and layer, not per head, and every TP rank keeps all of it (vLLM
    ``MLAAttentionSpec``: one KV head, replicated).
    """

    q_lora_rank: int | None
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int


@dataclass(frozen=True)
class ModelArch:
    """The architecture facts of a model that drive memory and speed.

    Attributes:
        id: Hugging Face model id.
        layers: Transformer layers (``num_hidden_layers``).
        hidden_size: ``hidden_size``.
        heads: ``num_attention_heads``.
        kv_heads: ``num_key_value_heads`` (grouped-query attention).
        head_dim: Per-head dimension (``head_dim``, else hidden / heads).
        intermediate_size: Dense MLP width (``intermediate_size``).
        vocab_size: ``vocab_size``.
        max_context: ``max_position_embeddings`` (vLLM's default max_model_len).
        dtype: Dtype vLLM computes and stores unquantized weights in.
        checkpoint_gib: Size of the weight files, for download and load time.
        source: Where these facts come from.
        architecture: ``architectures[0]`` of the config.
        tie_word_embeddings: The LM head shares the input embedding.
        attention_bias: Q/K/V projections carry biases (Qwen2, gpt-oss).
        o_bias: The output projection carries a bias (gpt-oss).
        qk_norm: Per-head RMSNorm on queries and keys (Qwen3, Gemma 3).
        norms_per_layer: RMSNorm vectors per layer (2; Gemma 2/3: 4).
        attention_sinks: Per-head learned sink logits (gpt-oss).
        rotary_dim: Dimensions the rotary embedding rotates.
        rope_positions: Positions vLLM's cos/sin cache covers.
        moe: Mixture-of-experts facts, or None for dense models.
        mla: Multi-head latent attention facts, or None.
        quantization: Checkpoint quantization, or None.
        layer_types: ``full`` or ``sliding`` per layer.
        sliding_window: Window of the sliding layers, or None.
        vision_params: Parameters of a vision encoder and projector (0: text only).
        aliases: Other names the catalog accepts.
        notes: What was approximated while reading the config.
    """

    id: str
    layers: int
    hidden_size: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    max_context: int
    dtype: DType
    checkpoint_gib: float
    source: str
    architecture: str = "LlamaForCausalLM"
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    o_bias: bool = False
    qk_norm: bool = False
    norms_per_layer: int = 2
    attention_sinks: bool = False
    rotary_dim: int = 0
    rope_positions: int = 0
    moe: MoE | None = None
    mla: MLA | None = None
    quantization: Quantization | None = None
    layer_types: tuple[str, ...] = ()
    sliding_window: int | None = None
    vision_params: float = 0.0
    aliases: tuple[str, ...] = field(default=())
    notes: tuple[str, ...] = field(default=())

    # --- Layers -------------------------------------------------------------

    @property
    def sliding_window_layers(self) -> int:
        """How many layers use the sliding window."""
        return sum(1 for t in self.layer_types if t == "sliding") if self.sliding_window else 0

    @property
    def full_attention_layers(self) -> int:
        """Layers whose KV cache grows with the whole context."""
        return self.layers - self.sliding_window_layers

    # --- Parameters ---------------------------------------------------------

    def weight_groups(self) -> list[WeightGroup]:
        """All parameters, grouped by how vLLM shards and stores them."""
        h, n = self.hidden_size, self.layers
        groups = [WeightGroup("embed_tokens", self.vocab_size * h, Shard.VOCAB, layer_scoped=False)]
        if not self.tie_word_embeddings:
            groups.append(
                WeightGroup("lm_head", self.vocab_size * h, Shard.VOCAB, layer_scoped=False)
            )
        groups.append(WeightGroup("norm", h, Shard.REPLICATED, layer_scoped=False))
        groups += self._attention_groups()
        norms = self.norms_per_layer * h + (2 * self.head_dim if self.qk_norm else 0)
        groups.append(WeightGroup("layer_norms", n * norms, Shard.REPLICATED))
        groups += self._mlp_groups()
        if self.vision_params:
            # The vision tower runs replicated or split like a small ViT; vLLM
            # shards its linear layers, so count it as split.
            groups.append(
                WeightGroup("vision", self.vision_params, Shard.SPLIT, layer_scoped=False)
            )
        return groups

    def _attention_groups(self) -> list[WeightGroup]:
        h, n, d = self.hidden_size, self.layers, self.head_dim
        if self.mla is not None:
            m = self.mla
            qk = m.qk_nope_head_dim + m.qk_rope_head_dim
            if m.q_lora_rank:
                q_down = h * m.q_lora_rank + m.q_lora_rank  # q_a_proj + q_a_layernorm
                q_up = m.q_lora_rank * self.heads * qk
            else:
                q_down, q_up = 0, h * self.heads * qk
            kv_down = h * (m.kv_lora_rank + m.qk_rope_head_dim) + m.kv_lora_rank
            kv_up = m.kv_lora_rank * self.heads * (m.qk_nope_head_dim + m.v_head_dim)
            o = self.heads * m.v_head_dim * h
            return [
                WeightGroup("attn.down", n * (q_down + kv_down), Shard.REPLICATED, True),
                WeightGroup("attn.up", n * (q_up + kv_up + o), Shard.SPLIT, True),
            ]
        q = h * self.heads * d + (self.heads * d if self.attention_bias else 0)
        kv = 2 * (h * self.kv_heads * d + (self.kv_heads * d if self.attention_bias else 0))
        o = self.heads * d * h
        out = [
            WeightGroup("attn.q_o", n * (q + o), Shard.SPLIT, True),
            WeightGroup("attn.kv", n * kv, Shard.KV_HEADS, True),
        ]
        extra = (h if self.o_bias else 0) + (self.heads if self.attention_sinks else 0)
        if extra:
            out.append(WeightGroup("attn.bias_sinks", n * extra, Shard.REPLICATED))
        return out

    def _mlp_groups(self) -> list[WeightGroup]:
        h = self.hidden_size
        moe = self.moe
        dense_layers = self.layers - (moe.moe_layers if moe else 0)
        groups = []
        if dense_layers:
            groups.append(
                WeightGroup("mlp", dense_layers * 3 * h * self.intermediate_size, Shard.SPLIT, True)
            )
        if moe is None:
            return groups
        e, i = moe.experts, moe.expert_intermediate_size
        per_layer = e * 3 * h * i
        groups.append(WeightGroup("experts", moe.moe_layers * per_layer, Shard.SPLIT, True, True))
        if moe.expert_bias:
            bias = e * (2 * i + h)
            groups.append(
                WeightGroup("experts.bias", moe.moe_layers * bias, Shard.SPLIT, expert=True)
            )
        router = h * e + (e if moe.router_bias else 0)
        groups.append(WeightGroup("router", moe.moe_layers * router, Shard.REPLICATED))
        if moe.shared_expert_intermediate_size:
            shared = 3 * h * moe.shared_expert_intermediate_size
            groups.append(WeightGroup("shared_expert", moe.moe_layers * shared, Shard.SPLIT, True))
        if moe.shared_expert_gate:
            groups.append(WeightGroup("shared_gate", moe.moe_layers * h, Shard.REPLICATED))
        return groups

    @property
    def params(self) -> float:
        """Total parameter count."""
        return sum(g.params for g in self.weight_groups())

    @property
    def expert_params(self) -> float:
        """Parameters in routed experts (0 for dense models)."""
        return sum(g.params for g in self.weight_groups() if g.expert)

    @property
    def active_params(self) -> float:
        """Parameters touched per token (all of them for dense models)."""
        if self.moe is None:
            return self.params
        share = self.moe.experts_per_token / self.moe.experts
        return self.params - self.expert_params * (1 - share)

    @property
    def weight_bytes(self) -> float:
        """Bytes of all weights as stored in the checkpoint (quantized where it is)."""
        return sum(g.params * self.bytes_per_param(g) for g in self.weight_groups())

    def bytes_per_param(self, group: WeightGroup, online: Quantization | None = None) -> float:
        """Bytes one parameter of ``group`` takes once loaded.

        Args:
            group: The weight group.
            online: vLLM ``--quantization`` applied to an unquantized checkpoint
                (e.g. online FP8), which quantizes the linear layers.
        """
        quant = self.quantization or online
        if quant is not None and group.quantizable and (group.expert or not quant.experts_only):
            return quant.bytes_per_param
        return BYTES_PER_ELEMENT[self.dtype]

    # --- KV cache -----------------------------------------------------------

    @property
    def kv_values_per_token_layer(self) -> int:
        """K and V values one token stores per layer, over all KV heads.

        MLA stores the compressed latent plus the rotary key once (vLLM
        ``MLAAttentionSpec``: head size ``kv_lora_rank + qk_rope_head_dim``).
        """
        if self.mla is not None:
            return self.mla.kv_lora_rank + self.mla.qk_rope_head_dim
        return 2 * self.kv_heads * self.head_dim
