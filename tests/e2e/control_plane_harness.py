"""Harness of the control-plane end-to-end tests: settings, a loopback
server, waiting for operations and looking at the local backend."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx

from automation.settings import Settings
from automation.toolchain import run_pulumi
from tests.e2e.control_plane_support import BUILDER
from tests.support import (
    ADMIN,
    ALICE,
    BOB,
    DEAD_HUB,
    MODEL,
    TOKENS_JSON,
    ThreadServer,
    request,
)

__all__ = ["ADMIN", "ALICE", "BOB", "MODEL", "Server", "make_settings", "request", "wait_op"]


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings for one test: private state dir, renders outside it, test builder."""
    values: dict[str, Any] = {
        "state_dir": tmp_path / "state",
        "render_root": tmp_path / "rendered",
        "builder": BUILDER,
        "tokens_inline": TOKENS_JSON,
        "pool_size": 4,
        "poll_interval_s": 0.1,
        "op_time_limit_s": 120,
        "cancel_grace_s": 5,
        "hf_endpoint": DEAD_HUB,
    }
    values.update(overrides)
    return Settings(**values)


class Server(ThreadServer):
    """The API with its dispatcher, on loopback, for one test."""


def wait_op(client: httpx.Client, op_id: str, timeout: float = 90.0) -> dict[str, Any]:
    """Poll an operation until it has finished."""
    deadline = time.monotonic() + timeout
    while True:
        r = client.get(f"/v1/operations/{op_id}")
        assert r.status_code == 200, r.text
        op = r.json()
        if op["status"] not in ("queued", "running"):
            return dict(op)
        assert time.monotonic() < deadline, f"operation still {op['status']}: {op}"
        time.sleep(0.2)


def checkpoint_path(settings: Settings, endpoint: str) -> Path:
    return (
        settings.state_dir
        / "backend"
        / ".pulumi"
        / "stacks"
        / "llm-endpoints"
        / (f"ep-{endpoint}.json")
    )


def checkpoint(settings: Settings, endpoint: str) -> dict[str, Any] | None:
    """The stack's latest checkpoint in the local backend, or None."""
    path = checkpoint_path(settings, endpoint)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return dict(data.get("checkpoint", {}).get("latest") or {})


def lock_files(settings: Settings, endpoint: str) -> list[Path]:
    root = settings.state_dir / "backend" / ".pulumi" / "locks"
    return sorted(root.glob(f"*/llm-endpoints/ep-{endpoint}/*.json"))


def pulumi_export(settings: Settings, endpoint: str, tmp: Path) -> dict[str, Any]:
    """``pulumi stack export`` of an endpoint's stack, through the CLI."""
    project = tmp / f"export-{endpoint}-{time.monotonic_ns()}"
    project.mkdir(parents=True)
    (project / "Pulumi.yaml").write_text("name: llm-endpoints\nruntime: python\n")
    out = run_pulumi(
        ["stack", "export", "--stack", f"ep-{endpoint}"],
        cwd=project,
        state_dir=settings.state_dir,
        capture=True,
    )
    return dict(json.loads(out.stdout)["deployment"])


def grep_tree(root: Path, needles: list[bytes]) -> list[str]:
    """Files under ``root`` containing any of ``needles`` (binary-safe)."""
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            hits += [f"{path}: {n!r}" for n in needles if n in data]
    return hits
