"""Every spec the spec (or the HTTP request model) accepts builds.

Hypothesis generates specs over every cluster mode, pool mode, serving mode,
storage kind and exposure kind, at the boundaries (40- and 41-character names,
wide CIDRs, each flag), and checks: whenever ``parse_spec`` accepts one and
the planner sizes it (the API refuses what it cannot size with a 422 before
202), ``build_endpoint`` under the recording mocks succeeds, every Kubernetes
object it registers validates, and no AWS name Pulumi generates breaks its
service's limit. A spec that is accepted and then fails inside ``pulumi up``
is exactly what this test exists to catch.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pulumi
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from automation.api.schemas import CreateEndpointRequest
from automation.settings import Settings, Target
from automation.store import Store
from automation.usecases import ControlPlane, InvalidRequest
from components.catalog import INSTANCES, MODELS
from components.config import EndpointSpec, parse_spec
from components.endpoint import build_endpoint
from components.models import read_config
from components.planner import plan_for_spec
from components.vllm_flags import MANAGED_FLAGS
from tests.unit.conftest import PLATFORM_STACK_OUTPUTS, RecordingMocks, resolve, settle
from tests.unit.k8s_validate import validate_recorded

KUBECONFIG = Path(__file__).resolve().parents[1] / "data" / "kubeconfig.yaml"

MODEL_NAMES = sorted({*MODELS, *(a for m in MODELS.values() for a in m.aliases)})
#: A model that is not shipped, with its config.json inline (a Qwen3 fine-tune).
FINETUNE = {
    "model": "acme/qwen3-0.6b-finetune",
    "model_config": read_config("Qwen__Qwen3-0.6B.json"),
}
MODEL_CHOICES = st.one_of(
    st.sampled_from(MODEL_NAMES).map(lambda m: {"model": m}),
    st.just(FINETUNE),
)
# Each dimension is mostly valid, so that combinations of valid values are
# explored; the invalid values are there to be refused.
NAMES = st.one_of(
    st.sampled_from(["ep", "x" * 40, "a" * 39 + "b", "model-ep-1"]),
    st.from_regex(r"[a-z][a-z0-9-]{0,38}[a-z0-9]", fullmatch=True),
    st.sampled_from(["y" * 41, "0bad", "Bad", "a_b"]),
)
CIDRS = st.lists(
    st.sampled_from(
        ["0.0.0.0/0", "::/0", "10.0.0.0/8", "0.0.0.0/1", "203.0.113.0/24", "10.1.2.3/32", "bad"]
    ),
    max_size=3,
)
EXPOSURE = st.one_of(
    st.just({"kind": "cluster"}),
    st.sampled_from(
        [
            {"kind": "internal-alb"},
            {"kind": "internal-alb", "cidrs": ["10.0.0.0/8"]},
            {"kind": "internal-alb", "cidrs": ["0.0.0.0/1", "128.0.0.0/1"]},
            {"kind": "public-alb", "cidrs": ["203.0.113.0/24", "198.51.100.7/32"]},
            {"kind": "public-alb", "cidrs": ["2001:db8::/32"]},
        ]
    ),
    st.fixed_dictionaries(
        {"kind": st.sampled_from(["cluster", "internal-alb", "public-alb"]), "cidrs": CIDRS}
    ),
)
FLAGS = st.lists(
    st.sampled_from(
        [
            "--enable-prefix-caching",
            "--kv-cache-dtype=fp8",
            "--max-num-batched-tokens=8192",
            "--enable-chunked-prefill",
            "--dtype=bfloat16",
            *sorted(MANAGED_FLAGS),
            *(f"{f}=1" for f in sorted(MANAGED_FLAGS)),
        ]
    ),
    max_size=3,
)
#: Cluster and pool placements: the coherent ones of each mode, and a few that are not.
COHERENT_PLACEMENTS: list[tuple[dict[str, Any], dict[str, Any]]] = [
    ({"mode": "existing", "render_dir": "rendered/x"}, {"mode": "none"}),
    ({"mode": "existing", "kubeconfig": str(KUBECONFIG)}, {}),
    ({"mode": "shared", "platform_stack": "org/p/platform"}, {"mode": "karpenter"}),
    ({"mode": "shared", "platform_stack": "org/p/platform"}, {}),
    (
        {"mode": "shared", "platform_stack": "org/p/platform"},
        {"mode": "karpenter", "capacity_types": ["spot", "on-demand"], "max_nodes": 3},
    ),
    ({"mode": "shared", "platform_stack": "org/p/platform", "auto_mode": True}, {}),
    (
        {"mode": "shared", "platform_stack": "org/p/platform", "auto_mode": True},
        {"mode": "auto-mode", "instance_types": ["g5.4xlarge"]},
    ),
    ({"mode": "dedicated"}, {"mode": "karpenter"}),
    ({"mode": "dedicated", "availability_zones": 2}, {"mode": "managed", "max_nodes": 2}),
    ({"mode": "dedicated"}, {"mode": "managed", "max_nodes": 2, "efa": True}),
    ({"mode": "dedicated", "auto_mode": True}, {"mode": "auto-mode"}),
    ({"mode": "dedicated", "auto_mode": True}, {"mode": "managed"}),
]
PLACEMENTS = st.sampled_from(
    [
        *COHERENT_PLACEMENTS,
        # Incoherent ones, refused by the spec.
        ({"mode": "existing", "render_dir": "rendered/x"}, {"mode": "karpenter"}),
        ({"mode": "dedicated"}, {"mode": "auto-mode"}),
        ({"mode": "shared"}, {}),
    ]
)
#: A storage section per kind, coherent or with a field of another kind.
STORAGES = st.one_of(
    st.just({"kind": "none"}),
    st.fixed_dictionaries(
        {"kind": st.just("pvc"), "size_gib": st.sampled_from([20, 50, 200])},
        optional={"storage_class": st.sampled_from(["gp3", "efs-sc", "Not A Class"])},
    ),
    st.fixed_dictionaries(
        {"kind": st.just("s3")},
        optional={
            "prefetch": st.booleans(),
            "bucket": st.sampled_from(["model-weights", "Bad_Bucket"]),
            "prefix": st.sampled_from(["owner/model", "a/../b", "deep/er/path"]),
        },
    ),
    st.fixed_dictionaries(
        {"kind": st.just("fsx"), "size_gib": st.sampled_from([1200, 2400, 1000])},
        optional={"prefetch": st.booleans(), "prefix": st.just("owner/model")},
    ),
    st.fixed_dictionaries(
        {"kind": st.just("efs")},
        optional={
            "file_system_id": st.sampled_from(["fs-0123456789abcdef0", "nope"]),
            "prefetch": st.booleans(),
            "size_gib": st.sampled_from([100, 500]),
        },
    ),
    st.sampled_from(
        [
            {"kind": "none", "prefetch": True},
            {"kind": "pvc", "bucket": "model-weights"},
            {"kind": "fsx", "file_system_id": "fs-0123456789abcdef0"},
        ]
    ),
)
#: How a model is served, with the parallelism each mode needs.
SERVING_CHOICES: list[dict[str, Any]] = [
    {},
    {"serving": "deployment", "replicas": 2},
    {"serving": "ray-service", "open_webui": True},
    {"serving": "leader-worker-set", "pipeline_parallel": 2, "tensor_parallel": 8},
    {"serving": "deployment", "tensor_parallel": 4},
    {"serving": "deployment", "pipeline_parallel": 2},
]
SERVINGS = st.sampled_from(SERVING_CHOICES)
VLLM = st.fixed_dictionaries(
    {},
    optional={
        "max_model_len": st.sampled_from([2048, 8192, 20000]),
        "gpu_memory_utilization": st.sampled_from([0.8, 0.9, 0.95]),
        "max_num_seqs": st.sampled_from([8, 64, 256]),
        "max_num_batched_tokens": st.sampled_from([16, 2048, 8192]),
        "extra_args": st.one_of(st.just([]), FLAGS),
    },
)
REQUESTS = st.builds(
    lambda base, serving, instance, storage, exposure, vllm, labels, ttl: {
        **base,
        **serving,
        **({"instance_type": instance} if instance else {}),
        "storage": storage,
        "exposure": exposure,
        "vllm": vllm,
        "labels": labels,
        **({"ttl": ttl} if ttl else {}),
    },
    st.builds(lambda name, model: {"name": name, **model}, NAMES, MODEL_CHOICES),
    SERVINGS,
    st.one_of(st.none(), st.sampled_from(sorted(INSTANCES))),
    STORAGES,
    EXPOSURE,
    VLLM,
    st.sampled_from([{}, {"team": "ml"}, {"example.com/cost-center": "42"}]),
    st.sampled_from([None, "30m", "8h", "2d"]),
)
SPECS = st.builds(
    lambda req, placement: {**req, "cluster": placement[0], "pool": placement[1]},
    REQUESTS,
    PLACEMENTS,
)

#: The three specs that were accepted and then failed inside ``pulumi up`` (#9).
ACCEPT_THEN_FAIL = [
    {"name": "n" * 40, "model": "llama3-8b", "instance_type": "g5.xlarge",
     "storage": {"kind": "pvc", "size_gib": 50}, "vllm": {"max_model_len": 8192}},
    {"name": "flags", "model": "llama3-8b", "instance_type": "g5.xlarge",
     "vllm": {"max_model_len": 8192, "extra_args": ["--served-model-name=x"]}},
    {"name": "flags", "model": "llama3-8b", "instance_type": "g5.xlarge",
     "vllm": {"max_model_len": 8192, "extra_args": ["--distributed-executor-backend=ray"]}},
    {"name": "alb", "model": "llama3-8b", "instance_type": "g5.xlarge",
     "vllm": {"max_model_len": 8192},
     "exposure": {"kind": "internal-alb", "cidrs": ["0.0.0.0/0"]}},
]  # fmt: skip


def _event(text: str) -> None:
    if currently_in_test_context():  # hypothesis statistics; not in the plain sweep
        event(text)


def _accepted(parse: Callable[[], EndpointSpec]) -> EndpointSpec | None:
    """The spec if the control plane would accept it (valid and sized), else None."""
    try:
        spec = parse()
    except ValueError:
        _event(f"refused: {str(sys.exc_info()[1]).split(':')[0]}")
        return None
    try:
        plan_for_spec(spec)
    except ValueError:  # PlanError too: the API answers both with a 422 (plan_error)
        _event("refused: does not fit")
        return None
    _event(f"built: {spec.cluster.mode.value} / {spec.serving.value} / {spec.storage.kind.value}")
    return spec


def _builds(spec: EndpointSpec) -> None:
    """Build the endpoint under fresh recording mocks; fail on any error."""
    mocks = RecordingMocks(PLATFORM_STACK_OUTPUTS | {"autoMode": spec.cluster.auto_mode})
    pulumi.runtime.set_mocks(mocks, project="llm-endpoints", stack="prop", preview=False)
    try:
        outputs = build_endpoint(spec, hf_token=pulumi.Output.secret("hf_property_token_000"))
        for value in outputs.values():
            resolve(value)
        settle()
        validate_recorded(mocks)
        assert mocks.name_violations == [], mocks.name_violations
    finally:
        pulumi.runtime.settings.reset_options()


FAST = settings(
    max_examples=150,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@FAST
@given(SPECS)
def test_every_spec_parse_spec_accepts_builds(data: dict[str, Any]) -> None:
    spec = _accepted(lambda: parse_spec(data))
    if spec is not None:
        _builds(spec)


@pytest.fixture(scope="module")
def control(tmp_path_factory: pytest.TempPathFactory) -> dict[Target, ControlPlane]:
    """The request path of each target (no dispatcher: nothing runs)."""
    out = {}
    for target, extra in (
        (Target.RENDER, {}),
        (Target.EXISTING, {"kubeconfig": KUBECONFIG}),
        (Target.EKS, {"platform_stack": "org/llm-endpoints/platform"}),
    ):
        root = tmp_path_factory.mktemp(target.value)
        # A dead loopback Hub: no request here may reach the real one.
        settings_ = Settings(
            state_dir=root / "state",
            target=target,
            max_ttl="7d",
            hf_endpoint="http://127.0.0.1:9",
            **extra,
        )
        out[target] = ControlPlane(settings_, Store.from_settings(settings_), planner=None)
    return out


@FAST
@given(REQUESTS, st.sampled_from(list(Target)))
@example(ACCEPT_THEN_FAIL[0], Target.RENDER)
@example(ACCEPT_THEN_FAIL[1], Target.RENDER)
@example(ACCEPT_THEN_FAIL[2], Target.EKS)
@example(ACCEPT_THEN_FAIL[3], Target.EKS)
def test_every_request_the_http_model_accepts_builds(
    control: dict[Target, ControlPlane], data: dict[str, Any], target: Target
) -> None:
    def parse() -> EndpointSpec:
        body = CreateEndpointRequest.model_validate(data)
        try:
            return control[target].prepare_spec(body.payload())
        except InvalidRequest as e:
            raise ValueError(str(e)) from None

    spec = _accepted(parse)
    if spec is not None:
        _builds(spec)


@pytest.mark.parametrize("data", ACCEPT_THEN_FAIL)
def test_the_accept_then_fail_specs_are_refused_or_build(data: dict[str, Any]) -> None:
    """Each either builds (the 40-character name) or is refused naming its field."""
    try:
        spec = parse_spec(data)
    except ValueError as e:
        field = "vllm.extra_args" if "extra_args" in data["vllm"] else "exposure.cidrs"
        assert str(e).startswith(field), e
        return
    _builds(spec)


#: Coherent placements, storage sections, serving modes and exposures: the sweep
#: below crosses each placement with each of the others (pairwise), so every
#: cluster mode meets every storage kind, serving mode and exposure kind.
SWEEP_STORAGE = [
    {"kind": "none"},
    {"kind": "pvc", "size_gib": 50, "storage_class": "gp3"},
    {"kind": "s3", "prefetch": True},
    {"kind": "s3", "bucket": "model-weights", "prefix": "owner/model"},
    {"kind": "fsx", "size_gib": 1200, "prefetch": True},
    {"kind": "efs", "file_system_id": "fs-0123456789abcdef0"},
    {"kind": "efs", "prefetch": True},
]
SWEEP_EXPOSURE = [
    {"kind": "cluster"},
    {"kind": "internal-alb"},
    {"kind": "internal-alb", "cidrs": ["10.0.0.0/8"]},
    {"kind": "public-alb", "cidrs": ["203.0.113.0/24"]},
]
BASE = {"name": "s" * 40, "model": "llama3-8b", "vllm": {"max_model_len": 8192}}
SWEEP = [
    {**BASE, "cluster": c, "pool": p, **extra}
    for c, p in COHERENT_PLACEMENTS
    for extra in (
        *({"storage": s} for s in SWEEP_STORAGE),
        *SERVING_CHOICES,
        *({"exposure": e} for e in SWEEP_EXPOSURE),
        FINETUNE,
    )
]


@pytest.mark.parametrize("data", SWEEP, ids=lambda d: f"{d['cluster']['mode']}-{len(SWEEP)}")
def test_every_mode_and_kind_pairing_is_refused_or_builds(data: dict[str, Any]) -> None:
    spec = _accepted(lambda: parse_spec(data))
    if spec is not None:
        _builds(spec)
