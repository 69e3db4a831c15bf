"""What vLLM does at start-up, version by version: the constants of the memory profile.

The planner follows the pinned vLLM (``PINNED``, 0.33.0: the Deployment and
LeaderWorkerSet image) and the vLLM inside the Ray image (``RAY``, 0.29.0:
``rayproject/ray-llm:2.60.0`` pins ``vllm[audio]==0.29.0``). The two differ only
in the dummy sampler pass, so that is the only version-dependent constant
between them. ``REFERENCE`` profiles describe the versions of the published
start-up logs the tests reproduce (0.19.0 and the V0 engine of 0.6/0.7); they
exist to check the model against real logs, not to plan deployments.

Citations are ``file:line`` of the vLLM wheel of that version on PyPI
(``pip download vllm==X --no-deps``; the wheel's files are the tagged sources),
relative to the ``vllm/`` package. The start-up sequence at 0.33.0:

1. ``v1/worker/gpu_worker.py:504`` initialises NCCL and the custom all-reduce,
   ``:520-531`` creates the cuBLAS handles, ``:541`` takes the memory snapshot.
   Everything before it (CUDA context, NCCL communicators) is outside the
   budget and must fit in ``(1 - gpu_memory_utilization) x total``.
2. ``v1/worker/utils.py:724-726``: ``requested = ceil(total x gpu_memory_utilization)``.
3. Weights load ("Model loading took X GiB", ``v1/worker/gpu/model_runner.py:427-432``).
4. ``profile_run`` (``gpu/model_runner.py:1022-1050``): one forward pass of
   ``max_num_batched_tokens`` tokens with attention skipped, then the dummy
   sampler over ``min(max_num_batched_tokens, max_num_seqs)`` rows.
5. ``utils/mem_utils.py:312-321``: ``non_kv = consumed + (torch_peak - torch_allocated)``.
6. ``gpu_worker.py:709-717`` estimates the CUDA-graph pool and ``:753-757``
   sets ``KV = requested - non_kv - cudagraph_estimate`` (the estimate is
   subtracted by default: ``envs.py:2219-2221``, ``VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS="1"``).
7. ``v1/core/kv_cache_planning.py:170-183`` refuses when one ``max_model_len``
   request does not fit (message at ``:50-87``), and ``v1/core/kv_cache_utils.py:1120-1153``
   logs the KV cache size in tokens and the maximum concurrency.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Block size in tokens: ``config/cache.py:185`` (0.33.0) ``DEFAULT_BLOCK_SIZE = 16``.
BLOCK_SIZE = 16
#: Vocabulary padding of embeddings and LM heads:
#: ``model_executor/layers/vocab_parallel_embedding.py:36`` ``DEFAULT_VOCAB_PADDING_SIZE = 64``.
VOCAB_PADDING = 64
#: Bytes of the rotary cos/sin cache per element (``rotary_embedding/base.py:58-63``:
#: cast to the model dtype; the FlashInfer rope path keeps fp32, a few MiB more).
ROPE_CACHE_BYTES = 2
#: Activations in the model dtype (bf16/fp16).
ACTIVATION_BYTES = 2

#: Persistent penalty state of the V2 model runner (0.29 and 0.33), in bytes per
#: (max_num_seqs x vocab): ``output_bin_counts`` int32 (4 B) plus
#: ``prompt_bin_mask`` int32 over vocab/32 (0.125 B):
#: ``v1/worker/gpu/sample/penalties.py:43-50`` (0.33.0), ``:32-42`` (0.29.0).
PENALTIES_BYTES_PER_LOGIT = 4.125

#: The MoE forward peak relative to the fused-MoE intermediate caches
#: T x k x (3 I/TP + H) x 2 B plus the residual stream: Mixtral-8x7B at TP 2
#: logs 1.21 GiB of torch peak where those caches are 0.97 GiB (llm-d 0.19.0
#: log, the only published log in which the MoE forward and not the sampler is
#: the peak). Fitted to that one log.
MOE_WORKSPACE_FACTOR = 1.25

# --- CUDA graphs ------------------------------------------------------------

#: Largest capture size: ``config/vllm.py:2463-2470`` (0.33.0): 512 (1024 on
#: data-centre Blackwell), capped at 2 x max_num_seqs and at
#: max_num_batched_tokens (``:2552``). gpt-oss raises it to 1024
#: (``model_executor/models/config.py:549-561``).
MAX_CAPTURE_SIZE = 512
GPT_OSS_CAPTURE_SIZE = 1024
#: The CUDA-graph pool, fitted to the 10 published 0.19.0 H100 logs
#: ("Graph capturing finished in N secs, took X GiB": 0.67-1.84 GiB for 24-80
#: layers, 102 graphs = 51 PIECEWISE + 51 FULL): 0.29 GiB + 0.017 GiB per layer
#: per 102 graphs, + 0.015 GiB per MoE layer per 102 graphs (Mixtral, Qwen1.5-MoE,
#: gpt-oss). At 0.29/0.33 the V2 runner's estimate captures every PIECEWISE graph
#: into a throwaway pool and extrapolates FULL ones from two samples
#: (``v1/worker/gpu/cudagraph_utils.py:922-1039``), so the estimate tracks the
#: actual pool; no published 0.29/0.33 log prints it.
GRAPH_BASE_GIB = 0.29
GRAPH_PER_LAYER_GIB = 0.017
GRAPH_PER_MOE_LAYER_GIB = 0.015
GRAPH_REFERENCE_COUNT = 102

# --- Memory outside the profile ---------------------------------------------

#: Device memory in use before the snapshot: CUDA context (TP 1), plus NCCL
#: communicators and custom all-reduce IPC buffers (TP > 1). 0.19.0 DEBUG lines
#: ``worker init memory snapshot: ... cuda_memory=0.51GiB`` (TP 1) and
#: ``free_memory=77.66GiB`` of 79.19 (1.53 GiB) at TP 2 and 4 (llm-d logs).
BASELINE_TP1_GIB = 0.51
BASELINE_MULTI_GIB = 1.53

#: Non-torch memory that grows during the profile (counted in the budget):
#: cuBLAS/attention workspaces, lazily created NCCL buffers of the first
#: collectives. 0.19.0 logs ("non-torch forward increase memory"): 0.24-0.26 GiB
#: at TP 1 (11 models), 2.06-2.10 at TP 2, 2.13-2.21 at TP 4. TP 8: no published
#: log; extrapolated by the TP 2 -> 4 step (+0.09 per doubling).
NON_TORCH_GIB = {1: 0.25, 2: 2.08, 4: 2.17, 8: 2.26}
#: Per pipeline stage (0.19.0 logs at PP 2 and 4: 0.07 GiB).
NON_TORCH_PIPELINE_GIB = 0.07


@dataclass(frozen=True)
class VllmProfile:
    """The version-dependent part of vLLM's start-up memory accounting.

    Attributes:
        version: The vLLM version this describes.
        runner: ``v2`` (gpu/model_runner.py), ``v1`` (gpu_model_runner.py) or
            ``v0`` (the pre-V1 engine's worker.py).
        subtracts_cudagraph_estimate: The KV budget excludes the CUDA-graph
            estimate (else the graphs are captured after, in the headroom).
        sampler_bytes_per_logit: Peak bytes of the profiled sampler pass per
            row and vocabulary entry.
        penalties_state: The V2 runner's persistent per-request penalty tensors.
        sliding_in_flight_batches: Batches of max_num_batched_tokens a
            sliding-window request reserves blocks for.
        hybrid_tokens_per_group: The logged "KV cache size" is
            ``num_blocks // groups x block_size`` (0.10-0.19), not
            ``int(max_concurrency x max_model_len)`` (0.29+).
        non_torch_tp1_gib: Non-torch growth at TP 1 (None: :data:`NON_TORCH_GIB`).
        default_gpu_memory_utilization: vLLM's default for the flag.
        citations: Where each value comes from.
    """

    version: str
    runner: str
    subtracts_cudagraph_estimate: bool
    sampler_bytes_per_logit: float
    penalties_state: bool
    sliding_in_flight_batches: int
    hybrid_tokens_per_group: bool
    default_gpu_memory_utilization: float
    citations: str
    non_torch_tp1_gib: float | None = None

    def non_torch_gib(self, tp: int, pp: int) -> float:
        """Non-torch growth during the profile, per GPU."""
        if tp == 1 and self.non_torch_tp1_gib is not None:
            base = self.non_torch_tp1_gib
        else:
            known = sorted(NON_TORCH_GIB)
            size = next((k for k in known if k >= tp), known[-1])
            base = NON_TORCH_GIB[size]
        return base + (NON_TORCH_PIPELINE_GIB if pp > 1 else 0.0)


VLLM_0_33 = VllmProfile(
    version="0.33.0",
    runner="v2",
    subtracts_cudagraph_estimate=True,
    # Two dummy sampler passes (gpu/model_runner.py:993-1020); the second,
    # "warmup-param" pass copies the logits to fp32 (gpu/sample/sampler.py:242)
    # and runs top-k/top-p and top-5 logprobs, the fp32 pipeline the V1 runner
    # of 0.19.0 profiled at 15.5 B per logit (1.89 GiB = 15.5 x 1024 x 128256 for
    # Llama-3.1-8B, the same within +-0.9 B for all 11 published logs).
    sampler_bytes_per_logit=15.5,
    penalties_state=True,
    # Async scheduling is on by default (config/vllm.py:1685-1719), so two
    # batches are in flight (:588-609) and the reservation is
    # cdiv(min(window - 1 + 2 T, L), 16) + 1 blocks (v1/kv_cache_interface.py:918-944).
    sliding_in_flight_batches=2,
    hybrid_tokens_per_group=False,
    default_gpu_memory_utilization=0.92,  # config/cache.py:215
    citations="vllm 0.33.0 wheel (g4ba787ec9)",
)

VLLM_0_29 = VllmProfile(
    version="0.29.0",
    runner="v2",
    subtracts_cudagraph_estimate=True,  # envs.py:2105-2107 default "1"
    # One default sampler pass only (gpu/model_runner.py:832-843, "the sampler
    # may skip top_k, top_p, and logprobs"): bf16 logits and the Gumbel
    # sampler's blockwise scratch, 2 B per logit.
    sampler_bytes_per_logit=2.0,
    penalties_state=True,  # gpu/sample/penalties.py:32-42
    sliding_in_flight_batches=2,  # config/vllm.py:559-569, async on by default
    hybrid_tokens_per_group=False,  # v1/core/kv_cache_utils.py:2024-2037
    default_gpu_memory_utilization=0.92,  # config/cache.py:111
    citations="vllm 0.29.0 wheel (g98dff2a81)",
)

VLLM_0_19 = VllmProfile(
    version="0.19.0",
    runner="v1",
    # envs.py:1654-1655 default "0": the estimate is logged, not subtracted.
    subtracts_cudagraph_estimate=False,
    sampler_bytes_per_logit=15.5,  # measured, 11 llm-d logs (see VLLM_0_33)
    penalties_state=False,
    # v1/kv_cache_interface.py:263 min(window - 1 + max_num_batched_tokens, L).
    sliding_in_flight_batches=1,
    hybrid_tokens_per_group=True,  # v1/core/kv_cache_utils.py:1302-1306
    default_gpu_memory_utilization=0.90,  # config/cache.py:41
    citations="vllm 0.19.0 wheel; llm-d-planner@d3121e05 accuracy logs",
)

#: The V0 engine (0.6.x-0.7.x): no CUDA graphs in the budget, the PyTorch
#: sampler. 41 B per logit: vllm-project/vllm PR #10511 logs a 1.26 GiB peak
#: for Llama-3-8B at 256 sequences and 8192 tokens, where the MLP alone is
#: 0.84 GiB (the peak is the larger of the two, so 1.26 GiB is the sampler).
#: Non-torch memory was measured differently before and after PR #10511
#: (0.6.5), so each V0 log carries its own TP-1 figure.
VLLM_0_7 = VllmProfile(
    version="0.7.0",
    runner="v0",
    subtracts_cudagraph_estimate=False,
    sampler_bytes_per_logit=41.0,
    penalties_state=False,
    sliding_in_flight_batches=1,
    hybrid_tokens_per_group=True,
    default_gpu_memory_utilization=0.90,
    # data-on-eks ray-vllm-deepseek log: 20.07 - 14.99 - 0.85 - 4.17 = 0.06 GiB.
    non_torch_tp1_gib=0.06,
    citations="data-on-eks ray-vllm-deepseek log (vLLM 0.7.0 V0)",
)
VLLM_0_6 = VllmProfile(
    version="0.6.4",
    runner="v0",
    subtracts_cudagraph_estimate=False,
    sampler_bytes_per_logit=41.0,
    penalties_state=False,
    sliding_in_flight_batches=1,
    hybrid_tokens_per_group=True,
    default_gpu_memory_utilization=0.90,
    # vllm-project/vllm#10517 (RTX 3090): "non_torch_memory=0.35GiB", which
    # before PR #10511 included the CUDA context.
    non_torch_tp1_gib=0.35,
    citations="vllm-project/vllm#10517 log (vLLM 0.6.x V0, pre-#10511 accounting)",
)

#: The pinned vLLM (vllm/vllm-openai image) and the Ray image's vLLM.
PINNED = VLLM_0_33.version
RAY = VLLM_0_29.version
PROFILES = {p.version: p for p in (VLLM_0_33, VLLM_0_29)}
REFERENCE = {p.version: p for p in (VLLM_0_19, VLLM_0_7, VLLM_0_6)}


def get_profile(version: str) -> VllmProfile:
    """The profile of a vLLM version (pinned, Ray's, or a reference one).

    Raises:
        ValueError: naming the versions there are profiles for.
    """
    known = {**PROFILES, **REFERENCE}
    if version not in known:
        raise ValueError(f"vllm_version: no profile for {version!r} (valid: {', '.join(known)})")
    return known[version]


def capture_sizes(max_num_seqs: int, max_num_batched_tokens: int, *, gpt_oss: bool) -> list[int]:
    """CUDA-graph capture sizes (``config/vllm.py:2403-2411, 2463-2552``, 0.33.0).

    ``[1, 2, 4] + range(8, 256, 8) + range(256, max + 1, 16)`` up to
    ``min(2 x max_num_seqs, 512)`` (gpt-oss: 1024), capped at
    max_num_batched_tokens, plus max_num_seqs when it is a new size (0.33.0
    ``:2549-2550``; 0.29.0 does not add it, one graph fewer).
    """
    top = GPT_OSS_CAPTURE_SIZE if gpt_oss else min(2 * max_num_seqs, MAX_CAPTURE_SIZE)
    top = max(1, min(top, max_num_batched_tokens))
    sizes = [s for s in (1, 2, 4) if s <= top]
    sizes += list(range(8, min(top + 1, 256), 8)) + list(range(256, top + 1, 16))
    if max_num_seqs <= top and max_num_seqs not in sizes:
        sizes.append(max_num_seqs)
    return sorted(sizes)
