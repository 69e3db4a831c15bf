"""The planner against published vLLM start-up logs and decode measurements.

Every case cites where the numbers were published. A start-up log is
reproduced by :func:`components.planner.estimate` with the log's flags and the
profile of the log's vLLM version (``components.planner.vllm_profile``): the
KV cache within 5 % and the weights within 2 % ("Available KV cache memory",
"Model loading took"), and the logged KV tokens within 5 % where printed.
docs/planner.md tabulates the same cases.

What was fitted to which log is stated in ``vllm_profile``, ``memory`` and
``speed``; the cases that fit a constant are marked ``fit`` below and the
others check the model independently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from components.catalog import Accelerator, AcceleratorChip, InstanceType, get_instance
from components.models import ModelArch, parse_config, read_config
from components.planner import estimate, valid_tensor_parallel
from components.planner.memory import weights_per_rank_bytes

LLD = (
    "https://github.com/llm-d-incubation/llm-d-planner/blob/"
    "d3121e059da88662db39a926a3ead964be97359b/accuracy/results/v0.19.0/logs/"
)

#: GPUs of published logs that are not in the instance catalog.
RTX_3090 = AcceleratorChip(
    "NVIDIA GeForce RTX 3090", 24.0, 23.58, 936, 1, "vllm-project/vllm#10517 log", 86
)


def _host(chip: AcceleratorChip) -> InstanceType:
    return InstanceType(f"host-{chip.name}", Accelerator.NVIDIA, chip, 1, 16, 64, 0.0)


def model(file: str, model_id: str, **overrides: Any) -> ModelArch:
    """A shipped config (``components/models/configs``), with the log's differences."""
    return parse_config({**read_config(file), **overrides}, model_id)


LLAMA31_8B = "meta-llama__Meta-Llama-3.1-8B.json"


@dataclass(frozen=True)
class Log:
    """One published start-up log and the flags it ran with."""

    id: str
    url: str
    vllm: str
    instance: InstanceType
    model: ModelArch
    tp: int
    length: int
    util: float
    seqs: int
    tokens: int
    weights: float
    kv: float
    kv_tokens: int | None = None
    kw: dict[str, Any] = field(default_factory=dict)
    fit: str = ""
    #: vLLM refused to start with these flags (the log shows the error).
    refused: bool = False

    @property
    def gpu(self) -> str:
        return self.instance.chip.name


