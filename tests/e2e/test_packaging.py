"""The project as a wheel: what ``pip install .`` (not editable) gets runs on its own.

The wheel is built here without network (``--no-build-isolation``) and
installed without its dependencies into a fresh virtualenv outside the
repository, which sees the test environment's dependencies through a path
entry (their ``.pth`` hooks, the project's editable install among them, are
not run). Whatever the wheel lacks (package data such as ``versions.env``, the
IAM policy documents, the migrations) fails here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from automation.store.db import head_revision
from automation.toolchain import REPO_ROOT

pytestmark = pytest.mark.e2e


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"{args}: {proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_a_wheel_install_plans_and_opens_its_store(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(wheels), str(REPO_ROOT)],
        cwd=tmp_path,
    )  # fmt: skip
    (wheel,) = wheels.glob("llm_endpoints-*.whl")
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path)
    python = venv / "bin" / "python"
    site = Path(
        _run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            cwd=tmp_path,
        ).strip()
    )
    (site / "test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
         str(wheel)],
        cwd=tmp_path,
    )  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "LLM_ENDPOINTS"))}
    where = _run(
        [str(python), "-c", "import components; print(components.__file__)"], tmp_path, env
    )
    assert Path(where.strip()).is_relative_to(site), "the wheel's own copy is imported"
    out = _run(
        [str(venv / "bin" / "llm-endpoints"), "plan", "deepseek-ai/DeepSeek-R1-Distill-Llama-8B",
         "--json"],
        tmp_path,
        env,
    )  # fmt: skip
    assert '"instance_type"' in out and '"fits": true' in out
    # The migrations travel with the wheel: a store opens at the newest revision.
    state = tmp_path / "state"
    code = (
        "from automation.settings import Settings; from automation.store import Store;"
        "from automation.store.db import head_revision;"
        f"s = Store.from_settings(Settings(state_dir={str(state)!r})); print(head_revision())"
    )
    assert _run([str(python), "-c", code], tmp_path, env).strip() == head_revision()
