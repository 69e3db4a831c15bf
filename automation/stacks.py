"""StackService: the only module that imports ``pulumi.automation``.

One Pulumi stack per endpoint, named ``ep-<name>`` from the validated endpoint
name. The program is an *inline* program (the Automation API serves it over
gRPC from this process and passes ``--client`` to the CLI), so no Python
language host is needed and the program is exactly ``build_endpoint(spec)``.

Each call works in the work dir it is given (the worker gives every operation
its own) with a private ``PULUMI_HOME`` whose ``plugins`` folder links to the
installed toolchain's, so concurrent operations never share Pulumi's workspace
or log files and never download a plugin. The stack's settings file
(``Pulumi.<stack>.yaml``: the passphrase provider's salt and the encrypted HF
token) is kept under ``<state>/stacks/`` and copied into and out of each work
dir.

Errors from the Automation API become this module's own exceptions with
sanitized messages: :class:`StackBusy` (the stack is locked by a live update),
:class:`StackNotFound`, :class:`OperationFailed` (the engine or the program
failed; the message keeps the ``error:`` lines only, scrubbed of secrets).
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pulumi
from pulumi import automation as auto

from automation.procs import process_started_after
from automation.secrets import Scrubber
from automation.settings import Settings
from automation.toolchain import (
    REPO_ROOT,
    Toolchain,
    find_toolchain,
    passphrase_for,
    pulumi_env,
)
from components.config import EndpointSpec, check_name

PROJECT = "llm-endpoints"
HF_TOKEN_KEY = f"{PROJECT}:hfToken"
STACK_PREFIX = "ep-"

#: Builds one endpoint inside a Pulumi program; returns the stack outputs.
Builder = Callable[[EndpointSpec, "pulumi.Input[str] | None"], Mapping[str, Any]]
OnOutput = Callable[[str], None]


class StackError(Exception):
    """Base of the errors StackService raises (messages are safe to show)."""


class StackBusy(StackError):
    """Another update holds the stack's lock."""


class StackNotFound(StackError):
    """The stack does not exist."""


class OperationFailed(StackError):
    """The engine or the program failed; the message is sanitized."""


@dataclass(frozen=True)
class StackResult:
    """The outcome of an operation.

    Attributes:
        result: ``succeeded`` (failures raise instead).
        outputs: The stack's non-secret outputs; secret ones are left out.
        changes: Resource changes by kind (``create``, ``delete``, ...).
        dropped_pending: Pending operations that were cleared before it ran.
    """

    result: str
    outputs: dict[str, Any] = field(default_factory=dict)
    changes: dict[str, int] = field(default_factory=dict)
    dropped_pending: list[str] = field(default_factory=list)


def stack_name(endpoint_name: str) -> str:
    """The stack of an endpoint: ``ep-<name>`` (the name is validated first)."""
    return STACK_PREFIX + check_name(endpoint_name)


def load_builder(ref: str) -> Builder:
    """Import a ``module:function`` builder reference."""
    module, _, attr = ref.partition(":")
    fn = getattr(importlib.import_module(module), attr)
    if not callable(fn):
        raise TypeError(f"builder: {ref} is not callable")
    return fn


@dataclass(frozen=True)
class ApiKey:
    """An endpoint's API key for one ``up``.

    Attributes:
        value: The key; None when the target must not write it (a render
            target whose operator keeps secrets out of files).
        version: Its version (a change rolls the serving pods).
    """

    value: str | None
    version: int


def program_for(
    spec: EndpointSpec,
    builder: Builder,
    expires_at: datetime | None = None,
    api_key: ApiKey | None = None,
) -> Callable[[], None]:
    """The inline program of an endpoint: call the builder, export its outputs.

    The HF token reaches the builder only as the secret config value
    ``llm-endpoints:hfToken`` (an ``Output`` marked secret), and the API key
    only as a secret ``Output``, never as plain text in the program.
    ``expires_at`` (the store's) and the key are passed on to builders that
    take them (``build_endpoint`` does).
    """
    kwargs: dict[str, Any] = {}
    if expires_at is not None and _accepts(builder, "expires_at"):
        kwargs["expires_at"] = expires_at
    if api_key is not None and _accepts(builder, "api_key"):
        kwargs["api_key_version"] = api_key.version

    def program() -> None:
        token = pulumi.Config(PROJECT).get_secret("hfToken")
        if "api_key_version" in kwargs and api_key is not None and api_key.value:
            kwargs["api_key"] = pulumi.Output.secret(api_key.value)
        outputs = builder(spec, token, **kwargs)
        for key, value in outputs.items():
            pulumi.export(key, value)

    return program


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _changes(changes: Mapping[Any, int] | None) -> dict[str, int]:
    return {str(getattr(k, "value", k)): int(v) for k, v in (changes or {}).items()}