H100 = get_instance("p5.48xlarge")
L31 = model(LLAMA31_8B, "meta-llama/Llama-3.1-8B-Instruct")
OSS20 = model("openai__gpt-oss-20b.json", "openai/gpt-oss-20b")
#: RedHatAI/Llama-3.3-70B-Instruct-fp8-dynamic: the Llama-3.1-70B architecture (the
#: Llama 3.3 card) with llm-compressor's FP8_DYNAMIC scheme (channel-wise FP8
#: weights, dynamic per-token FP8 activations, lm_head kept in bf16). Its own
#: config.json was not obtained; the scheme is what its model card describes.
FP8_DYNAMIC = {
    "quant_method": "compressed-tensors",
    "format": "float-quantized",
    "config_groups": {
        "group_0": {
            "targets": ["Linear"],
            "weights": {"num_bits": 8, "type": "float", "strategy": "channel"},
            "input_activations": {"num_bits": 8, "type": "float", "dynamic": True},
        }
    },
    "ignore": ["lm_head"],
}
L70_FP8 = model(
    "meta-llama__Meta-Llama-3.1-70B.json",
    "RedHatAI/Llama-3.3-70B-Instruct-fp8-dynamic",
    quantization_config=FP8_DYNAMIC,
)
QFP8 = "meta-llama-llama-3---h100-80gb--tp1pp1dp1--8192-qfp8.log"
DATA_ON_EKS = (
    "https://github.com/awslabs/data-on-eks/blob/main/website/docs/gen-ai/inference/GPUs/"
    "ray-vllm-deepseek.md"
)
# fmt: off
LOGS = [
    # id, url, vLLM, instance, model, TP, max_model_len, utilization, max_num_seqs,
    # max_num_batched_tokens, logged weights GiB, logged KV GiB, logged KV tokens.
    Log("lld-llama31-8b-tp1", LLD + "meta-llama-llama-3-1-8b---h100-80gb--tp1pp1dp1--8192.log",
        "0.19.0", H100, L31, 1, 8192, 0.95, 1024, 8192, 14.99, 58.11, 476016,
        fit="sampler 15.5 B/logit and TP-1 non-torch (with the other llm-d logs)"),
    Log("lld-llama31-8b-tp2", LLD + "meta-llama-llama-3-1-8b---h100-80gb--tp2pp1dp1--8192.log",
        "0.19.0", H100, L31, 2, 8192, 0.95, 1024, 8192, 7.51, 63.76, 1044688,
        fit="TP-2 non-torch (with the other TP-2 logs)"),
    Log("lld-llama31-8b-tp4", LLD + "meta-llama-llama-3-1-8b---h100-80gb--tp4pp1dp1--8192.log",
        "0.19.0", H100, L31, 4, 8192, 0.95, 1024, 8192, 3.77, 67.44, 2209792,
        fit="TP-4 non-torch (with the 70B FP8 TP-4 log)"),
    Log("lld-llama31-8b-fp8-online", LLD + QFP8,
        "0.19.0", H100, L31, 1, 8192, 0.95, 1024, 8192, 8.49, 64.61, 529248,
        kw={"quantization": "fp8"}),
    Log("lld-llama31-8b-kvfp8", LLD + "meta-llama---h100-80gb--tp1pp1dp1--8192-dtbf16-kvfp8.log",
        "0.19.0", H100, L31, 1, 8192, 0.95, 1024, 8192, 14.99, 58.11, 952032,
        kw={"kv_cache_dtype": "fp8"}),
    Log("lld-llama33-70b-fp8dyn-tp2", LLD + "fp8dyn-llama-3-3-70b--h100-80gb--tp2pp1dp1--8192.log",
        "0.19.0", H100, L70_FP8, 2, 8192, 0.95, 1024, 8192, 33.88, 37.28, 244304),
    Log("lld-llama33-70b-fp8dyn-tp4", LLD + "fp8dyn-llama-3-3-70b--h100-80gb--tp4pp1dp1--8192.log",
        "0.19.0", H100, L70_FP8, 4, 8192, 0.95, 1024, 8192, 16.96, 54.09, 708992),
    Log("lld-qwen25-7b-tp1", LLD + "qwen-qwen2-5-7b-instruct--h100-80gb--tp1pp1dp1--8192.log",
        "0.19.0", H100, model("Qwen__Qwen2.5-7B.json", "Qwen/Qwen2.5-7B-Instruct"),
        1, 8192, 0.95, 1024, 8192, 14.25, 58.53, 1096000),
    Log("lld-qwen25-72b-tp2", LLD + "qwen-qwen2-5-72b-instruc--h100-80gb--tp2pp1dp1--8192.log",
        "0.19.0", H100, model("Qwen__Qwen2.5-72B.json", "Qwen/Qwen2.5-72B-Instruct"),
        2, 8192, 0.95, 1024, 8192, 67.80, 3.04, 19920),
    Log("lld-mixtral-8x7b-tp2", LLD + "mistralai-mixtral-8x7b-i--h100-80gb--tp2pp1dp1--8192.log",
        "0.19.0", H100,
        model("mistralai__Mixtral-8x7B-v0.1.json", "mistralai/Mixtral-8x7B-Instruct-v0.1"),
        2, 8192, 0.95, 1024, 8192, 43.51, 28.44, 465936, fit="the MoE workspace factor"),
    Log("lld-gptoss20b-tp1", LLD + "openai-gpt-oss-20b--h100-80gb--tp1pp1dp1--8192.FAILED.log",
        "0.19.0", H100, OSS20, 1, 8192, 0.95, 1024, 8192, 13.64, 58.47, 1277184,
        fit="the two Triton MXFP4 terms (with the TP-2 log)"),
    Log("lld-gptoss20b-tp2", LLD + "openai-gpt-oss-20b--h100-80gb--tp2pp1dp1--8192.log",
        "0.19.0", H100, OSS20, 2, 8192, 0.90, 1024, 8192, 7.01, 59.32, 2591776,
        fit="the two Triton MXFP4 terms (with the TP-1 log)"),
    # vLLM 0.15.1: the V1 runner of 0.11-0.19, so the 0.19 profile; LLM class (its
    # defaults below 70 GiB: 8192 tokens, 256 seqs), --enforce-eager.
    Log("vllm-gce-a100-40-llama31-8b-eager", "https://github.com/ilseokoh/vllm-gce/blob/main/README.md",
        "0.19.0", get_instance("p4d.24xlarge"), L31, 1, 131072, 0.90, 256, 8192, 14.99, 19.28,
        157936, kw={"enforce_eager": True}),
    # vLLM 0.19.0 OpenAI server on an A100 (defaults 2048 tokens, 256 seqs), Marlin MXFP4.
    Log("myoceane-a100-80-gptoss20b", "https://myoceane.fr/index.php/ai-vllm-a100-gemma-4/",
        "0.19.0", get_instance("p4de.24xlarge"), OSS20, 1, 131072, 0.65, 256, 2048, 13.72, 36.56),
    Log("data-on-eks-a10g-ds-llama8b", DATA_ON_EKS,
        "0.7.0", get_instance("g5.xlarge"),
        model(LLAMA31_8B, "deepseek-ai/DeepSeek-R1-Distill-Llama-8B"),
        1, 8192, 0.90, 4, 8192, 14.99, 4.17, fit="the V0 0.7 profile's non-torch figure"),
    # V0 without chunked prefill below 32k: max_num_batched_tokens = max_model_len.
    Log("vllm-10517-rtx3090-llama31-8b-20k", "https://github.com/vllm-project/vllm/issues/10517",
        "0.6.4", _host(RTX_3090), L31, 1, 20000, 0.90, 256, 20000, 14.99, 3.81, 1952 * 16,
        fit="the V0 0.6 profile's non-torch figure"),
    # "The model's max seq len (29000) is larger than the maximum number of tokens that
    # can be stored in KV cache (23648)": vLLM refused, and so does the planner.
    Log("vllm-10517-rtx3090-llama31-8b-29k", "https://github.com/vllm-project/vllm/issues/10517",
        "0.6.4", _host(RTX_3090), L31, 1, 29000, 0.90, 256, 29000, 14.99, 2.89, 1478 * 16,
        refused=True),
]
# fmt: on


