"""Runs operations, each in its own OS process, and keeps them honest.

Two halves:

* :class:`Dispatcher` (in the API server, the teardown job and the CLI) claims
  queued operations from the store and starts one worker process per
  operation, ``python -m automation.worker run <op-id>``, in a new session
  (so it is its own process group, and every process it starts can be found
  by session id). At most ``pool_size`` run per dispatcher; at most one per
  stack anywhere, because the claim takes the stack lock in the store (FIFO per
  stack: only the oldest queued operation of an endpoint can be claimed). It
  also watches every running operation on this host: past the time limit or
  when cancelled it sends SIGINT to the worker's process group (Pulumi cancels
  gracefully), then SIGKILL to the whole session after a grace period; an
  operation whose owner process is provably dead (its pid is gone, a zombie,
  or reused: the start time in ``/proc/<pid>/stat`` differs; or the host
  rebooted) is marked ``interrupted`` (``timed_out`` if it was being stopped
  for time) and its stack lock released. That is also what happens at
  start-up to operations left ``running`` by a crash.
* :func:`run_operation` (the worker process) runs one ``up``, ``destroy`` or
  ``refresh`` through :class:`automation.stacks.StackService` in its own work
  dir, streams the engine's output into the operation's bounded log (scrubbed
  of secrets), and records the outcome. The HF token of a create waits in a
  0600 file under ``<state>/secrets/`` (beside the passphrase file, which has
  the same protection) and is deleted as soon as the worker has stored it as a
  Pulumi secret config value.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

from automation.settings import Settings
from automation.store import (
    CancelReason,
    EndpointOutputs,
    Operation,
    OpKind,
    OpStatus,
    Owner,
    Store,
    utcnow,
)
from automation.toolchain import REPO_ROOT

HOST = socket.gethostname()
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

# ---------------------------------------------------------------------------
# Processes


def boot_id() -> str:
    """This boot's id (pids and start times mean nothing across a reboot)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


BOOT_ID = boot_id()


def _proc_stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, process group, session, start time in clock ticks) of a pid."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text(errors="replace")
    except (OSError, ValueError):
        return None
    # The command name (field 2) may hold spaces or parentheses; fields after
    # the last ')' are space separated, field 3 (state) first.
    rest = data[data.rindex(")") + 2 :].split()
    try:
        return rest[0], int(rest[2]), int(rest[3]), int(rest[19])
    except (IndexError, ValueError):
        return None


def pid_start(pid: int) -> int | None:
    """A process's start time in clock ticks since boot (None if it is gone)."""
    st = _proc_stat(pid)
    return None if st is None else st[3]


def owner_of(pid: int | None = None) -> Owner:
    """The identity of a process (default: this one) as the store records it."""
    pid = os.getpid() if pid is None else pid
    return Owner(host=HOST, boot_id=BOOT_ID, pid=pid, pid_start=pid_start(pid))


def is_alive(host: str | None, boot: str | None, pid: int | None, start: int | None) -> bool | None:
    """Whether a recorded owner process still runs.

    Returns:
        False only when it is provably dead (gone, zombie, pid reused, or the
        host rebooted); None when it runs on another host (cannot tell).
    """
    if pid is None:
        return False
    if host and host != HOST:
        return None
    if boot and BOOT_ID and boot != BOOT_ID:
        return False
    st = _proc_stat(pid)
    if st is None or st[0] in ("Z", "X", "x"):
        return False
    return not (start is not None and st[3] != start)


def _btime() -> float:
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except OSError:
        pass
    return 0.0


def process_started_after(pid: int, when: datetime, slack_s: float = 1.0) -> bool:
    """True when ``pid`` is not running, or the process now using it started
    after ``when`` (so it cannot be the one that was there then)."""
    st = _proc_stat(pid)
    if st is None or st[0] in ("Z", "X", "x"):
        return True
    started = _btime() + st[3] / _CLK_TCK
    return started > when.timestamp() + slack_s


def session_members(sid: int) -> list[int]:
    """Pids of every process in session ``sid``."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            st = _proc_stat(int(entry.name))
            if st is not None and st[2] == sid and st[0] not in ("Z", "X", "x"):
                out.append(int(entry.name))
    return out


def interrupt_group(pgid: int) -> None:
    """SIGINT to a worker's process group (the worker and its ``pulumi`` CLI)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGINT)


def kill_session(sid: int) -> int:
    """SIGKILL every process of a worker's session (plugins have groups of
    their own, so killing the group alone would leave them). Returns how many."""
    n = 0
    for pid in session_members(sid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
            n += 1
    return n


# ---------------------------------------------------------------------------
# The secret drop-box


def secret_path(settings: Settings, op_id: str) -> Path:
    """Where a create's HF token waits for its worker."""
    return settings.secrets_root / f"{op_id}.hf_token"


def put_secret(settings: Settings, op_id: str, value: str) -> None:
    """Write the token (0600, atomically) for operation ``op_id``."""
    root = settings.secrets_root
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    final = secret_path(settings, op_id)
    tmp = final.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value)
    os.replace(tmp, final)


