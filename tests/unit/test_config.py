"""Endpoint spec validation: every bad field is rejected with its name."""

from __future__ import annotations

import re
from typing import Any

import pytest

from components.config import (
    Accelerator,
    ExposureKind,
    PoolMode,
    ServingMode,
    StorageKind,
    check_model_id,
    check_name,
    parse_spec,
    parse_ttl,
)
from tests.unit.conftest import custom_model


def spec(**fields: Any) -> dict[str, Any]:
    return {"name": "ep", "model": "llama3-8b"} | fields


def rejects(data: dict[str, Any], field: str) -> str:
    """Parse, expect a ValueError that names the field first.

    Either ``field: ...`` or, for rules across fields, ``section: field ...``
    / ``field ...`` (e.g. ``storage: storage.prefetch needs a volume``).
    """
    with pytest.raises(ValueError) as err:
        parse_spec(data)
    msg = str(err.value)
    assert re.match(rf"^([a-z_.]+: )?{re.escape(field)}\b", msg), msg
    return msg


def test_minimal_spec_gets_safe_defaults() -> None:
    s = parse_spec(spec())
    assert s.resolved_accelerator is Accelerator.NVIDIA
    assert s.serving is ServingMode.DEPLOYMENT
    assert s.storage.kind is StorageKind.NONE
    assert s.exposure.kind is ExposureKind.CLUSTER
    assert s.vllm.gpu_memory_utilization == 0.90
    assert s.render_only


@pytest.mark.parametrize(
    "name",
    ["Bad", "under_score", "-lead", "trail-", "a" * 41, "", "abc\n", "a b", "ep;rm"],
)
def test_bad_names(name: str) -> None:
    msg = rejects(spec(name=name), "name")
    assert "DNS-1123" in msg


def test_name_limit_is_40() -> None:
    assert check_name("a" * 40) == "a" * 40


@pytest.mark.parametrize(
    "model",
    [
        "owner/na---me",
        "owner/na--me",
        "owner/{{ .Values.x }}",
        "{{model}}",
        "deepseek-ai/DeepSeek-R1-Distill-Llama-8B\n",
        "llama3-8b\n",
        "owner/name\nimage: evil",
        "--trust-remote-code",
        "owner/--flag",
        "owner/name --trust-remote-code",
        "../../etc/passwd",
        "owner/na..me",
    ],
)
def test_bad_model_ids(model: str) -> None:
    rejects(spec(model=model), "model")


def test_unknown_catalog_model_names_the_closest() -> None:
    msg = rejects(spec(model="llama3-9b"), "model")
    assert "closest: llama3-8b" in msg


def test_model_id_check_allows_real_ids() -> None:
    assert (
        check_model_id("mistralai/Mistral-7B-Instruct-v0.3") == "mistralai/Mistral-7B-Instruct-v0.3"
    )
    with pytest.raises(ValueError, match=r"^model: "):
        check_model_id("mistralai/Mistral-7B\n")


@pytest.mark.parametrize(
    "arg",
    [
        "--enable-prefix-caching\n",
        "--x=$(curl evil)",
        "--x=a b",
        "-x",
        "enable-prefix-caching",
        "--quantization=fp8;rm",
    ],
)
def test_bad_extra_args(arg: str) -> None:
    rejects(spec(vllm={"extra_args": [arg]}), "vllm.extra_args")


@pytest.mark.parametrize("arg", ["--model=evil/model", "--port=1", "--max-model-len=9"])
def test_extra_args_cannot_override_managed_flags(arg: str) -> None:
    msg = rejects(spec(vllm={"extra_args": [arg]}), "vllm.extra_args")
    assert "its own field" in msg


def test_good_extra_args() -> None:
    s = parse_spec(spec(vllm={"extra_args": ["--enable-prefix-caching", "--kv-cache-dtype=fp8"]}))
    assert s.vllm.extra_args == ["--enable-prefix-caching", "--kv-cache-dtype=fp8"]


def test_public_alb_needs_cidrs() -> None:
    msg = rejects(spec(exposure={"kind": "public-alb"}), "exposure.cidrs")
    assert "internal-alb" in msg


@pytest.mark.parametrize("cidr", ["0.0.0.0/0", "::/0"])
def test_public_alb_refuses_the_whole_internet(cidr: str) -> None:
    msg = rejects(
        spec(exposure={"kind": "public-alb", "cidrs": ["203.0.113.0/24", cidr]}), "exposure.cidrs"
    )
    assert "0.0.0.0/0" in msg


def test_bad_cidr_is_named() -> None:
    msg = rejects(
        spec(exposure={"kind": "internal-alb", "cidrs": ["10.0.0.1/8"]}), "exposure.cidrs"
    )
    assert "'10.0.0.1/8'" in msg


