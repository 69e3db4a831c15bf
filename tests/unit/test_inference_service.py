"""InferenceService: every serving mode over every storage kind, against mocks."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pulumi
import pytest
import yaml

from components import _versions
from components.config import ExposureKind, ServingMode, StorageKind
from components.inference_service import (
    EFA,
    NEURON,
    NVIDIA_GPU,
    PORT,
    InferenceService,
    InferenceServiceArgs,
    ModelVolume,
    Scheduling,
    flag_to_kwarg,
    rollout_timeout_s,
    serve_config,
    startup_failure_threshold,
    vllm_args,
)
from components.model_storage import ModelStorage, ModelStorageArgs
from tests.unit.conftest import RecordingMocks, resolve, settle
from tests.unit.k8s_validate import is_secret, validate_manifest, validate_recorded

MODEL = "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B"
TOKEN = "hf_service_test_token"
COLD_START = 1234.0
TOLERATIONS = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
SELECTOR = {"llm-endpoints/pool": "ep-pool", "karpenter.sh/nodepool": "ep-pool"}
NET = {
    "vpc_id": "vpc-123",
    "private_subnet_ids": ["subnet-a", "subnet-b"],
    "cluster_security_group_id": "sg-cluster",
}
OIDC = {
    "oidc_provider_arn": (
        "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/ABC"
    ),
    "oidc_issuer": "https://oidc.eks.us-east-1.amazonaws.com/id/ABC",
}
STORAGE_ARGS: dict[StorageKind, dict[str, Any]] = {
    StorageKind.FSX: {"size_gib": 1200, "prefetch": True, **NET},
    StorageKind.S3: {"bucket": "team-models", **OIDC},
    StorageKind.EFS: {"size_gib": 200, **NET},
    StorageKind.PVC: {"size_gib": 100, "storage_class": "gp3"},
    StorageKind.NONE: {"size_gib": 80},
}
#: Per mode: tensor parallel, pipeline parallel, devices per pod, EFA devices.
SHAPES = {
    ServingMode.DEPLOYMENT: (4, 1, 4, 0),
    ServingMode.RAY_SERVICE: (1, 1, 1, 0),
    ServingMode.LEADER_WORKER_SET: (8, 2, 8, 4),
}
#: The instance type each mode's shape is planned on (its pods are sized by it).
INSTANCE = {
    ServingMode.DEPLOYMENT: "g5.12xlarge",
    ServingMode.RAY_SERVICE: "g5.xlarge",
    ServingMode.LEADER_WORKER_SET: "p4d.24xlarge",
}


def gpu(efa: int = 0, instance: str | None = None) -> Scheduling:
    return Scheduling(
        node_selector=SELECTOR,
        tolerations=TOLERATIONS,
        resource_name=NVIDIA_GPU,
        efa=bool(efa),
        efa_devices=efa,
        instance_types=(instance or ("p4d.24xlarge" if efa else "g5.12xlarge"),),
    )


def inf2(**kw: Any) -> Scheduling:
    """An Inferentia2 pool (inf2.8xlarge: one device, two NeuronCores)."""
    base: dict[str, Any] = {
        "node_selector": {"llm-endpoints/pool": "inf"},
        "tolerations": [
            {"key": "aws.amazon.com/neuron", "operator": "Exists", "effect": "NoSchedule"}
        ],
        "resource_name": NEURON,
        "instance_types": ("inf2.8xlarge",),
    }
    return Scheduling(**{**base, **kw})


def model_volume(st: ModelStorage) -> ModelVolume:
    """How endpoint wiring hands ModelStorage's attributes to the service."""
    return ModelVolume(
        volume=st.volume,
        mount_path=st.mount_path,
        model_path=st.model_path,
        download_container=st.download_container,
        service_account_name=st.service_account_name,
        needs_root=st.needs_root,
    )


def make_args(mode: ServingMode = ServingMode.DEPLOYMENT, **kw: Any) -> InferenceServiceArgs:
    tp, pp, dev, efa = SHAPES[mode]
    base: dict[str, Any] = {
        "model_id": MODEL,
        "namespace": "llm",
        "mode": mode,
        "scheduling": gpu(efa, INSTANCE[mode]),
        "tensor_parallel": tp,
        "pipeline_parallel": pp,
        "devices_per_node": dev,
        "max_model_len": 20000,
        "max_num_seqs": 64,
        "gpu_memory_utilization": 0.9,
        "cold_start_s": COLD_START,
    }
    base.update(kw)
    return InferenceServiceArgs(**base)


def build(mode: ServingMode = ServingMode.DEPLOYMENT, **kw: Any) -> InferenceService:
    svc = InferenceService("ep", make_args(mode, **kw))
    settle()
    return svc


