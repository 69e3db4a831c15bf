"""The control plane end to end: HTTP on 127.0.0.1, real worker processes, the
real Pulumi engine on a local file backend, the render target."""

from __future__ import annotations

import base64
import itertools
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from automation.procs import session_members
from automation.store import EndpointStatus, OpStatus, Store
from tests.e2e.control_plane_harness import (
    ADMIN,
    ALICE,
    BOB,
    MODEL,
    Server,
    checkpoint,
    checkpoint_path,
    grep_tree,
    make_settings,
    request,
    wait_op,
)

pytestmark = pytest.mark.e2e


def _manifest(settings: Any, name: str, kind: str = "configmap", obj: str | None = None) -> Path:
    return settings.render_base / name / "1-manifest" / f"v1-{kind}-llm-{obj or name}.yaml"


def test_create_ready_destroy_gone_over_http(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    store = Store.from_settings(settings)
    with Server(settings) as srv, srv.client(ALICE) as c:
        r = c.post("/v1/endpoints", json=request("one", ttl="4h"))
        assert r.status_code == 202, r.text
        op_id = r.json()["operation"]["id"]
        assert store.get_endpoint("one").status is EndpointStatus.CREATING

        # Follow the event stream: it ends by itself when the operation does.
        events = []
        with c.stream("GET", f"/v1/operations/{op_id}/events", timeout=90) as s:
            assert s.headers["content-type"].startswith("application/x-ndjson")
            events = [json.loads(line) for line in s.iter_lines() if line]
        assert events[-1]["type"] == "end" and events[-1]["status"] == "succeeded", events[-3:]
        text = "\n".join(e.get("line", "") for e in events)
        assert "kubernetes:core/v1:ConfigMap one-config created" in text

        shown = c.get("/v1/endpoints/one").json()
        assert shown["status"] == "ready"
        assert shown["url"] == "http://one.llm.svc.cluster.local:8000/v1"
        assert shown["model"] == MODEL and shown["instance_type"] == "g5.xlarge"
        assert shown["cost_per_hour"] == pytest.approx(1.006)
        assert shown["expires_at"] and shown["last_operation"]["status"] == "succeeded"

        ep = store.get_endpoint("one")
        op = store.get_operation(op_id)
        assert ep.status is EndpointStatus.READY and ep.lock_op_id is None
        assert op.status is OpStatus.SUCCEEDED
        assert op.claimed_at and op.started_at and op.finished_at
        assert op.created_at <= op.claimed_at <= op.started_at < op.finished_at
        cm = yaml.safe_load(_manifest(settings, "one").read_text())
        assert cm["metadata"] == {"name": "one", "namespace": "llm"}
        assert cm["data"] == {
            "model": MODEL,
            "instance_type": "g5.xlarge",
            "api_key_version": "1",
            "vllm_extra_args": "",
        }
        latest = checkpoint(settings, "one")
        assert latest is not None
        types = [res["type"] for res in latest["resources"]]
        assert "kubernetes:core/v1:ConfigMap" in types and not latest.get("pending_operations")
        assert [p for p in settings.work_root.iterdir() if p.is_dir()] == [], "work dirs go"

        r = c.delete("/v1/endpoints/one")
        assert r.status_code == 202
        done = wait_op(c, r.json()["operation"]["id"])
        assert done["status"] == "succeeded", done
        gone = c.get("/v1/endpoints/one").json()
        assert gone["status"] == "destroyed" and gone["url"] is None
        assert c.get("/v1/endpoints").json()["endpoints"] == []
        listed = c.get("/v1/endpoints", params={"include_destroyed": True}).json()
        assert [e["name"] for e in listed["endpoints"]] == ["one"]

    assert store.get_endpoint("one").status is EndpointStatus.DESTROYED
    assert not (settings.render_base / "one").exists(), "rendered files are gone"
    assert not checkpoint_path(settings, "one").exists(), "the stack is removed"
    assert not (settings.stack_settings_root / "Pulumi.ep-one.yaml").exists()
    assert list(settings.work_root.iterdir()) == []


def test_ten_concurrent_creates_all_succeed(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, pool_size=4, quota_endpoints=10)
    store = Store.from_settings(settings)
    names = [f"many-{i}" for i in range(10)]
    with Server(settings) as srv, srv.client(ALICE) as c, ThreadPoolExecutor(10) as pool:
        responses = list(pool.map(lambda n: c.post("/v1/endpoints", json=request(n)), names))
        assert [r.status_code for r in responses] == [202] * 10
        ids = [r.json()["operation"]["id"] for r in responses]
        assert len(set(ids)) == 10
        results = [wait_op(c, i, timeout=240) for i in ids]
    assert [r["status"] for r in results] == ["succeeded"] * 10, results
    for name in names:
        assert store.get_endpoint(name).status is EndpointStatus.READY
        assert _manifest(settings, name).is_file()
    # The pool bound held: never more than pool_size operations at once.
    ops = [store.get_operation(i) for i in ids]
    edges = sorted(
        [(o.started_at, 1) for o in ops] + [(o.finished_at, -1) for o in ops],
        key=lambda e: (e[0], e[1]),
    )
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    assert 1 < peak <= settings.pool_size


def _pulumi_processes(work_root: Path, op_ids: set[str]) -> int:
    """How many ``pulumi`` CLI processes work in one of these operations' dirs."""
    n = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            exe = (proc / "exe").resolve().name
            cwd = (proc / "cwd").resolve()
        except OSError:
            continue
        if exe == "pulumi" and cwd.parent == work_root and cwd.name in op_ids:
            n += 1
    return n


def test_operations_on_one_endpoint_never_overlap(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, pool_size=4)
    store = Store.from_settings(settings)
    with Server(settings) as srv, srv.client(ALICE) as c:
        first = c.post("/v1/endpoints", json=request("serial", labels={"slow": "1"}))
        assert first.status_code == 202
        requests = [
            ("POST", "/v1/endpoints/serial/redeploy", None),
            ("POST", "/v1/endpoints/serial/redeploy", None),
            ("DELETE", "/v1/endpoints/serial", None),
            ("POST", "/v1/endpoints", request("serial")),
            ("POST", "/v1/endpoints/serial/redeploy", None),
        ]
        # Sample the processes while it all runs: never two pulumi CLIs on this stack.
        seen: list[int] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                ids = {o.id for o in store.list_operations("serial")}
                seen.append(_pulumi_processes(settings.work_root.resolve(), ids))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            with ThreadPoolExecutor(5) as pool:
                responses = list(
                    pool.map(lambda req: c.request(req[0], req[1], json=req[2]), requests)
                )
            codes = [r.status_code for r in responses]
            assert set(codes) <= {202, 409}, [r.text for r in responses]
            assert codes[3] == 409, "a live name cannot be created again"
            deadline = time.monotonic() + 120
            while any(not o.status.terminal for o in store.list_operations("serial")):
                assert time.monotonic() < deadline
                time.sleep(0.2)
        finally:
            stop.set()
            sampler.join()

    ops = store.list_operations("serial")
    assert len(ops) >= 2 and ops[0].kind.value == "up"
    assert all(o.status is OpStatus.SUCCEEDED for o in ops), [(o.kind, o.error) for o in ops]
    assert store.get_endpoint("serial").status is EndpointStatus.DESTROYED
    # FIFO, one at a time: each starts after the previous one finished.
    for before, after in itertools.pairwise(ops):
        assert before.finished_at is not None and after.started_at is not None
        assert before.finished_at <= after.started_at, (before, after)
    assert max(seen) == 1, "the sampler saw pulumi run, never twice at once"


def test_auth_and_validation_reach_nothing(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    store = Store.from_settings(settings)
    with (
        Server(settings) as srv,
        srv.client(ALICE) as alice,
        srv.client() as anon,
        srv.client(BOB) as bob,
    ):
        op_id = alice.post("/v1/endpoints", json=request("mine")).json()["operation"]["id"]
        assert wait_op(alice, op_id)["status"] == "succeeded"

        assert anon.get("/v1/endpoints").status_code == 401
        assert anon.post("/v1/endpoints", json=request("anon")).status_code == 401
        assert anon.get("/healthz").json()["dispatcher"] == "running"
        assert bob.get("/v1/endpoints/mine").status_code == 404
        assert bob.delete("/v1/endpoints/mine").status_code == 404
        assert bob.get(f"/v1/operations/{op_id}").status_code == 404
        assert bob.get("/v1/endpoints").json() == {"endpoints": []}

        bad = [
            request("Bad_Name"),
            request("x" * 41),
            request("a\nb"),
            request("--force"),
            request("okay", model="owner/name---x"),
            request("okay", model="owner/{{x}}"),
            request("okay", model="owner/a\nb"),
            request("okay", model="--trust-remote-code"),
            request("okay", vllm={"max_model_len": 8192, "extra_args": ["--a\n--b"]}),
            request("okay", cluster={"mode": "existing", "render_dir": "/"}),
        ]
        for b in bad:
            r = alice.post("/v1/endpoints", json=b)
            assert r.status_code == 422, (b, r.text)
        time.sleep(3 * settings.poll_interval_s)

    assert [o.endpoint for o in store.list_operations()] == ["mine"]
    assert [e.name for e in store.list_endpoints(include_destroyed=True)] == ["mine"]
    stacks = settings.state_dir / "backend" / ".pulumi" / "stacks" / "llm-endpoints"
    assert sorted(p.name for p in stacks.glob("*.json")) == ["ep-mine.json"]
    assert sorted(p.name for p in settings.render_base.iterdir()) == ["mine"]


def test_canary_secret_never_leaks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    canary = "hf_CANARY0e2e0secret0value0123456789"
    needles = [canary.encode(), base64.b64encode(canary.encode())]
    # The render target takes a token only when the operator allows secrets on disk.
    settings = make_settings(tmp_path, render_secrets="allow")
    store = Store.from_settings(settings)
    caplog.set_level(logging.DEBUG)
    bodies: list[str] = []
    with Server(settings) as srv, srv.client(ALICE) as c:
        # A slow resource keeps the worker, the CLI and the language host running
        # while their environments and arguments are read.
        r = c.post("/v1/endpoints", json=request("sec", hf_token=canary, labels={"slow": "4"}))
        assert r.status_code == 202
        op_id = r.json()["operation"]["id"]
        bodies.append(r.text)
        key_call = c.get("/v1/endpoints/sec/api-key")
        assert key_call.status_code == 200 and key_call.headers["cache-control"] == "no-store"
        api_key = key_call.json()["api_key"]
        needles += [api_key.encode(), base64.b64encode(api_key.encode())]
        # Nobody else gets it: not another user, not an administrator.
        assert c.get("/v1/endpoints/sec/api-key", headers=BOB).status_code == 404
        assert c.get("/v1/endpoints/sec/api-key", headers=ADMIN).status_code == 404
        seen_in_processes = _processes_holding(
            [canary, api_key], until=lambda: wait_op_done(c, op_id)
        )
        # Requests that fail, carrying the token, echo nothing of it.
        for b in (
            request("sec", hf_token=canary),
            request("Bad!", hf_token=canary),
            {**request("bad-type"), "hf_token": [canary]},
        ):
            failed = c.post("/v1/endpoints", json=b)
            assert failed.status_code in (409, 422)
            bodies.append(failed.text)
        with c.stream("GET", f"/v1/operations/{op_id}/events", timeout=90) as s:
            bodies.append("".join(s.iter_text()))
        assert wait_op(c, op_id)["status"] == "succeeded"
        for url in (
            "/v1/endpoints",
            "/v1/endpoints/sec",
            f"/v1/operations/{op_id}",
            "/v1/endpoints/sec/operations",
            "/openapi.json",
        ):
            bodies.append(c.get(url).text)
        bodies.append(c.get("/v1/endpoints", headers=ADMIN).text)

        # The token did reach the deployment: as a Pulumi secret, rendered into the
        # Kubernetes Secret (the render target writes manifests in plain text by design).
        rendered = yaml.safe_load(_manifest(settings, "sec", "secret", "sec-hf-token").read_text())
        assert base64.b64decode(rendered["data"]["token"]).decode() == canary
        rendered = yaml.safe_load(_manifest(settings, "sec", "secret", "sec-api-key").read_text())
        assert base64.b64decode(rendered["data"]["key"]).decode() == api_key
        assert "ciphertext" in json.dumps(
            next(
                r
                for r in checkpoint(settings, "sec")["resources"]
                if r["type"] == "pulumi:pulumi:Stack"
            )["outputs"]["api_key_echo"]
        )
        latest = checkpoint(settings, "sec")
        assert latest is not None
        stack_outputs = next(r for r in latest["resources"] if r["type"] == "pulumi:pulumi:Stack")
        assert "ciphertext" in json.dumps(stack_outputs["outputs"]["hf_token_echo"])
        config = (settings.stack_settings_root / "Pulumi.ep-sec.yaml").read_text()
        assert "secure:" in config and "llm-endpoints:hfToken" in config

        logs = store.logs(op_id, 0, 10_000)
        records = repr(store.get_operation(op_id)) + repr(store.get_endpoint("sec")) + repr(logs)
        # The engine's own output masks the secret output.
        assert any("hf_token_echo" in x.line and "[secret]" in x.line for x in logs)
        leaks_running = grep_tree(settings.state_dir, needles)

        d = c.delete("/v1/endpoints/sec")
        assert wait_op(c, d.json()["operation"]["id"])["status"] == "succeeded"
        bodies.append(c.get(f"/v1/operations/{d.json()['operation']['id']}/events").text)

    for text in bodies:
        for needle in needles:
            assert needle.decode() not in text
    assert canary not in records and api_key not in records
    assert seen_in_processes == [], "a process's environment or arguments hold a secret"
    assert leaks_running == [], "state dir (backend, DB, stacks, secrets, work) holds the token"
    assert grep_tree(settings.state_dir, needles) == []
    assert not any(settings.secrets_root.iterdir()), "the drop-box is emptied"
    logged = "\n".join(r.getMessage() for r in caplog.records)
    out, err = capfd.readouterr()
    for text in (logged, out, err):
        assert canary not in text and api_key not in text


def wait_op_done(c: Any, op_id: str) -> bool:
    return c.get(f"/v1/operations/{op_id}").json()["status"] not in ("queued", "running")


def _processes_holding(secrets: list[str], until: Any, timeout: float = 90) -> list[str]:
    """Scan every process's environment and arguments, repeatedly, until ``until()``:
    the processes (and the secret) of those that hold one."""
    found: set[str] = set()
    deadline = time.monotonic() + timeout
    scans = 0
    while not until() and time.monotonic() < deadline:
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            for part in ("environ", "cmdline"):
                try:
                    data = (proc / part).read_bytes()
                except OSError:
                    continue
                for secret in secrets:
                    if secret.encode() in data:
                        found.add(f"{proc.name}/{part}: {secret[:8]}...")
        scans += 1
        time.sleep(0.2)
    assert scans >= 3, "the operation ended before its processes could be read"
    return sorted(found)


def test_worker_session_is_gone_after_each_operation(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    store = Store.from_settings(settings)
    with Server(settings) as srv, srv.client(ALICE) as c:
        op_id = c.post("/v1/endpoints", json=request("tidy")).json()["operation"]["id"]
        assert wait_op(c, op_id)["status"] == "succeeded"
    op = store.get_operation(op_id)
    assert op.pid is not None
    deadline = time.monotonic() + 10
    while session_members(op.pid):
        assert time.monotonic() < deadline, "worker or plugins outlived the operation"
        time.sleep(0.1)