def test_exposure_accepts_listed_networks() -> None:
    s = parse_spec(spec(exposure={"kind": "public-alb", "cidrs": ["203.0.113.0/24"]}))
    assert s.exposure.cidrs == ["203.0.113.0/24"]
    assert parse_spec(spec(exposure={"kind": "internal-alb"})).exposure.cidrs == []
    rejects(spec(exposure={"kind": "cluster", "cidrs": ["10.0.0.0/8"]}), "exposure.cidrs")


def test_unknown_keys_are_errors() -> None:
    msg = rejects(spec(modle="x"), "modle")
    assert "Extra inputs are not permitted" in msg
    rejects(spec(vllm={"max_model_length": 8192}), "vllm.max_model_length")


def test_instance_type_is_checked() -> None:
    msg = rejects(spec(instance_type="g5.xlargee"), "instance_type")
    assert "closest: g5.xlarge" in msg
    msg = rejects(spec(instance_type="g5.xlarge", accelerator="neuron"), "instance_type")
    assert "nvidia" in msg
    assert parse_spec(spec(instance_type="inf2.8xlarge")).resolved_accelerator is Accelerator.NEURON


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"vllm": {"gpu_memory_utilization": 1.5}}, "vllm.gpu_memory_utilization"),
        ({"vllm": {"gpu_memory_utilization": 0}}, "vllm.gpu_memory_utilization"),
        ({"vllm": {"max_model_len": -1}}, "vllm.max_model_len"),
        ({"tensor_parallel": 0}, "tensor_parallel"),
        ({"replicas": 17}, "replicas"),
        ({"pipeline_parallel": 2}, "pipeline_parallel"),
        ({"serving": "leader-worker-set"}, "pipeline_parallel"),
        ({"storage": {"kind": "fsx", "size_gib": 1000}}, "storage.size_gib"),
        ({"storage": {"kind": "none", "prefetch": True}}, "storage.prefetch"),
        ({"ttl": "5m"}, "ttl"),
        ({"ttl": "forever"}, "ttl"),
        ({"namespace": "Bad_NS"}, "namespace"),
    ],
)
def test_bad_fields_are_named(fields: dict[str, Any], field: str) -> None:
    rejects(spec(**fields), field)


def test_custom_model_id_must_match() -> None:
    cm = custom_model(params=7e9, vocab_size=32000)
    rejects(spec(model="acme/model", custom_model=cm), "custom_model.id")
    s = parse_spec(spec(model="acme/other", custom_model=cm))
    assert s.custom_model is not None and s.custom_model.layers == 32


def test_ttl_bounds() -> None:
    assert parse_ttl("8h").total_seconds() == 8 * 3600
    assert parse_ttl(600).total_seconds() == 600
    with pytest.raises(ValueError, match=r"^ttl: .*10m to 30d"):
        parse_ttl("31d")


def test_multiple_errors_one_line_each() -> None:
    with pytest.raises(ValueError) as err:
        parse_spec({"name": "Bad", "model": "llama3-8b", "replicas": 0})
    lines = str(err.value).splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("name:") and lines[1].startswith("replicas:")


KWOK_CLASS = {"group": "karpenter.kwok.sh", "kind": "KWOKNodeClass", "name": "default"}
EXISTING = {"mode": "existing", "kubeconfig": "/tmp/kubeconfig"}


def test_an_existing_clusters_karpenter_is_used_through_its_node_class() -> None:
    s = parse_spec(spec(cluster=EXISTING, pool={"mode": "karpenter", "node_class": KWOK_CLASS}))
    assert s.resolved_pool_mode is PoolMode.KARPENTER
    assert s.pool.node_class is not None and s.pool.node_class.model_dump() == KWOK_CLASS
    auto = parse_spec(
        spec(
            cluster={**EXISTING, "auto_mode": True},
            pool={"mode": "auto-mode", "node_class": KWOK_CLASS},
        )
    )
    assert auto.resolved_pool_mode is PoolMode.AUTO_MODE


@pytest.mark.parametrize(
    ("pool", "cluster", "message"),
    [
        ({"mode": "karpenter"}, EXISTING, "pool.mode: an existing cluster uses its own nodes"),
        ({"mode": "none", "node_class": KWOK_CLASS}, EXISTING, "pool.node_class: applies only"),
        (
            {"mode": "karpenter", "node_class": {**KWOK_CLASS, "kind": "ec2nodeclass"}},
            EXISTING,
            "pool.node_class.kind:",
        ),
        (
            {"mode": "karpenter", "node_class": {"group": "a.b", "kind": "K"}},
            EXISTING,
            "pool.node_class.name",
        ),
    ],
)
def test_node_class_rules_name_the_field(
    pool: dict[str, Any], cluster: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_spec(spec(cluster=cluster, pool=pool))
