#!/usr/bin/env python3
"""Benchmark: does one user's backlog delay another user's first create?

Starts ``llm-endpoints serve`` on a free 127.0.0.1 port (its own process, with
its dispatcher, a throw-away state folder, the render target and the tests'
render builder, so every ``up`` is a real, short Pulumi run) with a small
worker pool. User A (whose quota in the tokens file allows it) queues
``--creates`` creates, then user B queues one. It prints when B's operation
started relative to its request, how many of A's operations started before
it, and whether B's create started within one operation slot: at most
``--pool`` of A's operations started after B was queued and before B did.

Then it cancels everything still queued, waits for the running operations to
end (their workers exit by themselves), stops the server and removes its
folder. Loopback only; nothing leaves the machine.

    .venv/bin/python scripts/bench_fairness.py [--creates 50] [--pool 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from automation.local_server import local_server
from automation.procs import is_alive, kill_session
from automation.settings import Settings
from automation.store import Store

REPO = Path(__file__).resolve().parent.parent
TOKEN_A = "fair-a-token-0123456789abcdef"
TOKEN_B = "fair-b-token-0123456789abcdef"
MODEL = "deepseek-ai/DeepSeek-R1-Distill-Llama-8B"
BUILDER = "tests.e2e.control_plane_support:build"


def _body(name: str) -> dict[str, object]:
    return {
        "name": name,
        "model": MODEL,
        "instance_type": "g5.xlarge",
        "vllm": {"max_model_len": 8192},
        "ttl": "1h",
    }


def _ts(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value.replace("Z", "+00:00"))


def _ops(c: httpx.Client, ids: list[str], headers: dict[str, str]) -> list[dict[str, Any]]:
    return [c.get(f"/v1/operations/{i}", headers=headers).json() for i in ids]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--creates", type=int, default=50, help="creates user A queues (50)")
    ap.add_argument("--pool", type=int, default=2, help="worker pool size (2)")
    ap.add_argument("--timeout", type=float, default=300, help="give up after this many s (300)")
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="llm-endpoints-fairness-"))
    many = args.creates + 10
    tokens = {
        # A's own quota lets it queue the whole backlog; B has the server's defaults.
        TOKEN_A: {
            "user": "user-a",
            "quota": {
                "endpoints": many,
                "queued": many,
                "accelerators": many,
                "cost_per_hour": 10 * many,
            },
        },
        TOKEN_B: {"user": "user-b"},
    }
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("LLM_ENDPOINTS_")},
        "PYTHONPATH": str(REPO),
        "LLM_ENDPOINTS_STATE_DIR": str(root / "state"),
        "LLM_ENDPOINTS_RENDER_ROOT": str(root / "rendered"),
        "LLM_ENDPOINTS_BUILDER": BUILDER,
        "LLM_ENDPOINTS_TOKENS": json.dumps(tokens),
        "LLM_ENDPOINTS_POOL_SIZE": str(args.pool),
        "LLM_ENDPOINTS_POLL_INTERVAL": "0.1",
        "LLM_ENDPOINTS_CANCEL_GRACE": "5",
    }
    settings = Settings.from_env(env=env)
    a_ids: list[str] = []
    try:
        with (
            local_server(env, quiet=True) as base,
            httpx.Client(base_url=base, timeout=30) as c,
        ):
            ha = {"Authorization": f"Bearer {TOKEN_A}"}
            hb = {"Authorization": f"Bearer {TOKEN_B}"}
            t0 = time.monotonic()
            for i in range(args.creates):
                r = c.post("/v1/endpoints", json=_body(f"a-{i}"), headers=ha)
                if r.status_code != 202:
                    raise SystemExit(f"A's create #{i} was refused: {r.status_code} {r.text}")
                a_ids.append(r.json()["operation"]["id"])
            queued_a = time.monotonic() - t0
            r = c.post("/v1/endpoints", json=_body("b-0"), headers=hb)
            if r.status_code != 202:
                raise SystemExit(f"B's create was refused: {r.status_code} {r.text}")
            b_id = r.json()["operation"]["id"]

            deadline = time.monotonic() + args.timeout
            while (b := c.get(f"/v1/operations/{b_id}", headers=hb).json())["started_at"] is None:
                if b["status"] not in ("queued", "running") or time.monotonic() > deadline:
                    raise SystemExit(f"B's create never started: {b}")
                time.sleep(0.1)

            # A's view at that moment, and the dispatcher's claim order from the store.
            a_ops = _ops(c, a_ids, ha)
            store = Store.from_settings(settings)
            claimed = {i: store.get_operation(i).claimed_at for i in [*a_ids, b_id]}
            store.close()

            b_created, b_started = _ts(b["created_at"]), _ts(b["started_at"])
            assert b_created is not None and b_started is not None
            b_claimed = claimed[b_id]
            a_started = [s for s in (_ts(o["started_at"]) for o in a_ops) if s is not None]
            before_b = [s for s in a_started if s < b_started]
            between = [s for s in before_b if s >= b_created]
            a_claimed = [t for i, t in claimed.items() if i != b_id and t is not None]
            claimed_between = [
                t for t in a_claimed if b_claimed is not None and b_created <= t < b_claimed
            ]
            print(
                f"pool {args.pool}; user A queued {args.creates} creates in {queued_a:.1f}s, "
                "then user B queued 1"
            )
            print(
                f"B's create started {(b_started - b_created).total_seconds():.2f}s after its "
                f"request (claimed after "
                f"{(b_claimed - b_created).total_seconds() if b_claimed else float('nan'):.2f}s)"
            )
            print(
                f"A's operations started before B's: {len(before_b)} "
                f"({len(between)} of them after B was queued; by claim order "
                f"{len(claimed_between)}); A's still queued then: "
                f"{sum(o['status'] == 'queued' for o in a_ops)}"
            )
            order = sorted(
                (t, "B" if i == b_id else "A") for i, t in claimed.items() if t is not None
            )
            print(
                "claims from B's request on, in order: "
                + ", ".join(
                    f"{who} {(t - b_created).total_seconds():+.2f}s"
                    for t, who in order
                    if t >= b_created
                )
            )
            within = len(between) <= args.pool and len(claimed_between) <= args.pool
            print(
                f"did B's first create start within one operation slot? "
                f"{'yes' if within else 'no'} ({len(between)} <= pool {args.pool})"
            )

            # Clean up: cancel what is queued, let what runs end.
            for op_id in [*a_ids, b_id]:
                c.post(f"/v1/operations/{op_id}/cancel", headers=ha if op_id != b_id else hb)
            end = time.monotonic() + 120
            while any(
                o["status"] in ("queued", "running")
                for o in [*_ops(c, a_ids, ha), *_ops(c, [b_id], hb)]
            ):
                if time.monotonic() > end:
                    break
                time.sleep(0.5)
        return 0 if within else 1
    finally:
        # Workers run in sessions of their own: any still alive past the wait is ended.
        try:
            store = Store.from_settings(settings)
            for op in store.list_operations():
                if op.worker and op.pid and is_alive(op.host, op.boot_id, op.pid, op.pid_start):
                    kill_session(op.pid)
            store.close()
        except Exception as e:  # the clean-up must not hide the figures
            print(f"clean-up: {type(e).__name__}: {e}", file=sys.stderr)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
