"""The real Pulumi engine, hermetic: Automation API inline program, kubernetes
provider in render-to-directory mode, local file backend. No mocks."""

from __future__ import annotations

import json
from pathlib import Path

import pulumi
import pulumi_kubernetes as k8s
import pytest
import yaml
from pulumi import automation as auto

from automation.toolchain import Toolchain, pulumi_env

pytestmark = pytest.mark.e2e


def _program(render_dir: Path, value: str):
    def program() -> None:
        provider = k8s.Provider("render", render_yaml_to_directory=str(render_dir))
        cm = k8s.core.v1.ConfigMap(
            "settings",
            metadata={"name": "engine-check", "namespace": "default"},
            data={"value": value},
            opts=pulumi.ResourceOptions(provider=provider),
        )
        pulumi.export("configmap", cm.metadata["name"])
        pulumi.export("value", value)

    return program


def _stack(toolchain: Toolchain, state_dir: Path, program) -> auto.Stack:
    ws = auto.LocalWorkspaceOptions(
        pulumi_command=auto.PulumiCommand(root=str(toolchain.root)),
        pulumi_home=str(toolchain.pulumi_home),
        env_vars=pulumi_env(toolchain, state_dir),
        project_settings=auto.ProjectSettings(name="engine-check", runtime="python"),
    )
    return auto.create_or_select_stack(
        stack_name="dev", project_name="engine-check", program=program, opts=ws
    )


def test_inline_program_renders_updates_and_destroys(
    toolchain: Toolchain, state_dir: Path, tmp_path: Path
) -> None:
    render_dir = tmp_path / "rendered"
    manifest = render_dir / "1-manifest" / "v1-configmap-default-engine-check.yaml"

    stack = _stack(toolchain, state_dir, _program(render_dir, "one"))
    result = stack.up(on_output=lambda _: None)
    assert result.summary.result == "succeeded"
    assert result.outputs["configmap"].value == "engine-check"
    assert yaml.safe_load(manifest.read_text())["data"] == {"value": "one"}

    # A changed program rewrites the same file; the outputs follow.
    stack = _stack(toolchain, state_dir, _program(render_dir, "two"))
    result = stack.up(on_output=lambda _: None)
    assert result.summary.resource_changes is not None
    assert (
        result.summary.resource_changes.get("replace", 0)
        + result.summary.resource_changes.get("update", 0)
        == 1
    )
    assert stack.outputs()["value"].value == "two"
    assert yaml.safe_load(manifest.read_text())["data"] == {"value": "two"}

    # State lives in the local backend inside state_dir, nowhere else.
    backend = state_dir / "backend" / ".pulumi" / "stacks" / "engine-check" / "dev.json"
    checkpoint = json.loads(backend.read_text())
    types = {r["type"] for r in checkpoint["checkpoint"]["latest"]["resources"]}
    assert "kubernetes:core/v1:ConfigMap" in types

    destroyed = stack.destroy(on_output=lambda _: None)
    assert destroyed.summary.result == "succeeded"
    assert not manifest.exists()

    stack.workspace.remove_stack("dev")
    assert not backend.exists()
    names = [s.name for s in stack.workspace.list_stacks()]
    assert "dev" not in names
