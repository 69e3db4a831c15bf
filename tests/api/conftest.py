"""Fixtures for API tests: the app over httpx (Starlette's TestClient), no engine.

The dispatcher is off, so requests only validate, record and queue; tests
look at the store to see what a request did (and did not) record.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from automation.api.main import create_app
from automation.settings import Settings
from automation.store import Store
from tests.support import ADMIN, ALICE, BOB, DEAD_HUB, TOKENS_JSON, request

__all__ = ["ADMIN", "ALICE", "BOB", "body"]


def body(name: str, **extra: Any) -> dict[str, Any]:
    """A create request that the real planner accepts."""
    return request(name, **extra)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        state_dir=tmp_path / "state",
        render_root=tmp_path / "rendered",
        tokens_inline=TOKENS_JSON,
        max_queued_per_endpoint=4,
        max_ttl="2d",
        # The tests send HF tokens to the render target; the operator opted in.
        render_secrets="allow",
        # Never the real Hub: a closed local port (tests/api/test_hub.py has a stand-in).
        hf_endpoint=DEAD_HUB,
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
