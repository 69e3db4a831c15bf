"""What the API tests, the end-to-end tests and the benchmark share: callers and
their tokens, a request the real planner accepts, and a server on loopback.

The server (:class:`ThreadServer`) runs the real app under uvicorn in a thread
on a socket bound before it starts, so no other process can take its port in
between (the benchmark and the demo use :func:`automation.local_server.local_server`,
the same socket hand-over to a server process).
"""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx
import uvicorn

from automation.api.main import create_app
from automation.local_server import loopback_socket
from automation.settings import Settings

TOKENS = {
    "alice-token-0123456789": {"user": "alice"},
    "bob-token-0123456789ab": {"user": "bob"},
    "admin-token-0123456789": {"user": "root", "admin": True},
}
ALICE = {"Authorization": "Bearer alice-token-0123456789"}
BOB = {"Authorization": "Bearer bob-token-0123456789ab"}
ADMIN = {"Authorization": "Bearer admin-token-0123456789"}
TOKENS_JSON = json.dumps(TOKENS)
#: The Hugging Face endpoint of every test server: a closed loopback port, so
#: no test can reach the real Hub by accident.
DEAD_HUB = "http://127.0.0.1:9"

MODEL = "deepseek-ai/DeepSeek-R1-Distill-Llama-8B"


def request(name: str, **extra: Any) -> dict[str, Any]:
    """A create request that the real planner accepts."""
    return {
        "name": name,
        "model": MODEL,
        "instance_type": "g5.xlarge",
        "vllm": {"max_model_len": 8192},
        **extra,
    }


class ThreadServer:
    """The API (with its dispatcher) under uvicorn in a thread, on a pre-bound loopback socket.

    Args:
        settings: The app's settings.
        app_kwargs: More arguments of :func:`automation.api.main.create_app`.
    """

    def __init__(self, settings: Settings, **app_kwargs: Any) -> None:
        self.settings = settings
        self.sock = loopback_socket()
        self.port = int(self.sock.getsockname()[1])
        self.base_url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(settings, **app_kwargs), log_level="warning", ws="none", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )
        self._started = threading.Event()

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        # Poll the thread, not the clock: a busy machine only makes this slower.
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the API server thread exited before it started")
            self._started.wait(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join()
        self.sock.close()

    def client(self, headers: dict[str, str] | None = None) -> httpx.Client:
        """An HTTP client of this server."""
        return httpx.Client(base_url=self.base_url, headers=headers or {}, timeout=60.0)
