"""Process identity and clean-up: who owns an operation, whether it still runs, and
how its whole process tree is stopped.

A process is identified by host, boot, pid and start time (``psutil``, so this
works on Linux and macOS alike): a pid alone may be reused, and means nothing
across a reboot or on another host. Every worker runs in a session of its own
(``start_new_session``), so everything it starts — the ``pulumi`` CLI and the
provider plugins, which take process groups of their own — can be found by
session id and ended with it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from dataclasses import dataclass
from datetime import datetime

import psutil

HOST = socket.gethostname()
#: This boot's identity: the boot time (pids and start times mean nothing across a reboot).
BOOT_ID = str(int(psutil.boot_time()))
#: Start times are compared to this precision (psutil reports clock ticks).
_START_DIGITS = 2
_DEAD = (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)


@dataclass(frozen=True)
class Owner:
    """The process that owns a running operation.

    Attributes:
        host: Host name.
        boot_id: :data:`BOOT_ID` of that host when it started.
        pid: Process id.
        pid_start: Its start time (seconds since the epoch), or None if unknown.
    """

    host: str
    boot_id: str
    pid: int
    pid_start: float | None


def pid_start(pid: int) -> float | None:
    """A process's start time (seconds since the epoch), or None if it is gone."""
    try:
        return round(psutil.Process(pid).create_time(), _START_DIGITS)
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def owner_of(pid: int | None = None) -> Owner:
    """The identity of a process (default: this one) as the store records it."""
    pid = os.getpid() if pid is None else pid
    return Owner(host=HOST, boot_id=BOOT_ID, pid=pid, pid_start=pid_start(pid))


def _running(pid: int) -> psutil.Process | None:
    try:
        proc = psutil.Process(pid)
        return None if proc.status() in _DEAD else proc
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.AccessDenied:  # someone else's: it exists, so it is running
        return psutil.Process(pid)


def is_alive(
    host: str | None, boot: str | None, pid: int | None, start: float | None
) -> bool | None:
    """Whether a recorded owner process still runs.

    Returns:
        False only when it is provably dead (gone, zombie, pid reused, or the
        host rebooted); None when it runs on another host (cannot tell).
    """
    if pid is None:
        return False
    if host and host != HOST:
        return None
    if boot and boot != BOOT_ID:
        return False
    if _running(pid) is None:
        return False
    return start is None or pid_start(pid) == round(float(start), _START_DIGITS)


def process_started_after(pid: int, when: datetime, slack_s: float = 1.0) -> bool:
    """True when ``pid`` is not running, or the process now using it started
    after ``when`` (so it cannot be the one that was there then)."""
    if _running(pid) is None:
        return True
    started = pid_start(pid)
    return started is None or started > when.timestamp() + slack_s


def session_members(sid: int) -> list[int]:
    """Pids of every live process in session ``sid``."""
    out = []
    for proc in psutil.process_iter(["status"]):
        if proc.info["status"] in _DEAD:
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError, psutil.Error):
            if os.getsid(proc.pid) == sid:
                out.append(proc.pid)
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


def end_strays(keep: int | None = None) -> int:
    """SIGKILL every other process of this process's session (the worker's own
    tree: a ``pulumi`` CLI and the provider plugins it started, which outlive a
    killed CLI). Returns how many."""
    me = os.getpid() if keep is None else keep
    n = 0
    for pid in session_members(os.getsid(0)):
        if pid != me:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                n += 1
    return n
