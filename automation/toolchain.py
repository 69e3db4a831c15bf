"""Where the Pulumi toolchain is, and the hermetic environment to run it in.

Every part of the project that runs Pulumi (the Automation API in
``automation.stacks``, the CLI's ``up``/``preview`` wrappers, the end-to-end
tests) gets its environment from :func:`pulumi_env`: a local or given backend,
the passphrase secrets provider, a private ``PULUMI_HOME`` holding the plugins
that ``scripts/install-pulumi`` registered, and no update checks or plugin
downloads, so an operation never fetches anything mid-flight.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from components._versions import KUBERNETES_PROVIDER_VERSION, PULUMI_VERSION

REPO_ROOT = Path(__file__).resolve().parent.parent
INSTALLER = REPO_ROOT / "scripts" / "install-pulumi"


class ToolchainMissing(RuntimeError):
    """The pinned Pulumi toolchain is not installed."""


@dataclass(frozen=True)
class Toolchain:
    """An installed toolchain (see ``scripts/install-pulumi``).

    Attributes:
        root: Folder holding ``bin/pulumi``; what ``PulumiCommand(root=…)`` takes.
        pulumi_home: The ``PULUMI_HOME`` with the provider plugins registered.
    """

    root: Path
    pulumi_home: Path

    @property
    def pulumi(self) -> Path:
        """The ``pulumi`` executable."""
        return self.root / "bin" / "pulumi"


def cache_dir() -> Path:
    """The cache folder shared with ``scripts/install-pulumi``."""
    if env := os.environ.get("LLM_ENDPOINTS_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "llm-endpoints"


def find_toolchain() -> Toolchain:
    """Locate the installed toolchain of the pinned versions.

    Raises:
        ToolchainMissing: with the command that installs it.
    """
    root = (
        cache_dir() / "toolchain" / f"pulumi-v{PULUMI_VERSION}-k8s-v{KUBERNETES_PROVIDER_VERSION}"
    )
    marker = root / ".complete"
    if not marker.is_file() or not (root / "bin" / "pulumi").exists():
        raise ToolchainMissing(
            f"Pulumi v{PULUMI_VERSION} toolchain not found at {root}; "
            f"run {INSTALLER.relative_to(REPO_ROOT)} first"
        )
    return Toolchain(root=root, pulumi_home=root / "home")


def passphrase_for(state_dir: Path) -> str:
    """The secrets passphrase for a state folder.

    ``PULUMI_CONFIG_PASSPHRASE`` wins; otherwise a random passphrase is kept in
    ``<state_dir>/passphrase`` (mode 0600), created on first use. It is never
    logged or returned by any API.
    """
    if env := os.environ.get("PULUMI_CONFIG_PASSPHRASE"):
        return env
    path = state_dir / "passphrase"
    if path.is_file():
        return path.read_text().strip()
    state_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value


def backend_url_for(state_dir: Path, backend_url: str | None = None) -> str:
    """``backend_url`` if given, else a local file backend inside ``state_dir``."""
    if backend_url:
        return backend_url
    backend = state_dir / "backend"
    backend.mkdir(parents=True, exist_ok=True)
    return f"file://{backend.resolve()}"


def pulumi_env(
    toolchain: Toolchain,
    state_dir: Path,
    *,
    backend_url: str | None = None,
    passphrase: str | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment variables that make a Pulumi run hermetic.

    Args:
        toolchain: The installed toolchain.
        state_dir: Folder for the local backend and the passphrase file.
        backend_url: ``file://``, ``s3://`` or Pulumi Cloud URL; default local.
        passphrase: Secrets passphrase; default :func:`passphrase_for`.
        extra: More variables (AWS credentials for the eks target, say).

    Returns:
        Only the Pulumi variables; callers merge them over what they need of
        ``os.environ``.
    """
    env = {
        "PULUMI_HOME": str(toolchain.pulumi_home),
        "PULUMI_BACKEND_URL": backend_url_for(state_dir, backend_url),
        "PULUMI_CONFIG_PASSPHRASE": passphrase or passphrase_for(state_dir),
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
        "PULUMI_IGNORE_AMBIENT_PLUGINS": "true",
        # The kubernetes provider takes KUBECONFIG as its kubeconfig argument,
        # which conflicts with render-to-directory and would let an ambient
        # cluster leak into a deployment. Every provider this project builds
        # gets its kubeconfig explicitly, so the ambient one is always blanked
        # (the Automation API can only add variables, not remove them).
        "KUBECONFIG": "",
    }
    env.update(extra or {})
    return env


def run_pulumi(
    args: Sequence[str],
    *,
    cwd: Path,
    state_dir: Path,
    toolchain: Toolchain | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    capture: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run the ``pulumi`` CLI hermetically (for command-line flows and tests).

    Args:
        args: Arguments after ``pulumi``.
        cwd: Project folder.
        state_dir: Local state folder (backend and passphrase).
        toolchain: Default :func:`find_toolchain`.
        env: Extra variables (e.g. ``KUBECONFIG``).
        check: Raise ``CalledProcessError`` on a non-zero exit.
        capture: Capture stdout/stderr instead of streaming them.
    """
    tc = toolchain or find_toolchain()
    full_env = dict(os.environ)
    full_env.update(
        pulumi_env(tc, state_dir, backend_url=os.environ.get("PULUMI_BACKEND_URL"), extra=env)
    )
    full_env["PATH"] = f"{tc.root / 'bin'}{os.pathsep}{full_env.get('PATH', '')}"
    return subprocess.run(
        [str(tc.pulumi), *args],
        cwd=cwd,
        env=full_env,
        check=check,
        text=True,
        capture_output=capture,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m automation.toolchain ARGS``: the pulumi CLI, hermetically.

    Runs in the repository (the project's Pulumi.yaml) with the state folder of
    the control plane (``LLM_ENDPOINTS_STATE_DIR``, default ``.state``).
    """
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    state_dir = Path(os.environ.get("LLM_ENDPOINTS_STATE_DIR") or REPO_ROOT / ".state")
    try:
        result = run_pulumi(args, cwd=REPO_ROOT, state_dir=state_dir, check=False)
    except ToolchainMissing as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return result.returncode


if __name__ == "__main__":
    raise SystemExit(main())
