"""Instance catalog: the accelerators and EC2 instance types the components use.

Every number carries its source. Instance facts come from the AWS
instance-type pages and the us-east-1 on-demand price list (2025-26), and
accelerator facts from the vendor data sheets. "Usable" memory is what the CUDA
runtime reports as total device memory (``torch.cuda.mem_get_info()[1]``), which
is what vLLM multiplies by ``gpu_memory_utilization``; it is less than the
marketing figure because of ECC and the driver's reservation.

Models live in :mod:`components.models` (read from Hugging Face configs); the
names below are re-exported from there for the modules that import them here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from components.models import (
    BYTES_PER_ELEMENT,
    GIB,
    MODELS,
    DType,
    ModelArch,
    MoE,
    closest,
    get_model,
)

__all__ = [
    "BYTES_PER_ELEMENT",
    "GIB",
    "INSTANCES",
    "MODELS",
    "Accelerator",
    "AcceleratorChip",
    "DType",
    "InstanceType",
    "MoE",
    "ModelArch",
    "closest",
    "get_instance",
    "get_model",
]


class Accelerator(StrEnum):
    """The accelerator families the project can schedule on."""

    NVIDIA = "nvidia"
    NEURON = "neuron"


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
        sm: CUDA compute capability x 10 (0 for Neuron); picks vLLM's kernels
            (e.g. the MXFP4 MoE backend).
    """

    name: str
    memory_gib: float
    usable_gib: float
    bandwidth_gbs: float
    cores: int
    source: str
    sm: int = 0


A10G = AcceleratorChip(
    "NVIDIA A10G",
    22.49,
    22.30,
    600,
    1,
    "NVIDIA A10G data sheet; 22.30 GiB total in vLLM logs on g5",
    86,
)
L4 = AcceleratorChip("NVIDIA L4", 22.49, 22.05, 300, 1, "NVIDIA L4 data sheet", 89)
L40S = AcceleratorChip(
    "NVIDIA L40S",
    44.99,
    44.39,
    864,
    1,
    "NVIDIA L40S data sheet; 44.39 GiB total in vLLM logs on g6e.48xlarge "
    "(github.com/gnosia93/vlm-distillation, vLLM 0.6.6)",
    89,
)
A100_40 = AcceleratorChip("NVIDIA A100 40GB", 40.0, 39.39, 1555, 1, "NVIDIA A100 data sheet", 80)
A100_80 = AcceleratorChip("NVIDIA A100 80GB", 80.0, 79.15, 2039, 1, "NVIDIA A100 data sheet", 80)
H100 = AcceleratorChip(
    "NVIDIA H100 80GB",
    80.0,
    79.19,
    3350,
    1,
    "NVIDIA H100 SXM data sheet; 79.19 GiB total in vLLM 0.19.0 logs (llm-d-planner)",
    90,
)
# The data sheet's "141GB" is nearly GiB: nvidia-smi reports 143,771 MiB (140.4 GiB).
H200 = AcceleratorChip("NVIDIA H200", 140.4, 139.8, 4800, 1, "NVIDIA H200 data sheet", 90)
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
