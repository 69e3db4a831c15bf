"""Models: architecture facts read from Hugging Face configs, and the shipped catalog.

* :class:`ModelArch` and its parts (:class:`MoE`, :class:`MLA`,
  :class:`Quantization`, :class:`WeightGroup`), in ``arch.py``.
* :func:`parse_config`: a ``config.json`` dict -> :class:`ModelArch`, with
  ``model_config: <key> ...`` errors for what cannot be sized.
* :data:`MODELS`, :func:`get_model`, :func:`resolve`: the configs shipped in
  ``configs/`` (provenance in ``configs/SOURCES.md``), their ids and aliases.
"""

from components.models.arch import (
    BYTES_PER_ELEMENT,
    GIB,
    MLA,
    DType,
    ModelArch,
    MoE,
    Quantization,
    Shard,
    WeightGroup,
)
from components.models.catalog import ENTRIES, MODELS, closest, get_model, read_config, resolve
from components.models.hf_config import QUANT_METHODS, parse_config

__all__ = [
    "BYTES_PER_ELEMENT",
    "ENTRIES",
    "GIB",
    "MLA",
    "MODELS",
    "QUANT_METHODS",
    "DType",
    "MoE",
    "ModelArch",
    "Quantization",
    "Shard",
    "WeightGroup",
    "closest",
    "get_model",
    "parse_config",
    "read_config",
    "resolve",
]
