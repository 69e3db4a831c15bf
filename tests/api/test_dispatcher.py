"""Dispatcher and worker plumbing with stand-in worker processes (no engine):
liveness by pid + start time, crash recovery, orphans, time limits, cancel."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from automation.auth import TokenRegistry, parse_tokens
from automation.dispatcher import Dispatcher
from automation.procs import (
    BOOT_ID,
    HOST,
    is_alive,
    pid_start,
    process_started_after,
    session_members,
)
from automation.secrets import Scrubber
from automation.settings import Settings
from automation.stacks import sanitize_error, stack_name
from automation.store import EndpointStatus, Operation, OpStatus, Store

SPEC = {"name": "w", "model": "m"}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        state_dir=tmp_path / "state", poll_interval_s=0.05, op_time_limit_s=30, cancel_grace_s=0.5
    )


@pytest.fixture
def store(settings: Settings) -> Store:
    return Store.from_settings(settings)


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Stand-in workers; whatever a test leaves running is killed after it."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        for pid in session_members(p.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        p.kill()
        p.wait(10)


def _launcher(procs: list, code: str):
    def launch(_op: Operation) -> subprocess.Popen[bytes]:
        p = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
        procs.append(p)
        return p

    return launch


def _queue(store: Store, name: str = "w") -> str:
    op, _ = store.request_create(name, "alice", {**SPEC, "name": name}, expires_at=None)
    return op.id


def _wait(pred, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def test_liveness_uses_pid_start_time_host_and_boot() -> None:
    me, start = os.getpid(), pid_start(os.getpid())
    assert start is not None
    assert is_alive(HOST, BOOT_ID, me, start) is True
    assert is_alive(HOST, BOOT_ID, me, start + 1) is False, "same pid, other process: reused"
    assert is_alive(HOST, "another-boot", me, start) is False
    assert is_alive("another-host", BOOT_ID, me, start) is None, "cannot tell: never cleared"
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    assert is_alive(HOST, BOOT_ID, p.pid, None) is False
    # A zombie is dead too.
    z = subprocess.Popen([sys.executable, "-c", "pass"])
    _wait(lambda: Path(f"/proc/{z.pid}/stat").read_text().split(") ")[1][0] == "Z")
    assert is_alive(HOST, BOOT_ID, z.pid, None) is False
    z.wait()
    assert process_started_after(me, datetime(2000, 1, 1, tzinfo=UTC))
    assert not process_started_after(me, datetime.now(UTC))
    assert process_started_after(p.pid, datetime.now(UTC) - timedelta(days=1))


def test_a_running_operation_of_a_dead_worker_is_interrupted_on_restart(
    settings: Settings, store: Store, procs: list
) -> None:
    op_id = _queue(store)
    # The worker starts a child of its own (think: the pulumi CLI), then dies by SIGKILL.
    code = "import subprocess, time; subprocess.Popen(['sleep', '60']); time.sleep(60)"
    first = Dispatcher(settings, store, launcher=_launcher(procs, code))
    first.tick()
    op = store.get_operation(op_id)
    assert op.status is OpStatus.RUNNING and op.pid == procs[0].pid
    assert store.get_endpoint("w").lock_op_id == op_id
    from automation.procs import owner_of

    store.mark_started(op_id, owner_of(procs[0].pid))
    _wait(lambda: len(session_members(procs[0].pid)) == 2)
    orphan = next(p for p in session_members(procs[0].pid) if p != procs[0].pid)
    os.kill(procs[0].pid, signal.SIGKILL)
    procs[0].wait()

    # "Restart": a new dispatcher (no children of its own) recovers on its first tick.
    second = Dispatcher(settings, store, launcher=_launcher(procs, "pass"))
    second.tick()
    op = store.get_operation(op_id)
    assert op.status is OpStatus.INTERRUPTED
    assert "died" in (op.error or "")
    ep = store.get_endpoint("w")
    assert ep.lock_op_id is None and ep.status is EndpointStatus.FAILED
    _wait(
        lambda: (
            not Path(f"/proc/{orphan}").exists()
            or Path(f"/proc/{orphan}/stat").read_text().split(") ")[1][0] == "Z"
        )
    )


def test_a_live_worker_keeps_its_lock(settings: Settings, store: Store, procs: list) -> None:
    op_id = _queue(store)
    first = Dispatcher(settings, store, launcher=_launcher(procs, "import time; time.sleep(60)"))
    first.tick()
    Dispatcher(settings, store).tick()  # another process looking at the store
    assert store.get_operation(op_id).status is OpStatus.RUNNING
    assert store.get_endpoint("w").lock_op_id == op_id


def test_time_limit_sends_sigint_then_sigkill(
    settings: Settings, store: Store, procs: list
) -> None:
    fast = settings.with_(op_time_limit_s=0.3)
    op_id = _queue(store)
    stubborn = "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(60)"
    d = Dispatcher(fast, store, launcher=_launcher(procs, stubborn))
    t0 = time.monotonic()
    (op,) = d.run_until_done([op_id], timeout=20)
    took = time.monotonic() - t0
    assert op.status is OpStatus.TIMED_OUT
    assert "time limit" in (op.error or "")
    assert procs[0].returncode == -signal.SIGKILL, "SIGINT was ignored, so SIGKILL ended it"
    assert took >= fast.op_time_limit_s + fast.cancel_grace_s
    assert store.get_endpoint("w").lock_op_id is None


def test_cancel_of_a_running_operation(settings: Settings, store: Store, procs: list) -> None:
    op_id = _queue(store)
    d = Dispatcher(settings, store, launcher=_launcher(procs, "import time; time.sleep(60)"))
    d.tick()
    store.cancel(op_id)
    (op,) = d.run_until_done([op_id], timeout=20)
    assert op.status is OpStatus.INTERRUPTED and op.error and "cancelled" in op.error
    # SIGINT ended it (KeyboardInterrupt, or exit 1 when it lands during start-up),
    # well before the grace period would have escalated to SIGKILL.
    assert procs[0].returncode in (-signal.SIGINT, 1)


def test_pool_is_bounded_and_stacks_are_serialized(
    settings: Settings, store: Store, procs: list
) -> None:
    small = settings.with_(pool_size=2)
    ids = [_queue(store, f"p{i}") for i in range(3)]
    d = Dispatcher(small, store, launcher=_launcher(procs, "import time; time.sleep(60)"))
    d.tick()
    running = [o.id for o in store.running()]
    assert running == ids[:2] and len(procs) == 2
    d.tick()
    assert len(procs) == 2, "the pool is full"


def test_scrubber_and_sanitized_errors() -> None:
    scrub = Scrubber(["passphrase-value", None, "ab"])
    scrub.add("hf_secretvalue123")
    assert scrub("x passphrase-value y hf_secretvalue123 hf_OTHERtoken12345") == (
        "x [secret] y [secret] [secret]"
    )
    err = Exception(
        "\n code: 255\n stdout: Updating (ep-x)\n"
        " -  kubernetes:core/v1:ConfigMap x-config deleting (0s) error: progress noise\n"
        "Diagnostics:\n  pulumi:pulumi:Stack (llm-endpoints-ep-x):\n    error: update failed\n\n"
        "  kubernetes:core/v1:ConfigMap (x-config):\n"
        "    error: resource x-config cannot be deleted\n    because it is protected\n"
        "    warning: something else\n\nResources:\n    2 errored\n"
        " stderr: error: hf_secretvalue123 was bad\n"
    )
    assert (
        sanitize_error(err, scrub) == "resource x-config cannot be deleted because it is protected"
    )
    plain = Exception(
        " code: 1\n stdout: \n stderr: error: update failed\nerror: bad passphrase-value"
    )
    assert sanitize_error(plain, scrub) == "bad [secret]"
    assert sanitize_error(Exception("no details"), scrub) == "no details"
    assert stack_name("llama") == "ep-llama"
    with pytest.raises(ValueError, match="DNS-1123"):
        stack_name("Bad Name")


def test_tokens(tmp_path: Path, settings: Settings) -> None:
    with pytest.raises(ValueError, match="shorter than 16"):
        parse_tokens("short: alice", "x")
    with pytest.raises(ValueError, match="needs a 'user'"):
        parse_tokens('{"0123456789abcdef": {"admin": true}}', "x")
    f = tmp_path / "tokens.yaml"
    f.write_text("alice-0123456789abcdef: {user: alice}\n")
    reg = TokenRegistry(settings.with_(tokens_file=f))
    assert reg.lookup("alice-0123456789abcdef").user == "alice"  # type: ignore[union-attr]
    assert reg.lookup("alice-0123456789abcdeX") is None
    f.write_text("bob-0123456789abcdef00: {user: bob, admin: true}\n")
    os.utime(f, (time.time() + 5, time.time() + 5))
    assert reg.lookup("alice-0123456789abcdef") is None, "rotated out"
    bob = reg.lookup("bob-0123456789abcdef00")
    assert bob is not None and bob.admin