#: How every operation runs the engine: no secrets, colour or progress bars in
#: the log the worker streams.
_QUIET: dict[str, Any] = {"show_secrets": False, "color": "never", "suppress_progress": True}


def _plain(outputs: Mapping[str, auto.OutputValue]) -> dict[str, Any]:
    """The non-secret outputs by name; secret ones are left out."""
    return {k: v.value for k, v in outputs.items() if not v.secret}


def _result(
    summary: auto.UpdateSummary, dropped: list[str], outputs: dict[str, Any] | None = None
) -> StackResult:
    return StackResult(
        result=summary.result,
        outputs=outputs or {},
        changes=_changes(summary.resource_changes),
        dropped_pending=dropped,
    )


def _noop_program() -> None:
    """Program for operations that never run one (destroy, refresh, export)."""


_SECTION_END = re.compile(r"\n(?:Resources:|Outputs:|Duration:|\s*stderr:)")
_RESOURCE_HEADER = re.compile(r"^\S+ \(.*\):$")


def _diagnostics(text: str) -> list[str]:
    """The ``error:`` messages (with their continuation lines) of the
    Diagnostics section that the CLI prints at the end of an update."""
    if "Diagnostics:" not in text:
        return []
    section = _SECTION_END.split(text.split("Diagnostics:", 1)[1], maxsplit=1)[0]
    found: list[list[str]] = []
    current: list[str] | None = None
    for raw in section.splitlines():
        line = raw.strip()
        if not line or line.startswith(("warning:", "info:")) or _RESOURCE_HEADER.match(line):
            current = None
        elif line.startswith("error:"):
            current = [line.removeprefix("error:").strip()]
            found.append(current)
        elif current is not None:
            current.append(line)
    return [" ".join(parts) for parts in found]


def sanitize_error(err: BaseException, scrub: Callable[[str], str], limit: int = 2000) -> str:
    """A short, secret-free message from an Automation API error.

    Keeps the engine's own error messages (its Diagnostics, else the ``error:``
    lines of stderr), deduplicated, without the generic "update failed" when
    there is something more specific, and never the command line, environment
    or progress output.
    """
    text = str(err)
    messages = _diagnostics(text)
    if not messages:
        tail = text.split("stderr:", 1)[-1]
        messages = [
            ln.strip().removeprefix("error:").strip()
            for ln in tail.splitlines()
            if ln.strip().startswith("error:")
        ]
    unique = list(dict.fromkeys(m for m in messages if m))
    specific = [m for m in unique if m != "update failed"]
    chosen = specific or unique
    if not chosen:
        chosen = [ln.strip() for ln in text.splitlines() if ln.strip()][-3:] or [type(err).__name__]
    msg = scrub("; ".join(chosen))
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."


def left_behind(deployment: dict[str, Any]) -> list[str]:
    """The URNs of a deployment's resources other than the stack and its providers."""
    return [
        str(r.get("urn", "?"))
        for r in deployment.get("resources") or []
        if r.get("type") != "pulumi:pulumi:Stack"
        and not str(r.get("type", "")).startswith("pulumi:providers:")
    ]


