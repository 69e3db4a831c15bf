"""Control-plane settings: one frozen pydantic-settings model, read in one place.

Every process of the control plane (API server, worker, teardown job, CLI) builds
its :class:`Settings` with :meth:`Settings.from_env`; the dispatcher hands the
same values to the worker processes it starts through :meth:`Settings.to_env`,
so a worker can never disagree with its parent about the database or backend.

Sources, highest first: keyword arguments, the environment, a ``.env`` file in
the working directory, and files in ``LLM_ENDPOINTS_SECRETS_DIR`` (one file per
variable, named like it: ``LLM_ENDPOINTS_TOKENS``, ``LLM_ENDPOINTS_DATABASE_URL``
— how Kubernetes and Docker mount secrets).

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
``LLM_ENDPOINTS_QUOTA_ENDPOINTS``  live endpoints per user (default 5)
``LLM_ENDPOINTS_QUOTA_ACCELERATORS`` accelerator devices per user (default 16)
``LLM_ENDPOINTS_QUOTA_COST_PER_HOUR`` planned $/h per user (default 100)
``LLM_ENDPOINTS_QUOTA_QUEUED``     queued operations per user (default 20)
``LLM_ENDPOINTS_MAX_BODY_BYTES``   largest request body (default 65536)
``LLM_ENDPOINTS_REMOTE_CODE_MODELS`` models whose own code may run (comma-separated)
``LLM_ENDPOINTS_RENDER_SECRETS``   ``allow``: the render target may write secrets
``LLM_ENDPOINTS_HF_ENDPOINT``      Hugging Face Hub (or mirror) that the config.json of a
                                   model that is not shipped is fetched from
                                   (default ``https://huggingface.co``)
``LLM_ENDPOINTS_SECRETS_DIR``      folder of file-backed settings (see above)
=================================  ==============================================
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from contextvars import ContextVar
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    SettingsConfigDict,
)

from components.rules import MODEL_CONFIG_MAX_BYTES, parse_ttl

ENV_PREFIX = "LLM_ENDPOINTS_"
DEFAULT_BUILDER = "components.endpoint:build_endpoint"
SECRETS_DIR_ENV = f"{ENV_PREFIX}SECRETS_DIR"


class Target(StrEnum):
    """Where self-service endpoints are deployed."""

    RENDER = "render"  # manifests written under render_root/<name>; no cluster
    EXISTING = "existing"  # applied to the cluster of a kubeconfig
    EKS = "eks"  # the shared platform stack's EKS cluster


#: An explicit environment for :meth:`Settings.from_env` (None: ``os.environ``).
_EXPLICIT_ENV: ContextVar[Mapping[str, str] | None] = ContextVar("settings_env", default=None)


class _MappingEnvSource(EnvSettingsSource):
    """The environment source over an explicit mapping (``Settings.from_env(env=...)``)."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        self._mapping = dict(env)
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {k.lower(): v for k, v in self._mapping.items() if v != ""}