def build_with_storage(
    mode: ServingMode, kind: StorageKind, **kw: Any
) -> tuple[ModelStorage, InferenceService]:
    st = ModelStorage(
        "ep",
        ModelStorageArgs(
            kind=kind,
            model_id=MODEL,
            namespace="llm",
            hf_token=pulumi.Output.secret(TOKEN),
            **STORAGE_ARGS[kind],
        ),
    )
    svc = InferenceService(
        "ep",
        make_args(
            mode, storage=model_volume(st), hf_token_secret_name=st.hf_token_secret_name, **kw
        ),
    )
    settle()
    return st, svc


def pods(mocks: RecordingMocks) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every pod template the test registered, as (where, template)."""
    for r in mocks.resources:
        spec = r.inputs.get("spec") or {}
        if r.typ in ("kubernetes:apps/v1:Deployment", "kubernetes:batch/v1:Job"):
            yield r.name, spec["template"]
        elif r.typ.endswith(":LeaderWorkerSet"):
            lwt = spec["leaderWorkerTemplate"]
            yield f"{r.name}/leader", lwt["leaderTemplate"]
            yield f"{r.name}/worker", lwt["workerTemplate"]
        elif r.typ.endswith(":RayService"):
            rc = spec["rayClusterConfig"]
            yield f"{r.name}/head", rc["headGroupSpec"]["template"]
            for g in rc["workerGroupSpecs"]:
                yield f"{r.name}/{g['groupName']}", g["template"]


def expected_args(model: str, mode: ServingMode) -> list[str]:
    tp, pp, _, _ = SHAPES[mode]
    args = ["--model", model, "--served-model-name", MODEL, "--tensor-parallel-size", str(tp)]
    if pp > 1:
        args += ["--pipeline-parallel-size", str(pp)]
    args += ["--max-model-len", "20000", "--gpu-memory-utilization", "0.9"]
    args += ["--max-num-seqs", "64", "--port", "8000"]
    return args


def accelerator_templates(mocks: RecordingMocks, mode: ServingMode) -> list[dict[str, Any]]:
    if mode is ServingMode.DEPLOYMENT:
        return [mocks.one("kubernetes:apps/v1:Deployment").inputs["spec"]["template"]]
    if mode is ServingMode.LEADER_WORKER_SET:
        lwt = mocks.one("kubernetes:leaderworkerset.x-k8s.io/v1:LeaderWorkerSet").inputs["spec"][
            "leaderWorkerTemplate"
        ]
        return [lwt["leaderTemplate"], lwt["workerTemplate"]]
    rc = mocks.one("kubernetes:ray.io/v1:RayService").inputs["spec"]["rayClusterConfig"]
    return [g["template"] for g in rc["workerGroupSpecs"]]


def startup_budget(container: dict[str, Any]) -> int:
    p = container["startupProbe"]
    return int(p["failureThreshold"]) * int(p["periodSeconds"])


# -- every mode x every storage kind ------------------------------------------------


@pytest.mark.parametrize("kind", list(StorageKind))
@pytest.mark.parametrize("mode", list(ServingMode))
def test_mode_over_storage(mocks: RecordingMocks, mode: ServingMode, kind: StorageKind) -> None:
    st, svc = build_with_storage(mode, kind)
    tp, pp, devices, efa = SHAPES[mode]
    templates = accelerator_templates(mocks, mode)

    # The model arguments, exactly.
    if mode is ServingMode.DEPLOYMENT:
        (c,) = templates[0]["spec"]["containers"]
        assert c["args"] == expected_args(st.model_path, mode)
        assert c["command"] == ["vllm", "serve"]
    elif mode is ServingMode.LEADER_WORKER_SET:
        lws = mocks.one("kubernetes:leaderworkerset.x-k8s.io/v1:LeaderWorkerSet").inputs["spec"]
        assert lws["leaderWorkerTemplate"]["size"] == pp == 2
        leader = templates[0]["spec"]["containers"][0]
        worker = templates[1]["spec"]["containers"][0]
        engine = expected_args(st.model_path, mode)
        multi = ["--distributed-executor-backend", "mp", "--nnodes", "2"]
        multi += ["--master-addr", "$(LWS_LEADER_ADDRESS)", "--master-port", "29501"]
        assert leader["command"] == worker["command"] == ["vllm", "serve"]
        assert leader["args"] == [*engine, *multi, "--node-rank", "0"]
        assert worker["args"] == [
            *engine,
            *multi,
            "--node-rank",
            "$(LWS_WORKER_INDEX)",
            "--headless",
        ]
    else:
        ray = mocks.one("kubernetes:ray.io/v1:RayService").inputs["spec"]
        (app,) = yaml.safe_load(ray["serveConfigV2"])["applications"]
        assert app["import_path"] == "ray.serve.llm:build_openai_app"
        (llm,) = app["args"]["llm_configs"]
        assert llm["model_loading_config"] == {"model_id": MODEL, "model_source": st.model_path}
        assert llm["engine_kwargs"] == {
            "tensor_parallel_size": tp,
            "max_model_len": 20000,
            "gpu_memory_utilization": 0.9,
            "max_num_seqs": 64,
        }

    for t in templates:
        spec = t["spec"]
        # Scheduling comes from the pool, unchanged.
        assert spec["tolerations"] == TOLERATIONS
        assert spec["nodeSelector"] == SELECTOR
        (c,) = spec["containers"]
        # One model shard per pod: TP devices.
        assert c["resources"]["limits"][NVIDIA_GPU] == str(tp) == str(devices)
        assert c["resources"]["requests"][NVIDIA_GPU] == str(tp)
        if efa:
            assert c["resources"]["limits"][EFA] == str(efa)
            env = {e["name"]: e.get("value") for e in c["env"]}
            assert env["FI_PROVIDER"] == "efa" and env["FI_EFA_USE_DEVICE_RDMA"] == "1"
        else:
            assert EFA not in c["resources"]["limits"]
        # The weights volume, at the model path, read-only for the server.
        (vol,) = [v for v in spec["volumes"] if v["name"] == "models"]
        if kind is StorageKind.NONE:
            assert vol == {"name": "models", "emptyDir": {"sizeLimit": "80Gi"}}
        else:
            assert vol["persistentVolumeClaim"]["claimName"] == "ep-models"
        (mount,) = [m for m in c["volumeMounts"] if m["name"] == "models"]
        assert mount == {"name": "models", "mountPath": st.mount_path, "readOnly": True}
        assert st.model_path.startswith(st.mount_path)
        assert {"name": "dshm", "mountPath": "/dev/shm"} in c["volumeMounts"]
        assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}} in spec[
            "volumes"
        ]
        # Download at start exactly when storage says so.
        inits = spec.get("initContainers", [])
        assert bool(inits) == st.download_at_start
        if inits:
            assert inits[0]["volumeMounts"] == [{"name": "models", "mountPath": st.mount_path}]
        if kind is StorageKind.S3:
            assert spec["serviceAccountName"] == "ep-models"
        # The token by reference only.
        (tok,) = [e for e in c["env"] if e["name"] == "HF_TOKEN"]
        assert tok == {
            "name": "HF_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": "ep-hf-token", "key": "token"}},
        }
        assert c["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        }

    # Probes on /health with a startup budget that covers the cold start (Ray:
    # KubeRay's own probes, and Pulumi waits on the RayService's Ready).
    if mode is ServingMode.RAY_SERVICE:
        ray = mocks.one("kubernetes:ray.io/v1:RayService").inputs
        assert ray["metadata"]["annotations"]["pulumi.com/waitFor"] == "condition=Ready"
        assert "deploymentUnhealthySecondThreshold" not in ray["spec"]
    else:
        server = templates[0]["spec"]["containers"][0]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert server[probe]["httpGet"] == {"path": "/health", "port": "http"}
        assert startup_budget(server) >= COLD_START

    # The Service the URL names, on 8000: over the server, the LWS leaders, or
    # the Ray head's auth proxy (never KubeRay's serve Service, which skips the key).
    assert svc.service_name == ("ep-leader" if mode is ServingMode.LEADER_WORKER_SET else "ep")
    service = mocks.one("kubernetes:core/v1:Service").inputs["spec"]
    assert service["ports"] == [
        {"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}
    ]
    if mode is ServingMode.RAY_SERVICE:
        rc = mocks.one("kubernetes:ray.io/v1:RayService").inputs["spec"]["rayClusterConfig"]
        head = rc["headGroupSpec"]["template"]
        selected = head["metadata"]["labels"]
        proxy = head["spec"]["containers"][1]
        assert proxy["name"] == "auth-proxy" and proxy["ports"][0]["name"] == "http"
    else:
        selected = templates[0]["metadata"]["labels"]
    assert all(selected[k] == v for k, v in service["selector"].items())
    assert resolve(svc.url) == f"http://{svc.service_name}.llm.svc.cluster.local:8000/v1"
    pdb = mocks.one("kubernetes:policy/v1:PodDisruptionBudget").inputs["spec"]
    # One replica: never evicted voluntarily (a drain waits for a redeploy).
    assert pdb == {**pdb, "minAvailable": 1} and "maxUnavailable" not in pdb
    for t in templates:
        labels = t["metadata"]["labels"]
        assert all(labels[k] == v for k, v in pdb["selector"]["matchLabels"].items())

    # Every object validates; every container image is pinned.
    assert validate_recorded(mocks) >= 3
    for where, template in pods(mocks):
        for c in template["spec"].get("containers", []) + template["spec"].get(
            "initContainers", []
        ):
            assert c["image"] in _versions.ALL_IMAGES, f"{where}: unpinned image {c['image']}"
    # Nothing carries the token in the clear; the Secret's value is a secret.
    secret = mocks.one("kubernetes:core/v1:Secret").inputs
    assert is_secret(secret["stringData"])
    for r in mocks.resources:
        if r.typ != "kubernetes:core/v1:Secret":
            assert TOKEN not in repr(r.inputs), r.name


# -- leader-worker-set specifics ----------------------------------------------------


def test_lws_leader_service_and_groups(mocks: RecordingMocks) -> None:
    build(ServingMode.LEADER_WORKER_SET, replicas=2)
    lws = mocks.one("kubernetes:leaderworkerset.x-k8s.io/v1:LeaderWorkerSet").inputs
    assert lws["apiVersion"] == "leaderworkerset.x-k8s.io/v1"
    assert lws["metadata"]["name"] == "ep"
    spec = lws["spec"]
    assert spec["replicas"] == 2
    assert spec["leaderWorkerTemplate"]["restartPolicy"] == "RecreateGroupOnPodRestart"
    leader_labels = spec["leaderWorkerTemplate"]["leaderTemplate"]["metadata"]["labels"]
    worker_labels = spec["leaderWorkerTemplate"]["workerTemplate"]["metadata"]["labels"]
    selector = mocks.one("kubernetes:core/v1:Service").inputs["spec"]["selector"]
    assert all(leader_labels[k] == v for k, v in selector.items())
    assert not all(worker_labels.get(k) == v for k, v in selector.items())
    assert lws["metadata"]["annotations"]["pulumi.com/waitFor"] == "condition=Available"
    # The controller's own headless Service is named like the LWS: ours is not.
    assert mocks.one("kubernetes:core/v1:Service").inputs["metadata"]["name"] == "ep-leader"
    worker = spec["leaderWorkerTemplate"]["workerTemplate"]["spec"]["containers"][0]
    assert "startupProbe" not in worker and "ports" not in worker  # headless
    # NCCL over EFA needs the libfabric plugin of vLLM's -efa image.
    leader = spec["leaderWorkerTemplate"]["leaderTemplate"]["spec"]["containers"][0]
    assert leader["image"] == worker["image"] == _versions.VLLM_EFA_IMAGE


def test_lws_refuses_a_single_node(mocks: RecordingMocks) -> None:
    with pytest.raises(ValueError, match=r"^pipeline_parallel: .*at least 2, got 1"):
        build(ServingMode.LEADER_WORKER_SET, pipeline_parallel=1)
    assert not mocks.resources


def test_lws_without_efa_requests_no_efa(mocks: RecordingMocks) -> None:
    build(ServingMode.LEADER_WORKER_SET, scheduling=gpu(0, "p4d.24xlarge"))
    for t in accelerator_templates(mocks, ServingMode.LEADER_WORKER_SET):
        c = t["spec"]["containers"][0]
        assert c["image"] == _versions.VLLM_IMAGE
        assert EFA not in c["resources"]["limits"]
        assert "FI_PROVIDER" not in {e["name"] for e in c["env"]}


# -- ray-service specifics ----------------------------------------------------------


def test_ray_head_and_workers_on_the_pool_behind_the_key(mocks: RecordingMocks) -> None:
    build(
        ServingMode.RAY_SERVICE,
        replicas=2,
        extra_args=("--enable-prefix-caching", "--dtype=bfloat16"),
    )
    spec = mocks.one("kubernetes:ray.io/v1:RayService").inputs["spec"]
    head = spec["rayClusterConfig"]["headGroupSpec"]
    # The head runs no replica; it shares a pool node (a cluster need not have CPU
    # nodes with room), so it tolerates the pool's taints and is pinned like workers.
    assert head["template"]["spec"]["tolerations"] == TOLERATIONS
    assert head["template"]["spec"]["nodeSelector"] == SELECTOR
    head_c, proxy = head["template"]["spec"]["containers"]
    assert not any("/" in r for r in head_c["resources"]["requests"])  # no accelerators
    assert head_c["resources"]["requests"] == {"cpu": "1000m", "memory": "3072Mi"}
    assert {"name": "serve", "containerPort": PORT, "protocol": "TCP"} in head_c["ports"]
    assert head["rayStartParams"]["num-gpus"] == head["rayStartParams"]["num-cpus"] == "0"
    # Ray Serve has no API keys: nginx checks the endpoint's, from its Secret.
    assert proxy["image"] == _versions.AUTH_PROXY_IMAGE
    assert {
        "name": "API_KEY",
        "valueFrom": {"secretKeyRef": {"name": "ep-api-key", "key": "key"}},
    } in proxy["env"]
    assert proxy["securityContext"]["runAsUser"] == 101
    (group,) = spec["rayClusterConfig"]["workerGroupSpecs"]
    assert group["replicas"] == group["minReplicas"] == group["maxReplicas"] == 2
    assert group["rayStartParams"] == {"num-gpus": "1"}
    # The worker leaves room on its g5.xlarge for the head and the proxy:
    # 3610m/13810Mi after DaemonSets, 95 % of it, less 1100m/3136Mi.
    worker = group["template"]["spec"]["containers"][0]
    assert worker["resources"]["requests"]["cpu"] == f"{int(3610 * 0.95) - 1100}m"
    assert worker["resources"]["requests"]["memory"] == f"{int(13810 * 0.95) - 3136}Mi"
    llm = yaml.safe_load(spec["serveConfigV2"])["applications"][0]["args"]["llm_configs"][0]
    assert llm["model_loading_config"]["model_source"] == MODEL  # no storage: from the Hub
    assert llm["engine_kwargs"]["enable_prefix_caching"] is True
    assert llm["engine_kwargs"]["dtype"] == "bfloat16"
    assert llm["deployment_config"]["autoscaling_config"]["min_replicas"] == 2
    # RayService, PDB, auth-proxy ConfigMap, Service, NetworkPolicy
    assert validate_recorded(mocks) == 5


def test_ray_on_neuron(mocks: RecordingMocks) -> None:
    neuron = inf2()
    svc = build(
        ServingMode.RAY_SERVICE,
        scheduling=neuron,
        tensor_parallel=2,
        devices_per_node=1,
        cores_per_device=2,
    )
    assert svc.image == _versions.RAY_VLLM_NEURON_IMAGE
    (group,) = mocks.one("kubernetes:ray.io/v1:RayService").inputs["spec"]["rayClusterConfig"][
        "workerGroupSpecs"
    ]
    assert group["groupName"] == "neuron"
    assert group["rayStartParams"] == {"resources": "'{\"neuron_cores\": 2}'"}
    c = group["template"]["spec"]["containers"][0]
    assert c["resources"]["limits"] == {NEURON: "1"}
    llm = yaml.safe_load(
        mocks.one("kubernetes:ray.io/v1:RayService").inputs["spec"]["serveConfigV2"]
    )["applications"][0]["args"]["llm_configs"][0]
    assert llm["placement_group_config"]["bundles"] == [{"CPU": 1, "neuron_cores": 2}]
    validate_recorded(mocks)


# -- deployment specifics -----------------------------------------------------------


def test_deployment_on_neuron_uses_the_neuron_image_and_devices(mocks: RecordingMocks) -> None:
    neuron = inf2()
    svc = build(scheduling=neuron, tensor_parallel=2, devices_per_node=1, cores_per_device=2)
    (c,) = mocks.one("kubernetes:apps/v1:Deployment").inputs["spec"]["template"]["spec"][
        "containers"
    ]
    assert c["image"] == _versions.VLLM_NEURON_IMAGE == svc.image
    assert c["resources"]["limits"] == {NEURON: "1"}
    assert c["args"][c["args"].index("--tensor-parallel-size") + 1] == "2"


def test_deployment_replicas_rollout_and_override(mocks: RecordingMocks) -> None:
    override = ("--model", "/models/x", "--port", "8000")
    svc = build(replicas=3, args_override=override)
    dep = mocks.one("kubernetes:apps/v1:Deployment").inputs
    assert dep["spec"]["replicas"] == 3
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    assert dep["spec"]["template"]["spec"]["containers"][0]["args"] == list(override)
    assert dep["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    assert svc.image == _versions.VLLM_IMAGE
    assert svc.workload_name == "ep"


def test_pipeline_parallel_in_one_pod(mocks: RecordingMocks) -> None:
    build(tensor_parallel=2, pipeline_parallel=2, devices_per_node=4)
    (c,) = mocks.one("kubernetes:apps/v1:Deployment").inputs["spec"]["template"]["spec"][
        "containers"
    ]
    assert c["args"][c["args"].index("--pipeline-parallel-size") + 1] == "2"
    assert c["resources"]["limits"][NVIDIA_GPU] == "4"


# -- exposure -----------------------------------------------------------------------


class IngressMocks(RecordingMocks):
    """Gives Ingresses the hostname the ALB controller would write."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        rid, outputs = super().new_resource(args)
        if args.typ == "kubernetes:networking.k8s.io/v1:Ingress":
            outputs["status"] = {
                "loadBalancer": {"ingress": [{"hostname": "internal-k8s-llm-ep.elb.amazonaws.com"}]}
            }
        return rid, outputs


