"""build_endpoint over every stack in stacks/: each Kubernetes object validates
against the Kubernetes schemas (custom resources against their CRDs), the
properties that make each deployment what it is hold, and specs that cannot
work fail before any resource is registered."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml

from components.config import EndpointSpec, PlatformSpec, parse_spec
from components.endpoint import ENDPOINT_LABEL, build_endpoint, build_platform
from components.planner import PlanError
from tests.unit.conftest import PLATFORM_STACK_OUTPUTS, RecordingMocks, resolve, settle
from tests.unit.k8s_validate import unwrap_secrets, validate_recorded

STACKS = Path(__file__).resolve().parents[2] / "stacks"
CANARY = "hf_canary_0123456789abcdef"


def stack_config(stack: str) -> dict[str, Any]:
    return yaml.safe_load((STACKS / f"Pulumi.{stack}.yaml").read_text())["config"]


def endpoint_spec(stack: str) -> EndpointSpec:
    return parse_spec(stack_config(stack)["llm-endpoints:endpoint"])


ENDPOINT_STACKS = sorted(
    p.name.removeprefix("Pulumi.").removesuffix(".yaml")
    for p in STACKS.glob("Pulumi.*.yaml")
    if "llm-endpoints:endpoint" in yaml.safe_load(p.read_text())["config"]
)


class StackMocks(RecordingMocks):
    """Recording mocks with the platform stack's outputs, for shared-mode stacks."""

    def __init__(self) -> None:
        super().__init__(PLATFORM_STACK_OUTPUTS)


@pytest.fixture
def stack_mocks() -> Any:
    m = StackMocks()
    pulumi.runtime.set_mocks(m, project="llm-endpoints", stack="test", preview=False)
    yield m
    pulumi.runtime.settings.reset_options()


def kinds(mocks: RecordingMocks, kind: str) -> list[dict[str, Any]]:
    return [
        unwrap_secrets(r.inputs)
        for r in mocks.resources
        if r.typ.startswith("kubernetes:") and r.inputs.get("kind") == kind
    ]


def container_args(pod_spec: dict[str, Any]) -> str:
    c = pod_spec["containers"][0]
    return " ".join(c.get("command", []) + c.get("args", []))


def test_every_endpoint_stack_is_listed() -> None:
    assert ENDPOINT_STACKS == [
        "deepseek-qwen-32b",
        "deepseek-r1-llama-8b",
        "gpt-oss-20b",
        "llama3-8b-inf2",
        "local-render",
    ]


@pytest.mark.parametrize("stack", ENDPOINT_STACKS)
def test_stack_objects_validate(stack_mocks: StackMocks, stack: str) -> None:
    spec = endpoint_spec(stack)
    outputs = build_endpoint(spec, hf_token=pulumi.Output.secret(CANARY))
    settle()
    assert validate_recorded(stack_mocks) >= 4
    assert resolve(outputs["model"]) == spec.model or "/" not in spec.model
    # Every Kubernetes object carries the endpoint label, so on-call can find it.
    for r in stack_mocks.resources:
        if r.typ.startswith("kubernetes:") and "metadata" in r.inputs:
            labels = unwrap_secrets(r.inputs["metadata"]).get("labels", {})
            assert labels.get(ENDPOINT_LABEL) == spec.name, f"{r.typ} {r.name} lacks the label"
    # The token reaches the engine only as a secret: never in plain text.
    for r in stack_mocks.resources:
        if r.typ == "kubernetes:core/v1:Secret":
            continue
        assert CANARY not in json.dumps(unwrap_secrets(r.inputs), default=str), r.name


