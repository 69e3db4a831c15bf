"""``llm-endpoints create | list | show | extend | destroy`` on the real engine,
straight on the store and state folder (no server)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from automation.store import EndpointStatus, Store
from tests.e2e.control_plane_harness import MODEL, make_settings

pytestmark = pytest.mark.e2e


def test_cli_create_list_show_extend_destroy(tmp_path: Path) -> None:
    # The canary token goes into rendered files, which the operator allows here.
    settings = make_settings(tmp_path, render_secrets="allow")
    canary = "hf_CANARYcli0token0123456789abcdef"
    env = {
        **os.environ,
        **settings.to_env(),
        "PYTHONPATH": str(Path.cwd()),
        "MY_HF": canary,
        "USER": "carol",
    }

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "automation.cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    created = cli(
        "create",
        "cli-one",
        MODEL,
        "--instance",
        "g5.xlarge",
        "--max-model-len",
        "8192",
        "--ttl",
        "2h",
        "--hf-token-env",
        "MY_HF",
    )
    assert created.returncode == 0, created.stderr + created.stdout
    assert "ConfigMap cli-one-config created" in created.stdout
    assert "succeeded" in created.stdout.splitlines()[-1]

    listed = cli("list", "--json")
    rows = json.loads(listed.stdout)
    assert [(r["name"], r["owner"], r["status"]) for r in rows] == [("cli-one", "carol", "ready")]
    shown = json.loads(cli("show", "cli-one").stdout)
    assert shown["url"] == "http://cli-one.llm.svc.cluster.local:8000/v1"
    assert shown["last_operation"]["status"] == "succeeded"

    assert cli("extend", "cli-one", "6h").returncode == 0
    too_long = cli("extend", "cli-one", "30d")
    assert too_long.returncode == 2 and "longer than this server's maximum" in too_long.stderr
    bad = cli("create", "Bad_Name", MODEL)
    assert bad.returncode == 2 and bad.stderr.startswith("error: name:")
    dup = cli("create", "cli-one", MODEL, "--instance", "g5.xlarge", "--max-model-len", "8192")
    assert dup.returncode == 1 and "already exists" in dup.stderr

    gone = cli("destroy", "cli-one")
    assert gone.returncode == 0, gone.stdout + gone.stderr
    store = Store.from_settings(settings)
    assert store.get_endpoint("cli-one").status is EndpointStatus.DESTROYED
    assert not (settings.render_base / "cli-one").exists()
    for out in (created, listed, gone):
        assert canary not in out.stdout + out.stderr