@pytest.fixture
def imocks() -> Iterator[IngressMocks]:
    m = IngressMocks()
    pulumi.runtime.set_mocks(m, project="llm-endpoints", stack="test", preview=False)
    yield m
    pulumi.runtime.settings.reset_options()


def ingress(mocks: RecordingMocks) -> dict[str, Any]:
    return mocks.one("kubernetes:networking.k8s.io/v1:Ingress").inputs


def test_internal_alb_by_default(imocks: IngressMocks) -> None:
    svc = build(exposure=ExposureKind.INTERNAL_ALB)
    ing = ingress(imocks)
    ann = ing["metadata"]["annotations"]
    assert ann["alb.ingress.kubernetes.io/scheme"] == "internal"
    assert ann["alb.ingress.kubernetes.io/target-type"] == "ip"
    assert ann["alb.ingress.kubernetes.io/healthcheck-path"] == "/health"
    assert "alb.ingress.kubernetes.io/inbound-cidrs" not in ann
    assert ing["spec"]["ingressClassName"] == "alb"
    backend = ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "ep", "port": {"number": 8000}}
    assert resolve(svc.url) == "http://internal-k8s-llm-ep.elb.amazonaws.com/v1"
    assert resolve(svc.ingress_hostname) == "internal-k8s-llm-ep.elb.amazonaws.com"
    validate_recorded(imocks)