def rel(actual: float, target: float) -> float:
    return abs(actual - target) / target


def run(log: Log):  # type: ignore[no-untyped-def]
    return estimate(
        log.model,
        log.instance,
        tensor_parallel=log.tp,
        max_model_len=log.length,
        gpu_memory_utilization=log.util,
        max_num_seqs=log.seqs,
        max_num_batched_tokens=log.tokens,
        vllm_version=log.vllm,
        **log.kw,
    )


@pytest.mark.parametrize("log", LOGS, ids=lambda c: c.id)
def test_reproduces_published_startup_log(log: Log) -> None:
    """Weights within 2 %, KV cache within 5 %, logged KV tokens within 5 %, and vLLM's
    verdict (started, or refused because max_model_len does not fit)."""
    e = run(log)
    assert e.vllm_version == log.vllm
    assert rel(e.weights_gib, log.weights) < 0.02, (log.url, e.weights_gib)
    assert rel(e.kv_cache_gib, log.kv) < 0.05, (log.url, e.kv_cache_gib)
    if log.kv_tokens is not None:
        assert rel(e.kv_tokens, log.kv_tokens) < 0.05, (log.url, e.kv_tokens)
    assert e.fits is not log.refused, e.reason
    if log.refused:
        assert "vLLM would refuse to start" in e.reason


def test_the_logs_cover_gpus_models_and_parallelism() -> None:
    """At least 10 logs, 4 GPU classes, dense and MoE, TP 1 and TP > 1."""
    assert len(LOGS) >= 10
    assert len({c.gpu for c in LOGS}) >= 4
    assert {c.model.moe is not None for c in LOGS} == {True, False}
    assert {c.tp > 1 for c in LOGS} == {True, False}
    assert all(c.url.startswith("https://") for c in LOGS)


def test_weights_of_logs_without_a_kv_figure() -> None:
    """Weights-only logs: gpt-oss-120b on one H100 with Triton (vllm-project/vllm#33155,
    0.14.1: 64.38 GiB) and with Marlin (#23278, 0.10.1, "Model loading took 65.9651 GiB"),
    and Meta-Llama-3-8B on H100 (PR #10511: 14.96 GiB at TP 1, 7.48 at TP 2)."""
    oss = model("openai__gpt-oss-120b.json", "openai/gpt-oss-120b")
    gib = 1024**3
    assert rel(weights_per_rank_bytes(oss, 1, 1, 90) / gib, 64.38) < 0.02
    assert rel(weights_per_rank_bytes(oss, 1, 1, 80) / gib, 65.9651) < 0.02
    llama3 = model(LLAMA31_8B, "meta-llama/Meta-Llama-3-8B", max_position_embeddings=8192)
    assert rel(weights_per_rank_bytes(llama3, 1, 1, 90) / gib, 14.96) < 0.005
    assert rel(weights_per_rank_bytes(llama3, 2, 1, 90) / gib, 7.48) < 0.005


