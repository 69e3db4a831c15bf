"""Run ``llm-endpoints serve`` on a loopback port for the length of a block.

Used by the demo (the README's main job), the API benchmark and the tests,
which drive a real server over HTTP. The listening socket is bound here and
handed to the server (``serve --fd``), so no other process can take the port
between choosing it and listening on it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import httpx

from automation.toolchain import REPO_ROOT


def loopback_socket() -> socket.socket:
    """A listening TCP socket on 127.0.0.1 with a port the OS chose."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


@contextmanager
def local_server(
    env: Mapping[str, str], *, quiet: bool = False, startup_timeout_s: float = 60
) -> Iterator[str]:
    """Start the API with its dispatcher; yield its base URL; stop it after.

    The server runs in a session of its own, so stopping it (SIGINT to the
    whole group, then SIGKILL) also stops any worker it started.

    Args:
        env: The server's whole environment (settings as ``LLM_ENDPOINTS_*``).
        quiet: Discard the server's stdout (stderr is kept for the error).
        startup_timeout_s: How long to wait for ``/healthz``.

    Raises:
        RuntimeError: the server exited or did not answer in time.
    """
    sock = loopback_socket()
    port = sock.getsockname()[1]
    with sock:
        server = subprocess.Popen(
            [sys.executable, "-m", "automation.cli", "serve", "--fd", str(sock.fileno())],
            cwd=REPO_ROOT,
            env=dict(env),
            stdout=subprocess.DEVNULL if quiet else None,
            stderr=subprocess.PIPE if quiet else None,
            start_new_session=True,
            pass_fds=(sock.fileno(),),
        )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(base, server, startup_timeout_s)
        yield base
    finally:
        os.killpg(server.pid, signal.SIGINT)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(10)


def _wait_healthy(base: str, server: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=base, timeout=5) as client:
        while time.monotonic() < deadline:
            if server.poll() is not None:
                err = server.stderr.read().decode(errors="replace") if server.stderr else ""
                raise RuntimeError(f"the API server exited with code {server.returncode}: {err}")
            try:
                if client.get("/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    raise RuntimeError(f"the API server did not answer /healthz within {timeout_s:.0f}s")