def test_public_alb_only_from_listed_cidrs(imocks: IngressMocks) -> None:
    arn = "arn:aws:acm:us-east-1:123456789012:certificate/0a1b2c3d-1111-2222-3333-444455556666"
    svc = build(
        ServingMode.LEADER_WORKER_SET,
        exposure=ExposureKind.PUBLIC_ALB,
        cidrs=("203.0.113.0/24", "198.51.100.7/32"),
        certificate_arn=arn,
    )
    ann = ingress(imocks)["metadata"]["annotations"]
    assert ann["alb.ingress.kubernetes.io/scheme"] == "internet-facing"
    assert ann["alb.ingress.kubernetes.io/inbound-cidrs"] == "203.0.113.0/24,198.51.100.7/32"
    assert ann["alb.ingress.kubernetes.io/certificate-arn"] == arn
    assert ann["alb.ingress.kubernetes.io/listen-ports"] == '[{"HTTPS": 443}]'
    assert resolve(svc.url).startswith("https://")
    validate_recorded(imocks)


def test_ray_ingress_targets_the_auth_proxy(mocks: RecordingMocks) -> None:
    svc = build(ServingMode.RAY_SERVICE, exposure=ExposureKind.INTERNAL_ALB, cidrs=("10.0.0.0/8",))
    ing = ingress(mocks)
    backend = ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == "ep" == svc.service_name
    ann = ing["metadata"]["annotations"]
    # The proxy answers /health (Ray Serve's /-/healthz) without a key.
    assert ann["alb.ingress.kubernetes.io/healthcheck-path"] == "/health"
    assert ann["alb.ingress.kubernetes.io/inbound-cidrs"] == "10.0.0.0/8"
    # No ALB hostname yet (mocks, render mode): the in-cluster URL.
    assert resolve(svc.url) == "http://ep.llm.svc.cluster.local:8000/v1"


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"exposure": ExposureKind.PUBLIC_ALB}, "cidrs"),
        ({"exposure": ExposureKind.PUBLIC_ALB, "cidrs": ("0.0.0.0/0",)}, "cidrs"),
        ({"exposure": ExposureKind.PUBLIC_ALB, "cidrs": ("::/0",)}, "cidrs"),
        ({"exposure": ExposureKind.INTERNAL_ALB, "cidrs": ("10.0.0.1/8",)}, "cidrs"),
        ({"cidrs": ("10.0.0.0/8",)}, "cidrs"),
        ({"certificate_arn": "arn:aws:acm:us-east-1:1:certificate/x"}, "certificate_arn"),
    ],
)
def test_exposure_errors(mocks: RecordingMocks, kw: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=rf"^{field}:"):
        build(**kw)
    assert not mocks.resources


