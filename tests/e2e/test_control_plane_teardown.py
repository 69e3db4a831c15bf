"""The teardown job against the real engine, with a fake clock: two copies at
once, each expired endpoint destroyed exactly once, unexpired ones untouched,
a destroy that keeps failing retried with backoff and left visible."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest

from automation.dispatcher import Dispatcher
from automation.settings import Settings
from automation.store import EndpointStatus, OpKind, OpStatus, Store, utcnow
from automation.teardown import TeardownReport, main, run_teardown
from components.config import parse_spec
from tests.e2e.control_plane_harness import checkpoint_path, make_settings, request

pytestmark = pytest.mark.e2e


def _create(settings: Settings, store: Store, name: str, ttl: str, **extra: object) -> str:
    spec = parse_spec(
        {
            **request(name, ttl=ttl, **extra),
            "cluster": {"mode": "existing", "render_dir": str(settings.render_base / name)},
            "pool": {"mode": "none"},
        }
    )
    delta = spec.ttl_delta
    assert delta is not None
    op, _ = store.request_create(
        name, "alice", spec.model_dump(mode="json"), expires_at=utcnow() + delta
    )
    return op.id


def test_two_teardowns_destroy_each_expired_endpoint_once(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, pool_size=4)
    store = Store.from_settings(settings)
    ids = [
        _create(settings, store, "exp-a", "1h"),
        _create(settings, store, "exp-b", "2h"),
        _create(settings, store, "keep", "8h"),
        _create(settings, store, "stuck", "1h", labels={"fail-destroy": "true"}),
    ]
    ops = Dispatcher(settings, store).run_until_done(ids, timeout=120)
    assert [o.status for o in ops] == [OpStatus.SUCCEEDED] * 4

    later = utcnow() + timedelta(hours=3)
    clock = lambda: later  # noqa: E731

    # A dry run changes nothing.
    dry = run_teardown(settings, clock=clock, dry_run=True, echo=lambda _: None)
    assert sorted(dry.expired) == ["exp-a", "exp-b", "stuck"] and dry.claimed == []
    assert all(e.status is EndpointStatus.READY for e in store.list_endpoints())

    by_copy: dict[int, TeardownReport] = {}
    sleeps: list[list[float]] = [[], []]
    barrier = threading.Barrier(2)

    def copy(i: int) -> None:
        own = Store.from_settings(settings)  # a separate process would have its own
        barrier.wait()
        by_copy[i] = run_teardown(
            settings,
            store=own,
            clock=clock,
            attempts=3,
            backoff_s=5.0,
            sleep=sleeps[i].append,
            echo=lambda _: None,
        )

    threads = [threading.Thread(target=copy, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    reports = [by_copy[0], by_copy[1]]

    claimed = [n for r in reports for n in r.claimed]
    assert sorted(claimed) == ["exp-a", "exp-b", "stuck"], "each claimed by exactly one copy"
    destroyed = sorted(n for r in reports for n in r.destroyed)
    assert destroyed == ["exp-a", "exp-b"]
    for name in ("exp-a", "exp-b"):
        destroys = [o for o in store.list_operations(name) if o.kind is OpKind.DESTROY]
        assert len(destroys) == 1 and destroys[0].requested_by == "teardown"
        assert store.get_endpoint(name).status is EndpointStatus.DESTROYED
        assert not checkpoint_path(settings, name).exists()
        assert not (settings.render_base / name).exists()

    # Unexpired: untouched.
    keep = store.get_endpoint("keep")
    assert keep.status is EndpointStatus.READY
    assert [o.kind for o in store.list_operations("keep")] == [OpKind.UP]
    assert (settings.render_base / "keep" / "1-manifest").is_dir()

    # Always failing: three attempts with backoff, then left visible as destroy_failed.
    stuck_report = next(r for r in reports if "stuck" in r.claimed)
    assert stuck_report.failed == ["stuck"] and stuck_report.attempts["stuck"] == 3
    assert not stuck_report.ok
    owner = reports.index(stuck_report)
    assert sleeps[owner] == [5.0, 10.0]
    destroys = [o for o in store.list_operations("stuck") if o.kind is OpKind.DESTROY]
    assert [o.status for o in destroys] == [OpStatus.FAILED] * 3
    assert all("protected" in (o.error or "") for o in destroys), destroys[-1].error
    stuck = store.get_endpoint("stuck")
    assert stuck.status is EndpointStatus.DESTROY_FAILED and "protected" in (stuck.error or "")
    assert checkpoint_path(settings, "stuck").exists(), "its stack is still there"

    # A later run leaves it alone unless asked, and keeps failing (the alert
    # stays up) while it is destroy_failed.
    again = run_teardown(settings, clock=clock, echo=lambda _: None)
    assert again.expired == [] and again.claimed == []
    assert again.still_failed == ["stuck"] and not again.ok


def test_teardown_cli_exit_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = make_settings(tmp_path)
    store = Store.from_settings(settings)
    op = _create(settings, store, "cli-stuck", "1h", labels={"fail-destroy": "true"})
    Dispatcher(settings, store).run_until_done([op], timeout=60)
    for key, value in settings.to_env().items():
        monkeypatch.setenv(key, value)
    assert main(["--dry-run"]) == 0
    # Not expired yet by the real clock: nothing to do.
    assert main(["--attempts", "1"]) == 0
    # Expire it for real, then the job fails visibly.
    store.extend("cli-stuck", utcnow() - timedelta(minutes=1))
    assert main(["--attempts", "1", "--backoff", "0"]) == 1
    assert store.get_endpoint("cli-stuck").status is EndpointStatus.DESTROY_FAILED
    tries = len(store.list_operations("cli-stuck"))
    # Not retried unless asked, but every run exits 1 while it is destroy_failed.
    assert main(["--attempts", "1", "--backoff", "0"]) == 1
    assert main(["--dry-run"]) == 1
    assert len(store.list_operations("cli-stuck")) == tries, "not retried unless asked"
    assert main(["--attempts", "1", "--backoff", "0", "--retry-failed"]) == 1
    assert len(store.list_operations("cli-stuck")) == tries + 1