class Settings(BaseSettings):
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
        quota_endpoints: Live endpoints one user may have (None: no limit).
        quota_accelerators: Accelerator devices across one user's endpoints.
        quota_cost_per_hour: Planned $/h across one user's endpoints.
        quota_queued: Operations one user may have waiting.
        max_body_bytes: Largest request body the API reads (413 beyond).
        remote_code_models: Models (Hugging Face ids, comma-separated) whose
            endpoints may set ``vllm.trust_remote_code``; an administrator's choice.
        render_secrets: ``allow`` lets the render target write secrets (the HF
            token, API keys) into its folder in plain text.
        hf_endpoint: The Hugging Face Hub's base URL (or a mirror of its HTTP
            API): a create request naming a model that is not shipped, without
            ``model_config``, has the model's ``config.json`` fetched from it
            (``automation.hub``).
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        extra="ignore",
        frozen=True,
        populate_by_name=True,
        validate_default=True,
    )

    state_dir: Path = Path(".state")
    database_url: str | None = None
    backend_url: str | None = None
    tokens_file: Path | None = None
    tokens_inline: str | None = Field(default=None, validation_alias=ENV_PREFIX + "TOKENS")
    pool_size: int = Field(default=4, ge=1)
    op_time_limit_s: float = Field(
        default=3600.0, gt=0, validation_alias=ENV_PREFIX + "OP_TIME_LIMIT"
    )
    cancel_grace_s: float = Field(default=30.0, ge=0, validation_alias=ENV_PREFIX + "CANCEL_GRACE")
    default_ttl: str = "8h"
    max_ttl: str = "7d"
    max_queued_per_endpoint: int = Field(
        default=8, ge=1, validation_alias=ENV_PREFIX + "MAX_QUEUED"
    )
    target: Target = Target.RENDER
    render_root: Path | None = None
    kubeconfig: Path | None = None
    platform_stack: str | None = None
    builder: str = DEFAULT_BUILDER
    log_max_lines: int = 2000
    log_max_bytes: int = 256 * 1024
    poll_interval_s: float = Field(default=0.5, gt=0, validation_alias=ENV_PREFIX + "POLL_INTERVAL")
    quota_endpoints: int | None = Field(default=5, ge=0)
    quota_accelerators: int | None = Field(default=16, ge=0)
    quota_cost_per_hour: float | None = Field(default=100.0, ge=0)
    quota_queued: int | None = Field(default=20, ge=0)
    #: An inline model config at its largest, and room for the rest of a spec.
    max_body_bytes: int = Field(
        default=MODEL_CONFIG_MAX_BYTES + 64 * 1024, ge=1024, le=16 * 1024 * 1024
    )
    remote_code_models: str = ""
    render_secrets: Literal["", "allow"] = ""
    hf_endpoint: str = Field(default="https://huggingface.co", max_length=256)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        env = _EXPLICIT_ENV.get()
        if env is not None:  # from_env(env=...): that mapping and nothing ambient
            return init_settings, _MappingEnvSource(settings_cls, env)
        sources = [init_settings, env_settings, dotenv_settings]
        if secrets := os.environ.get(SECRETS_DIR_ENV):
            sources.append(SecretsSettingsSource(settings_cls, secrets_dir=secrets))
        return tuple(sources)

    @field_validator("state_dir")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        return Path(v).resolve()

    @field_validator("hf_endpoint")
    @classmethod
    def _hf_endpoint(cls, v: str) -> str:
        if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", v):
            raise ValueError(
                f"hf_endpoint: {v!r} is not an http(s) URL such as https://huggingface.co"
            )
        return v.rstrip("/")

    @field_validator("default_ttl", "max_ttl")
    @classmethod
    def _ttl(cls, v: str, info: Any) -> str:
        parse_ttl(v, info.field_name)
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Self:
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
        return self

    @property
    def trusted_remote_code(self) -> frozenset[str]:
        """The models allowed to run their own code."""
        return frozenset(m.strip() for m in self.remote_code_models.split(",") if m.strip())

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
    def env_name(cls, field: str) -> str:
        """The environment variable of a field."""
        info: FieldInfo = cls.model_fields[field]
        alias = info.validation_alias
        return alias if isinstance(alias, str) else ENV_PREFIX + field.upper()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``LLM_ENDPOINTS_*`` variables (and ``.env``, secrets); keywords win.

        Args:
            env: Read these variables instead of the process environment (and no
                ``.env`` or secrets folder).
            overrides: Field values; None values are ignored.

        Raises:
            ValueError: one line per bad setting, naming its variable.
        """
        given = {k: v for k, v in overrides.items() if v is not None}
        token = _EXPLICIT_ENV.set(env)
        try:
            return cls(**given)
        except ValidationError as e:
            raise ValueError(_describe(cls, e)) from None
        finally:
            _EXPLICIT_ENV.reset(token)

    def to_env(self) -> dict[str, str]:
        """The variables that make :meth:`from_env` rebuild these settings."""
        out: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is not None:
                out[self.env_name(name)] = str(value)
        return out

    def with_(self, **changes: Any) -> Settings:
        """A copy with some fields changed (validated again)."""
        return type(self).from_env(env={}, **{**self.model_dump(), **changes})


def _describe(cls: type[Settings], err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = str(e["loc"][0]) if e["loc"] else ""
        field = loc.removeprefix(ENV_PREFIX).lower()
        name = cls.env_name(field) if field in cls.model_fields else loc
        msg = str(e["msg"]).removeprefix("Value error, ")
        lines.append(f"{name}: {msg}" if name and not msg.startswith(f"{field}:") else msg)
    return "\n".join(lines)