# -- Open WebUI ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", list(ServingMode))
def test_open_webui_points_at_the_service(mocks: RecordingMocks, mode: ServingMode) -> None:
    svc = build(mode, open_webui=True)
    deps = {
        r.inputs["metadata"]["name"]: r.inputs
        for r in mocks.by_type("kubernetes:apps/v1:Deployment")
    }
    web = deps["ep-webui"]
    (c,) = web["spec"]["template"]["spec"]["containers"]
    assert c["image"] == _versions.OPEN_WEBUI_IMAGE
    env = {e["name"]: e.get("value") or e["valueFrom"] for e in c["env"]}
    assert env["OPENAI_API_BASE_URL"] == f"http://{svc.service_name}:8000/v1"
    # It calls the endpoint like any client: with the key.
    assert env["OPENAI_API_KEY"] == {"secretKeyRef": {"name": "ep-api-key", "key": "key"}}
    # On the pool's nodes, like everything of the endpoint.
    assert web["spec"]["template"]["spec"]["tolerations"] == TOLERATIONS
    services = {r.inputs["metadata"]["name"] for r in mocks.by_type("kubernetes:core/v1:Service")}
    assert "ep-webui" in services and svc.webui_service_name == "ep-webui"
    labels = web["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] == "open-webui"
    assert labels["app.kubernetes.io/instance"] == "ep"
    assert labels["llm-endpoints/endpoint"] == "ep"
    validate_recorded(mocks)


# -- labels, providers, timeouts ----------------------------------------------------


def test_every_object_carries_the_labels(mocks: RecordingMocks) -> None:
    build(labels={"team": "ml"})
    for r in mocks.resources:
        if r.typ.startswith("kubernetes:"):
            labels = r.inputs["metadata"]["labels"]
            assert labels["app.kubernetes.io/instance"] == "ep"
            assert labels["llm-endpoints/endpoint"] == "ep"
            assert labels["app.kubernetes.io/name"] == "vllm"
            assert labels["team"] == "ml"


def test_children_inherit_the_kubernetes_provider(mocks: RecordingMocks) -> None:
    import pulumi_kubernetes as k8s

    provider = k8s.Provider("render", render_yaml_to_directory="out")
    InferenceService("ep", make_args(), pulumi.ResourceOptions(providers=[provider]))
    settle()
    children = [
        r for r in mocks.resources if r.typ.startswith("kubernetes:") and "providers" not in r.typ
    ]
    # Deployment, PDB, Service, NetworkPolicy
    assert len(children) == 4
    assert all(r.provider and "render" in r.provider for r in children)


def test_rollout_wait_outlasts_the_startup_budget() -> None:
    assert rollout_timeout_s(COLD_START) > startup_failure_threshold(COLD_START) * 10 >= COLD_START
    assert startup_failure_threshold(1) == 30  # never under five minutes


# -- validation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"devices_per_node": 2}, "devices_per_node"),
        ({"tensor_parallel": 8}, "devices_per_node"),
        ({"cores_per_device": 2}, "cores_per_device"),
        ({"extra_args": ("--max-model-len=4096",)}, "extra_args"),
        ({"extra_args": ("--foo; rm -rf /",)}, "extra_args"),
        ({"image": "vllm/vllm-openai:latest"}, "image"),
        ({"image": "vllm/vllm-openai"}, "image"),
        ({"gpu_memory_utilization": 1.5}, "gpu_memory_utilization"),
        ({"cold_start_s": 0}, "cold_start_s"),
        ({"replicas": 0}, "replicas"),
        ({"model_id": "no-owner"}, "model"),
        ({"namespace": "Bad"}, "namespace"),
        ({"memory": "lots"}, "memory"),
        ({"labels": {"bad key": "x"}}, "labels"),
        ({"args_override": ()}, "args_override"),
        ({"scheduling": Scheduling({}, [], "example.com/tpu")}, "scheduling.resource_name"),
        ({"scheduling": Scheduling({}, [], NVIDIA_GPU, efa=True)}, "scheduling.efa_devices"),
        (
            {"storage": ModelVolume(volume={"name": "m"}, mount_path="/m", model_path="rel")},
            "storage.model_path",
        ),
    ],
)
def test_bad_args_name_the_field(mocks: RecordingMocks, kw: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=rf"^{field}:"):
        build(**kw)
    assert not mocks.resources


