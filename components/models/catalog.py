"""The shipped model catalog: Hugging Face configs in ``configs/``, ids and aliases.

Each entry names a config file (copied verbatim, provenance in
``configs/SOURCES.md``). Some ids have no verbatim config here; they reuse the
config of the model whose architecture their model card says they share, with
the facts that differ given as ``overrides`` and the reason in ``source``.
:func:`resolve` sizes any Hugging Face id from its own config, and falls back
to this catalog.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import Any

from components.models.arch import ModelArch
from components.models.hf_config import parse_config

_HUB = "https://huggingface.co/{}/blob/main/config.json"


@dataclass(frozen=True)
class Entry:
    """One catalog model.

    Attributes:
        id: Hugging Face id.
        file: Config file in ``configs/``.
        aliases: Other names accepted for it.
        source: Where its facts come from.
        overrides: Config keys that differ from ``file`` (derived entries).
        quant_file: A ModelOpt ``hf_quant_config.json`` to merge in.
        checkpoint_gib: Published size of the weight files, when known.
    """

    id: str
    file: str
    aliases: tuple[str, ...] = ()
    source: str = ""
    overrides: dict[str, Any] = field(default_factory=dict)
    quant_file: str | None = None
    checkpoint_gib: float | None = None


def _same_as(base: str, why: str) -> str:
    return f"architecture of {base} ({_HUB.format(base)}, file in configs/): {why}"


ENTRIES: tuple[Entry, ...] = (
    # --- Today's ids and aliases (kept working) -------------------------------
    Entry(
        "NousResearch/Meta-Llama-3-8B-Instruct",
        "meta-llama__Meta-Llama-3.1-8B.json",
        ("meta-llama/Meta-Llama-3-8B-Instruct", "llama3-8b"),
        _same_as(
            "meta-llama/Llama-3.1-8B",
            "Llama 3 8B has the same layers, widths and vocabulary, with an 8,192-token "
            "context and no rope scaling (Meta-Llama-3-8B-Instruct model card); its own "
            "config.json was not obtained",
        ),
        {"max_position_embeddings": 8192, "rope_scaling": None},
        checkpoint_gib=14.96,
    ),
    Entry(
        "deepseek-ai/DeepSeek-R1-Distill-Llama-8B",
        "meta-llama__Meta-Llama-3.1-8B.json",
        ("deepseek-r1-llama-8b",),
        _same_as(
            "meta-llama/Llama-3.1-8B",
            "the DeepSeek-R1 model card lists it as distilled from Llama-3.1-8B; its own "
            "config.json was not obtained",
        ),
        checkpoint_gib=14.96,
    ),
    Entry(
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B",
        "Qwen__Qwen2.5-32B.json",
        ("deepseek-qwen-32b",),
        _same_as(
            "Qwen/Qwen2.5-32B",
            "the DeepSeek-R1 model card lists it as distilled from Qwen2.5-32B; its own "
            "config.json was not obtained",
        ),
        checkpoint_gib=61.03,
    ),
    Entry(
        "openai/gpt-oss-20b",
        "openai__gpt-oss-20b.json",
        ("gpt-oss-20b",),
        checkpoint_gib=12.82,
    ),
    # --- Llama ----------------------------------------------------------------
    Entry(
        "meta-llama/Llama-3.1-8B",
        "meta-llama__Meta-Llama-3.1-8B.json",
        ("meta-llama/Meta-Llama-3.1-8B", "llama3.1-8b"),
    ),
    Entry(
        "meta-llama/Llama-3.1-8B-Instruct",
        "meta-llama__Meta-Llama-3.1-8B.json",
        ("meta-llama/Meta-Llama-3.1-8B-Instruct", "llama3.1-8b-instruct"),
        _same_as(
            "meta-llama/Llama-3.1-8B",
            "the Instruct config differs only in eos_token_id and transformers_version",
        ),
    ),
    Entry(
        "meta-llama/Llama-3.1-70B",
        "meta-llama__Meta-Llama-3.1-70B.json",
        ("meta-llama/Meta-Llama-3.1-70B", "llama3.1-70b"),
    ),
    Entry(
        "meta-llama/Llama-3.1-70B-Instruct",
        "meta-llama__Meta-Llama-3.1-70B.json",
        ("meta-llama/Meta-Llama-3.1-70B-Instruct", "llama3.1-70b-instruct"),
        _same_as(
            "meta-llama/Llama-3.1-70B",
            "the Instruct config differs only in eos_token_id and transformers_version",
        ),
    ),
    Entry(
        "meta-llama/Llama-3.3-70B-Instruct",
        "meta-llama__Meta-Llama-3.1-70B.json",
        ("llama3.3-70b",),
        _same_as(
            "meta-llama/Llama-3.1-70B",
            "the Llama 3.3 model card gives the same architecture as 3.1 70B; its own "
            "config.json was not obtained",
        ),
    ),
    Entry(
        "nvidia/Llama-3.1-70B-Instruct-FP8",
        "nvidia__Llama-3.1-70B-Instruct-FP8.json",
        quant_file="nvidia__Llama-3.1-70B-Instruct-FP8.hf_quant_config.json",
    ),
    # --- Qwen -----------------------------------------------------------------
    Entry("Qwen/Qwen3-0.6B", "Qwen__Qwen3-0.6B.json", ("qwen3-0.6b",)),
    Entry("Qwen/Qwen3-1.7B", "Qwen__Qwen3-1.7B.json", ("qwen3-1.7b",)),
    Entry("Qwen/Qwen3-8B", "Qwen__Qwen3-8B.json", ("qwen3-8b",)),
    Entry("Qwen/Qwen3-32B", "Qwen__Qwen3-32B.json", ("qwen3-32b",)),
    Entry("Qwen/Qwen3-32B-FP8", "Qwen__Qwen3-32B-FP8.json", ("qwen3-32b-fp8",)),
    Entry("Qwen/Qwen3-30B-A3B", "Qwen__Qwen3-30B-A3B.json", ("qwen3-30b-a3b",)),
    Entry("Qwen/Qwen3-30B-A3B-FP8", "Qwen__Qwen3-30B-A3B-FP8.json", ("qwen3-30b-a3b-fp8",)),
    Entry("Qwen/Qwen3-235B-A22B", "Qwen__Qwen3-235B-A22B.json", ("qwen3-235b-a22b",)),
    Entry("Qwen/Qwen2.5-1.5B", "Qwen__Qwen2.5-1.5B.json", ("qwen2.5-1.5b",)),
    Entry("Qwen/Qwen2.5-7B", "Qwen__Qwen2.5-7B.json", ("qwen2.5-7b",)),
    Entry("Qwen/Qwen2.5-32B", "Qwen__Qwen2.5-32B.json", ("qwen2.5-32b",)),
    Entry("Qwen/Qwen2.5-72B", "Qwen__Qwen2.5-72B.json", ("qwen2.5-72b",)),
    # --- Mistral --------------------------------------------------------------
    Entry("mistralai/Mixtral-8x7B-v0.1", "mistralai__Mixtral-8x7B-v0.1.json", ("mixtral-8x7b",)),
    Entry(
        "mistralai/Mixtral-8x7B-Instruct-v0.1",
        "mistralai__Mixtral-8x7B-v0.1.json",
        ("mixtral-8x7b-instruct",),
        _same_as(
            "mistralai/Mixtral-8x7B-v0.1",
            "the Instruct model card gives the same architecture; its own config.json "
            "was not obtained",
        ),
    ),
    Entry("mistralai/Mixtral-8x22B-v0.1", "mistralai__Mixtral-8x22B-v0.1.json", ("mixtral-8x22b",)),
    # --- OpenAI, DeepSeek -----------------------------------------------------
    Entry("openai/gpt-oss-120b", "openai__gpt-oss-120b.json", ("gpt-oss-120b",)),
    Entry("deepseek-ai/DeepSeek-R1", "deepseek-ai__DeepSeek-R1.json", ("deepseek-r1",)),
)


def read_config(name: str) -> dict[str, Any]:
    """One shipped config file, parsed."""
    text = resources.files("components.models").joinpath("configs", name).read_text()
    data: dict[str, Any] = json.loads(text)
    return data


def _load(entry: Entry) -> ModelArch:
    config = {**read_config(entry.file), **entry.overrides}
    if entry.quant_file:
        # ModelOpt keeps its scheme in hf_quant_config.json; vLLM merges it as
        # quant_method "modelopt" (model_executor/layers/quantization/modelopt.py).
        scheme = read_config(entry.quant_file)["quantization"]
        config["quantization_config"] = {"quant_method": "modelopt", **scheme}
    arch = parse_config(config, entry.id)
    return replace(
        arch,
        aliases=entry.aliases,
        source=entry.source or f"{_HUB.format(entry.id)} (configs/{entry.file})",
        checkpoint_gib=entry.checkpoint_gib or arch.checkpoint_gib,
    )


#: Every shipped model by id; read from configs/ at import (a few ms).
MODELS: dict[str, ModelArch] = {e.id: _load(e) for e in ENTRIES}


def closest(name: str, choices: list[str], n: int = 3) -> str:
    """Return 'did you mean' text for an unknown name, or the valid names."""
    near = difflib.get_close_matches(name, choices, n=n, cutoff=0.4)
    if near:
        return "closest: " + ", ".join(near)
    return "valid: " + ", ".join(sorted(choices))


def get_model(model_id: str) -> ModelArch:
    """Look a shipped model up by Hugging Face id or alias (case-insensitive).

    Raises:
        ValueError: naming the closest catalog ids and how to size any other model.
    """
    wanted = model_id.strip().lower()
    for m in MODELS.values():
        if wanted == m.id.lower() or wanted in (a.lower() for a in m.aliases):
            return m
    names = list(MODELS) + [a for m in MODELS.values() for a in m.aliases]
    raise ValueError(
        f"model: unknown model {model_id!r} ({closest(model_id, names)}); to plan a model "
        "that is not shipped, pass its Hugging Face config.json (model_config, or "
        "--model-config FILE)"
    )


def resolve(model_id: str, config: dict[str, Any] | None) -> ModelArch:
    """The model to plan: from its own config.json if given, else the shipped one.

    Args:
        model_id: Hugging Face id (or a catalog alias when no config is given).
        config: The model's ``config.json`` as a dict, or None.

    Raises:
        ValueError: ``model_config: ...`` for a config that cannot be sized, or
            ``model: unknown model ...`` naming the closest shipped ids.
    """
    if config is not None:
        return parse_config(config, model_id.strip())
    return get_model(model_id)