def test_deepseek_qwen_32b_is_lws_tp8_pp2_on_efa_with_fsx_and_cidr_alb(
    stack_mocks: StackMocks,
) -> None:
    outputs = build_endpoint(endpoint_spec("deepseek-qwen-32b"))
    settle()
    (lws,) = kinds(stack_mocks, "LeaderWorkerSet")
    assert lws["spec"]["leaderWorkerTemplate"]["size"] == 2
    leader = lws["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["spec"]
    args = container_args(leader)
    assert "--tensor-parallel-size 8" in args
    assert "--pipeline-parallel-size 2" in args
    limits = leader["containers"][0]["resources"]["limits"]
    assert int(limits["nvidia.com/gpu"]) == 8
    assert int(limits["vpc.amazonaws.com/efa"]) == 4
    (group,) = [
        r.inputs
        for r in stack_mocks.by_type("aws:eks/nodeGroup:NodeGroup")
        if r.name == "deepseek-qwen-32b-pool-ng"
    ]
    assert group["scalingConfig"]["maxSize"] == 2
    assert stack_mocks.by_type("aws:ec2/placementGroup:PlacementGroup")
    fsx = stack_mocks.one("aws:fsx/lustreFileSystem:LustreFileSystem").inputs
    assert fsx["deploymentType"] == "SCRATCH_2" and fsx["storageCapacity"] == 1200
    (ingress,) = kinds(stack_mocks, "Ingress")
    annotations = ingress["metadata"]["annotations"]
    assert annotations["alb.ingress.kubernetes.io/scheme"] == "internet-facing"
    assert (
        annotations["alb.ingress.kubernetes.io/inbound-cidrs"] == "203.0.113.0/24,198.51.100.0/24"
    )
    assert resolve(outputs["cost_per_hour"]) == pytest.approx(2 * 21.958)


def test_gpt_oss_is_auto_mode_spot_and_on_demand_with_s3_mountpoint(
    stack_mocks: StackMocks,
) -> None:
    build_endpoint(endpoint_spec("gpt-oss-20b"))
    settle()
    (pool,) = kinds(stack_mocks, "NodePool")
    template = pool["spec"]["template"]["spec"]
    assert template["nodeClassRef"]["group"] == "eks.amazonaws.com"
    reqs = {r["key"]: r for r in template["requirements"]}
    assert reqs["eks.amazonaws.com/instance-category"]["values"] == ["g"]
    assert reqs["eks.amazonaws.com/instance-generation"]["operator"] == "Gt"
    assert reqs["eks.amazonaws.com/instance-generation"]["values"] == ["4"]
    assert set(reqs["karpenter.sh/capacity-type"]["values"]) == {"spot", "on-demand"}
    (deployment,) = kinds(stack_mocks, "Deployment")
    assert "--max-model-len 20000" in container_args(deployment["spec"]["template"]["spec"])
    (pv,) = kinds(stack_mocks, "PersistentVolume")
    assert pv["spec"]["csi"]["driver"] == "s3.csi.aws.com"
    assert pv["spec"]["accessModes"] == ["ReadOnlyMany"]
    assert kinds(stack_mocks, "Job"), "the weights are prefetched into the bucket"


def test_prefetch_job_runs_where_the_model_will(stack_mocks: StackMocks) -> None:
    """A cluster of tainted GPU pools has no other node for the Job: it takes the
    serving pod's node selector, tolerations and instance-type affinity."""
    build_endpoint(endpoint_spec("gpt-oss-20b"))
    settle()
    (job,) = kinds(stack_mocks, "Job")
    (deployment,) = kinds(stack_mocks, "Deployment")
    job_pod = job["spec"]["template"]["spec"]
    serving_pod = deployment["spec"]["template"]["spec"]
    assert job_pod["tolerations"], "the pool's nodes are tainted"
    for key in ("nodeSelector", "tolerations", "affinity"):
        assert job_pod[key] == serving_pod[key], key


def test_llama3_inf2_is_ray_service_on_neuron(stack_mocks: StackMocks) -> None:
    build_endpoint(endpoint_spec("llama3-8b-inf2"))
    settle()
    (ray,) = kinds(stack_mocks, "RayService")
    workers = ray["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    pod = workers[0]["template"]["spec"]
    assert int(pod["containers"][0]["resources"]["limits"]["aws.amazon.com/neuron"]) == 1
    assert ("aws.amazon.com/neuron", "NoSchedule") in [
        (t["key"], t["effect"]) for t in pod["tolerations"]
    ]
    (nodepool,) = kinds(stack_mocks, "NodePool")
    reqs = {r["key"]: r["values"] for r in nodepool["spec"]["template"]["spec"]["requirements"]}
    assert reqs["node.kubernetes.io/instance-type"] == ["inf2.8xlarge"]


def test_deepseek_r1_llama_8b_has_open_webui_and_ray(stack_mocks: StackMocks) -> None:
    build_endpoint(endpoint_spec("deepseek-r1-llama-8b"))
    settle()
    assert kinds(stack_mocks, "RayService")
    names = [d["metadata"]["name"] for d in kinds(stack_mocks, "Deployment")]
    assert any("webui" in n for n in names)


def test_platform_stack_builds_and_exports_the_shared_contract(
    stack_mocks: StackMocks,
) -> None:
    spec = PlatformSpec.model_validate(stack_config("platform")["llm-endpoints:platform"])
    assert build_platform(spec) == {}
    settle()
    assert stack_mocks.one("eks:index:Cluster")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        # A 32B model in bf16 (61 GiB) on one 24 GB GPU.
        ({"instance_type": "g5.xlarge", "tensor_parallel": 1}, "GiB"),
    ],
)
def test_impossible_plan_registers_nothing(
    stack_mocks: StackMocks, change: dict[str, Any], message: str
) -> None:
    data = stack_config("local-render")["llm-endpoints:endpoint"]
    data = {**data, "model": "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B", **change}
    spec = parse_spec(data)
    with pytest.raises(PlanError, match=message):
        build_endpoint(spec)
    settle()
    assert stack_mocks.resources == []


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"exposure": {"kind": "public-alb"}}, "exposure.cidrs"),
        ({"serving": "leader-worker-set", "pipeline_parallel": 1}, "pipeline_parallel"),
        ({"storage": {"kind": "fsx"}}, "storage.kind"),
    ],
)
def test_unworkable_spec_is_refused_naming_the_field(change: dict[str, Any], field: str) -> None:
    data = {**stack_config("local-render")["llm-endpoints:endpoint"], **change}
    with pytest.raises(ValueError, match=field):
        parse_spec(data)
