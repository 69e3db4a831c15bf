"""Tracker issue 11, "Tenant isolation and hostile input": the findings that need
worker processes and the real engine (4: the rendered manifests, 7, 10, 11).

Like ``tests/api/test_hostile.py`` they go through the HTTP API, the CLI,
settings variables, files and processes only, so they run on a tree from
before the fixes and fail there on their assertions.
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml

from automation.settings import DEFAULT_BUILDER, Settings
from automation.store import OpStatus, Store, utcnow
from tests.e2e.control_plane_harness import (
    ALICE,
    Server,
    checkpoint,
    make_settings,
    request,
    wait_op,
)

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def _configured(settings: Settings, **env: str) -> Settings:
    """``settings`` with more ``LLM_ENDPOINTS_*`` variables, as an operator sets them."""
    return Settings.from_env(env={**settings.to_env(), **env})


def _until(what: str, check: Callable[[], Any], timeout: float = 60) -> Any:
    """Poll ``check`` until it returns something true; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return value


def _log(c: httpx.Client, op_id: str) -> str:
    """An operation's whole log, through its event stream."""
    return c.get(f"/v1/operations/{op_id}/events", timeout=90).text


def _docs(root: Path) -> dict[str, dict[str, Any]]:
    """Rendered manifests by ``Kind/name``."""
    out = {}
    for f in sorted(root.rglob("*.yaml")):
        for doc in yaml.safe_load_all(f.read_text()):
            if doc:
                out[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return out


def _session(sid: int) -> list[psutil.Process]:
    """Live processes of session ``sid``."""
    found = []
    for proc in psutil.process_iter(["status"]):
        if proc.info["status"] in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
            continue
        with contextlib.suppress(OSError, psutil.Error):
            if os.getsid(proc.pid) == sid:
                found.append(proc)
    return found


# -- 4. endpoints have an API key -------------------------------------------------------------


def test_f04_serving_pods_read_the_api_key_secret(tmp_path: Path) -> None:
    base = make_settings(tmp_path, builder=DEFAULT_BUILDER)
    # Secrets stay out of files: the Secret is not rendered, the log says how to make it.
    plain = _configured(base, LLM_ENDPOINTS_RENDER_SECRETS="")
    with Server(plain) as srv, srv.client(ALICE) as c:
        r = c.post("/v1/endpoints", json=request("keyed", ttl="2h"))
        assert r.status_code == 202, r.text
        op_id = r.json()["operation"]["id"]
        assert wait_op(c, op_id, timeout=120)["status"] == "succeeded"
        docs = _docs(plain.render_base / "keyed")
        container = docs["Deployment/keyed"]["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e for e in container.get("env", [])}
        assert "VLLM_API_KEY" in env, "vLLM serves without an API key"
        assert env["VLLM_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "keyed-api-key"
        assert "Secret/keyed-api-key" not in docs, "the key was written to disk"
        log = _log(c, op_id)
        assert "keyed-api-key is not rendered" in log, log
        key = c.get("/v1/endpoints/keyed/api-key").json()["api_key"]
        assert key not in log
        for path in (plain.render_base / "keyed").rglob("*"):
            assert not path.is_file() or key.encode() not in path.read_bytes()

    # The operator allows secrets on disk: the Secret is rendered and holds the owner's key.
    allowing = _configured(
        base,
        LLM_ENDPOINTS_RENDER_SECRETS="allow",
        LLM_ENDPOINTS_STATE_DIR=str(tmp_path / "allowing"),
        LLM_ENDPOINTS_RENDER_ROOT=str(tmp_path / "allowing-rendered"),
    )
    with Server(allowing) as srv, srv.client(ALICE) as c:
        r = c.post("/v1/endpoints", json=request("keyed", ttl="2h"))
        assert wait_op(c, r.json()["operation"]["id"], timeout=120)["status"] == "succeeded"
        docs = _docs(allowing.render_base / "keyed")
        secret = docs["Secret/keyed-api-key"]
        key = c.get("/v1/endpoints/keyed/api-key").json()["api_key"]
        assert base64.b64decode(secret["data"]["key"]).decode() == key
        assert key not in c.get("/v1/endpoints/keyed").text


# -- 7. a destroy that leaves files behind is not "destroyed" -------------------------------


@contextlib.contextmanager
def _mounted(where: Path) -> Iterator[None]:
    """A tmpfs on ``where``: a folder that even root cannot remove while it is mounted."""
    where.mkdir(parents=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs CAP_SYS_ADMIN): {done.stderr.strip()}")
    try:
        (where / "left-behind.yaml").write_text("kind: ConfigMap\n")
        yield
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_f07_a_destroy_that_cannot_remove_the_files_is_destroy_failed(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    render_dir = settings.render_base / "sticky"
    with Server(settings) as srv, srv.client(ALICE) as c:
        r = c.post("/v1/endpoints", json=request("sticky", ttl="1h"))
        assert wait_op(c, r.json()["operation"]["id"])["status"] == "succeeded"
        assert any(render_dir.rglob("*.yaml"))
        stuck = render_dir / "stuck"
        with _mounted(stuck):
            r = c.delete("/v1/endpoints/sticky")
            done = wait_op(c, r.json()["operation"]["id"])
            shown = c.get("/v1/endpoints/sticky").json()
            assert (done["status"], shown["status"]) == ("failed", "destroy_failed"), (
                f"destroy left {stuck} on disk and reported {done['status']}/{shown['status']}"
            )
            assert str(render_dir) in (done["error"] or ""), done["error"]
            assert str(render_dir) in (shown["error"] or "")
            assert render_dir.exists()
        # Once the folder can go, another destroy finishes the job.
        r = c.delete("/v1/endpoints/sticky")
        assert r.status_code == 202, r.text
        assert wait_op(c, r.json()["operation"]["id"])["status"] == "succeeded"
        assert c.get("/v1/endpoints/sticky").json()["status"] == "destroyed"
    assert not render_dir.exists()


# -- 10. teardown alerts on every run while a destroy failed ----------------------------------


def _teardown(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("LLM_ENDPOINTS_")},
        **settings.to_env(),
        "PYTHONPATH": str(REPO),
    }
    return subprocess.run(
        [sys.executable, "-m", "automation.teardown", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def test_f10_teardown_exits_non_zero_on_every_run_while_a_destroy_failed(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path)
    store = Store.from_settings(settings)
    with Server(settings) as srv, srv.client(ALICE) as c:
        body = request("stuck", ttl="1h", labels={"fail-destroy": "true"})
        r = c.post("/v1/endpoints", json=body)
        assert wait_op(c, r.json()["operation"]["id"])["status"] == "succeeded"
    # Expire it: teardown reads the expiry from the store.
    store.extend("stuck", utcnow() - timedelta(minutes=1))

    codes = []
    first = _teardown(settings, "--attempts", "1", "--backoff", "0")
    codes.append(first.returncode)
    assert store.get_endpoint("stuck").status.value == "destroy_failed", first.stdout
    tries = len(store.list_operations("stuck"))
    for args in (("--attempts", "1", "--backoff", "0"), ("--dry-run",), ()):
        codes.append(_teardown(settings, *args).returncode)
    assert codes == [1, 1, 1, 1], f"teardown exit codes {codes} with stuck destroy_failed"
    assert len(store.list_operations("stuck")) == tries, "not retried unless asked"


# -- 11. no process outlives its operation -------------------------------------------------------


def test_f11_a_killed_pulumi_cli_leaves_no_plugin_running(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    store = Store.from_settings(settings)
    worker: int | None = None
    try:
        with Server(settings) as srv, srv.client(ALICE) as c:
            r = c.post("/v1/endpoints", json=request("orphans", labels={"slow": "120"}))
            op_id = r.json()["operation"]["id"]

            def pending_slow_create() -> bool:
                pending = (checkpoint(settings, "orphans") or {}).get("pending_operations") or []
                return any(p["resource"]["urn"].endswith("orphans-slow") for p in pending)

            _until("the engine to start the slow create", pending_slow_create, timeout=90)
            op = store.get_operation(op_id)
            assert op.status is OpStatus.RUNNING and op.pid is not None
            worker = op.pid
            members = _session(worker)
            cli = [p for p in members if p.name() == "pulumi"]
            assert len(cli) == 1, [p.name() for p in members]
            plugins = [p for p in members if p.pid not in (worker, cli[0].pid)]
            assert plugins, "no provider plugin is running"
            cli[0].send_signal(signal.SIGKILL)

            done = wait_op(c, op_id, timeout=90)
            assert done["status"] != "succeeded", done

            def session_over() -> bool:
                return not _session(worker or 0)

            with contextlib.suppress(AssertionError):
                _until("the worker's session to end", session_over, timeout=20)
            left = [f"{p.pid} {p.name()}" for p in _session(worker)]
            assert left == [], f"processes outlived their operation: {left}"
    finally:
        # Only what this test's worker started: its session's processes.
        for proc in _session(worker) if worker is not None else []:
            with contextlib.suppress(psutil.Error):
                proc.kill()
