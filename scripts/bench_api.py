#!/usr/bin/env python3
"""Benchmark: ``POST /v1/endpoints`` latency while 4 operations run.

Starts ``llm-endpoints serve`` on a free 127.0.0.1 port (its own process, with
its dispatcher, a throw-away state folder and the render target), starts 4
creates whose ``pulumi up`` is held busy by a slow resource (so the worker
pool is full of real engine runs for the whole measurement), then sends
``--requests`` creates of new endpoints one after another (they queue) and
prints the latency percentiles. Finally it cancels everything it queued and
stops the server. Loopback only; nothing leaves the machine.

    .venv/bin/python scripts/bench_api.py [--requests 200] [--concurrency 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from automation.local_server import local_server

REPO = Path(__file__).resolve().parent.parent
TOKEN = "bench-token-0123456789abcdef"
MODEL = "deepseek-ai/DeepSeek-R1-Distill-Llama-8B"


def _body(name: str, **extra: object) -> dict[str, object]:
    return {
        "name": name,
        "model": MODEL,
        "instance_type": "g5.xlarge",
        "vllm": {"max_model_len": 8192},
        **extra,
    }


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--requests", type=int, default=200, help="creates to time (200)")
    ap.add_argument("--concurrency", type=int, default=1, help="clients sending them (1)")
    ap.add_argument(
        "--builder",
        default="tests.e2e.control_plane_support:build",
        help="endpoint builder (default: the tests' render builder, which can hold an up busy)",
    )
    args = ap.parse_args()

    state = Path(tempfile.mkdtemp(prefix="llm-endpoints-bench-"))
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "LLM_ENDPOINTS_STATE_DIR": str(state / "state"),
        "LLM_ENDPOINTS_RENDER_ROOT": str(state / "rendered"),
        "LLM_ENDPOINTS_BUILDER": args.builder,
        "LLM_ENDPOINTS_TOKENS": json.dumps({TOKEN: {"user": "bench"}}),
        "LLM_ENDPOINTS_POOL_SIZE": "4",
        "LLM_ENDPOINTS_MAX_QUEUED": "8",
        "LLM_ENDPOINTS_CANCEL_GRACE": "2",
    }
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with (
        local_server(env, quiet=True) as base,
        httpx.Client(base_url=base, headers=headers, timeout=30) as c,
    ):
        # Fill the pool: 4 real `pulumi up`s held busy by a slow resource.
        busy = [
            c.post("/v1/endpoints", json=_body(f"busy-{i}", labels={"slow": "600"})).json()[
                "operation"
            ]["id"]
            for i in range(4)
        ]
        deadline = time.monotonic() + 120
        while sum(c.get(f"/v1/operations/{i}").json()["status"] == "running" for i in busy) < 4:
            if time.monotonic() > deadline:
                raise SystemExit("the 4 busy operations never all ran")
            time.sleep(0.2)
        time.sleep(3)  # let the 4 engines get going

        def one(i: int) -> tuple[float, int, str]:
            t0 = time.perf_counter()
            r = c.post("/v1/endpoints", json=_body(f"bench-{i}"))
            took = time.perf_counter() - t0
            return (
                took,
                r.status_code,
                r.json()["operation"]["id"] if r.status_code == 202 else "",
            )

        with ThreadPoolExecutor(args.concurrency) as pool:
            results = list(pool.map(one, range(args.requests)))
        running = sum(c.get(f"/v1/operations/{i}").json()["status"] == "running" for i in busy)
        lat = [r[0] * 1000 for r in results]
        codes = {code: sum(1 for r in results if r[1] == code) for code in {r[1] for r in results}}
        print(
            f"POST /v1/endpoints x {args.requests} (concurrency {args.concurrency}) "
            f"while {running} operations ran (pool 4, real pulumi up each)"
        )
        print(f"  status codes: {codes}")
        print(
            f"  latency ms: p50 {_pct(lat, 50):.1f}  p90 {_pct(lat, 90):.1f}  "
            f"p99 {_pct(lat, 99):.1f}  max {max(lat):.1f}  mean {statistics.mean(lat):.1f}"
        )

        for op_id in [r[2] for r in results if r[2]] + busy:  # queued ones first
            c.post(f"/v1/operations/{op_id}/cancel")
        deadline = time.monotonic() + 60
        while (
            any(
                c.get(f"/v1/operations/{i}").json()["status"] in ("queued", "running") for i in busy
            )
            and time.monotonic() < deadline
        ):
            time.sleep(0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