class StackService:
    """Pulumi stacks of endpoints, through the Automation API.

    Args:
        settings: Control-plane settings (state dir, backend URL, builder).
        toolchain: The Pulumi toolchain; default :func:`find_toolchain`.
        builder: Endpoint builder; default the one named by ``settings.builder``
            (``components.endpoint:build_endpoint``), imported when first used.
        scrub: Extra secret scrubbing for messages and output lines.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        toolchain: Toolchain | None = None,
        builder: Builder | None = None,
        scrub: Scrubber | None = None,
    ) -> None:
        self.settings = settings
        self.toolchain = toolchain or find_toolchain()
        self._builder = builder
        self.passphrase = passphrase_for(settings.state_dir)
        self.scrub = scrub or Scrubber()
        self.scrub.add(self.passphrase)

    @property
    def builder(self) -> Builder:
        """The endpoint builder (imported lazily)."""
        if self._builder is None:
            self._builder = load_builder(self.settings.builder)
        return self._builder

    # -- workspace plumbing ---------------------------------------------------------

    def _env(self, home: Path) -> dict[str, str]:
        python_path = os.pathsep.join(
            p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
        )
        return pulumi_env(
            self.toolchain,
            self.settings.state_dir,
            backend_url=self.settings.backend_url,
            passphrase=self.passphrase,
            extra={
                "PULUMI_HOME": str(home),
                # Dynamic providers (and the builder's imports) use this interpreter.
                "PULUMI_PYTHON_CMD": sys.executable,
                "PYTHONPATH": python_path,
            },
        )

    def _home(self, work_dir: Path) -> Path:
        home = work_dir / "pulumi-home"
        home.mkdir(parents=True, exist_ok=True)
        plugins = home / "plugins"
        if not plugins.exists():
            plugins.symlink_to(self.toolchain.pulumi_home / "plugins", target_is_directory=True)
        return home

    def _settings_file(self, name: str) -> Path:
        return self.settings.stack_settings_root / f"Pulumi.{name}.yaml"

    def backend_url(self) -> str:
        """The backend URL in use."""
        return self._env(self.toolchain.pulumi_home)["PULUMI_BACKEND_URL"]

    @contextmanager
    def _stack(
        self, name: str, work_dir: Path, program: Callable[[], None]
    ) -> Iterator[auto.Stack]:
        work_dir.mkdir(parents=True, exist_ok=True)
        home = self._home(work_dir)
        saved = self._settings_file(name)
        local = work_dir / f"Pulumi.{name}.yaml"
        if saved.is_file():
            shutil.copyfile(saved, local)
        env = self._env(home)
        opts = auto.LocalWorkspaceOptions(
            work_dir=str(work_dir),
            pulumi_home=str(home),
            env_vars=env,
            secrets_provider="passphrase",
            pulumi_command=auto.PulumiCommand(
                root=str(self.toolchain.root), skip_version_check=False
            ),
            project_settings=auto.ProjectSettings(
                name=PROJECT,
                runtime="python",
                backend=auto.ProjectBackend(url=env["PULUMI_BACKEND_URL"]),
            ),
        )
        with self._mapped("select", name):
            stack = auto.create_or_select_stack(
                stack_name=name, project_name=PROJECT, program=program, opts=opts
            )
        try:
            yield stack
        finally:
            if local.is_file():
                saved.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                tmp = saved.with_suffix(".tmp")
                shutil.copyfile(local, tmp)
                os.chmod(tmp, 0o600)
                os.replace(tmp, saved)

    @contextmanager
    def _mapped(self, what: str, name: str) -> Iterator[None]:
        try:
            yield
        except auto.ConcurrentUpdateError:
            raise StackBusy(
                f"stack {name} is locked by another update; retry when it finishes"
            ) from None
        except auto.StackNotFoundError:
            raise StackNotFound(f"stack {name} does not exist") from None
        except auto.CommandError as e:
            msg = sanitize_error(e, self.scrub)
            raise OperationFailed(f"{what} of {name} failed: {msg}") from None

    def _out(self, on_output: OnOutput | None) -> OnOutput:
        def emit(line: str) -> None:
            if on_output is not None:
                on_output(self.scrub(line))

        return emit

    # -- recovery -----------------------------------------------------------------

    def _lock_files(self, name: str) -> list[Path]:
        url = self.backend_url()
        if not url.startswith("file://"):
            return []
        root = Path(unquote(urlparse(url).path))
        locks = root / ".pulumi" / "locks"
        return sorted(p for p in locks.glob(f"*/{PROJECT}/{name}/*.json") if p.is_file())

    def stale_locks(self, name: str) -> tuple[list[Path], list[Path]]:
        """A file backend's lock files of a stack, split into (stale, live).

        A lock is stale only when its owner is provably dead: same host, and
        its pid no longer runs or now belongs to a process that started after
        the lock was taken (pid reuse).
        """
        stale, live = [], []
        host = socket.gethostname()
        for path in self._lock_files(name):
            try:
                info = json.loads(path.read_text())
                pid, lock_host = int(info["pid"]), str(info["hostname"])
                taken = datetime.fromisoformat(str(info["timestamp"]).replace("Z", "+00:00"))
            except (OSError, ValueError, KeyError, TypeError):
                live.append(path)  # unreadable: never assume it is dead
                continue
            if lock_host == host and process_started_after(pid, taken):
                stale.append(path)
            else:
                live.append(path)
        return stale, live

    def _recover(self, stack: auto.Stack, emit: OnOutput) -> list[str]:
        """Clear what a dead update left: a stale lock and pending operations.

        Returns descriptions of the pending operations dropped. A pending
        ``creating`` may have made a real resource that Pulumi no longer
        tracks; each is logged with its URN so an operator can check.
        """
        name = stack.name
        stale, live = self.stale_locks(name)
        if live:
            raise StackBusy(f"stack {name} is locked by a running update; retry when it finishes")
        if stale:
            emit(f"[recover] clearing {len(stale)} stale lock(s) left by a dead update")
            with self._mapped("cancel", name):
                stack.cancel()
        with self._mapped("export", name):
            deployment = stack.export_stack()
        state: dict[str, Any] = dict(deployment.deployment or {})
        pending = state.get("pending_operations") or []
        if not pending:
            return []
        dropped = []
        for p in pending:
            res = p.get("resource", {})
            desc = f"{p.get('type', '?')} {res.get('urn', '?')}"
            dropped.append(desc)
            emit(f"[recover] dropping pending operation: {desc}")
        state["pending_operations"] = []
        deployment.deployment = state
        with self._mapped("import", name):
            stack.import_stack(deployment)
        return dropped

    def _set_secret(self, stack: auto.Stack, key: str, value: str) -> None:
        """``pulumi config set --secret`` with the value on stdin, never on argv."""
        ws = stack.workspace
        env = {
            **os.environ,
            **(ws.env_vars or {}),
            "PULUMI_HOME": str(ws.pulumi_home),
            "PATH": f"{self.toolchain.root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        proc = subprocess.run(
            [
                str(self.toolchain.pulumi),
                "--non-interactive",
                "config",
                "set",
                "--secret",
                "--stack",
                stack.name,
                key,
            ],
            input=value,
            text=True,
            capture_output=True,
            cwd=ws.work_dir,
            env=env,
            check=False,
        )
        if proc.returncode != 0:
            lines = (proc.stderr or proc.stdout or "").strip().splitlines()
            msg = self.scrub(lines[-1] if lines else f"exit status {proc.returncode}")
            raise OperationFailed(f"setting {key} on {stack.name} failed: {msg}")

    # -- operations -----------------------------------------------------------------

    def up(
        self,
        spec: EndpointSpec,
        *,
        work_dir: Path,
        hf_token: str | None = None,
        expires_at: datetime | None = None,
        api_key: ApiKey | None = None,
        on_output: OnOutput | None = None,
    ) -> StackResult:
        """Create or update the endpoint's stack.

        Args:
            spec: The validated endpoint spec.
            work_dir: This operation's own folder.
            hf_token: Stored as the secret config value ``llm-endpoints:hfToken``;
                None keeps the one already set.
            expires_at: The endpoint's expiry, for builders that record it.
            api_key: The endpoint's API key, for builders that take it.
            on_output: Receives each (scrubbed) line of engine output.
        """
        name = stack_name(spec.name)
        emit = self._out(on_output)
        if hf_token:
            self.scrub.add(hf_token)
        if api_key is not None:
            self.scrub.add(api_key.value)
        program = program_for(spec, self.builder, expires_at, api_key)
        with self._stack(name, work_dir, program) as stack:
            dropped = self._recover(stack, emit)
            if hf_token:
                self._set_secret(stack, HF_TOKEN_KEY, hf_token)
            with self._mapped("up", name):
                res = stack.up(on_output=emit, on_error=emit, **_QUIET)
            return _result(res.summary, dropped, _plain(res.outputs))

    def preview(
        self, spec: EndpointSpec, *, work_dir: Path, on_output: OnOutput | None = None
    ) -> dict[str, int]:
        """What ``up`` would change, by kind."""
        name = stack_name(spec.name)
        emit = self._out(on_output)
        with self._stack(name, work_dir, program_for(spec, self.builder)) as stack:
            self._recover(stack, emit)
            with self._mapped("preview", name):
                res = stack.preview(on_output=emit, on_error=emit, color="never")
            return {str(k): int(v) for k, v in res.change_summary.items()}

    def refresh(
        self, spec: EndpointSpec, *, work_dir: Path, on_output: OnOutput | None = None
    ) -> StackResult:
        """Read the stack's resources back from where they live."""
        name = stack_name(spec.name)
        emit = self._out(on_output)
        with self._stack(name, work_dir, program_for(spec, self.builder)) as stack:
            dropped = self._recover(stack, emit)
            with self._mapped("refresh", name):
                res = stack.refresh(on_output=emit, on_error=emit, **_QUIET)
            return _result(res.summary, dropped)

    def destroy(
        self,
        endpoint_name: str,
        *,
        work_dir: Path,
        on_output: OnOutput | None = None,
        remove: bool = True,
    ) -> StackResult:
        """Delete every resource of the stack, then (``remove``) the stack itself.

        Pending operations left by an interrupted update are cleared first, so
        an endpoint whose ``up`` was killed can still be destroyed cleanly.
        """
        name = stack_name(endpoint_name)
        emit = self._out(on_output)
        with self._stack(name, work_dir, _noop_program) as stack:
            dropped = self._recover(stack, emit)
            with self._mapped("destroy", name):
                res = stack.destroy(on_output=emit, on_error=emit, **_QUIET)
            result = _result(res.summary, dropped)
            # Verified, not assumed: whatever is still in the state still exists.
            with self._mapped("export", name):
                remaining = left_behind(dict(stack.export_stack().deployment or {}))
            if remaining:
                raise OperationFailed(
                    f"destroy of {name} left {len(remaining)} resource(s): "
                    + ", ".join(remaining[:10])
                )
            if remove:
                with self._mapped("stack rm", name):
                    stack.workspace.remove_stack(name)
        if remove:
            self._settings_file(name).unlink(missing_ok=True)
        return result

    def outputs(self, endpoint_name: str, *, work_dir: Path) -> dict[str, Any]:
        """The stack's non-secret outputs."""
        name = stack_name(endpoint_name)
        with self._stack(name, work_dir, _noop_program) as stack, self._mapped("outputs", name):
            return _plain(stack.outputs())

    def export(self, endpoint_name: str, *, work_dir: Path) -> dict[str, Any]:
        """The stack's deployment (``pulumi stack export``), for inspection."""
        name = stack_name(endpoint_name)
        with self._stack(name, work_dir, _noop_program) as stack, self._mapped("export", name):
            return dict(stack.export_stack().deployment or {})

    def exists(self, endpoint_name: str, *, work_dir: Path) -> bool:
        """Whether the endpoint's stack exists in the backend."""
        name = stack_name(endpoint_name)
        work_dir.mkdir(parents=True, exist_ok=True)
        home = self._home(work_dir)
        env = self._env(home)
        ws = auto.LocalWorkspace(
            work_dir=str(work_dir),
            pulumi_home=str(home),
            env_vars=env,
            pulumi_command=auto.PulumiCommand(root=str(self.toolchain.root)),
            project_settings=auto.ProjectSettings(name=PROJECT, runtime="python"),
        )
        with self._mapped("stack ls", name):
            return any(s.name == name for s in ws.list_stacks())

    def remove(self, endpoint_name: str, *, work_dir: Path) -> None:
        """Remove the (empty) stack and its saved settings."""
        name = stack_name(endpoint_name)
        with self._stack(name, work_dir, _noop_program) as stack, self._mapped("stack rm", name):
            stack.workspace.remove_stack(name)
        self._settings_file(name).unlink(missing_ok=True)
