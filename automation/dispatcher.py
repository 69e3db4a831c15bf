"""The dispatcher: claims queued operations and runs each in its own worker process.

It runs in the API server, the teardown job and the CLI. For each claimed
operation it starts ``python -m automation.worker run <op-id>`` in a new
session (so the worker and every process it starts can be found by session
id). At most ``pool_size`` run per dispatcher; at most one per stack anywhere,
because the claim takes the stack lock in the store (FIFO per stack: only the
oldest queued operation of an endpoint can be claimed).

It also watches every running operation on this host: past the time limit or
when cancelled it sends SIGINT to the worker's process group (Pulumi cancels
gracefully), then SIGKILL to the whole session after a grace period; an
operation whose owner process is provably dead (:func:`automation.procs.is_alive`)
is marked ``interrupted`` (``timed_out`` if it was being stopped for time) and
its stack lock released. That is also what happens at start-up to operations
left ``running`` by a crash.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from datetime import timedelta

from automation.procs import (
    BOOT_ID,
    HOST,
    interrupt_group,
    is_alive,
    kill_session,
    owner_of,
    pid_start,
)
from automation.secrets import Scrubber, discard_secret, read_secret
from automation.settings import Settings
from automation.store import CancelReason, Operation, OpStatus, Store, utcnow
from automation.toolchain import REPO_ROOT, passphrase_for

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
        self.reap_strays()
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
        secrets = [read_secret(self.settings, op_id), passphrase_for(self.settings.state_dir)]
        scrub = Scrubber(secrets)
        return scrub(" | ".join(lines[-3:]))[:500]

    def _cleanup(self, op_id: str) -> None:
        discard_secret(self.settings, op_id)
        shutil.rmtree(self.settings.work_root / op_id, ignore_errors=True)
        (self.settings.work_root / f"{op_id}.out").unlink(missing_ok=True)

    def reap_strays(self) -> int:
        """End the processes that outlived finished operations' workers on this host.

        A worker ends its own session on every way out, but a worker killed
        with SIGKILL cannot: its plugins live on in its session (whose id is the
        dead worker's pid, which the kernel does not reuse while the session
        exists). Returns how many processes were ended.
        """
        n = 0
        since = utcnow() - timedelta(seconds=self.settings.op_time_limit_s * 2 + 86_400)
        for op in self.store.list_operations(statuses=[s for s in OpStatus if s.terminal]):
            if op.pid is None or not op.worker or op.host != HOST or op.boot_id != BOOT_ID:
                continue
            if op.finished_at is not None and op.finished_at < since:
                continue
            # A process with that pid is the worker itself (finishing up) or, if
            # the pid was reused, proof that the old session is empty: leave it.
            if pid_start(op.pid) is not None:
                continue
            n += kill_session(op.pid)
        return n

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