def read_secret(settings: Settings, op_id: str) -> str | None:
    """The token waiting for ``op_id``, if any."""
    try:
        return secret_path(settings, op_id).read_text()
    except OSError:
        return None


def discard_secret(settings: Settings, op_id: str) -> None:
    """Delete the token of ``op_id``."""
    secret_path(settings, op_id).unlink(missing_ok=True)


# ---------------------------------------------------------------------------
# The dispatcher

Launcher = Callable[[Operation], "subprocess.Popen[bytes]"]

#: Workers of stopped dispatchers, still running; waited for by any dispatcher.
_DETACHED: list[subprocess.Popen[bytes]] = []
_DETACHED_LOCK = threading.Lock()


def _detach(proc: subprocess.Popen[bytes]) -> None:
    with _DETACHED_LOCK:
        _DETACHED.append(proc)
    _reap_detached()


def _reap_detached() -> None:
    with _DETACHED_LOCK:
        _DETACHED[:] = [p for p in _DETACHED if p.poll() is None]


class Dispatcher:
    """Claims queued operations and runs each in a worker process.

    Args:
        settings: Control-plane settings.
        store: The store (one per process is enough; it is thread-safe).
        only: Run only these operation ids (the teardown job and CLI run their
            own); None runs any.
        launcher: Starts the worker of an operation; default a subprocess.
    """

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        only: Iterable[str] | None = None,
        launcher: Launcher | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.only: set[str] | None = None if only is None else set(only)
        self.launcher = launcher or self._spawn
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self._signalled: dict[str, float] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.me = owner_of()

    # -- life cycle -------------------------------------------------------------

    def start(self) -> None:
        """Recover what a crash left, then dispatch in a background thread."""
        self.tick()
        self.sweep()
        self._thread = threading.Thread(target=self._loop, name="dispatcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop dispatching. Running workers go on and record their own results.

        Workers whose operation has already finished get ``timeout`` seconds to
        exit; the others are handed to a process-wide reaper, so they are
        waited for (no zombies) without keeping this dispatcher alive.
        """
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        deadline = time.monotonic() + timeout
        for op_id, proc in list(self.children.items()):
            try:
                finished = self.store.get_operation(op_id).status.terminal
            except Exception:
                finished = False
            if finished:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(max(0.0, deadline - time.monotonic()))
        self._reap()
        for proc in self.children.values():
            _detach(proc)
        self.children.clear()

    @property
    def running(self) -> bool:
        """Whether the background thread is dispatching."""
        return self._thread is not None and self._thread.is_alive()

    def wake(self) -> None:
        """Look at the store now (a request just queued something)."""
        self._wake.set()

    def add(self, op_ids: Iterable[str]) -> None:
        """Also run these operations (for a dispatcher with ``only``)."""
        with self._lock:
            if self.only is not None:
                self.only.update(op_ids)
        self.wake()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception as e:  # the loop must survive a transient DB error
                print(f"dispatcher: {type(e).__name__}: {e}", file=sys.stderr)
            self._wake.wait(self.settings.poll_interval_s)
            self._wake.clear()

    def run_until_done(
        self, op_ids: Iterable[str], timeout: float | None = None
    ) -> list[Operation]:
        """Dispatch in this thread until the given operations have finished."""
        ids = list(op_ids)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self.tick()
            ops = [self.store.get_operation(i) for i in ids]
            if all(op.status.terminal for op in ops):
                # Their workers have recorded the outcome and are exiting: wait
                # for them, so no process outlives the call that ran it.
                for op_id in ids:
                    proc = self.children.get(op_id)
                    if proc is not None:
                        with contextlib.suppress(subprocess.TimeoutExpired):
                            proc.wait(30)
                self._reap()
                return ops
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"operations still running after {timeout}s: {ids}")
            self._wake.wait(self.settings.poll_interval_s)
            self._wake.clear()

    # -- one round ----------------------------------------------------------------

    def tick(self) -> None:
        """Reap, watch running operations, start queued ones."""
        self._reap()
        self._watch()
        self._dispatch()

    def _reap(self) -> None:
        _reap_detached()
        for op_id, proc in list(self.children.items()):
            if proc.poll() is not None:
                del self.children[op_id]
                self._signalled.pop(op_id, None)
                try:
                    done = self.store.get_operation(op_id).status.terminal
                except Exception:
                    done = False
                if done:  # else _watch buries it and reads the tail first
                    (self.settings.work_root / f"{op_id}.out").unlink(missing_ok=True)

    def _watch(self) -> None:
        now = utcnow()
        for op in self.store.running():
            alive = is_alive(op.host, op.boot_id, op.pid, op.pid_start)
            if alive is None:
                continue  # another host's; its own dispatchers watch it
            if not alive:
                self._bury(op)
                continue
            if not op.worker:
                continue  # claimed by a live dispatcher, worker not started yet
            started = op.started_at or op.claimed_at or now
            reason = op.cancel_reason
            overdue = (now - started).total_seconds() > self.settings.op_time_limit_s
            if reason is None and overdue and self.store.request_timeout(op.id, now=now):
                reason = CancelReason.TIMEOUT
            if reason is None or op.pid is None:
                continue
            sent = self._signalled.get(op.id)
            if sent is None:
                interrupt_group(op.pid)
                self._signalled[op.id] = time.monotonic()
            elif time.monotonic() - sent > self.settings.cancel_grace_s:
                kill_session(op.pid)

    def _bury(self, op: Operation) -> None:
        """Finish an operation whose owner process is dead."""
        current = self.store.get_operation(op.id)
        if current.status is not OpStatus.RUNNING:
            return  # the worker finished it on the way out
        # Anything left in the dead worker's session is its orphan (the kernel
        # never hands out a pid equal to a live session id). If the pid is in
        # use again, that session is over and nothing is left to kill.
        pid = current.pid
        if current.worker and pid is not None and not is_alive(HOST, BOOT_ID, pid, pid_start(pid)):
            kill_session(pid)
        timed_out = current.cancel_reason is CancelReason.TIMEOUT
        status = OpStatus.TIMED_OUT if timed_out else OpStatus.INTERRUPTED
        why = (
            f"stopped after the {self.settings.op_time_limit_s:g}s time limit"
            if timed_out
            else "cancelled"
            if current.cancel_reason is CancelReason.CANCEL
            else "the worker process died before finishing"
        )
        detail = self._worker_tail(op.id)
        self.store.finish(op.id, status, error=why + (f": {detail}" if detail else ""))
        self._cleanup(op.id)

    def _worker_tail(self, op_id: str) -> str:
        path = self.settings.work_root / f"{op_id}.out"
        try:
            lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return ""
        from automation.stacks import Scrubber
        from automation.toolchain import passphrase_for

        secrets = [read_secret(self.settings, op_id), passphrase_for(self.settings.state_dir)]
        scrub = Scrubber(secrets)
        return scrub(" | ".join(lines[-3:]))[:500]

    def _cleanup(self, op_id: str) -> None:
        discard_secret(self.settings, op_id)
        shutil.rmtree(self.settings.work_root / op_id, ignore_errors=True)
        (self.settings.work_root / f"{op_id}.out").unlink(missing_ok=True)

    def sweep(self) -> None:
        """Remove work dirs and secrets of operations that are over."""
        for root in (self.settings.work_root, self.settings.secrets_root):
            if not root.is_dir():
                continue
            for entry in root.iterdir():
                op_id = entry.name.split(".", 1)[0]
                try:
                    op = self.store.get_operation(op_id)
                except Exception:
                    op = None
                if op is not None and not op.status.terminal:
                    continue
                if op is None and time.time() - entry.stat().st_mtime < 60:
                    continue  # maybe a request writing its secret right now
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)

    def _dispatch(self) -> None:
        free = self.settings.pool_size - len(self.children)
        if free <= 0:
            return
        with self._lock:
            only = None if self.only is None else sorted(self.only)
        for op in self.store.claimable(limit=free * 4, only=only):
            if free <= 0:
                break
            if not self.store.claim(op.id, self.me):
                continue
            try:
                proc = self.launcher(op)
            except Exception as e:
                self.store.finish(op.id, OpStatus.FAILED, error=f"could not start worker: {e}")
                self._cleanup(op.id)
                continue
            self.children[op.id] = proc
            self.store.set_owner(op.id, owner_of(proc.pid))
            free -= 1

    def _spawn(self, op: Operation) -> subprocess.Popen[bytes]:
        self.settings.work_root.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.update(self.settings.to_env())
        # Workers never authenticate anyone: keep the API tokens out of their reach.
        for key in ("LLM_ENDPOINTS_TOKENS", "LLM_ENDPOINTS_TOKENS_FILE"):
            env.pop(key, None)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
        )
        out = open(self.settings.work_root / f"{op.id}.out", "wb")  # noqa: SIM115
        try:
            return subprocess.Popen(
                [sys.executable, "-m", "automation.worker", "run", op.id],
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        finally:
            out.close()


# ---------------------------------------------------------------------------
# The worker process


class OpLog:
    """Buffered, scrubbed writer of an operation's log (flushes twice a second)."""

    def __init__(self, store: Store, op_id: str, scrub: Callable[[str], str]) -> None:
        self.store, self.op_id, self.scrub = store, op_id, scrub
        self._buf: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="oplog", daemon=True)
        self._thread.start()

    def __call__(self, line: str) -> None:
        line = self.scrub(line.rstrip())
        if not line:
            return
        with self._lock:
            self._buf.append(line[:2000])

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.flush()

    def flush(self) -> None:
        with self._lock:
            lines, self._buf = self._buf, []
        if lines:
            try:
                self.store.append_log(self.op_id, lines)
            except Exception as e:  # a log write must never fail the operation
                print(f"oplog: {type(e).__name__}", file=sys.stderr)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.flush()


