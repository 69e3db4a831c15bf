"""Sizing, memory, throughput, cost and cold start of a vLLM endpoint (pure Python).

Given a model (:class:`~components.models.ModelArch`, read from its Hugging
Face ``config.json``) and an instance type, the planner predicts what vLLM will
do at start-up (how much memory the weights, activations and runtime take, how
many KV-cache tokens are left, whether vLLM will refuse to start) and what the
endpoint delivers: tokens per second, time to first token, dollars per hour
and per million tokens, and how long a cold start takes. With no instance
given, :func:`choose` picks the best that fits.

Modules:

* ``vllm_profile``: the start-up constants of the pinned vLLM (0.33.0), the
  Ray image's (0.29.0) and the versions of the published logs, each cited.
* ``memory``: weights per rank, activation peak, KV blocks and groups, the fit.
* ``speed``: decode step, aggregate throughput with prefills, TTFT, $/1M tokens.
* ``sizing``: one configuration's memory and fit (NVIDIA, Neuron), max_num_seqs.
* ``estimate``: the Estimate of one configuration: sizing, speed, cost, cold start.
* ``choose``: candidates, the choice, the no-fit message, ``plan_for_spec``.

docs/planner.md explains every constant and tabulates predicted vs logged.
"""

from components.planner.choose import (
    OPTIMIZE,
    PlanError,
    candidates,
    choose,
    largest_max_model_len,
    model_for_spec,
    plan_for_spec,
)
from components.planner.estimate import Estimate, estimate
from components.planner.sizing import valid_tensor_parallel
from components.planner.speed import OUTPUT_TOKENS, PROMPT_TOKENS, TTFT_PROMPT_TOKENS
from components.planner.vllm_profile import PINNED, PROFILES, RAY, REFERENCE, get_profile

__all__ = [
    "OPTIMIZE",
    "OUTPUT_TOKENS",
    "PINNED",
    "PROFILES",
    "PROMPT_TOKENS",
    "RAY",
    "REFERENCE",
    "TTFT_PROMPT_TOKENS",
    "Estimate",
    "PlanError",
    "candidates",
    "choose",
    "estimate",
    "get_profile",
    "largest_max_model_len",
    "model_for_spec",
    "plan_for_spec",
    "valid_tensor_parallel",
]
