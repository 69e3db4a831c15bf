"""Fixtures for API tests: the app over httpx (Starlette's TestClient), no engine.

The dispatcher is off, so requests only validate, record and queue; tests
look at the store to see what a request did (and did not) record.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from automation.api.main import create_app
from automation.settings import Settings
from automation.store import Store

TOKENS = {
    "alice-token-0123456789": {"user": "alice"},
    "bob-token-0123456789ab": {"user": "bob"},
    "admin-token-0123456789": {"user": "root", "admin": True},
}
ALICE = {"Authorization": "Bearer alice-token-0123456789"}
BOB = {"Authorization": "Bearer bob-token-0123456789ab"}
ADMIN = {"Authorization": "Bearer admin-token-0123456789"}

MODEL = "deepseek-ai/DeepSeek-R1-Distill-Llama-8B"


def body(name: str, **extra: Any) -> dict[str, Any]:
    """A create request that the real planner accepts."""
    return {
        "name": name,
        "model": MODEL,
        "instance_type": "g5.xlarge",
        "vllm": {"max_model_len": 8192},
        **extra,
    }


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        state_dir=tmp_path / "state",
        render_root=tmp_path / "rendered",
        tokens_inline=json.dumps(TOKENS),
        max_queued_per_endpoint=4,
        max_ttl="2d",
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings, dispatch=False)
    with TestClient(app, base_url="http://127.0.0.1") as c:
        yield c


@pytest.fixture
def store(client: TestClient) -> Store:
    """The app's own store (the lifespan opened it)."""
    s: Store = client.app.state.ctx.store  # type: ignore[attr-defined]
    return s
