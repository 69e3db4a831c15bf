"""The scheduled teardown job: destroy endpoints whose time to live has passed.

Run it from cron or a Kubernetes CronJob (``llm-endpoints teardown`` or
``python -m automation.teardown``). It is safe to run two copies at once:

* **Exactly once.** Each expired endpoint is *claimed* with one conditional
  ``UPDATE endpoints SET status='destroying' WHERE name=? AND status IN
  ('ready','failed') AND expires_at < now`` that also queues its destroy; the
  copy whose statement matched the row owns it, the other skips it.
* **Retries with backoff.** A failed destroy is queued again after
  ``backoff``, ``2 x backoff``, ... up to ``attempts`` tries in all.
* **Never forgotten.** An endpoint whose destroys all failed stays in the store
  as ``destroy_failed`` (with the error) for a person to look at; the job
  exits non-zero. ``--retry-failed`` makes a later run try those again.

The destroys run through the same worker processes, per-stack FIFO and stack
lock as everything else, so a teardown never races an API request on a stack.
The clock and the sleep are parameters, so tests run it at any time.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from automation.dispatcher import Dispatcher, Launcher
from automation.settings import Settings
from automation.store import EXPIRABLE, EndpointStatus, OpStatus, Store, utcnow

REQUESTED_BY = "teardown"


@dataclass
class TeardownReport:
    """What one run did.

    Attributes:
        expired: Expired endpoints seen at the start.
        claimed: Those this run claimed (the others were taken by another copy).
        destroyed: Claimed and destroyed.
        failed: Claimed, every attempt failed; left ``destroy_failed``.
        attempts: Destroy attempts per claimed endpoint.
        dry_run: Nothing was changed.
        still_failed: Every endpoint ``destroy_failed`` after the run (this
            run's and earlier ones), which a person must look at.
    """

    expired: list[str] = field(default_factory=list)
    claimed: list[str] = field(default_factory=list)
    destroyed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=dict)
    dry_run: bool = False
    still_failed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing failed now and no endpoint is left ``destroy_failed``.

        The job keeps exiting non-zero on every run while any endpoint is
        ``destroy_failed`` (from this run or an earlier one), so the scheduler
        keeps alerting until a person has dealt with it.
        """
        return not self.failed and not self.still_failed


def run_teardown(
    settings: Settings,
    *,
    store: Store | None = None,
    clock: Callable[[], datetime] = utcnow,
    sleep: Callable[[float], None] = time.sleep,
    dry_run: bool = False,
    attempts: int = 3,
    backoff_s: float = 30.0,
    retry_failed: bool = False,
    echo: Callable[[str], None] = print,
    launcher: Launcher | None = None,
) -> TeardownReport:
    """Destroy every expired endpoint once.

    Args:
        settings: Control-plane settings.
        store: Default :meth:`Store.from_settings`.
        clock: "Now" (injectable for tests).
        sleep: Waits between retries (injectable for tests).
        dry_run: Only list what would be destroyed.
        attempts: Destroy attempts per endpoint, the first included.
        backoff_s: Wait before the first retry; doubles each time.
        retry_failed: Also take expired endpoints left ``destroy_failed``.
        echo: Progress lines.
        launcher: Worker launcher (tests); default a subprocess.
    """
    if attempts < 1:
        raise ValueError(f"attempts: must be at least 1, got {attempts}")
    store = store or Store.from_settings(settings)
    report = TeardownReport(dry_run=dry_run)
    statuses = (*EXPIRABLE, EndpointStatus.DESTROY_FAILED) if retry_failed else EXPIRABLE
    dispatcher = Dispatcher(settings, store, only=(), launcher=launcher)
    dispatcher.tick()  # recover operations a crash left running before judging anything

    now = clock()
    expired = store.expired(now, statuses)
    report.expired = [ep.name for ep in expired]
    if dry_run:
        for ep in expired:
            echo(
                f"would destroy {ep.name} (owner {ep.owner}, {ep.status}, expired {ep.expires_at})"
            )
        report.still_failed = _destroy_failed(store)
        return report

    pending: dict[str, str] = {}
    for ep in expired:
        op = store.claim_expired(ep.name, now, requested_by=REQUESTED_BY, statuses=statuses)
        if op is None:
            echo(f"skip {ep.name}: taken by another teardown or changed meanwhile")
            continue
        report.claimed.append(ep.name)
        report.attempts[ep.name] = 1
        pending[ep.name] = op.id
        echo(f"destroying {ep.name} (expired {ep.expires_at}), operation {op.id}")

    try:
        _destroy_all(
            store, dispatcher, settings, report, pending, clock, sleep, attempts, backoff_s, echo
        )
    finally:
        dispatcher.stop()
    report.still_failed = _destroy_failed(store)
    for name in report.still_failed:
        echo(f"{name} is destroy_failed: a person must look at it (see its last operation)")
    return report


def _destroy_failed(store: Store) -> list[str]:
    return [ep.name for ep in store.list_endpoints() if ep.status is EndpointStatus.DESTROY_FAILED]


def _destroy_all(
    store: Store,
    dispatcher: Dispatcher,
    settings: Settings,
    report: TeardownReport,
    pending: dict[str, str],
    clock: Callable[[], datetime],
    sleep: Callable[[float], None],
    attempts: int,
    backoff_s: float,
    echo: Callable[[str], None],
) -> None:
    limit = settings.op_time_limit_s + settings.cancel_grace_s + 120
    round_ = 0
    while pending:
        dispatcher.add(pending.values())
        ops = dispatcher.run_until_done(list(pending.values()), timeout=limit * len(pending))
        retry: list[str] = []
        for op in ops:
            name = op.endpoint
            if op.status is OpStatus.SUCCEEDED:
                report.destroyed.append(name)
                echo(f"destroyed {name}")
            elif report.attempts[name] < attempts:
                retry.append(name)
                echo(f"destroy of {name} failed (attempt {report.attempts[name]}): {op.error}")
            else:
                report.failed.append(name)
                echo(f"destroy of {name} failed {attempts} times; left destroy_failed: {op.error}")
        pending = {}
        if retry:
            delay = backoff_s * 2**round_
            round_ += 1
            echo(f"retrying {', '.join(retry)} in {delay:g}s")
            sleep(delay)
            for name in retry:
                report.attempts[name] += 1
                again = store.claim_retry(
                    name, clock(), requested_by=REQUESTED_BY, attempt=report.attempts[name]
                )
                if again is None:  # someone else (a person, an API DELETE) took it meanwhile
                    report.failed.append(name)
                    echo(f"{name} changed meanwhile; not retried")
                else:
                    pending[name] = again.id


def main(argv: list[str] | None = None) -> int:
    """``python -m automation.teardown [--dry-run] [--attempts N] [--backoff S]``."""
    parser = argparse.ArgumentParser(prog="llm-endpoints teardown", description=__doc__)
    parser.add_argument("--dry-run", action="store_true", help="list, change nothing")
    parser.add_argument("--attempts", type=int, default=3, help="destroy attempts (3)")
    parser.add_argument("--backoff", type=float, default=30.0, help="first retry wait, s (30)")
    parser.add_argument(
        "--retry-failed",
        action="store_true",
        help="also retry expired endpoints left destroy_failed",
    )
    args = parser.parse_args(argv)
    report = run_teardown(
        Settings.from_env(),
        dry_run=args.dry_run,
        attempts=args.attempts,
        backoff_s=args.backoff,
        retry_failed=args.retry_failed,
    )
    print(
        f"expired {len(report.expired)}, claimed {len(report.claimed)}, destroyed "
        f"{len(report.destroyed)}, failed {len(report.failed)}"
        + (f": {', '.join(report.failed)}" if report.failed else "")
        + (f"; destroy_failed now: {', '.join(report.still_failed)}" if report.still_failed else "")
    )
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