def test_profiled_activation_is_the_larger_of_mlp_and_sampler() -> None:
    """PR #10511 (V0): 1.26 GiB at 256 seqs x 8,192 tokens, the sampler's; #10517: 2.07 and
    2.99 GiB at 20,000 and 29,000 tokens, the MLP's (the sampler would add 1.26 to each)."""
    llama3 = model(LLAMA31_8B, "meta-llama/Meta-Llama-3-8B", max_position_embeddings=8192)
    pr = estimate(
        llama3,
        H100,
        tensor_parallel=1,
        max_model_len=8192,
        max_num_seqs=256,
        max_num_batched_tokens=8192,
        vllm_version="0.6.4",
    )
    assert rel(pr.activation_gib, 1.26) < 0.03
    for log, logged in ((LOGS[-2], 2.07), (LOGS[-1], 2.99)):
        assert rel(run(log).activation_gib, logged) < 0.02


# --- Decode speed -----------------------------------------------------------------


@dataclass(frozen=True)
class Decode:
    """One published decode measurement."""

    id: str
    url: str
    instance: str
    model: ModelArch
    tp: int
    batch: int
    ms_per_token: float
    fit: str = ""


QWEN3_8B = model("Qwen__Qwen3-8B.json", "Qwen/Qwen3-8B")
OSS_120B = model("openai__gpt-oss-120b.json", "openai/gpt-oss-120b")
GPUSTACK = (
    "https://github.com/gpustack/gpustack/blob/1dbc3b8130da92d31539404545a1aff5c3992f8c/"
    "docs/performance-lab/qwen3-8b/h100-latency.md"
)
VLLM_22331 = "https://github.com/vllm-project/vllm/issues/22331"
# fmt: off
DECODES = [
    # id, url, instance, model, TP, concurrency, ms per output token.
    # "stable throughput of ~29 tokens/sec" (one chat request, vLLM 0.7.0).
    Decode("a10g-ds-llama8b-bs1", DATA_ON_EKS, "g5.xlarge",
           model(LLAMA31_8B, "deepseek-ai/DeepSeek-R1-Distill-Llama-8B"), 1, 1, 1000 / 29),
    # "For TP=1, I get 90 tps. For TP=2/4, I get 77-78 tps." (A100 80GB NVLink).
    Decode("a100-80-gptoss120b-tp1", VLLM_22331, "p4de.24xlarge", OSS_120B, 1, 1, 1000 / 90,
           fit="the Marlin MoE layer overhead"),
    Decode("a100-80-gptoss120b-tp2", VLLM_22331, "p4de.24xlarge", OSS_120B, 2, 1, 1000 / 77.5,
           fit="the NVLink all-reduce latency"),
    Decode("a100-80-gptoss120b-tp4", VLLM_22331, "p4de.24xlarge", OSS_120B, 4, 1, 1000 / 77.5),
    # "ShareGPT BS=1 | Mean latency: 1.66s/req" with ~220 output tokens, 0.06 s TTFT.
    Decode("h100-qwen3-8b-bs1", GPUSTACK, "p5.48xlarge", QWEN3_8B, 1, 1, 7.2,
           fit="the fixed step overhead"),
    # "Maximum request concurrency: 4 ... Mean TPOT (ms): 7.38".
    Decode("h100-qwen3-8b-concurrency4", GPUSTACK, "p5.48xlarge", QWEN3_8B, 1, 4, 7.38),
]
# fmt: on


def decode_ms(d: Decode) -> float:
    from components.planner.memory import expert_bytes_per_rank, kv_layout
    from components.planner.speed import step_seconds

    inst = get_instance(d.instance)
    assert d.tp in valid_tensor_parallel(d.model, inst)
    weights = (
        weights_per_rank_bytes(d.model, d.tp, 1, inst.chip.sm),
        expert_bytes_per_rank(d.model, d.tp, inst.chip.sm),
    )
    layout = kv_layout(d.model, d.tp, 1, 2.0)
    step = step_seconds(d.model, inst, layout, weights, tp=d.tp, pp=1, batch=d.batch, context=512)
    return step * 1000


@pytest.mark.parametrize("d", DECODES, ids=lambda d: d.id)
def test_decode_within_20_percent_of_published_measurements(d: Decode) -> None:
    assert rel(decode_ms(d), d.ms_per_token) < 0.20, (d.url, decode_ms(d))


def test_decode_points_are_single_stream_and_enough() -> None:
    assert sum(1 for d in DECODES if d.batch == 1) >= 5


def test_single_stream_speed_of_the_estimate_is_the_step() -> None:
    d = DECODES[0]
    e = estimate(d.model, get_instance(d.instance), tensor_parallel=1, max_model_len=8192)
    assert e.decode_ms_per_token == pytest.approx(1000 / e.decode_tokens_per_s)
    assert rel(e.decode_ms_per_token, d.ms_per_token) < 0.20
