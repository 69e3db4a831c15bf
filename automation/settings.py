"""Control-plane settings: one frozen object, read from the environment in one place.

Every process of the control plane (API server, worker, teardown job, CLI) builds
its :class:`Settings` with :meth:`Settings.from_env`; the dispatcher hands the
same values to the worker processes it starts through :meth:`Settings.to_env`,
so a worker can never disagree with its parent about the database or backend.

Environment variables (all optional):

=================================  ==============================================
``LLM_ENDPOINTS_STATE_DIR``        state folder (default ``./.state``)
``LLM_ENDPOINTS_DATABASE_URL``     SQLAlchemy URL (default SQLite in the state dir)
``LLM_ENDPOINTS_BACKEND_URL``      Pulumi backend (default ``file://<state>/backend``)
``LLM_ENDPOINTS_TOKENS_FILE``      YAML/JSON ``token: {user, admin}`` map
``LLM_ENDPOINTS_TOKENS``           the same map inline (YAML or JSON)
``LLM_ENDPOINTS_POOL_SIZE``        concurrent operations per dispatcher (default 4)
``LLM_ENDPOINTS_OP_TIME_LIMIT``    seconds an operation may run (default 3600)
``LLM_ENDPOINTS_CANCEL_GRACE``     seconds between SIGINT and SIGKILL (default 30)
``LLM_ENDPOINTS_DEFAULT_TTL``      ttl when a request names none (default ``8h``)
``LLM_ENDPOINTS_MAX_TTL``          longest ttl a request or extend may ask for (``7d``)
``LLM_ENDPOINTS_MAX_QUEUED``       queued operations allowed per endpoint (default 8)
``LLM_ENDPOINTS_TARGET``           ``render`` (default), ``existing`` or ``eks``
``LLM_ENDPOINTS_RENDER_ROOT``      where the render target writes (``<state>/rendered``)
``LLM_ENDPOINTS_KUBECONFIG``       kubeconfig for the ``existing`` target
``LLM_ENDPOINTS_PLATFORM_STACK``   platform stack for the ``eks`` target
``LLM_ENDPOINTS_BUILDER``          ``module:function`` building an endpoint
                                   (default ``components.endpoint:build_endpoint``)
=================================  ==============================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from components.config import parse_ttl

ENV_PREFIX = "LLM_ENDPOINTS_"
DEFAULT_BUILDER = "components.endpoint:build_endpoint"


class Target(StrEnum):
    """Where self-service endpoints are deployed."""

    RENDER = "render"  # manifests written under render_root/<name>; no cluster
    EXISTING = "existing"  # applied to the cluster of a kubeconfig
    EKS = "eks"  # the shared platform stack's EKS cluster


@dataclass(frozen=True)
class Settings:
    """Everything the control plane is configured with.

    Attributes:
        state_dir: Folder for the database, local backend, passphrase, work dirs.
        database_url: SQLAlchemy URL; None means SQLite in ``state_dir``.
        backend_url: Pulumi backend URL; None means a file backend in ``state_dir``.
        tokens_file: API tokens file (YAML or JSON).
        tokens_inline: API tokens map as YAML/JSON text (``LLM_ENDPOINTS_TOKENS``).
        pool_size: Operations one dispatcher runs at once.
        op_time_limit_s: Seconds before a running operation is cancelled as timed out.
        cancel_grace_s: Seconds between SIGINT and SIGKILL when cancelling.
        default_ttl: Time to live when a request gives none.
        max_ttl: Longest time to live a create or extend may ask for.
        max_queued_per_endpoint: Queue depth per endpoint before requests get 409.
        target: Deployment target of self-service endpoints.
        render_root: Where the render target writes manifests.
        kubeconfig: Kubeconfig file of the existing target.
        platform_stack: Platform stack of the eks target.
        builder: ``module:function`` that builds an endpoint inside the program.
        log_max_lines: Lines kept per operation log.
        log_max_bytes: Bytes kept per operation log.
        poll_interval_s: How often a dispatcher looks at the store.
    """

    state_dir: Path = field(default_factory=lambda: Path(".state"))
    database_url: str | None = None
    backend_url: str | None = None
    tokens_file: Path | None = None
    tokens_inline: str | None = None
    pool_size: int = 4
    op_time_limit_s: float = 3600.0
    cancel_grace_s: float = 30.0
    default_ttl: str = "8h"
    max_ttl: str = "7d"
    max_queued_per_endpoint: int = 8
    target: Target = Target.RENDER
    render_root: Path | None = None
    kubeconfig: Path | None = None
    platform_stack: str | None = None
    builder: str = DEFAULT_BUILDER
    log_max_lines: int = 2000
    log_max_bytes: int = 256 * 1024
    poll_interval_s: float = 0.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "state_dir", Path(self.state_dir).resolve())
        if self.pool_size < 1:
            raise ValueError(f"pool_size: must be at least 1, got {self.pool_size}")
        if self.op_time_limit_s <= 0:
            raise ValueError(f"op_time_limit_s: must be positive, got {self.op_time_limit_s}")
        if self.cancel_grace_s < 0:
            raise ValueError(f"cancel_grace_s: must not be negative, got {self.cancel_grace_s}")
        if self.max_queued_per_endpoint < 1:
            raise ValueError("max_queued_per_endpoint: must be at least 1")
        parse_ttl(self.default_ttl)
        parse_ttl(self.max_ttl)
        if parse_ttl(self.default_ttl) > parse_ttl(self.max_ttl):
            raise ValueError(
                f"default_ttl: {self.default_ttl} is longer than max_ttl {self.max_ttl}"
            )
        if ":" not in self.builder:
            raise ValueError(f"builder: {self.builder!r} is not of the form module:function")
        if self.target is Target.EXISTING and not self.kubeconfig:
            raise ValueError("kubeconfig: the existing target needs LLM_ENDPOINTS_KUBECONFIG")
        if self.target is Target.EKS and not self.platform_stack:
            raise ValueError("platform_stack: the eks target needs LLM_ENDPOINTS_PLATFORM_STACK")

    # Derived locations -------------------------------------------------------

    @property
    def db_url(self) -> str:
        """The database URL actually used."""
        return self.database_url or f"sqlite:///{self.state_dir / 'control-plane.db'}"

    @property
    def render_base(self) -> Path:
        """Folder under which each render-target endpoint gets ``<name>/``."""
        return (self.render_root or self.state_dir / "rendered").resolve()

    @property
    def work_root(self) -> Path:
        """Per-operation work dirs live under here."""
        return self.state_dir / "work"

    @property
    def stack_settings_root(self) -> Path:
        """Persisted ``Pulumi.<stack>.yaml`` files (encryption salt, secret config)."""
        return self.state_dir / "stacks"

    @property
    def secrets_root(self) -> Path:
        """Secret drop-box: a request's HF token waits here (0600) for its worker."""
        return self.state_dir / "secrets"

    @property
    def default_ttl_delta(self) -> timedelta:
        """``default_ttl`` as a timedelta."""
        return parse_ttl(self.default_ttl)

    @property
    def max_ttl_delta(self) -> timedelta:
        """``max_ttl`` as a timedelta."""
        return parse_ttl(self.max_ttl)

    # Environment round trip -------------------------------------------------

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``LLM_ENDPOINTS_*`` variables; keyword overrides win."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            key = ENV_PREFIX + _ENV_NAMES.get(f.name, f.name.upper())
            raw = env.get(key)
            if raw is None or raw == "":
                continue
            values[f.name] = _convert(f.name, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The variables that make :meth:`from_env` rebuild these settings."""
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            out[ENV_PREFIX + _ENV_NAMES.get(f.name, f.name.upper())] = str(value)
        return out

    def with_(self, **changes: Any) -> Settings:
        """A copy with some fields changed."""
        return replace(self, **changes)


_ENV_NAMES = {
    "op_time_limit_s": "OP_TIME_LIMIT",
    "cancel_grace_s": "CANCEL_GRACE",
    "tokens_inline": "TOKENS",
    "max_queued_per_endpoint": "MAX_QUEUED",
    "poll_interval_s": "POLL_INTERVAL",
}
_PATHS = {"state_dir", "tokens_file", "render_root", "kubeconfig"}
_INTS = {"pool_size", "max_queued_per_endpoint", "log_max_lines", "log_max_bytes"}
_FLOATS = {"op_time_limit_s", "cancel_grace_s", "poll_interval_s"}


def _convert(name: str, raw: str) -> Any:
    try:
        if name in _PATHS:
            return Path(raw)
        if name in _INTS:
            return int(raw)
        if name in _FLOATS:
            return float(raw)
        if name == "target":
            return Target(raw)
    except ValueError:
        key = ENV_PREFIX + _ENV_NAMES.get(name, name.upper())
        raise ValueError(f"{key}: {raw!r} is not a valid {name}") from None
    return raw
