"""Crashes and time limits, for real: a worker killed with SIGKILL in the middle
of ``pulumi up`` (the engine holding a pending create and the stack lock), an
operation stopped at its time limit, and the stack-level clean-up of both."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from automation.procs import kill_session, session_members
from automation.settings import Settings
from automation.stacks import StackService
from automation.store import CancelReason, EndpointStatus, OpStatus, Store
from components.config import parse_spec
from tests.e2e.control_plane_harness import (
    ALICE,
    Server,
    checkpoint,
    checkpoint_path,
    lock_files,
    make_settings,
    pulumi_export,
    request,
    wait_op,
)

pytestmark = pytest.mark.e2e


def _wait_pending_create(settings: Settings, name: str, timeout: float = 60) -> None:
    """Until the engine has recorded a pending create of the slow resource."""
    deadline = time.monotonic() + timeout
    while True:
        latest = checkpoint(settings, name) or {}
        pending = latest.get("pending_operations") or []
        if any(
            p["type"] == "creating" and p["resource"]["urn"].endswith(f"{name}-slow")
            for p in pending
        ):
            return
        assert time.monotonic() < deadline, "the engine never started the slow create"
        time.sleep(0.1)


def test_kill_9_mid_up_then_restart_interrupts_and_destroys_cleanly(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    store = Store.from_settings(settings)
    with Server(settings) as first, first.client(ALICE) as c:
        op_id = c.post("/v1/endpoints", json=request("crash", labels={"slow": "120"})).json()[
            "operation"
        ]["id"]
        _wait_pending_create(settings, "crash")
    # The API is down; its worker goes on. Now the worker dies hard.
    op = store.get_operation(op_id)
    assert op.status is OpStatus.RUNNING and op.pid is not None
    worker = op.pid
    assert len(session_members(worker)) >= 2, "the worker runs pulumi in its session"
    os.kill(worker, signal.SIGKILL)
    time.sleep(0.5)
    assert store.get_operation(op_id).status is OpStatus.RUNNING, "nobody noticed yet"
    assert lock_files(settings, "crash"), "the dead update left the stack locked"

    with Server(settings) as second, second.client(ALICE) as c:
        # Start-up recovery: the owner is provably dead, so the operation is
        # interrupted, its stack lock in the store released, its orphans killed.
        op = store.get_operation(op_id)
        assert op.status is OpStatus.INTERRUPTED, op
        assert "died" in (op.error or "")
        ep = store.get_endpoint("crash")
        assert ep.status is EndpointStatus.FAILED and ep.lock_op_id is None
        assert session_members(worker) == [], "pulumi and plugins of the dead worker are gone"
        shown = c.get(f"/v1/operations/{op_id}").json()
        assert shown["status"] == "interrupted"

        # The crash left a pending create in the stack.
        before = pulumi_export(settings, "crash", tmp_path)
        assert [p["type"] for p in before.get("pending_operations", [])] == ["creating"]

        d = c.delete("/v1/endpoints/crash")
        assert d.status_code == 202
        done = wait_op(c, d.json()["operation"]["id"])
        assert done["status"] == "succeeded", done
        log = "\n".join(x.line for x in store.logs(done["id"], 0, 10_000))
        assert "[recover] clearing 1 stale lock(s)" in log
        assert "[recover] dropping pending operation: creating" in log and "crash-slow" in log
        assert c.get("/v1/endpoints/crash").json()["status"] == "destroyed"

    assert not checkpoint_path(settings, "crash").exists()
    assert lock_files(settings, "crash") == []
    assert not (settings.render_base / "crash").exists()


def test_time_limit_stops_an_operation_as_timed_out(tmp_path: Path) -> None:
    # Long enough for the destroy below on a busy machine, far short of the 120 s resource.
    settings = make_settings(tmp_path, op_time_limit_s=10, cancel_grace_s=2)
    store = Store.from_settings(settings)
    with Server(settings) as srv, srv.client(ALICE) as c:
        op_id = c.post("/v1/endpoints", json=request("late", labels={"slow": "120"})).json()[
            "operation"
        ]["id"]
        op = wait_op(c, op_id, timeout=60)
        assert op["status"] == "timed_out", op
        assert "time limit" in op["error"]
        # Stopped because of the limit (the dispatcher's verdict in the record),
        # not because the 120 s resource finished.
        assert store.get_operation(op_id).cancel_reason is CancelReason.TIMEOUT
        assert store.get_endpoint("late").status is EndpointStatus.FAILED
        # What the stopped update left behind does not stop the destroy.
        d = c.delete("/v1/endpoints/late")
        assert wait_op(c, d.json()["operation"]["id"])["status"] == "succeeded"
    pid = store.get_operation(op_id).pid
    assert pid is not None and session_members(pid) == []


def test_destroy_clears_pending_operations_of_a_killed_up(tmp_path: Path) -> None:
    """StackService alone: after SIGKILL mid-``up``, destroy (stack kept) leaves
    ``pulumi stack export`` with no pending operations and no resources."""
    settings = make_settings(tmp_path)
    spec = parse_spec(
        {
            **request("stack-only", labels={"slow": "120"}),
            "cluster": {"mode": "existing", "render_dir": str(settings.render_base / "stack-only")},
            "pool": {"mode": "none"},
        }
    )
    code = (
        "import sys; from pathlib import Path; from automation.stacks import StackService;"
        "from automation.settings import Settings; from components.config import EndpointSpec;"
        "s = Settings.from_env(); spec = EndpointSpec.model_validate_json(sys.argv[1]);"
        "StackService(s).up(spec, work_dir=Path(sys.argv[2]))"
    )
    env = {**os.environ, **settings.to_env(), "PYTHONPATH": str(Path.cwd())}
    proc = subprocess.Popen(
        [sys.executable, "-c", code, spec.model_dump_json(), str(tmp_path / "w1")],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_pending_create(settings, "stack-only")
    finally:
        kill_session(proc.pid)
        proc.wait(10)
    assert lock_files(settings, "stack-only")

    svc = StackService(settings)
    result = svc.destroy("stack-only", work_dir=tmp_path / "w2", remove=False)
    assert result.result == "succeeded"
    assert len(result.dropped_pending) == 1 and result.dropped_pending[0].startswith("creating")
    after = pulumi_export(settings, "stack-only", tmp_path)
    assert not after.get("pending_operations")
    assert not after.get("resources")
    assert svc.export("stack-only", work_dir=tmp_path / "w3").get("pending_operations") is None
    assert lock_files(settings, "stack-only") == []
    svc.remove("stack-only", work_dir=tmp_path / "w4")
    assert not svc.exists("stack-only", work_dir=tmp_path / "w5")
