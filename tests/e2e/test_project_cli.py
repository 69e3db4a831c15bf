"""The project's own Pulumi.yaml program through the pulumi CLI, on the real
engine: preview, up, render, validate, destroy, for the local-render stack.

The project is used through a scratch copy (symlinks to the code, a copied
stack file with the render folder moved into the test's tmp dir) so the test
never writes into the repository.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from automation.toolchain import REPO_ROOT, Toolchain, run_pulumi
from tests.unit.k8s_validate import validate_manifest

pytestmark = pytest.mark.e2e


def _scratch_project(tmp_path: Path, render_dir: Path) -> Path:
    project = tmp_path / "project"
    (project / "stacks").mkdir(parents=True)
    for name in ("components", "automation", "toolchain", "__main__.py", ".venv"):
        (project / name).symlink_to(REPO_ROOT / name)
    (project / "Pulumi.yaml").write_text((REPO_ROOT / "Pulumi.yaml").read_text())
    stack = yaml.safe_load((REPO_ROOT / "stacks" / "Pulumi.local-render.yaml").read_text())
    stack["config"]["llm-endpoints:endpoint"]["cluster"]["render_dir"] = str(render_dir)
    (project / "stacks" / "Pulumi.local-render.yaml").write_text(yaml.safe_dump(stack))
    return project


def test_local_render_stack_preview_up_destroy(
    toolchain: Toolchain, state_dir: Path, tmp_path: Path
) -> None:
    render_dir = tmp_path / "rendered"
    project = _scratch_project(tmp_path, render_dir)

    def pulumi(*args: str) -> str:
        result = run_pulumi(
            list(args),
            cwd=project,
            state_dir=state_dir,
            toolchain=toolchain,
            capture=True,
            check=False,
        )
        assert result.returncode == 0, (
            f"pulumi {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        )
        return result.stdout

    pulumi("stack", "init", "local-render")
    preview = pulumi("preview", "-s", "local-render", "--non-interactive", "--diff")
    assert "apps/v1:Deployment" in preview
    assert not render_dir.exists(), "preview must not write manifests"

    pulumi("up", "-s", "local-render", "--yes", "--non-interactive", "--skip-preview")
    files = sorted(render_dir.rglob("*.yaml"))
    kinds = {}
    for f in files:
        doc = yaml.safe_load(f.read_text())
        validate_manifest(doc)
        kinds.setdefault(doc["kind"], []).append(doc)
    assert {"Deployment", "Service", "PersistentVolumeClaim"} <= set(kinds)
    deployment = kinds["Deployment"][0]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert "--max-model-len" in " ".join(container.get("args", []) + container.get("command", []))

    outputs = pulumi("stack", "output", "-s", "local-render", "--json")
    assert "url" in outputs

    pulumi("destroy", "-s", "local-render", "--yes", "--non-interactive", "--skip-preview")
    assert not list(render_dir.rglob("*.yaml"))
    pulumi("stack", "rm", "local-render", "--yes", "--non-interactive")
