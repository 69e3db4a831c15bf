"""The worker process: runs one claimed operation to its end.

``python -m automation.worker run <op-id>`` (started by
:class:`automation.dispatcher.Dispatcher`) runs one ``up``, ``destroy`` or
``refresh`` through :class:`automation.stacks.StackService` in its own work
dir, streams the engine's output into the operation's bounded log (scrubbed
of secrets), and records the outcome. The HF token of a create waits in the
secret drop-box (:mod:`automation.secrets`) and is deleted as soon as it is
stored as a Pulumi secret config value.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from automation.procs import end_strays, owner_of
from automation.secrets import Scrubber, api_key_for, discard_secret, read_secret
from automation.settings import Settings
from automation.stacks import ApiKey, OperationFailed, StackError, StackService
from automation.store import CancelReason, Endpoint, EndpointOutputs, OpKind, OpStatus, Store
from components.config import parse_spec

#: Seconds between two looks at the pods while an ``up`` waits for them.
WATCH_INTERVAL_S = 5.0


class Watcher:
    """While an ``up`` runs on a cluster: look at the endpoint's pods, and stop
    the operation (as a cancel would) on a scheduling verdict
    (:class:`automation.kube.SchedulingWatch`), keeping the reason for its error.
    """

    def __init__(self, kubeconfig: Path, namespace: str, log: Callable[[str], None]) -> None:
        self.kubeconfig, self.namespace, self.log = kubeconfig, namespace, log
        self.verdict: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watch", daemon=True)

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        from automation.kube import SchedulingWatch, core_api

        try:
            watch = SchedulingWatch(core_api(self.kubeconfig), self.namespace, report=self.log)
        except Exception as e:  # no watch is no reason to fail the operation
            self.log(f"[watch] cannot read the cluster: {type(e).__name__}: {e}")
            return
        errors = 0
        while not self._stop.wait(WATCH_INTERVAL_S):
            try:
                self.verdict = watch.poll()
                errors = 0
            except Exception as e:  # a namespace not there yet, a flaky API
                errors += 1
                if errors == 3:
                    self.log(f"[watch] cannot read the pods: {type(e).__name__}")
                continue
            if self.verdict is not None:
                self.log(f"[watch] {self.verdict}; stopping the operation")
                with contextlib.suppress(OSError):
                    os.killpg(os.getpgrp(), signal.SIGINT)
                return


def _watcher(spec: Any, log: Callable[[str], None]) -> contextlib.AbstractContextManager[Any]:
    """A :class:`Watcher` for an endpoint applied to a cluster we can read; else nothing."""
    kubeconfig = getattr(spec.cluster, "kubeconfig", None)
    if spec.render_only or not kubeconfig:
        return contextlib.nullcontext()
    return Watcher(Path(kubeconfig), spec.resolved_namespace, log)


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
            api_key = _api_key(settings, ep, spec, scrub, log)
            with _watcher(spec, log) as watch:
                try:
                    result = service.up(
                        spec,
                        work_dir=work_dir,
                        hf_token=token,
                        expires_at=ep.expires_at,
                        api_key=api_key,
                        on_output=log,
                    )
                except (OperationFailed, StackError) as e:
                    if watch is not None and watch.verdict:
                        raise OperationFailed(watch.verdict) from e
                    raise
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
        # Whatever the operation left running (a plugin of a killed CLI) ends with it.
        if (strays := end_strays()) and not error:
            log(f"[{op.kind}] ended {strays} process(es) the engine left running")
        if error:
            log(f"[{op.kind}] failed: {error}")
        log.close()
        discard_secret(settings, op.id)
        shutil.rmtree(work_dir, ignore_errors=True)
    if status is not OpStatus.SUCCEEDED and not _is_verdict(error):
        reason = store.get_operation(op.id).cancel_reason
        if reason is CancelReason.TIMEOUT:
            status = OpStatus.TIMED_OUT
            error = f"stopped after the {settings.op_time_limit_s:g}s time limit: {error}"
        elif reason is CancelReason.CANCEL or cancelled.is_set():
            status = OpStatus.INTERRUPTED
            error = f"cancelled: {error}"
    store.finish(op.id, status, error=error, outputs=outputs)
    return status


def _is_verdict(error: str | None) -> bool:
    """The watcher stopped the operation: it failed, it was not cancelled."""
    return bool(error) and " cannot be scheduled: " in str(error)


def _api_key(settings: Settings, ep: Endpoint, spec: Any, scrub: Scrubber, log: OpLog) -> ApiKey:
    """The endpoint's key for this ``up`` (scrubbed from every line from now on).

    A render target writes it into its folder only if the operator allows
    secrets there; otherwise the Secret is left out and the log says how to
    create it.
    """
    key = api_key_for(settings, ep.name, ep.generation, ep.api_key_version)
    scrub.add(key)
    if spec.render_only and settings.render_secrets != "allow":
        log(
            f"[up] the API key Secret {ep.name}-api-key is not rendered (this server keeps "
            f"secrets out of files); create it in namespace {spec.resolved_namespace} with "
            "the key from `llm-endpoints api-key` under the key 'key'"
        )
        return ApiKey(None, ep.api_key_version)
    return ApiKey(key, ep.api_key_version)


def _remove_render_dir(settings: Settings, spec: Any) -> None:
    """After a destroy, the server-owned render folder of the endpoint goes too.

    Raises:
        OperationFailed: the folder (or a file in it) could not be removed; the
            destroy is not reported done while manifests are left on disk.
    """
    if not spec.render_only:
        return
    target = Path(spec.cluster.render_dir).resolve()
    base = settings.render_base
    if target == base or base not in target.parents:
        return  # not a folder this server made: leave it to its owner
    errors: list[str] = []
    shutil.rmtree(target, onerror=lambda _f, path, exc: errors.append(f"{path}: {exc[1]}"))
    if target.exists():
        raise OperationFailed(
            f"destroy left the rendered manifests in {target}: " + "; ".join(errors[:3])
        )


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
