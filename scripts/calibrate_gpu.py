"""Measure, on a real NVIDIA GPU, the quantities the planner assumes.

Run on a machine with a GPU and PyTorch (not part of CI):

    python3 scripts/calibrate_gpu.py [--out calibration.json]

Runs so far: docs/calibration/h100-2026-11-24.json (H100 SXM) and
docs/calibration/h200-2026-12-01.json (H200); the planner's decode efficiency
for those chips is their batch-1 ``efficiency_vs_datasheet``.

It prints, and writes as JSON:

- ``usable_gib``: total device memory as the CUDA runtime reports it (what vLLM
  multiplies by ``gpu_memory_utilization``), next to the data-sheet figure.
- ``non_torch_gib``: memory in use that PyTorch's allocator does not account
  for once a CUDA context and a cuBLAS handle exist (vLLM's "non-torch memory").
- ``read_bandwidth_gbs``: achieved HBM read bandwidth of a large reduction.
- A decode-step proxy: every weight matrix of a Llama-3-8B-shaped model
  (32 layers, hidden 4096, GQA 32/8 heads, MLP 14336, vocabulary 128256; random
  bf16, 14.96 GiB) multiplied by a batch of activations, captured in one CUDA
  graph as vLLM captures its decode step. Attention over the KV cache is left
  out (short context). ``decode_tokens_per_s`` at batch 1 and the planner's
  ``efficiency`` = (weight bytes / data-sheet bandwidth) / measured step.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

GIB = 1024**3
# Data-sheet bandwidth (GB/s) by device name fragment; the planner's catalog.
DATASHEET_GBS = {
    "H100": 3350.0,
    "H200": 4800.0,
    "A100": 2039.0,
    "A10G": 600.0,
    "L4": 300.0,
    "L40S": 864.0,
}

LAYERS, HIDDEN, HEADS, KV_HEADS, HEAD_DIM, MLP, VOCAB = 32, 4096, 32, 8, 128, 14336, 128256


def timed(fn, repeats: int) -> float:
    """Median seconds of ``fn`` over ``repeats`` runs, after warm-up."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    times.sort()
    return times[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    dev = torch.device("cuda")
    name = torch.cuda.get_device_name(dev)
    free, total = torch.cuda.mem_get_info()
    torch.ones(1, device=dev) @ torch.ones(1, device=dev)  # create the cuBLAS handle
    torch.cuda.synchronize()
    free, total = torch.cuda.mem_get_info()
    non_torch = (total - free) - torch.cuda.memory_reserved()
    result: dict[str, object] = {
        "device": name,
        "torch": torch.__version__,
        "usable_gib": round(total / GIB, 3),
        "non_torch_gib": round(non_torch / GIB, 3),
    }

    big = torch.empty(8 * GIB // 2, dtype=torch.bfloat16, device=dev).normal_()
    read = timed(lambda b=big: b.sum(dtype=torch.float32), 10)
    result["read_bandwidth_gbs"] = round(big.numel() * 2 / read / 1e9, 1)
    del big
    torch.cuda.empty_cache()

    qkv = (HEADS + 2 * KV_HEADS) * HEAD_DIM
    shapes = [(HIDDEN, qkv), (HEADS * HEAD_DIM, HIDDEN), (HIDDEN, 2 * MLP), (MLP, HIDDEN)]
    layers = [
        [torch.randn(i, o, dtype=torch.bfloat16, device=dev) * 0.02 for i, o in shapes]
        for _ in range(LAYERS)
    ]
    lm_head = torch.randn(HIDDEN, VOCAB, dtype=torch.bfloat16, device=dev) * 0.02
    weight_bytes = sum(w.numel() * 2 for ws in layers for w in ws) + lm_head.numel() * 2
    result["proxy_weight_gib"] = round(weight_bytes / GIB, 3)

    peak = next((v for k, v in DATASHEET_GBS.items() if k in name), None)
    decode: dict[str, dict[str, float]] = {}
    for batch in (1, 8, 32):
        x = torch.randn(batch, HIDDEN, dtype=torch.bfloat16, device=dev)

        def step(x: torch.Tensor = x) -> torch.Tensor:
            h = x
            for wqkv, wo, wgu, wd in layers:
                a = (h @ wqkv)[:, : HEADS * HEAD_DIM]
                h = h + a @ wo
                gu = h @ wgu
                h = h + (torch.nn.functional.silu(gu[:, :MLP]) * gu[:, MLP:]) @ wd
            return h @ lm_head

        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            step()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step()
        seconds = timed(graph.replay, 20)
        entry = {
            "step_ms": round(seconds * 1000, 3),
            "tokens_per_s_per_stream": round(1 / seconds, 1),
            "achieved_gbs": round(weight_bytes / seconds / 1e9, 1),
        }
        if peak:
            entry["efficiency_vs_datasheet"] = round(weight_bytes / (peak * 1e9) / seconds, 3)
        decode[str(batch)] = entry
    result["datasheet_bandwidth_gbs"] = peak
    result["decode_proxy"] = decode
    result["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