def test_devices_message_says_how_to_fix(mocks: RecordingMocks) -> None:
    with pytest.raises(ValueError) as e:
        build(devices_per_node=2)
    assert "set devices_per_node to 4" in str(e.value)


def test_lws_per_pod_devices_equal_tp(mocks: RecordingMocks) -> None:
    with pytest.raises(ValueError, match=r"^devices_per_node:.*tensor_parallel = 8"):
        build(ServingMode.LEADER_WORKER_SET, devices_per_node=16)


def test_lws_on_neuron_is_refused(mocks: RecordingMocks) -> None:
    neuron = Scheduling({}, [], NEURON)
    with pytest.raises(ValueError, match=r"^scheduling.resource_name:"):
        build(
            ServingMode.LEADER_WORKER_SET, scheduling=neuron, devices_per_node=4, cores_per_device=2
        )


def test_ray_refuses_args_override(mocks: RecordingMocks) -> None:
    with pytest.raises(ValueError, match=r"^args_override:"):
        build(ServingMode.RAY_SERVICE, args_override=("--model", "x"))


@pytest.mark.parametrize("name", ["1ep", "Ep", "e" * 41, "ep-"])
def test_bad_names(mocks: RecordingMocks, name: str) -> None:
    with pytest.raises(ValueError, match=r"^name:"):
        InferenceService(name, make_args())


