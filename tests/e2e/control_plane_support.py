"""A tiny render-mode endpoint builder for the control-plane end-to-end tests.

It stands in for ``components.endpoint.build_endpoint`` (same signature) so
the real Pulumi engine runs in a few seconds: a kubernetes provider that
renders to the endpoint's folder, a ConfigMap named after the endpoint, a
Secret carrying the HF token (a Pulumi secret) and, on request, slow or
undeletable resources. Labels steer it:

* ``slow: "<seconds>"`` adds a dynamic resource whose create sleeps that long
  (so a test can kill a worker while the engine has a pending create);
* ``fail-destroy: "true"`` protects the ConfigMap, so destroy fails for real.

Worker processes import it through ``LLM_ENDPOINTS_BUILDER``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
from pulumi.dynamic import CreateResult, Resource, ResourceProvider

from components.config import EndpointSpec

BUILDER = "tests.e2e.control_plane_support:build"


class _SlowProvider(ResourceProvider):
    def create(self, props: dict[str, Any]) -> CreateResult:
        time.sleep(float(props["seconds"]))
        return CreateResult(id_=f"slow-{props['seconds']}", outs=dict(props))

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        return None


class Slow(Resource):
    """A resource whose create takes ``seconds``."""

    def __init__(self, name: str, seconds: float, opts: pulumi.ResourceOptions | None = None):
        super().__init__(_SlowProvider(), name, {"seconds": seconds}, opts)


def build(
    spec: EndpointSpec,
    hf_token: pulumi.Input[str] | None = None,
    api_key: pulumi.Input[str] | None = None,
    api_key_version: int = 1,
) -> Mapping[str, Any]:
    """Render a ConfigMap (and the token and key Secrets) for ``spec``; return its outputs."""
    assert spec.cluster.render_dir, "the test builder renders only"
    provider = k8s.Provider(f"{spec.name}-render", render_yaml_to_directory=spec.cluster.render_dir)
    protect = spec.labels.get("fail-destroy") == "true"
    namespace = "llm"  # one fixed namespace keeps the tests' paths simple
    cm = k8s.core.v1.ConfigMap(
        f"{spec.name}-config",
        metadata={"name": spec.name, "namespace": namespace},
        data={
            "model": spec.model,
            "instance_type": spec.instance_type or "g5.xlarge",
            "api_key_version": str(api_key_version),
            "vllm_extra_args": " ".join(spec.vllm.extra_args),
        },
        opts=pulumi.ResourceOptions(provider=provider, protect=protect),
    )
    outputs: dict[str, Any] = {
        "url": f"http://{spec.name}.{namespace}.svc.cluster.local:8000/v1",
        "model": spec.model,
        "instance_type": spec.instance_type or "g5.xlarge",
        "cost_per_hour": 1.006,
        "configmap": cm.metadata["name"],
    }
    if hf_token is not None:
        k8s.core.v1.Secret(
            f"{spec.name}-hf-token",
            metadata={"name": f"{spec.name}-hf-token", "namespace": namespace},
            string_data={"token": hf_token},
            opts=pulumi.ResourceOptions(provider=provider),
        )
        # A secret output: it must never reach the store or a response.
        outputs["hf_token_echo"] = hf_token
    if api_key is not None:
        k8s.core.v1.Secret(
            f"{spec.name}-api-key",
            metadata={"name": f"{spec.name}-api-key", "namespace": namespace},
            string_data={"key": api_key},
            opts=pulumi.ResourceOptions(provider=provider),
        )
        outputs["api_key_echo"] = api_key
    if "slow" in spec.labels:
        Slow(
            f"{spec.name}-slow",
            float(spec.labels["slow"]),
            opts=pulumi.ResourceOptions(depends_on=[cm]),
        )
    return outputs
