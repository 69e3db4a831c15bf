"""Model and instance catalogs: the facts the planner and the components use.

Every number carries its source. Model facts come from each model's published
``config.json`` on Hugging Face (at the revision named); instance facts from the
AWS instance-type pages and the us-east-1 on-demand price list (2025-26), and
accelerator facts from the vendor data sheets. "Usable" memory is what the CUDA
runtime reports as total device memory (``torch.cuda.mem_get_info()[1]``), which
is what vLLM multiplies by ``gpu_memory_utilization``; it is less than the
marketing figure because of ECC and the driver's reservation.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, replace
from enum import StrEnum

GIB = 1024**3


class Accelerator(StrEnum):
    """The accelerator families the project can schedule on."""

    NVIDIA = "nvidia"
    NEURON = "neuron"


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


@dataclass(frozen=True)
class MoE:
    """Mixture-of-experts facts."""

    experts: int
    experts_per_token: int
    #: Parameters that live in expert MLPs (stored in ``expert_dtype``).
    expert_params: float
    expert_dtype: DType


@dataclass(frozen=True)
class ModelArch:
    """The architecture facts of a model that drive memory and speed.

    Attributes:
        id: Hugging Face model id.
        params: Total parameter count.
        layers: Transformer layers (``num_hidden_layers``).
        hidden_size: ``hidden_size``.
        heads: ``num_attention_heads``.
        kv_heads: ``num_key_value_heads`` (grouped-query attention).
        head_dim: Per-head dimension.
        intermediate_size: Dense MLP width (per expert for MoE models).
        vocab_size: ``vocab_size``.
        max_context: ``max_position_embeddings``.
        dtype: Weight dtype of the checkpoint (``torch_dtype``).
        moe: Mixture-of-experts facts, or None for dense models.
        sliding_window: Window of the sliding-window layers, or None.
        sliding_window_layers: How many layers use the sliding window.
        checkpoint_gib: Size of the safetensors files, for download and load time.
        source: Where these facts come from.
    """

    id: str
    params: float
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
    moe: MoE | None = None
    sliding_window: int | None = None
    sliding_window_layers: int = 0
    aliases: tuple[str, ...] = field(default=())

    @property
    def active_params(self) -> float:
        """Parameters touched per token (all of them for dense models)."""
        if self.moe is None:
            return self.params
        per_expert = self.moe.expert_params / self.moe.experts
        return self.params - self.moe.expert_params + per_expert * self.moe.experts_per_token

    @property
    def weight_bytes(self) -> float:
        """Bytes of all weights as vLLM loads them."""
        if self.moe is None:
            return self.params * BYTES_PER_ELEMENT[self.dtype]
        dense = (self.params - self.moe.expert_params) * BYTES_PER_ELEMENT[self.dtype]
        return dense + self.moe.expert_params * BYTES_PER_ELEMENT[self.moe.expert_dtype]


_LLAMA_8B = ModelArch(
    id="deepseek-ai/DeepSeek-R1-Distill-Llama-8B",
    # Llama-3.1-8B architecture; 8.03e9 parameters (model card).
    params=8.03e9,
    layers=32,
    hidden_size=4096,
    heads=32,
    kv_heads=8,
    head_dim=128,
    intermediate_size=14336,
    vocab_size=128256,
    max_context=131072,
    dtype=DType.BF16,
    checkpoint_gib=14.96,
    source="huggingface.co/deepseek-ai/DeepSeek-R1-Distill-Llama-8B config.json",
    aliases=("deepseek-r1-llama-8b",),
)

MODELS: dict[str, ModelArch] = {
    m.id: m
    for m in (
        _LLAMA_8B,
        replace(
            _LLAMA_8B,
            # Llama-3-8B: the same architecture with an 8k context.
            id="NousResearch/Meta-Llama-3-8B-Instruct",
            max_context=8192,
            source="huggingface.co/NousResearch/Meta-Llama-3-8B-Instruct config.json",
            aliases=("meta-llama/Meta-Llama-3-8B-Instruct", "llama3-8b"),
        ),
        ModelArch(
            id="deepseek-ai/DeepSeek-R1-Distill-Qwen-32B",
            # Qwen2.5-32B architecture; 32.76e9 parameters (model card).
            params=32.76e9,
            layers=64,
            hidden_size=5120,
            heads=40,
            kv_heads=8,
            head_dim=128,
            intermediate_size=27648,
            vocab_size=152064,
            max_context=131072,
            dtype=DType.BF16,
            checkpoint_gib=61.03,
            source="huggingface.co/deepseek-ai/DeepSeek-R1-Distill-Qwen-32B config.json",
            aliases=("deepseek-qwen-32b",),
        ),
        ModelArch(
            id="openai/gpt-oss-20b",
            # 20.9e9 total, 3.6e9 active parameters; MoE weights in MXFP4, the
            # rest in bf16 (gpt-oss model card, table 1).
            params=20.91e9,
            layers=24,
            hidden_size=2880,
            heads=64,
            kv_heads=8,
            head_dim=64,
            intermediate_size=2880,
            vocab_size=201088,
            max_context=131072,
            dtype=DType.BF16,
            checkpoint_gib=12.82,
            source="huggingface.co/openai/gpt-oss-20b config.json; gpt-oss model card",
            moe=MoE(
                experts=32, experts_per_token=4, expert_params=19.12e9, expert_dtype=DType.MXFP4
            ),
            # Alternating dense and 128-token banded attention: 12 of 24 layers.
            sliding_window=128,
            sliding_window_layers=12,
            aliases=("gpt-oss-20b",),
        ),
    )
}


@dataclass(frozen=True)
class AcceleratorChip:
    """One accelerator device.

    Attributes:
        name: Marketing name.
        memory_gib: Memory on the device as sold (GB converted to GiB).
        usable_gib: What the runtime reports as total memory.
        bandwidth_gbs: Peak memory bandwidth, GB/s (10^9 bytes).
        cores: Compute cores the runtime schedules on (NeuronCores for Neuron).
        source: Data sheet.
    """

    name: str
    memory_gib: float
    usable_gib: float
    bandwidth_gbs: float
    cores: int
    source: str


A10G = AcceleratorChip(
    "NVIDIA A10G",
    22.49,
    22.30,
    600,
    1,
    "NVIDIA A10G data sheet; 22.30 GiB total in vLLM logs on g5",
)
L4 = AcceleratorChip("NVIDIA L4", 22.49, 22.05, 300, 1, "NVIDIA L4 data sheet")
L40S = AcceleratorChip("NVIDIA L40S", 44.99, 44.39, 864, 1, "NVIDIA L40S data sheet")
A100_40 = AcceleratorChip("NVIDIA A100 40GB", 40.0, 39.39, 1555, 1, "NVIDIA A100 data sheet")
A100_80 = AcceleratorChip("NVIDIA A100 80GB", 80.0, 79.15, 2039, 1, "NVIDIA A100 data sheet")
H100 = AcceleratorChip("NVIDIA H100 80GB", 80.0, 79.19, 3350, 1, "NVIDIA H100 SXM data sheet")
# The data sheet's "141GB" is nearly GiB: nvidia-smi reports 143,771 MiB (140.4 GiB).
H200 = AcceleratorChip("NVIDIA H200", 140.4, 139.8, 4800, 1, "NVIDIA H200 data sheet")
INFERENTIA2 = AcceleratorChip(
    "AWS Inferentia2",
    32.0,
    32.0,
    820,
    2,
    "AWS Inferentia2 architecture page: 32 GB HBM, 820 GB/s, 2 NeuronCore-v2 per chip",
)


@dataclass(frozen=True)
class InstanceType:
    """An EC2 instance type with accelerators.

    Attributes:
        name: EC2 instance type.
        accelerator: NVIDIA or Neuron.
        chip: The accelerator device.
        count: Devices per instance.
        vcpu: vCPUs.
        memory_gib: Host memory.
        price_per_hour: us-east-1 on-demand, USD.
        efa: Elastic Fabric Adapter interfaces supported (0 = none).
        auto_mode: Offered by EKS Auto Mode NodePools.
    """

    name: str
    accelerator: Accelerator
    chip: AcceleratorChip
    count: int
    vcpu: int
    memory_gib: int
    price_per_hour: float
    efa: int = 0
    auto_mode: bool = True

    @property
    def family(self) -> str:
        """The instance family, e.g. ``g5``."""
        return self.name.split(".", 1)[0]

    @property
    def generation(self) -> int:
        """The generation digit Karpenter and Auto Mode select on."""
        return int("".join(c for c in self.family if c.isdigit()) or 0)

    @property
    def category(self) -> str:
        """The instance category letter(s), e.g. ``g`` or ``p`` or ``inf``."""
        return "".join(c for c in self.family if c.isalpha() and c not in "de")


_NV, _NE = Accelerator.NVIDIA, Accelerator.NEURON

# Source: aws.amazon.com/ec2/instance-types (accelerated computing) and the
# EC2 on-demand price list for us-east-1, Linux, 2025-26 (DESIGN.md table).
INSTANCES: dict[str, InstanceType] = {
    i.name: i
    for i in (
        InstanceType("g5.xlarge", _NV, A10G, 1, 4, 16, 1.006),
        InstanceType("g5.4xlarge", _NV, A10G, 1, 16, 64, 1.624),
        InstanceType("g5.12xlarge", _NV, A10G, 4, 48, 192, 5.672),
        InstanceType("g5.48xlarge", _NV, A10G, 8, 192, 768, 16.288),
        InstanceType("g6.xlarge", _NV, L4, 1, 4, 16, 0.805),
        InstanceType("g6.12xlarge", _NV, L4, 4, 48, 192, 4.602),
        InstanceType("g6e.xlarge", _NV, L40S, 1, 4, 32, 1.861),
        InstanceType("g6e.12xlarge", _NV, L40S, 4, 48, 384, 10.493),
        InstanceType("p4d.24xlarge", _NV, A100_40, 8, 96, 1152, 21.958, efa=4),
        InstanceType("p4de.24xlarge", _NV, A100_80, 8, 96, 1152, 27.447, efa=4, auto_mode=False),
        InstanceType("p5.48xlarge", _NV, H100, 8, 192, 2048, 55.04, efa=32),
        InstanceType("p5en.48xlarge", _NV, H200, 8, 192, 2048, 63.296, efa=16, auto_mode=False),
        InstanceType("inf2.xlarge", _NE, INFERENTIA2, 1, 4, 16, 0.758),
        InstanceType("inf2.8xlarge", _NE, INFERENTIA2, 1, 32, 128, 1.968),
        InstanceType("inf2.24xlarge", _NE, INFERENTIA2, 6, 96, 384, 6.491),
        InstanceType("inf2.48xlarge", _NE, INFERENTIA2, 12, 192, 768, 12.981),
    )
}


def closest(name: str, choices: list[str], n: int = 3) -> str:
    """Return 'did you mean' text for an unknown name, or the valid names."""
    near = difflib.get_close_matches(name, choices, n=n, cutoff=0.4)
    if near:
        return "closest: " + ", ".join(near)
    return "valid: " + ", ".join(sorted(choices))


def get_model(model_id: str) -> ModelArch:
    """Look a model up by Hugging Face id or alias (case-insensitive).

    Raises:
        ValueError: naming the closest catalog ids.
    """
    wanted = model_id.strip().lower()
    for m in MODELS.values():
        if wanted == m.id.lower() or wanted in (a.lower() for a in m.aliases):
            return m
    names = list(MODELS) + [a for m in MODELS.values() for a in m.aliases]
    raise ValueError(f"model: unknown model {model_id!r} ({closest(model_id, names)})")


def get_instance(name: str) -> InstanceType:
    """Look an instance type up by name.

    Raises:
        ValueError: naming the closest known instance types.
    """
    try:
        return INSTANCES[name.strip().lower()]
    except KeyError:
        raise ValueError(
            f"instance_type: unknown instance type {name!r} ({closest(name, list(INSTANCES))})"
        ) from None