# -- pure helpers -------------------------------------------------------------------


def test_vllm_args_exact() -> None:
    assert vllm_args(
        model="/models/m/x",
        served_model_name="m/x",
        tensor_parallel=2,
        pipeline_parallel=1,
        max_model_len=20000,
        gpu_memory_utilization=0.85,
        max_num_seqs=16,
        extra_args=("--enable-prefix-caching",),
    ) == [
        "--model", "/models/m/x", "--served-model-name", "m/x", "--tensor-parallel-size", "2",
        "--max-model-len", "20000", "--gpu-memory-utilization", "0.85", "--max-num-seqs", "16",
        "--port", "8000", "--enable-prefix-caching",
    ]  # fmt: skip


def test_flag_to_kwarg_types_values() -> None:
    assert flag_to_kwarg("--enable-prefix-caching") == ("enable_prefix_caching", True)
    assert flag_to_kwarg("--max-num-batched-tokens=8192") == ("max_num_batched_tokens", 8192)
    assert flag_to_kwarg("--swap-space=4.5") == ("swap_space", 4.5)
    assert flag_to_kwarg("--enforce-eager=false") == ("enforce_eager", False)
    assert flag_to_kwarg("--dtype=bfloat16") == ("dtype", "bfloat16")


def test_serve_config_is_valid_yaml_with_pipeline() -> None:
    cfg = yaml.safe_load(
        serve_config(
            model_id="a/b",
            model_source="/models/a/b",
            tensor_parallel=4,
            pipeline_parallel=2,
            max_model_len=1000,
            gpu_memory_utilization=0.9,
            max_num_seqs=8,
            replicas=1,
        )
    )
    engine = cfg["applications"][0]["args"]["llm_configs"][0]["engine_kwargs"]
    assert engine["pipeline_parallel_size"] == 2
    assert cfg["applications"][0]["route_prefix"] == "/"


