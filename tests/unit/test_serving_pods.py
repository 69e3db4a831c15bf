"""Serving pods: they fit their node, run as the image's user, need the endpoint's
key, and only the endpoint and its key-checked ports are reachable (mocks)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pulumi
import pytest

from components import eks_node
from components.catalog import INSTANCES, Accelerator
from components.config import ServingMode, StorageKind
from components.inference_service import InferenceService
from components.model_storage import ModelStorage, ModelStorageArgs, storage_needs_root
from components.serving.pods import HEADROOM, WEBUI, node_budget
from tests.unit.conftest import RecordingMocks, settle
from tests.unit.k8s_validate import is_secret, validate_recorded
from tests.unit.test_inference_service import build, inf2, make_args, model_volume


def _server(mocks: RecordingMocks) -> dict[str, Any]:
    dep = mocks.one("kubernetes:apps/v1:Deployment").inputs
    return dep["spec"]["template"]


def _millis(q: str) -> int:
    return int(q.removesuffix("m")) if q.endswith("m") else int(float(q) * 1000)


def _mib(q: str) -> int:
    assert q.endswith("Mi"), q
    return int(q.removesuffix("Mi"))


# -- fit ------------------------------------------------------------------------------


def test_requests_are_the_node_budget_less_headroom(mocks: RecordingMocks) -> None:
    """g5.12xlarge (4 GPUs, all for one pod): its allocatable as EKS computes it,
    less the platform's DaemonSets, less the headroom."""
    build()
    (c,) = _server(mocks)["spec"]["containers"]
    shape = eks_node.node_shape(
        INSTANCES["g5.12xlarge"],
        eks_node.Provisioner.KARPENTER,
        plugins=[eks_node.DevicePlugin.NVIDIA],
    )
    left = eks_node.workload_budget(shape)
    assert c["resources"]["requests"]["cpu"] == f"{math.floor(left.cpu_millis * 0.95)}m"
    assert c["resources"]["requests"]["memory"] == f"{math.floor(left.memory_mib * 0.95)}Mi"
    assert "memory" not in c["resources"]["limits"]  # weights load maps whole files


