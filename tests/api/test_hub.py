"""A create request for a model that is not shipped: its config.json comes from the Hub.

A stand-in for the Hub's HTTP API runs on 127.0.0.1 in a thread (the real Hub
is never contacted): one fine-tune it serves, a gated model that needs a
token, and the failures (403, 404, 500, a body too large, not JSON, a slow
drip). Every failure is a 422 naming the field; nothing is recorded.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from automation import hub
from automation.api.main import create_app
from automation.settings import Settings
from automation.store import Store
from automation.usecases import ControlPlane, InvalidRequest, Principal
from components import _versions
from components.models import read_config
from components.rules import MODEL_CONFIG_MAX_BYTES
from tests.api.conftest import ALICE, body
from tests.support import TOKENS_JSON

FINETUNE = "acme/qwen3-8b-finetune"
GATED = "acme/gated-llama"
TOKEN = "hf_reader_token_0123456789"
CONFIG = read_config("Qwen__Qwen3-8B.json")
GATED_CONFIG = read_config("meta-llama__Meta-Llama-3.1-8B.json")


@dataclass
class StandIn:
    """The stand-in Hub: its URL and the requests it got (path, Authorization)."""

    url: str
    requests: list[tuple[str, str | None]] = field(default_factory=list)


def _handler(stand_in: StandIn, stop: threading.Event) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, payload: bytes, *, length: bool = True) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            if length:
                self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:
            auth = self.headers.get("Authorization")
            stand_in.requests.append((self.path, auth))
            repo, _, rest = self.path.lstrip("/").partition("/resolve/")
            try:
                if rest != "main/config.json":
                    self._send(404, b'{"error": "Entry not found"}')
                elif repo == FINETUNE:
                    self._send(200, json.dumps(CONFIG).encode())
                elif repo == GATED:
                    if auth == f"Bearer {TOKEN}":
                        self._send(200, json.dumps(GATED_CONFIG).encode())
                    else:
                        self._send(401, b'{"error": "Access to model is restricted."}')
                elif repo == "acme/forbidden":
                    self._send(403, b'{"error": "forbidden"}')
                elif repo == "acme/broken":
                    self._send(500, b"oops")
                elif repo == "acme/huge":
                    self._send(200, b" " * (MODEL_CONFIG_MAX_BYTES + 1))
                elif repo == "acme/huge-unsized":  # no Content-Length: read until close
                    self._send(200, b" " * (MODEL_CONFIG_MAX_BYTES + 10), length=False)
                elif repo == "acme/not-json":
                    self._send(200, b"{not json")
                elif repo == "acme/a-list":
                    self._send(200, b"[1, 2]")
                elif repo == "acme/drip":  # each byte in time, the whole too slow
                    self.send_response(200)
                    self.end_headers()
                    while not stop.wait(0.05):
                        self.wfile.write(b" ")
                        self.wfile.flush()
                else:
                    self._send(404, b'{"error": "Repository not found"}')
            except (BrokenPipeError, ConnectionResetError):
                pass

    return Handler


@pytest.fixture
def stand_in() -> Iterator[StandIn]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    server.daemon_threads = True
    stop = threading.Event()
    result = StandIn(url=f"http://127.0.0.1:{server.server_address[1]}")
    server.RequestHandlerClass = _handler(result, stop)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield result
    finally:
        stop.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def settings(tmp_path: Path, stand_in: StandIn) -> Settings:
    """The conftest's settings, with the stand-in as the Hub (the client uses these)."""
    return Settings(
        state_dir=tmp_path / "state",
        render_root=tmp_path / "rendered",
        tokens_inline=TOKENS_JSON,
        max_ttl="2d",
        render_secrets="allow",
        hf_endpoint=stand_in.url + "/",
    )


def create(client: TestClient, name: str, **extra: Any) -> Any:
    return client.post("/v1/endpoints", json=body(name, **extra), headers=ALICE)


def refused(client: TestClient, store: Store, name: str, **extra: Any) -> str:
    r = create(client, name, **extra)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid_spec"
    assert store.find_endpoint(name) is None  # nothing recorded
    details: list[str] = r.json()["error"]["details"]
    assert len(details) == 1, details
    return details[0]


def test_a_model_that_is_not_shipped_gets_its_config_from_the_hub(
    client: TestClient, store: Store, stand_in: StandIn
) -> None:
    r = create(client, "ft", model=FINETUNE)
    assert r.status_code == 202, r.text
    assert stand_in.requests == [(f"/{FINETUNE}/resolve/main/config.json", None)]
    ep = store.find_endpoint("ft")
    assert ep is not None and ep.spec["model_config"] == CONFIG  # the worker never fetches
    assert ep.spec["model"] == FINETUNE