def test_validator_catches_what_the_api_server_rejects() -> None:
    """The helper must fail on the mistakes it exists to catch."""
    good: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "template": {
                "metadata": {"labels": {"a": "b"}},
                "spec": {"containers": [{"name": "c", "image": "i:1"}]},
            },
        },
    }
    validate_manifest(good)

    typo = copy.deepcopy(good)
    typo["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    gpu_request_only = copy.deepcopy(good)
    gpu_request_only["spec"]["template"]["spec"]["containers"][0]["resources"] = {
        "requests": {"nvidia.com/gpu": "1"}
    }
    bad_mount = copy.deepcopy(good)
    bad_mount["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] = [
        {"name": "nope", "mountPath": "/x"}
    ]
    generate = copy.deepcopy(good)
    generate["metadata"] = {"generateName": "x-"}
    lws = {
        "apiVersion": "leaderworkerset.x-k8s.io/v1",
        "kind": "LeaderWorkerSet",
        "metadata": {"name": "x"},
        "spec": {
            "leaderWorkerTemplate": {
                "size": 2,
                "restartPolicy": "Sometimes",
                "workerTemplate": {"spec": {"containers": [{"name": "w", "image": "i:1"}]}},
            }
        },
    }
    unknown_cr = {"apiVersion": "example.com/v1", "kind": "Thing", "metadata": {"name": "x"}}
    for bad in (typo, gpu_request_only, bad_mount, generate, lws, unknown_cr):
        with pytest.raises(AssertionError):
            validate_manifest(bad)


def test_validator_knows_karpenter_nodepool_and_ec2nodeclass() -> None:
    """The Karpenter schemas accept a real pool and reject what Karpenter's CRD rejects."""
    nodepool: dict[str, Any] = {
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodePool",
        "metadata": {"name": "ep-gpu"},
        "spec": {
            "template": {
                "metadata": {"labels": {"llm-endpoints/pool": "ep-gpu"}},
                "spec": {
                    "nodeClassRef": {
                        "group": "karpenter.k8s.aws",
                        "kind": "EC2NodeClass",
                        "name": "ep-gpu",
                    },
                    "requirements": [
                        {
                            "key": "node.kubernetes.io/instance-type",
                            "operator": "In",
                            "values": ["g5.xlarge"],
                        },
                        {
                            "key": "karpenter.k8s.aws/instance-generation",
                            "operator": "Gt",
                            "values": ["4"],
                        },
                    ],
                    "taints": [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}],
                    "expireAfter": "720h",
                },
            },
            "limits": {"nvidia.com/gpu": 8, "cpu": "1000"},
            "disruption": {"consolidationPolicy": "WhenEmpty", "consolidateAfter": "10m"},
        },
    }
    nodeclass: dict[str, Any] = {
        "apiVersion": "karpenter.k8s.aws/v1",
        "kind": "EC2NodeClass",
        "metadata": {"name": "ep-gpu"},
        "spec": {
            "role": "KarpenterNodeRole-llm",
            "amiSelectorTerms": [{"alias": "al2023@v20251023"}],
            "subnetSelectorTerms": [{"tags": {"karpenter.sh/discovery": "llm"}}],
            "securityGroupSelectorTerms": [{"tags": {"karpenter.sh/discovery": "llm"}}],
            "blockDeviceMappings": [
                {
                    "deviceName": "/dev/xvda",
                    "rootVolume": True,
                    "ebs": {"volumeSize": "200Gi", "volumeType": "gp3", "encrypted": True},
                }
            ],
            "metadataOptions": {"httpTokens": "required", "httpPutResponseHopLimit": 1},
        },
    }
    validate_manifest(nodepool)
    validate_manifest(nodeclass)
    empty_in = copy.deepcopy(nodepool)
    empty_in["spec"]["template"]["spec"]["requirements"][0]["values"] = []
    bad_gt = copy.deepcopy(nodepool)
    bad_gt["spec"]["template"]["spec"]["requirements"][1]["values"] = ["4", "5"]
    no_consolidate_after = copy.deepcopy(nodepool)
    del no_consolidate_after["spec"]["disruption"]["consolidateAfter"]
    both_identities = copy.deepcopy(nodeclass)
    both_identities["spec"]["instanceProfile"] = "profile"
    bad_hop = copy.deepcopy(nodeclass)
    bad_hop["spec"]["metadataOptions"]["httpPutResponseHopLimit"] = 0
    bad_alias = copy.deepcopy(nodeclass)
    bad_alias["spec"]["amiSelectorTerms"] = [{"alias": "ubuntu@latest"}]
    for bad in (empty_in, bad_gt, no_consolidate_after, both_identities, bad_hop, bad_alias):
        with pytest.raises(AssertionError):
            validate_manifest(bad)
