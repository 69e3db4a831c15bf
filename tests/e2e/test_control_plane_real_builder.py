"""The control plane with the project's real endpoint builder
(``components.endpoint:build_endpoint``) on the embedded default target:
create over HTTP, ready with the vLLM manifests rendered and valid, destroy,
gone. The other control-plane tests use a small stand-in builder so they can
steer slowness and failures; this one proves the real program runs inline."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from automation.settings import DEFAULT_BUILDER
from automation.store import EndpointStatus, Store
from tests.e2e.control_plane_harness import (
    ALICE,
    MODEL,
    Server,
    checkpoint,
    checkpoint_path,
    make_settings,
    request,
    wait_op,
)
from tests.unit.k8s_validate import validate_manifest

pytestmark = pytest.mark.e2e


def _rendered(root: Path) -> dict[str, dict]:
    docs = {}
    for f in sorted(root.rglob("*.yaml")):
        doc = yaml.safe_load(f.read_text())
        validate_manifest(doc)
        docs[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return docs


def test_real_builder_create_ready_destroy(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, builder=DEFAULT_BUILDER)
    store = Store.from_settings(settings)
    render_dir = settings.render_base / "real"
    with Server(settings) as srv, srv.client(ALICE) as c:
        r = c.post("/v1/endpoints", json=request("real", ttl="2h"))
        assert r.status_code == 202, r.text
        done = wait_op(c, r.json()["operation"]["id"], timeout=120)
        assert done["status"] == "succeeded", done

        shown = c.get("/v1/endpoints/real").json()
        assert shown["status"] == "ready"
        # The server picks a fresh namespace per endpoint: ``real-<6 hex>``.
        namespace = store.get_endpoint("real").spec["namespace"]
        assert re.fullmatch(r"real-[0-9a-f]{6}", namespace), namespace
        assert shown["url"] == f"http://real.{namespace}.svc.cluster.local:8000/v1"
        assert shown["instance_type"] == "g5.xlarge"
        assert shown["cost_per_hour"] == pytest.approx(1.006)

        docs = _rendered(render_dir)
        assert {f"Namespace/{namespace}", "Deployment/real", "Service/real"} <= set(docs)
        container = docs["Deployment/real"]["spec"]["template"]["spec"]["containers"][0]
        args = " ".join(container.get("command", []) + container.get("args", []))
        assert f"--served-model-name {MODEL}" in args
        assert "--max-model-len 8192" in args
        assert container["resources"]["limits"]["nvidia.com/gpu"] in (1, "1")
        labels = docs["Deployment/real"]["metadata"]["labels"]
        assert labels["llm-endpoints/endpoint"] == "real"
        assert labels["llm-endpoints/expires-at"].isdigit(), "expiry is visible on objects"
        latest = checkpoint(settings, "real")
        assert latest is not None and not latest.get("pending_operations")

        r = c.delete("/v1/endpoints/real")
        assert r.status_code == 202
        assert wait_op(c, r.json()["operation"]["id"], timeout=120)["status"] == "succeeded"
        assert c.get("/v1/endpoints/real").json()["status"] == "destroyed"

    assert store.get_endpoint("real").status is EndpointStatus.DESTROYED
    assert not list(render_dir.rglob("*.yaml")), "rendered manifests are removed"
    assert not checkpoint_path(settings, "real").exists(), "the stack is removed"
