"""Read a Hugging Face ``config.json`` into a :class:`ModelArch`.

Every error is a ``ValueError`` that names the config key and what would be
valid, prefixed ``model_config:`` so that the CLI and the HTTP API show it as a
field error. What this reader cannot size (state-space or linear-attention
layers, unknown quantization methods, unknown vision towers) is refused rather
than guessed.

Field names follow the configs the transformers library writes; where vLLM
reads a model differently from transformers, the vLLM file is cited.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from components.models.arch import GIB, MLA, DType, ModelArch, MoE, Quantization

#: ``torch_dtype`` values and the dtype vLLM serves them in. float32 checkpoints
#: are served in bfloat16 on GPUs that support it (vLLM ``dtype="auto"``:
#: ``config/model.py`` ``_resolve_auto_dtype``), float16 stays float16.
_DTYPES = {
    "bfloat16": DType.BF16,
    "bf16": DType.BF16,
    "float16": DType.FP16,
    "fp16": DType.FP16,
    "half": DType.FP16,
    "float32": DType.BF16,
    "float": DType.BF16,
}

#: Layer types this reader can size, as transformers names them in
#: ``layer_types`` (gpt-oss, Gemma 3, Qwen3-Next ...).
_FULL = {"full_attention", "attention", "global", "full"}
_SLIDING = {"sliding_attention", "sliding_window", "local", "sliding", "chunked_attention"}

#: Quantization methods sized here (``quantization_config.quant_method``).
QUANT_METHODS = ("fp8", "fbgemm_fp8", "mxfp4", "awq", "gptq", "compressed-tensors", "modelopt")


def _err(message: str) -> ValueError:
    return ValueError(f"model_config: {message}")


def _int(cfg: Mapping[str, Any], key: str, *, required: bool = True, default: int = 0) -> int:
    value = cfg.get(key)
    if value is None:
        if required:
            raise _err(
                f"{key} is missing; a decoder's config.json needs num_hidden_layers, "
                "hidden_size, num_attention_heads, intermediate_size, vocab_size and "
                "max_position_embeddings to be sized"
            )
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _err(f"{key} must be a positive integer, got {value!r}")
    return value


def _first(cfg: Mapping[str, Any], *keys: str) -> Any:
    for k in keys:
        if cfg.get(k) is not None:
            return cfg[k]
    return None


def _dtype(cfg: Mapping[str, Any]) -> tuple[DType, list[str]]:
    raw = _first(cfg, "torch_dtype", "dtype")
    if raw is None:
        return DType.BF16, ["torch_dtype is absent: assumed bfloat16"]
    name = str(raw).removeprefix("torch.").lower()
    if name not in _DTYPES:
        valid = ", ".join(sorted({"bfloat16", "float16", "float32"}))
        raise _err(f"torch_dtype {raw!r} is not a weight dtype vLLM serves (valid: {valid})")
    notes = ["float32 checkpoint: vLLM serves it in bfloat16"] if name.startswith("float3") else []
    return _DTYPES[name], notes


def _quantization(cfg: Mapping[str, Any]) -> Quantization | None:
    q = cfg.get("quantization_config")
    if q is None:
        return None
    if not isinstance(q, Mapping):
        raise _err(f"quantization_config must be an object, got {type(q).__name__}")
    method = str(q.get("quant_method", "")).lower()
    if method in ("fp8", "fbgemm_fp8"):
        return Quantization(method, 8)
    if method == "mxfp4":
        # gpt-oss: only the routed experts are MXFP4 ("modules_to_not_convert":
        # attention, router, embeddings, lm_head).
        return Quantization("mxfp4", 4, group_size=32, experts_only=True)
    if method in ("awq", "gptq"):
        bits = _first(q, "bits", "w_bit")
        group = _first(q, "group_size", "q_group_size")
        if bits not in (4, 8):
            raise _err(f"quantization_config.bits must be 4 or 8 for {method}, got {bits!r}")
        if group is not None and (not isinstance(group, int) or group == 0):
            raise _err(f"quantization_config.group_size must be a positive integer, got {group!r}")
        size = None if group in (None, -1) else int(group)
        return Quantization(method, int(bits), size, float_weights=False)
    if method == "compressed-tensors":
        return _compressed_tensors(q)
    if method == "modelopt":
        algo = str(_first(q, "quant_algo") or "").upper()
        kv = str(_first(q, "kv_cache_quant_algo") or "").upper() == "FP8"
        if algo == "FP8":
            return Quantization("modelopt", 8, kv_cache_fp8=kv)
        if algo == "NVFP4":
            return Quantization("modelopt", 4, 16, kv_cache_fp8=kv)
        raise _err(f"quantization_config.quant_algo {algo!r} is not sized (valid: FP8, NVFP4)")
    valid = ", ".join(QUANT_METHODS)
    raise _err(f"quantization_config.quant_method {method!r} cannot be sized (valid: {valid})")


def _compressed_tensors(q: Mapping[str, Any]) -> Quantization:
    groups = q.get("config_groups")
    if not isinstance(groups, Mapping) or not groups:
        raise _err("quantization_config.config_groups is missing for compressed-tensors")
    weights = next(iter(groups.values())).get("weights") or {}
    bits = weights.get("num_bits")
    if bits not in (4, 8):
        raise _err(
            f"quantization_config.config_groups.*.weights.num_bits must be 4 or 8, got {bits!r}"
        )
    float_weights = weights.get("type", "int") == "float"
    group = weights.get("group_size")
    kv = q.get("kv_cache_scheme") is not None
    return Quantization(
        "compressed-tensors", int(bits), group if group else None, False, float_weights, kv
    )


def _moe(cfg: Mapping[str, Any], layers: int, model_type: str) -> MoE | None:
    experts = _first(cfg, "num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")
    if not experts:
        return None
    top_k = _first(cfg, "num_experts_per_tok", "experts_per_token", "moe_topk")
    if not isinstance(top_k, int) or top_k <= 0:
        raise _err(f"num_experts_per_tok must be a positive integer for an MoE, got {top_k!r}")
    width = _first(cfg, "moe_intermediate_size", "intermediate_size")
    if not isinstance(width, int) or width <= 0:
        raise _err("moe_intermediate_size (or intermediate_size) is missing for an MoE config")
    moe_layers = layers
    if cfg.get("first_k_dense_replace") is not None:  # DeepSeek V2/V3
        moe_layers = layers - int(cfg["first_k_dense_replace"])
    elif cfg.get("decoder_sparse_step") is not None:  # Qwen MoE
        step = int(cfg["decoder_sparse_step"]) or 1
        dense = set(cfg.get("mlp_only_layers") or [])
        moe_layers = sum(1 for i in range(layers) if i not in dense and (i + 1) % step == 0)
    elif cfg.get("interleave_moe_layer_step") is not None:  # Llama 4
        step = int(cfg["interleave_moe_layer_step"]) or 1
        moe_layers = sum(1 for i in range(layers) if (i + 1) % step == 0)
    shared = int(cfg.get("shared_expert_intermediate_size") or 0)
    if cfg.get("n_shared_experts"):
        shared = int(cfg["n_shared_experts"]) * width
    if model_type.startswith("llama4"):
        shared = width  # one shared expert as wide as a routed one
    gpt_oss = model_type == "gpt_oss"
    return MoE(
        experts=int(experts),
        experts_per_token=top_k,
        expert_intermediate_size=width,
        moe_layers=moe_layers,
        shared_expert_intermediate_size=shared,
        shared_expert_gate=model_type == "qwen2_moe",
        expert_bias=gpt_oss,
        router_bias=gpt_oss,
    )


def _layer_types(
    cfg: Mapping[str, Any], layers: int, model_type: str, max_context: int
) -> tuple[tuple[str, ...], int | None]:
    """(per-layer 'full'/'sliding', window) as vLLM builds the KV cache specs."""
    raw = cfg.get("layer_types")
    window = _first(cfg, "sliding_window", "attention_chunk_size")
    if isinstance(raw, list):
        if len(raw) != layers:
            raise _err(f"layer_types has {len(raw)} entries, num_hidden_layers is {layers}")
        out = []
        for t in raw:
            if t in _FULL:
                out.append("full")
            elif t in _SLIDING:
                out.append("sliding")
            else:
                valid = ", ".join(sorted(_FULL | _SLIDING))
                raise _err(
                    f"layer_types contains {t!r}: state-space and linear-attention layers "
                    f"cannot be sized (valid: {valid})"
                )
        if "sliding" in out and not window:
            raise _err("layer_types has sliding layers but sliding_window is missing")
        return tuple(out), (int(window) if "sliding" in out else None)
    if model_type.startswith("llama4") and cfg.get("attention_chunk_size"):
        # Llama 4: chunked local attention on 3 of every 4 layers (the others
        # have no rope); vLLM's ChunkedLocalAttentionSpec reserves like a window.
        step = int(cfg.get("no_rope_layer_interval") or 4)
        kinds = tuple("full" if (i + 1) % step == 0 else "sliding" for i in range(layers))
        return kinds, int(cfg["attention_chunk_size"])
    if not window or not isinstance(window, int) or window >= max_context:
        return ("full",) * layers, None
    if model_type == "gemma2":
        # Gemma 2 alternates local and global layers, local first.
        return tuple("sliding" if i % 2 == 0 else "full" for i in range(layers)), window
    if model_type in ("gemma3", "gemma3_text"):
        pattern = int(cfg.get("sliding_window_pattern") or 6)
        return tuple("full" if (i + 1) % pattern == 0 else "sliding" for i in range(layers)), window
    if model_type in ("qwen2", "qwen2_moe", "qwen3", "qwen3_moe"):
        if not cfg.get("use_sliding_window"):
            return ("full",) * layers, None
        first = int(cfg.get("max_window_layers") or layers)
        return tuple("full" if i < first else "sliding" for i in range(layers)), window
    # Mistral v0.1, Mixtral, Phi-3 style: one window on every layer.
    return ("sliding",) * layers, window


def _vision_params(cfg: Mapping[str, Any], text_hidden: int) -> tuple[float, list[str]]:
    """A ViT encoder's parameters from ``vision_config`` (+ a linear projector)."""
    v = cfg.get("vision_config")
    if not isinstance(v, Mapping):
        raise _err(
            "text_config is present but vision_config is missing; this multimodal "
            "config cannot be sized (pass the model's full config.json)"
        )
    depth = _first(v, "num_hidden_layers", "depth", "num_layers")
    width = _first(v, "hidden_size", "embed_dim", "width")
    if not isinstance(depth, int) or not isinstance(width, int):
        raise _err("vision_config.num_hidden_layers and vision_config.hidden_size are needed")
    mlp = _first(v, "intermediate_size") or 4 * width
    patch = int(v.get("patch_size") or 14)
    channels = int(v.get("num_channels") or 3)
    image = int(v.get("image_size") or 336)
    # Per layer: q, k, v, o (4 w^2) + fc1, fc2 (2 w i) + biases and 2 norms;
    # patch embedding and position embeddings; projector to the text width.
    per_layer = 4 * width * width + 2 * width * mlp + 9 * width + 2 * mlp
    embed = channels * patch * patch * width + (image // patch) ** 2 * width
    projector = width * text_hidden + text_hidden
    note = (
        "vision encoder sized from vision_config as a ViT "
        "(4w^2 + 2wi per layer + patch embedding + projector); its profiling peak is not modelled"
    )
    return float(depth * per_layer + embed + projector), [note]


def parse_config(config: dict[str, Any], model_id: str) -> ModelArch:
    """Read a Hugging Face ``config.json`` (as a dict) into a :class:`ModelArch`.

    Args:
        config: The parsed ``config.json``. An ``hf_quant_config.json`` of a
            ModelOpt checkpoint can be merged in as ``quantization_config``
            (``{"quant_method": "modelopt", "quant_algo": "FP8", ...}``), which
            is what vLLM does.
        model_id: The Hugging Face id the config belongs to.

    Raises:
        ValueError: ``model_config: <key> ...`` naming what is missing or invalid
            and what would be valid.
    """
    if not isinstance(config, Mapping):
        raise _err(f"must be a JSON object (a config.json), got {type(config).__name__}")
    archs = config.get("architectures")
    architecture = archs[0] if isinstance(archs, list) and archs else ""
    text: Mapping[str, Any] = config
    vision, notes = 0.0, []
    if isinstance(config.get("text_config"), Mapping):
        text = {**config["text_config"]}
        for key in ("quantization_config", "torch_dtype", "dtype", "tie_word_embeddings"):
            if key in config and key not in text:
                text[key] = config[key]
    model_type = str(text.get("model_type") or config.get("model_type") or "")
    if not architecture and not model_type:
        raise _err("architectures and model_type are both missing; is this a config.json?")
    if model_type in ("mamba", "mamba2", "rwkv", "jamba", "falcon_h1") or "Mamba" in architecture:
        raise _err(
            f"model_type {model_type!r} uses state-space layers, which cannot be sized "
            "(supported: transformer decoders with full or sliding-window attention)"
        )

    layers = _int(text, "num_hidden_layers")
    hidden = _int(text, "hidden_size")
    heads = _int(text, "num_attention_heads")
    kv_heads = _int(text, "num_key_value_heads", required=False, default=heads)
    head_dim = _int(text, "head_dim", required=False, default=0) or hidden // heads
    vocab = _int(text, "vocab_size")
    max_context = _int(text, "max_position_embeddings")
    if heads % kv_heads:
        raise _err(
            f"num_attention_heads ({heads}) must be a multiple of num_key_value_heads ({kv_heads})"
        )
    moe = _moe(text, layers, model_type)
    dense_width = _first(text, "intermediate_size_mlp", "intermediate_size")
    if dense_width is None and moe is not None:
        dense_width = moe.expert_intermediate_size
    if not isinstance(dense_width, int) or dense_width <= 0:
        raise _err(
            "intermediate_size is missing; a decoder's config.json needs num_hidden_layers, "
            "hidden_size, num_attention_heads, intermediate_size, vocab_size and "
            "max_position_embeddings to be sized"
        )
    dtype, dtype_notes = _dtype(text)
    notes += dtype_notes
    mla = None
    if text.get("kv_lora_rank"):
        mla = MLA(
            q_lora_rank=text.get("q_lora_rank"),
            kv_lora_rank=_int(text, "kv_lora_rank"),
            qk_nope_head_dim=_int(text, "qk_nope_head_dim"),
            qk_rope_head_dim=_int(text, "qk_rope_head_dim"),
            v_head_dim=_int(text, "v_head_dim"),
        )
    layer_types, window = _layer_types(text, layers, model_type, max_context)
    if text is not config:
        vision, vision_notes = _vision_params(config, hidden)
        notes += vision_notes
    gemma = model_type.startswith("gemma")
    qwen2 = model_type in ("qwen2", "qwen2_moe")
    attention_bias = bool(text.get("attention_bias")) or qwen2 or model_type == "gpt_oss"
    rope = text.get("rope_scaling") or {}
    partial = float(text.get("partial_rotary_factor") or 1.0)
    rotary_dim = mla.qk_rope_head_dim if mla else int(head_dim * partial)
    positions = max_context
    if isinstance(rope, Mapping) and rope.get("original_max_position_embeddings"):
        kind = rope.get("rope_type") or rope.get("type")
        if kind in ("yarn", "deepseek_yarn", "longrope"):
            # vLLM's YaRN cache covers original x factor positions
            # (rotary_embedding/yarn_scaling_rope.py ``_compute_cos_sin_cache``).
            positions = int(rope["original_max_position_embeddings"] * float(rope["factor"]))
    quantization = _quantization(text)
    arch = ModelArch(
        id=model_id,
        layers=layers,
        hidden_size=hidden,
        heads=heads,
        kv_heads=1 if mla else kv_heads,
        head_dim=head_dim,
        intermediate_size=int(dense_width),
        vocab_size=vocab,
        max_context=max_context,
        dtype=dtype,
        checkpoint_gib=0.0,
        source=f"config.json of {model_id}",
        architecture=architecture or model_type,
        # transformers' default is untied, except Gemma (tied unless stated).
        tie_word_embeddings=bool(
            text.get("tie_word_embeddings", config.get("tie_word_embeddings", gemma))
        ),
        attention_bias=attention_bias,
        o_bias=model_type == "gpt_oss",
        qk_norm=model_type in ("qwen3", "qwen3_moe", "gemma3", "gemma3_text")
        or bool(text.get("use_qk_norm")),
        norms_per_layer=4 if gemma else 2,
        attention_sinks=model_type == "gpt_oss",
        rotary_dim=rotary_dim,
        rope_positions=positions,
        moe=moe,
        mla=mla,
        quantization=quantization,
        layer_types=layer_types,
        sliding_window=window,
        vision_params=vision,
        notes=tuple(notes),
    )
    # Checkpoint size for download and load time: the stored weights.
    return _with_checkpoint(arch)


def _with_checkpoint(arch: ModelArch) -> ModelArch:
    from dataclasses import replace

    size = arch.weight_bytes / GIB
    return replace(arch, checkpoint_gib=math.floor(size * 100 + 0.5) / 100)
