"""Choosing: every candidate (instance, TP), the best one, and why nothing fits.

``optimize`` orders the fitting candidates: ``cost`` (cheapest $/h, the
default), ``cost-per-token`` (cheapest $ per million output tokens at the
requested concurrency) or ``latency`` (fastest single stream).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

from components import models
from components.catalog import INSTANCES, Accelerator, InstanceType, get_instance
from components.models import ModelArch, Quantization
from components.planner.estimate import Estimate, estimate
from components.planner.sizing import valid_tensor_parallel
from components.planner.vllm_profile import PINNED, RAY
from components.pool_rules import refusal as pool_refusal

if TYPE_CHECKING:
    from components.config import EndpointSpec

OPTIMIZE = ("cost", "cost-per-token", "latency")


class PlanError(ValueError):
    """No candidate fits; the message shows the numbers and what would fit."""


def _sort_key(optimize: str) -> Callable[[Estimate], tuple[Any, ...]]:
    if optimize not in OPTIMIZE:
        raise ValueError(f"optimize: {optimize!r} is not one of {', '.join(OPTIMIZE)}")
    if optimize == "cost-per-token":
        return lambda e: (not e.fits, e.cost_per_million_tokens, e.cost_per_hour, e.tensor_parallel)
    if optimize == "latency":
        return lambda e: (not e.fits, -e.decode_tokens_per_s, e.cost_per_hour, e.tensor_parallel)
    return lambda e: (not e.fits, e.cost_per_hour, e.cost_per_million_tokens, e.tensor_parallel)


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
    optimize: str = "cost",
    vllm_version: str = PINNED,
) -> list[Estimate]:
    """Every (instance, valid TP) considered, fitting first, then by ``optimize``.

    ``accelerator`` None means the instance's accelerator when an instance is
    given, NVIDIA otherwise (the same default as ``EndpointSpec``). ``allowed``
    limits the instance types to those a node pool can launch.

    Raises:
        ValueError: a bad argument, or a tensor_parallel no instance accepts.
    """
    key = _sort_key(optimize)
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
                    vllm_version=vllm_version,
                )
            )
    if not out:
        raise ValueError(
            f"tensor_parallel: {tensor_parallel} is not valid for {model.id} on any "
            f"{acc.value} instance type"
        )
    return sorted(out, key=key)


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


class PlanOptions(TypedDict, total=False):
    """:func:`candidates`' keyword arguments (and their defaults there), for
    the functions that hand them on."""

    accelerator: Accelerator | str | None
    max_model_len: int | None
    gpu_memory_utilization: float
    concurrency: int
    storage: str
    instance: InstanceType | None
    tensor_parallel: int | None
    pipeline_parallel: int
    max_num_seqs: int | None
    max_num_batched_tokens: int | None
    allowed: Callable[[InstanceType], bool] | None
    optimize: str
    vllm_version: str


#: The options that size one configuration, as :func:`estimate` takes them.
_SIZING = (
    "gpu_memory_utilization",
    "concurrency",
    "storage",
    "max_num_seqs",
    "max_num_batched_tokens",
    "vllm_version",
)


def choose(model: ModelArch, **options: Unpack[PlanOptions]) -> Estimate:
    """The best candidate that fits (see :func:`candidates` for the arguments).

    max_model_len None means the model's full context, and the planner never
    shortens it silently: when the full context fits nowhere among the
    candidates, :class:`PlanError` names the largest max_model_len that fits on
    the cheapest candidate and the instance types that fit the full context.

    Raises:
        PlanError: no candidate fits; the message has the numbers.
        ValueError: a bad argument.
    """
    cands = candidates(model, **options)
    if cands[0].fits:
        return cands[0]
    raise PlanError(no_fit_message(model, cands, options))


def no_fit_message(model: ModelArch, cands: list[Estimate], options: PlanOptions) -> str:
    """Why nothing fits: the cheapest candidate's numbers, a shorter context, other types."""
    max_model_len = options.get("max_model_len")
    instance = options.get("instance")
    tensor_parallel = options.get("tensor_parallel")
    pipeline_parallel = options.get("pipeline_parallel", 1)
    common: dict[str, Any] = {k: v for k, v in options.items() if k in _SIZING}
    length = cands[0].max_model_len
    acc = cands[0].accelerator
    where = instance.name if instance is not None else f"any {acc.value} instance type"
    if tensor_parallel is not None:
        where += f" with tensor_parallel {tensor_parallel}"
    head = f"{model.id} at max_model_len {length:,} fits no candidate on {where}"
    cheapest = min(cands, key=_sort_key("cost"))
    parts = [
        f"cheapest candidate {cheapest.instance_type} TP {cheapest.tensor_parallel}: "
        f"{cheapest.reason}"
    ]
    shorter = None
    for c in sorted(cands, key=_sort_key("cost")):
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
    others.sort(key=_sort_key("cost"))
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


def _spec_model_config(spec: EndpointSpec) -> dict[str, Any] | None:
    """The spec's inline config.json, if it has one.

    Pydantic reserves ``model_config`` for the model's own settings
    (``ConfigDict``), so ``getattr(spec, "model_config")`` is that dict until a
    field (named or aliased ``model_config``) holds the Hugging Face config.
    """
    for name, info in getattr(type(spec), "model_fields", {}).items():
        if "model_config" in (name, getattr(info, "alias", None)):
            value = getattr(spec, name)
            return dict(value) if value is not None else None
    value = getattr(spec, "model_config", None)
    if isinstance(value, dict) and ("architectures" in value or "model_type" in value):
        return dict(value)
    return None


def model_for_spec(spec: EndpointSpec) -> ModelArch:
    """The model of a spec: its ``model_config``, the shipped config, or ``custom_model``.

    ``custom_model`` (kept until the spec drops it) is read as a Llama-style
    decoder config with its facts.
    """
    cm = getattr(spec, "custom_model", None)
    if cm is None:
        return models.resolve(spec.model, _spec_model_config(spec))
    config: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "num_hidden_layers": cm.layers,
        "hidden_size": cm.hidden_size,
        "num_attention_heads": cm.heads,
        "num_key_value_heads": cm.kv_heads,
        "head_dim": cm.head_dim,
        "intermediate_size": cm.intermediate_size,
        "vocab_size": cm.vocab_size,
        "max_position_embeddings": cm.max_context,
        "torch_dtype": "float16" if cm.dtype.value == "float16" else "bfloat16",
    }
    arch = models.parse_config(config, cm.id)
    if cm.dtype.value == "fp8":
        arch = replace(arch, quantization=Quantization("fp8", 8))
    elif cm.dtype.value == "mxfp4":
        arch = replace(arch, quantization=Quantization("mxfp4", 4, 32))
    return replace(
        arch,
        source="custom_model in the endpoint spec",
        checkpoint_gib=round(arch.weight_bytes / models.GIB, 2),
    )


def plan_for_spec(spec: EndpointSpec) -> Estimate:
    """Plan an endpoint spec: its model, accelerator, instance, TP/PP, context, storage.

    Anything the spec leaves None is chosen (:func:`choose`); anything it sets
    is kept and checked. RayService endpoints run the Ray image's vLLM
    (``vllm_profile.RAY``), the others the pinned one.

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
    ray = getattr(spec.serving, "value", spec.serving) == "ray-service"
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
        max_num_batched_tokens=getattr(spec.vllm, "max_num_batched_tokens", None),
        allowed=lambda i: why_not(i) is None,
        vllm_version=RAY if ray else PINNED,
    )