def _outputs(values: dict[str, Any]) -> EndpointOutputs:
    def text(key: str) -> str | None:
        v = values.get(key)
        return None if v is None else str(v)

    cost = values.get("cost_per_hour")
    try:
        cost_f = None if cost is None else float(cost)
    except (TypeError, ValueError):
        cost_f = None
    return EndpointOutputs(
        url=text("url"),
        model=text("model"),
        instance_type=text("instance_type"),
        cost_per_hour=cost_f,
    )


def run_operation(op_id: str, settings: Settings, *, store: Store | None = None) -> OpStatus:
    """Run one claimed operation to its end (the body of a worker process)."""
    from automation.stacks import OperationFailed, Scrubber, StackError, StackService
    from components.config import parse_spec

    store = store or Store.from_settings(settings)
    op = store.get_operation(op_id)
    ep = store.get_endpoint(op.endpoint)
    if op.status is not OpStatus.RUNNING or ep.lock_op_id != op.id:
        print(f"operation {op_id} is {op.status}, not claimed for this worker", file=sys.stderr)
        return op.status
    store.mark_started(op.id, owner_of())

    cancelled = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        cancelled.set()
        if signum != signal.SIGINT:  # pass a SIGTERM on to pulumi as a cancel
            with contextlib.suppress(OSError):
                os.killpg(os.getpgrp(), signal.SIGINT)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    token = read_secret(settings, op.id) if op.kind is OpKind.UP else None
    scrub = Scrubber([token])
    log = OpLog(store, op.id, scrub)
    work_dir = settings.work_root / op.id
    status, error, outputs = OpStatus.FAILED, None, None
    try:
        service = StackService(settings, scrub=scrub)
        spec = parse_spec(ep.spec)
        log(f"[{op.kind}] {ep.name} started by {op.requested_by}")
        if op.kind is OpKind.UP:
            result = service.up(
                spec, work_dir=work_dir, hf_token=token, expires_at=ep.expires_at, on_output=log
            )
            discard_secret(settings, op.id)
            outputs = _outputs(result.outputs)
        elif op.kind is OpKind.DESTROY:
            result = service.destroy(spec.name, work_dir=work_dir, on_output=log)
            _remove_render_dir(settings, spec)
        else:
            result = service.refresh(spec, work_dir=work_dir, on_output=log)
        status = OpStatus.SUCCEEDED
        log(f"[{op.kind}] succeeded: {result.changes}")
    except OperationFailed as e:
        error = str(e)
    except StackError as e:
        error = str(e)
    except Exception as e:  # anything else is a bug; report its type, never its data
        error = scrub(f"internal error: {type(e).__name__}: {e}")[:2000]
    finally:
        if error:
            log(f"[{op.kind}] failed: {error}")
        log.close()
        discard_secret(settings, op.id)
        shutil.rmtree(work_dir, ignore_errors=True)
    if status is not OpStatus.SUCCEEDED:
        reason = store.get_operation(op.id).cancel_reason
        if reason is CancelReason.TIMEOUT:
            status = OpStatus.TIMED_OUT
            error = f"stopped after the {settings.op_time_limit_s:g}s time limit: {error}"
        elif reason is CancelReason.CANCEL or cancelled.is_set():
            status = OpStatus.INTERRUPTED
            error = f"cancelled: {error}"
    store.finish(op.id, status, error=error, outputs=outputs)
    return status


def _remove_render_dir(settings: Settings, spec: Any) -> None:
    """After a destroy, the server-owned render folder of the endpoint goes too."""
    if not spec.render_only:
        return
    target = Path(spec.cluster.render_dir).resolve()
    base = settings.render_base
    if target != base and base in target.parents:
        shutil.rmtree(target, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """``python -m automation.worker run <op-id>``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "run":
        print("usage: python -m automation.worker run <operation-id>", file=sys.stderr)
        return 2
    settings = Settings.from_env()
    status = run_operation(args[1], settings)
    return {OpStatus.SUCCEEDED: 0, OpStatus.RUNNING: 3, OpStatus.QUEUED: 3}.get(status, 1)


if __name__ == "__main__":
    raise SystemExit(main())
