"""A spec's model, and what a serving image's vLLM can run (pure Python, no Pulumi).

* :class:`CustomModel`: the older inline description of a model (a Llama-style
  decoder's facts), kept for the specs that use it.
* :func:`resolve_model`: the spec's ``model`` (a shipped id or alias, or any
  Hugging Face id together with its ``model_config``) as a
  :class:`~components.models.ModelArch`, with errors that name the field.
* :data:`MIN_VLLM`: the first vLLM release that runs an architecture or a
  checkpoint's quantization method, each with its source; :func:`vllm_refusal`.
* :func:`family_refusal`: whether an image serves on an instance
  (``_versions.Image.families``).

The rules that need the image a spec runs (``inference_service.default_image``)
are applied by :mod:`components.image_rules`; this module is what the spec
itself (``components.config``) may import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from components import models
from components._versions import Image
from components.catalog import Accelerator, DType, InstanceType
from components.models import ModelArch
from components.rules import MODEL_ALIAS_RE, check_model_id


class CustomModel(BaseModel):
    """A model that is not in the catalog, described inline (``model_config`` supersedes it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    params: float = Field(gt=0, description="total parameters, e.g. 7.2e9")
    layers: int = Field(gt=0)
    hidden_size: int = Field(gt=0)
    heads: int = Field(gt=0)
    kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    intermediate_size: int = Field(gt=0)
    vocab_size: int = Field(gt=0)
    max_context: int = Field(gt=0)
    dtype: DType = DType.BF16

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        return check_model_id(v)


def resolve_model(model: str, config: dict[str, Any] | None) -> ModelArch:
    """The model a spec names: from its ``model_config`` if given, else the shipped one.

    Raises:
        ValueError: ``model: ...`` for an id that is neither shipped nor given a
            config (naming the closest shipped ids and ``model_config``), or an
            alias given a config; ``model_config: <key> ...`` for a config that
            cannot be sized.
    """
    if "/" in model:
        check_model_id(model)
    elif not MODEL_ALIAS_RE.fullmatch(model):
        raise ValueError(
            f"model: {model!r} is neither a catalog alias nor a Hugging Face id "
            "(letters, digits, '_', '.', '-')"
        )
    elif config is not None:
        # The pods download ``model`` from the Hub: an alias names no repository.
        raise ValueError(
            f"model: with model_config, give the model's Hugging Face id (owner/name), "
            f"not {model!r}"
        )
    if config is None:
        try:
            return models.get_model(model)
        except ValueError:
            raise ValueError(unknown_model(model)) from None
    return models.resolve(model, config)


def unknown_model(model: str) -> str:
    """The error for an id that is not shipped and has no config: what to pass instead."""
    names = [*models.MODELS, *(a for m in models.MODELS.values() for a in m.aliases)]
    near = models.closest(model, names)
    shipped = f" ({near})" if near.startswith("closest:") else ""
    return (
        f"model: {model!r} is not a shipped model{shipped}; for any other Hugging Face model "
        "pass its config.json as model_config (the control plane fetches it from the Hub "
        "when a request gives none)"
    )


# -- what a vLLM release can run ---------------------------------------------------------


@dataclass(frozen=True)
class MinVllm:
    """The first vLLM release that runs something.

    Attributes:
        kind: ``architecture`` (``config.json`` ``architectures[0]``, which is
            :attr:`ModelArch.architecture`) or ``quantization``
            (``quantization_config.quant_method``, :attr:`Quantization.method`).
        name: The architecture class or quantization method.
        version: The first vLLM release that runs it.
        source: Where that comes from.
    """

    kind: str
    name: str
    version: str
    source: str


_GPT_OSS = "blog.vllm.ai/2025/08/05/gpt-oss.html (gpt-oss and its MXFP4 MoE: vllm 0.10.1)"
_QWEN3 = (
    "github.com/vllm-project/vllm/issues/17327 (Qwen3 usage guide: 'vLLM v0.8.4 and higher "
    "natively supports all Qwen3 and Qwen3MoE models')"
)
_DEEPSEEK_V3 = "github.com/vllm-project/vllm/issues/11559 (DeepSeek-V3: 'supported since v0.6.6')"

#: Architectures and quantization methods newer than some vLLM still in use.
#: What is not listed ran in every vLLM this project pins (Llama, Qwen2,
#: Mixtral; fp8, awq, gptq, compressed-tensors, modelopt).
MIN_VLLM: tuple[MinVllm, ...] = (
    MinVllm("architecture", "GptOssForCausalLM", "0.10.1", _GPT_OSS),
    MinVllm("quantization", "mxfp4", "0.10.1", _GPT_OSS),
    MinVllm("architecture", "Qwen3ForCausalLM", "0.8.4", _QWEN3),
    MinVllm("architecture", "Qwen3MoeForCausalLM", "0.8.4", _QWEN3),
    MinVllm("architecture", "DeepseekV3ForCausalLM", "0.6.6", _DEEPSEEK_V3),
)


def version_tuple(version: str) -> tuple[int, ...]:
    """``0.10.1`` -> (0, 10, 1); local and pre-release tails (``+gptoss``, ``rc1``) ignored."""
    out = []
    for part in version.split("+", 1)[0].split("."):
        digits = ""
        for ch in part:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        out.append(int(digits))
        if len(digits) < len(part):
            break
    return tuple(out)


def vllm_refusal(arch: ModelArch, vllm_version: str) -> MinVllm | None:
    """The newest requirement of ``arch`` that ``vllm_version`` does not meet, or None."""
    have = version_tuple(vllm_version)
    method = arch.quantization.method if arch.quantization else None
    unmet = [
        row
        for row in MIN_VLLM
        if (
            (row.kind == "architecture" and row.name == arch.architecture)
            or (row.kind == "quantization" and row.name == method)
        )
        and have < version_tuple(row.version)
    ]
    return max(unmet, key=lambda r: version_tuple(r.version), default=None)


def describe(arch: ModelArch, need: MinVllm) -> str:
    """``openai/gpt-oss-20b (GptOssForCausalLM) needs vLLM >= 0.10.1 (source)``."""
    what = need.name if need.kind == "architecture" else f"{need.name} weights"
    return f"{arch.id} ({what}) needs vLLM >= {need.version} ({need.source})"


# -- where an image serves ----------------------------------------------------------------


def family_refusal(image: str, facts: Image, instance: InstanceType) -> str | None:
    """Why ``image`` cannot serve on ``instance``, or None.

    ``Image.families`` lists the instance families an image serves on (Neuron
    images: the chips their Neuron SDK supports); empty means NVIDIA instances.
    """
    if facts.families:
        if instance.family in facts.families:
            return None
        return (
            f"{instance.name} is of the {instance.family} family; the serving image {image} "
            f"runs only on {', '.join(facts.families)} instances"
        )
    if instance.accelerator is Accelerator.NVIDIA:
        return None
    return (
        f"{instance.name} has {instance.accelerator.value} accelerators; the serving image "
        f"{image} runs only on NVIDIA instances"
    )
