"""Models from Hugging Face configs: every shipped config, the catalog ids, and the errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from components import catalog, models
from components.models import (
    ENTRIES,
    MODELS,
    Quantization,
    get_model,
    parse_config,
    read_config,
    resolve,
)

CONFIGS = Path(models.__file__).parent / "configs"
FILES = sorted(p.name for p in CONFIGS.glob("*.json") if "hf_quant_config" not in p.name)


@pytest.mark.parametrize("name", FILES)
def test_every_shipped_config_parses(name: str) -> None:
    arch = parse_config(read_config(name), name.removesuffix(".json").replace("__", "/"))
    assert arch.layers > 0 and arch.hidden_size > 0 and arch.vocab_size > 0
    assert arch.heads % arch.kv_heads == 0
    assert len(arch.layer_types) == arch.layers
    assert arch.params > 0 and arch.weight_bytes > 0


def test_every_shipped_config_is_listed_in_sources() -> None:
    sources = (CONFIGS / "SOURCES.md").read_text()
    for p in CONFIGS.glob("*.json"):
        assert p.name in sources, p.name
        digest = hashlib.sha256(p.read_bytes()).hexdigest()
        assert digest[:16] in sources, (p.name, digest)


def test_every_catalog_entry_loads_with_its_source() -> None:
    assert len(MODELS) == len(ENTRIES) >= 20
    for entry in ENTRIES:
        arch = MODELS[entry.id]
        assert arch.source
        assert (CONFIGS / entry.file).exists()
        assert arch.checkpoint_gib > 0


@pytest.mark.parametrize(
    ("name", "params"),
    [
        # Parameter counts the model cards publish.
        ("meta-llama/Llama-3.1-8B", 8.03e9),
        ("meta-llama/Llama-3.1-70B", 70.6e9),
        ("Qwen/Qwen3-8B", 8.2e9),
        ("Qwen/Qwen3-32B", 32.8e9),
        ("Qwen/Qwen3-30B-A3B", 30.5e9),
        ("Qwen/Qwen3-235B-A22B", 235e9),
        ("Qwen/Qwen2.5-7B", 7.61e9),
        ("Qwen/Qwen2.5-72B", 72.7e9),
        ("mistralai/Mixtral-8x7B-v0.1", 46.7e9),
        ("openai/gpt-oss-20b", 20.9e9),
        ("openai/gpt-oss-120b", 116.8e9),
        ("deepseek-ai/DeepSeek-R1", 671e9),
    ],
)
def test_parameter_counts_match_the_model_cards(name: str, params: float) -> None:
    assert get_model(name).params == pytest.approx(params, rel=0.005)


def test_todays_ids_and_aliases_keep_working() -> None:
    for name, model_id in [
        ("llama3-8b", "NousResearch/Meta-Llama-3-8B-Instruct"),
        ("meta-llama/Meta-Llama-3-8B-Instruct", "NousResearch/Meta-Llama-3-8B-Instruct"),
        ("NousResearch/Meta-Llama-3-8B-Instruct", "NousResearch/Meta-Llama-3-8B-Instruct"),
        ("deepseek-r1-llama-8b", "deepseek-ai/DeepSeek-R1-Distill-Llama-8B"),
        ("deepseek-ai/DeepSeek-R1-Distill-Llama-8B", "deepseek-ai/DeepSeek-R1-Distill-Llama-8B"),
        ("deepseek-qwen-32b", "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B"),
        ("deepseek-ai/DeepSeek-R1-Distill-Qwen-32B", "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B"),
        ("gpt-oss-20b", "openai/gpt-oss-20b"),
        ("openai/gpt-oss-20b", "openai/gpt-oss-20b"),
    ]:
        assert get_model(name).id == model_id
    assert get_model("llama3-8b").max_context == 8192
    assert get_model("deepseek-r1-llama-8b").max_context == 131072


def test_the_issues_examples_are_shipped() -> None:
    assert get_model("Qwen/Qwen3-32B").layers == 64
    assert get_model("meta-llama/Llama-3.1-70B-Instruct").kv_heads == 8


def test_catalog_reexports_the_model_names() -> None:
    assert catalog.MODELS is models.MODELS
    assert catalog.get_model is models.get_model
    assert catalog.ModelArch is models.ModelArch
    assert catalog.DType is models.DType
    assert catalog.GIB == models.GIB and catalog.BYTES_PER_ELEMENT is models.BYTES_PER_ELEMENT


# --- What the configs say -----------------------------------------------------------


def test_gpt_oss_is_moe_mxfp4_with_alternating_sliding_layers() -> None:
    oss = get_model("openai/gpt-oss-20b")
    assert oss.moe is not None and (oss.moe.experts, oss.moe.experts_per_token) == (32, 4)
    assert oss.quantization is not None and oss.quantization.method == "mxfp4"
    assert oss.quantization.experts_only
    assert oss.sliding_window == 128 and oss.sliding_window_layers == 12
    assert oss.layer_types[:2] == ("sliding", "full")
    assert oss.attention_bias and oss.attention_sinks
    # YaRN: the rotary cache covers 4096 x 32 positions.
    assert oss.rope_positions == 131072 and oss.rotary_dim == 64


def test_fp8_moe_mla_and_modelopt_configs() -> None:
    assert get_model("Qwen/Qwen3-32B-FP8").quantization == Quantization("fp8", 8)
    moe = get_model("Qwen/Qwen3-30B-A3B").moe
    assert moe is not None and (moe.experts, moe.experts_per_token, moe.moe_layers) == (128, 8, 48)
    r1 = get_model("deepseek-ai/DeepSeek-R1")
    assert r1.mla is not None and r1.kv_values_per_token_layer == 512 + 64
    assert r1.moe is not None and r1.moe.moe_layers == 61 - 3
    assert r1.moe.shared_expert_intermediate_size == 2048
    nv = get_model("nvidia/Llama-3.1-70B-Instruct-FP8")
    assert nv.quantization is not None and nv.quantization.kv_cache_fp8
    mixtral = get_model("mistralai/Mixtral-8x7B-v0.1")
    assert mixtral.moe is not None and mixtral.moe.experts == 8 and not mixtral.sliding_window
    # Qwen2.5: sliding_window is set but use_sliding_window is false: full attention.
    assert get_model("Qwen/Qwen2.5-7B").sliding_window is None
    assert get_model("Qwen/Qwen2.5-1.5B").tie_word_embeddings


LLAMA = read_config("meta-llama__Meta-Llama-3.1-8B.json")


def with_(**changes: Any) -> dict[str, Any]:
    """The Llama-3.1-8B config with some keys changed (None removes a key)."""
    out = {**LLAMA, **changes}
    return {k: v for k, v in out.items() if v is not None}


@pytest.mark.parametrize(
    ("quant", "bytes_per_param"),
    [
        ({"quant_method": "awq", "bits": 4, "group_size": 128}, 0.5 + 2 / 128 + 0.5 / 128),
        ({"quant_method": "gptq", "bits": 4, "group_size": 128}, 0.5 + 2 / 128 + 0.5 / 128),
        ({"quant_method": "gptq", "bits": 8, "group_size": 128}, 1.0),
        ({"quant_method": "fp8", "activation_scheme": "dynamic"}, 1.0),
        (
            {
                "quant_method": "compressed-tensors",
                "config_groups": {
                    "g": {"weights": {"num_bits": 4, "type": "int", "group_size": 64}}
                },
            },
            0.5 + 2 / 64 + 0.5 / 64,
        ),
    ],
)
def test_quantized_linear_layers(quant: dict[str, Any], bytes_per_param: float) -> None:
    arch = parse_config(with_(quantization_config=quant), "acme/q")
    assert arch.quantization is not None
    assert arch.quantization.bytes_per_param == pytest.approx(bytes_per_param)
    mlp = next(g for g in arch.weight_groups() if g.name == "mlp")
    embed = next(g for g in arch.weight_groups() if g.name == "embed_tokens")
    assert arch.bytes_per_param(mlp) == pytest.approx(bytes_per_param)
    assert arch.bytes_per_param(embed) == 2.0  # embeddings stay bf16


def test_sliding_window_patterns() -> None:
    gemma2 = with_(model_type="gemma2", sliding_window=4096, num_hidden_layers=4)
    assert parse_config(gemma2, "g2").layer_types == ("sliding", "full", "sliding", "full")
    gemma3 = with_(model_type="gemma3_text", sliding_window=1024, num_hidden_layers=12)
    types = parse_config(gemma3, "g3").layer_types
    assert types.count("full") == 2 and types[5] == "full"
    mistral = with_(model_type="mistral", sliding_window=4096)
    assert parse_config(mistral, "m").sliding_window_layers == 32
    # A window as long as the context is no window.
    assert parse_config(with_(sliding_window=131072), "x").sliding_window is None


# --- Errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "pattern"),
    [
        ([], r"^model_config: must be a JSON object"),
        ({"foo": 1}, r"^model_config: architectures and model_type are both missing"),
        (
            with_(num_hidden_layers=None),
            r"^model_config: num_hidden_layers is missing; .*hidden_size",
        ),
        (with_(hidden_size="4096"), r"^model_config: hidden_size must be a positive integer"),
        (with_(intermediate_size=None), r"^model_config: intermediate_size is missing"),
        (
            with_(num_key_value_heads=5),
            r"^model_config: num_attention_heads \(32\) must be a multiple of num_key_value_heads",
        ),
        (with_(torch_dtype="int8"), r"^model_config: torch_dtype 'int8' .*valid: bfloat16"),
        (
            with_(quantization_config={"quant_method": "bitsandbytes"}),
            r"^model_config: quantization_config.quant_method 'bitsandbytes' cannot be sized "
            r"\(valid: fp8, .*awq, gptq",
        ),
        (
            with_(quantization_config={"quant_method": "awq", "bits": 3}),
            r"^model_config: quantization_config.bits must be 4 or 8",
        ),
        (
            with_(num_hidden_layers=2, layer_types=["full_attention", "linear_attention"]),
            r"^model_config: layer_types contains 'linear_attention': state-space",
        ),
        (
            with_(num_hidden_layers=2, layer_types=["full_attention"]),
            r"^model_config: layer_types has 1 entries, num_hidden_layers is 2",
        ),
        ({"model_type": "mamba", "architectures": ["MambaForCausalLM"]}, r"state-space layers"),
        (
            {"architectures": ["X"], "model_type": "x", "text_config": LLAMA},
            r"^model_config: text_config is present but vision_config is missing",
        ),
    ],
)
def test_unsizable_configs_name_the_key(config: Any, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        parse_config(config, "acme/bad")


def test_multimodal_config_adds_the_vision_encoder() -> None:
    vision = {"num_hidden_layers": 27, "hidden_size": 1152, "intermediate_size": 4304}
    mm = {"architectures": ["Acme"], "model_type": "acme", "text_config": LLAMA}
    arch = parse_config({**mm, "vision_config": vision}, "acme/vl")
    text = parse_config(LLAMA, "acme/text")
    assert 0.4e9 < arch.params - text.params < 0.5e9  # a SigLIP-sized tower
    assert any("vision encoder" in n for n in arch.notes)


def test_resolve_prefers_the_given_config_and_explains_unknown_ids() -> None:
    qwen = json.loads((CONFIGS / "Qwen__Qwen3-8B.json").read_text())
    assert resolve("acme/my-finetune", qwen).id == "acme/my-finetune"
    assert resolve("acme/my-finetune", qwen).layers == 36
    assert resolve("qwen3-8b", None) is get_model("Qwen/Qwen3-8B")
    with pytest.raises(ValueError, match=r"^model: unknown model 'Qwen/Qwen3-9B' \(closest: ") as e:
        resolve("Qwen/Qwen3-9B", None)
    assert "config.json" in str(e.value)
