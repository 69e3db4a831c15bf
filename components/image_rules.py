"""Whether the pinned serving image of a spec can serve it (pure Python over the pins).

The image a spec runs is ``inference_service.default_image`` (serving mode,
accelerator, EFA), and its facts are ``_versions.IMAGES``: the vLLM inside and
the instance families it serves on. :func:`check_serving` refuses, naming the
field, a model whose architecture or quantization that vLLM cannot run
(``model_spec.MIN_VLLM``; ``serving`` when only the Ray image falls short) and
an instance the image does not serve on. The control plane applies it before
anything is recorded.

It lives apart from ``components.config`` because ``inference_service``
imports the spec.
"""

from __future__ import annotations

from components import _versions
from components.catalog import Accelerator, get_instance
from components.config import EndpointSpec, ServingMode
from components.inference_service import default_image
from components.model_spec import describe, family_refusal, vllm_refusal
from components.planner import model_for_spec


def serving_image(spec: EndpointSpec, serving: ServingMode | None = None) -> str:
    """The pinned image that serves ``spec`` (in ``serving`` mode, default its own)."""
    return default_image(
        serving or spec.serving,
        neuron=spec.resolved_accelerator is Accelerator.NEURON,
        efa=spec.pool.efa,
    )


def check_serving(spec: EndpointSpec, planned_instance: str | None = None) -> None:
    """Refuse what the spec's serving image cannot serve.

    Args:
        spec: A valid spec.
        planned_instance: The instance type the planner chose, when the spec
            names none (checked like ``instance_type``).

    Raises:
        ValueError: one line per problem, each naming its field (``model``,
            ``serving``, ``instance_type``, ``pool.instance_types``).
    """
    image = serving_image(spec)
    facts = _versions.IMAGES[image]
    problems = []
    arch = model_for_spec(spec)
    need = vllm_refusal(arch, facts.vllm) if facts.vllm else None
    if need is not None:
        field, hint = "model", ""
        if spec.serving is not ServingMode.DEPLOYMENT:
            other = serving_image(spec, ServingMode.DEPLOYMENT)
            other_vllm = _versions.IMAGES[other].vllm
            if other_vllm and vllm_refusal(arch, other_vllm) is None:
                field = "serving"
                hint = f"; serving 'deployment' ({other}, vLLM {other_vllm}) can"
        problems.append(
            f"{field}: {describe(arch, need)}; serving {spec.serving.value!r} runs {image}, "
            f"whose vLLM is {facts.vllm}{hint}"
        )
    instances = [("instance_type", spec.instance_type or planned_instance)]
    instances += [("pool.instance_types", name) for name in spec.pool.instance_types]
    for field, name in instances:
        if name and (why := family_refusal(image, facts, get_instance(name))) is not None:
            problems.append(f"{field}: {why}")
    if problems:
        raise ValueError("\n".join(problems))