def test_pods_are_pinned_to_the_planned_instance_types(mocks: RecordingMocks) -> None:
    build()
    affinity = _server(mocks)["spec"]["affinity"]["nodeAffinity"]
    (term,) = affinity["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert term["matchExpressions"] == [
        {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": ["g5.12xlarge"]}
    ]


def test_a_pod_sharing_a_node_by_devices_gets_its_share(mocks: RecordingMocks) -> None:
    build(tensor_parallel=1, devices_per_node=1)  # 1 of the 4 GPUs of a g5.12xlarge
    (c,) = _server(mocks)["spec"]["containers"]
    budget, devices = node_budget(["g5.12xlarge"], efa=False)
    assert devices == 4
    assert _millis(c["resources"]["requests"]["cpu"]) == budget.cpu_millis // 4
    assert _mib(c["resources"]["requests"]["memory"]) == budget.memory_mib // 4


def test_open_webui_shares_the_node_so_the_server_leaves_it_room(
    mocks: RecordingMocks,
) -> None:
    build(open_webui=True)
    (c,) = _server_by_name(mocks, "ep")["spec"]["containers"]
    budget, _ = node_budget(["g5.12xlarge"], efa=False)
    assert _millis(c["resources"]["requests"]["cpu"]) == budget.cpu_millis - WEBUI.cpu_millis
    assert _mib(c["resources"]["requests"]["memory"]) == budget.memory_mib - WEBUI.memory_mib


def _server_by_name(mocks: RecordingMocks, name: str) -> dict[str, Any]:
    (dep,) = [
        r.inputs
        for r in mocks.by_type("kubernetes:apps/v1:Deployment")
        if r.inputs["metadata"]["name"] == name
    ]
    return dep["spec"]["template"]


def test_the_smallest_instance_type_sizes_the_pod(mocks: RecordingMocks) -> None:
    """A pool of several types: the pod must fit whichever it lands on."""
    from tests.unit.test_inference_service import gpu

    both = dataclasses.replace(gpu(0), instance_types=("g5.4xlarge", "g5.xlarge"))
    build(scheduling=both, tensor_parallel=1, devices_per_node=1)
    (c,) = _server(mocks)["spec"]["containers"]
    small, _ = node_budget(["g5.xlarge"], efa=False)
    assert node_budget(["g5.4xlarge"], efa=False)[0].cpu_millis > small.cpu_millis
    assert c["resources"]["requests"] == {
        "cpu": f"{small.cpu_millis}m",
        "memory": f"{small.memory_mib}Mi",
        "nvidia.com/gpu": "1",
    }


def test_without_instance_types_cpu_and_memory_must_be_given(mocks: RecordingMocks) -> None:
    from components.serving.pods import Scheduling

    bare = Scheduling({}, [], "nvidia.com/gpu")
    with pytest.raises(ValueError, match=r"^scheduling.instance_types: give the instance types"):
        build(scheduling=bare)
    assert not mocks.resources
    build(scheduling=bare, cpu="3", memory="12Gi")
    (c,) = _server(mocks)["spec"]["containers"]
    assert c["resources"]["requests"]["cpu"] == "3"
    assert "affinity" not in _server(mocks)["spec"]


def test_an_instance_too_small_for_the_endpoint_is_refused(
    mocks: RecordingMocks, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No catalog instance is this tight; a heavier Ray head would make g5.xlarge so."""
    from components.serving import pods

    monkeypatch.setattr(pods, "RAY_HEAD", pods.Share(cpu_millis=3000, memory_mib=8192))
    with pytest.raises(
        ValueError, match=r"^scheduling.instance_types: g5.xlarge leave .* choose a larger"
    ):
        build(ServingMode.RAY_SERVICE)


@pytest.mark.parametrize(
    "instance",
    sorted(i.name for i in INSTANCES.values() if i.accelerator is Accelerator.NVIDIA),
)
def test_every_nvidia_catalog_instance_fits_its_own_pod(
    mocks: RecordingMocks, instance: str
) -> None:
    """The requests of a pod using all of an instance's GPUs, plus the platform's
    DaemonSets, never exceed what the node can allocate."""
    from tests.unit.test_inference_service import gpu

    inst = INSTANCES[instance]
    build(
        scheduling=gpu(0, instance),
        tensor_parallel=inst.count,
        devices_per_node=inst.count,
    )
    (c,) = _server(mocks)["spec"]["containers"]
    shape = eks_node.node_shape(
        inst, eks_node.Provisioner.KARPENTER, plugins=[eks_node.DevicePlugin.NVIDIA]
    )
    left = eks_node.workload_budget(shape)
    assert 1000 <= _millis(c["resources"]["requests"]["cpu"]) <= left.cpu_millis
    assert 4096 <= _mib(c["resources"]["requests"]["memory"]) <= left.memory_mib
    # The headroom is really left.
    assert _millis(c["resources"]["requests"]["cpu"]) <= left.cpu_millis * (1 - HEADROOM)


# -- security -------------------------------------------------------------------------


def test_vllm_runs_as_the_images_user_with_a_writable_home(mocks: RecordingMocks) -> None:
    build()
    spec = _server(mocks)["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 2000
    assert spec["securityContext"]["runAsGroup"] == 0
    (c,) = spec["containers"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["HOME"].startswith("/cache/") and env["HF_HOME"].startswith("/cache/")
    assert {"name": "cache", "mountPath": "/cache"} in c["volumeMounts"]
    assert any(v["name"] == "cache" and "emptyDir" in v for v in spec["volumes"])


def test_neuron_images_run_as_root_and_keep_compiled_artifacts_off_the_weights(
    mocks: RecordingMocks,
) -> None:
    svc = build(scheduling=inf2(), tensor_parallel=2, devices_per_node=1, cores_per_device=2)
    spec = _server(mocks)["spec"]
    assert "runAsUser" not in spec["securityContext"] and svc.needs_root
    (c,) = spec["containers"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["NEURON_COMPILED_ARTIFACTS"].startswith("/cache/")


@pytest.mark.parametrize("kind", list(StorageKind))
def test_storage_that_only_root_may_write_makes_the_pod_root(
    mocks: RecordingMocks, kind: StorageKind
) -> None:
    from tests.unit.test_inference_service import MODEL, STORAGE_ARGS

    st = ModelStorage(
        "ep",
        ModelStorageArgs(kind=kind, model_id=MODEL, namespace="llm", **STORAGE_ARGS[kind]),
    )
    svc = InferenceService("ep", make_args(storage=model_volume(st)))
    settle()
    assert st.needs_root is storage_needs_root(kind) is (kind in (StorageKind.FSX, StorageKind.EFS))
    (dep,) = [
        r.inputs
        for r in mocks.by_type("kubernetes:apps/v1:Deployment")
        if r.inputs["metadata"]["name"] == "ep"
    ]
    ctx = dep["spec"]["template"]["spec"]["securityContext"]
    # Root only where the pod itself downloads into a root-owned volume.
    assert ("runAsUser" in ctx) is not (st.needs_root and st.download_at_start)
    assert svc.needs_root is st.needs_root
    for job in mocks.by_type("kubernetes:batch/v1:Job"):
        jctx = job.inputs["spec"]["template"]["spec"]["securityContext"]
        assert ("runAsNonRoot" in jctx) is not st.needs_root


# -- the API key ----------------------------------------------------------------------


def test_the_api_key_is_a_secret_every_server_reads(mocks: RecordingMocks) -> None:
    key = "llme-" + "a" * 48
    build(api_key=pulumi.Output.secret(key), api_key_version=3)
    secret = mocks.one("kubernetes:core/v1:Secret").inputs
    assert secret["metadata"]["name"] == "ep-api-key"
    assert is_secret(secret["stringData"])
    template = _server(mocks)
    (c,) = template["spec"]["containers"]
    assert {
        "name": "VLLM_API_KEY",
        "valueFrom": {"secretKeyRef": {"name": "ep-api-key", "key": "key"}},
    } in c["env"]
    assert "--api-key" not in " ".join(c["args"])
    # A rotation bumps the version, and the changed template rolls the pods.
    assert template["metadata"]["annotations"]["llm-endpoints/api-key-version"] == "3"
    for r in mocks.resources:
        if r.typ != "kubernetes:core/v1:Secret":
            assert key not in repr(r.inputs), r.name
    validate_recorded(mocks)


def test_without_a_key_the_secret_is_made_elsewhere_but_still_required(
    mocks: RecordingMocks,
) -> None:
    build()
    assert not mocks.by_type("kubernetes:core/v1:Secret")
    (c,) = _server(mocks)["spec"]["containers"]
    (ref,) = [e for e in c["env"] if e["name"] == "VLLM_API_KEY"]
    assert "optional" not in ref["valueFrom"]["secretKeyRef"]


# -- network policy, rollout ---------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "ports"),
    [
        (ServingMode.DEPLOYMENT, [8000]),
        (ServingMode.LEADER_WORKER_SET, [8000]),
        (ServingMode.RAY_SERVICE, [8443]),
    ],
)
def test_only_key_checked_ports_are_open_to_other_namespaces(
    mocks: RecordingMocks, mode: ServingMode, ports: list[int]
) -> None:
    build(mode)
    policy = mocks.one("kubernetes:networking.k8s.io/v1:NetworkPolicy").inputs["spec"]
    assert policy["podSelector"] == {} and policy["policyTypes"] == ["Ingress"]
    rules = policy["ingress"]
    assert rules[0] == {"from": [{"podSelector": {}}]}  # the endpoint's own pods
    assert rules[1] == {"ports": [{"port": p, "protocol": "TCP"} for p in ports]}
    if mode is ServingMode.RAY_SERVICE:
        # Ray's dashboard runs jobs: the KubeRay operator alone may reach it.
        (frm,) = rules[2]["from"]
        assert frm == {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kuberay-system"}}
        }
    else:
        assert len(rules) == 2


@pytest.mark.parametrize(("surge", "expected"), [(True, (1, 0)), (False, (0, 1))])
def test_rollout_surges_only_where_the_pool_can_add_a_node(
    mocks: RecordingMocks, surge: bool, expected: tuple[int, int]
) -> None:
    build(surge=surge)
    dep = mocks.one("kubernetes:apps/v1:Deployment").inputs
    assert dep["spec"]["strategy"]["rollingUpdate"] == {
        "maxSurge": expected[0],
        "maxUnavailable": expected[1],
    }