def test_a_gated_model_needs_the_token_and_gets_it(
    client: TestClient, store: Store, stand_in: StandIn
) -> None:
    msg = refused(client, store, "gated", model=GATED)
    assert msg == (
        f"model: {GATED} on {stand_in.url} is gated or private: pass hf_token (a Hugging Face "
        "token that may read it), or pass model_config"
    )
    msg = refused(client, store, "gated", model=GATED, hf_token="hf_wrong_token_0123456789")
    assert "gated or private, and the hf_token given may not read it" in msg
    assert "hf_wrong_token" not in msg
    r = create(client, "gated", model=GATED, hf_token=TOKEN)
    assert r.status_code == 202, r.text
    assert stand_in.requests[-1] == (f"/{GATED}/resolve/main/config.json", f"Bearer {TOKEN}")
    ep = store.find_endpoint("gated")
    assert ep is not None and ep.spec["model_config"] == GATED_CONFIG
    assert TOKEN not in json.dumps(ep.spec)


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("acme/no-such-model", "acme/no-such-model on {url}: no such model or no config.json"),
        ("acme/forbidden", "acme/forbidden on {url} is gated or private: pass hf_token"),
        ("acme/broken", "could not be fetched: HTTP 500"),
    ],
)
def test_what_the_hub_answers_is_a_422_naming_the_model(
    client: TestClient, store: Store, stand_in: StandIn, model: str, expected: str
) -> None:
    msg = refused(client, store, "ep", model=model)
    assert msg.startswith("model: ") and expected.format(url=stand_in.url) in msg, msg


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("acme/huge", f"larger than {MODEL_CONFIG_MAX_BYTES} bytes"),
        ("acme/huge-unsized", f"larger than {MODEL_CONFIG_MAX_BYTES} bytes"),
        ("acme/not-json", "is not JSON"),
        ("acme/a-list", "is not a JSON object"),
    ],
)
def test_a_body_that_is_no_config_is_a_422_naming_model_config(
    client: TestClient, store: Store, model: str, expected: str
) -> None:
    msg = refused(client, store, "ep", model=model)
    assert msg.startswith("model_config: ") and expected in msg, msg


def test_a_slow_hub_is_a_422_within_the_timeout(
    client: TestClient, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hub, "TIMEOUT_S", 0.5)
    start = time.monotonic()
    msg = refused(client, store, "ep", model="acme/drip")
    assert "timed out after 0.5 s" in msg, msg
    assert time.monotonic() - start < 5


def test_an_unreachable_hub_is_a_422_naming_it(settings: Settings, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    app = create_app(settings.with_(hf_endpoint=closed), dispatch=False)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        r = client.post("/v1/endpoints", json=body("ep", model=FINETUNE), headers=ALICE)
    assert r.status_code == 422, r.text
    (msg,) = r.json()["error"]["details"]
    assert msg.startswith(f"model: could not fetch the config.json of {FINETUNE} from {closed}")


def test_shipped_models_and_inline_configs_never_go_to_the_hub(
    client: TestClient, stand_in: StandIn
) -> None:
    assert create(client, "shipped").status_code == 202
    assert create(client, "alias", model="llama3-8b").status_code == 202
    inline = create(client, "inline", model="acme/private-ft", model_config=CONFIG)
    assert inline.status_code == 202, inline.text
    # Bad ids are the spec's to refuse, and build no URL.
    assert create(client, "bad", model="../../etc/passwd").status_code == 422
    assert create(client, "alias2", model="llama3-9b").status_code == 422
    assert stand_in.requests == []


def test_the_control_plane_fetches_for_the_cli_too(settings: Settings, stand_in: StandIn) -> None:
    store = Store.from_settings(settings)
    try:
        control = ControlPlane(settings, store, planner=None)
        payload = {"name": "cli", "model": GATED}
        with pytest.raises(InvalidRequest) as err:
            control.create(Principal("alice"), payload)
        assert "pass hf_token" in err.value.details[0]
        op = control.create(Principal("alice"), payload, hf_token=TOKEN).operation
        ep = store.find_endpoint(op.endpoint)
        assert ep is not None and ep.spec["model_config"] == GATED_CONFIG
    finally:
        store.close()


def test_what_the_serving_image_cannot_run_is_refused_before_recording(
    client: TestClient, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    ray = _versions.RAY_VLLM_IMAGE
    monkeypatch.setitem(_versions.IMAGES, ray, replace(_versions.IMAGES[ray], vllm="0.10.0"))
    msg = refused(client, store, "oss", model="openai/gpt-oss-20b", serving="ray-service")
    assert msg.startswith("serving: openai/gpt-oss-20b (GptOssForCausalLM) needs vLLM >= 0.10.1")
    assert "serving 'deployment'" in msg


def test_responses_summarize_the_recorded_config(
    client: TestClient, store: Store, stand_in: StandIn
) -> None:
    """The record keeps the whole config; a response (and every row of a list)
    shows its architectures, size and digest instead of up to 256 KiB again."""
    assert create(client, "ft", model=FINETUNE).status_code == 202
    shown = client.get("/v1/endpoints/ft", headers=ALICE).json()["spec"]["model_config"]
    raw = json.dumps(CONFIG, sort_keys=True, separators=(",", ":")).encode()
    assert shown == {
        "architectures": CONFIG["architectures"],
        "bytes": len(raw),
        "sha256": hashlib.sha256(raw).hexdigest(),
    }
    (row,) = client.get("/v1/endpoints", headers=ALICE).json()["endpoints"]
    assert row["spec"]["model_config"] == shown
    ep = store.find_endpoint("ft")
    assert ep is not None and ep.spec["model_config"] == CONFIG
