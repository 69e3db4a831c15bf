"""Wire one endpoint (or the platform cluster) from a validated spec.

:func:`build_endpoint` is the one builder that both ``__main__.py`` (``pulumi
up``) and the self-service control plane's inline program call, so a stack
file and an HTTP request produce the same resources. It plans first: a spec
that cannot work raises before any resource is registered.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from components.accelerator_pool import AcceleratorPool, AcceleratorPoolArgs
from components.catalog import INSTANCES, Accelerator
from components.cluster import Addons, Cluster, ClusterArgs
from components.config import (
    ClusterMode,
    EndpointSpec,
    ExposureKind,
    PlatformSpec,
    PoolMode,
    ServingMode,
    StorageKind,
)
from components.image_rules import check_serving
from components.inference_service import (
    InferenceService,
    InferenceServiceArgs,
    ModelVolume,
    Scheduling,
    default_image,
)
from components.model_storage import ModelStorage, ModelStorageArgs, storage_needs_root
from components.planner import Estimate, plan_for_spec
from components.platform import export_platform_outputs
from components.serving.pods import needs_root, pinned_to

#: Label on every object (and, through the pool, every node) of an endpoint.
ENDPOINT_LABEL = "llm-endpoints/endpoint"
#: Unix time at which a self-service endpoint expires, so an on-call engineer
#: can find what a forgotten endpoint left behind with a label selector.
EXPIRES_LABEL = "llm-endpoints/expires-at"


def pod_security_labels(root: bool) -> dict[str, str]:
    """Pod Security admission labels: ``restricted`` unless some pod needs root
    (then ``baseline``: still no host access, privilege or added capabilities)."""
    level = "baseline" if root else "restricted"
    return {f"pod-security.kubernetes.io/{mode}": level for mode in ("enforce", "audit", "warn")}


def _addons_for(spec: EndpointSpec) -> Addons:
    """The add-ons a dedicated cluster needs for this endpoint, and no others."""
    return Addons(
        neuron=spec.resolved_accelerator is Accelerator.NEURON,
        efa_device_plugin=spec.pool.efa,
        fsx_csi=spec.storage.kind is StorageKind.FSX,
        mountpoint_s3_csi=spec.storage.kind is StorageKind.S3,
        efs_csi=spec.storage.kind is StorageKind.EFS,
        leader_worker_set=spec.serving is ServingMode.LEADER_WORKER_SET,
        kuberay=spec.serving is ServingMode.RAY_SERVICE,
        load_balancer_controller=spec.exposure.kind is not ExposureKind.CLUSTER or None,
    )


def _labels(spec: EndpointSpec, expires_at: datetime | None) -> dict[str, str]:
    labels = {**spec.labels, ENDPOINT_LABEL: spec.name}
    if expires_at is not None:
        labels[EXPIRES_LABEL] = str(int(expires_at.timestamp()))
    return labels


def build_endpoint(
    spec: EndpointSpec,
    hf_token: pulumi.Input[str] | None = None,
    expires_at: datetime | None = None,
    api_key: pulumi.Input[str] | None = None,
    api_key_version: int = 1,
) -> dict[str, Any]:
    """Create everything one endpoint needs and return its stack outputs.

    Args:
        spec: The validated endpoint spec.
        hf_token: Hugging Face token (a Pulumi secret), for gated models.
        expires_at: When the control plane will destroy it (None: never).
        api_key: The endpoint's API key (a Pulumi secret), stored in the Secret
            ``{name}-api-key``. None: that Secret is made outside this program
            (a render target that must not write secrets); the pods still need it.
        api_key_version: Bumped on rotation; rolls the pods.

    Returns:
        Outputs: ``url``, ``model``, ``instance_type``, ``cost_per_hour`` (all
        replicas), parallelism, the plan's capacity figures and ``expires_at``.

    Raises:
        PlanError: the model does not fit as asked, with the numbers.
        ValueError: a component refused its arguments (naming the field).
    """
    plan = plan_for_spec(spec)
    # What the pinned images cannot serve fails here too, not only over HTTP.
    check_serving(spec, plan.instance_type)
    name = spec.name
    namespace = spec.resolved_namespace
    labels = _labels(spec, expires_at)
    instance = INSTANCES[plan.instance_type]

    providers: list[pulumi.ProviderResource] = []
    if spec.cluster.mode is not ClusterMode.EXISTING:
        providers.append(aws.Provider(f"{name}-aws", region=spec.cluster.region))
    cluster = Cluster(
        name,
        ClusterArgs.from_spec(spec.cluster, addons=_addons_for(spec)),
        opts=pulumi.ResourceOptions(providers=providers),
    )
    on_cluster = pulumi.ResourceOptions(providers=[*providers, cluster.k8s_provider])

    # The endpoint's own namespace: created and deleted with it, and admitted
    # under the strictest Pod Security level its pods allow.
    root = needs_root(
        default_image(
            spec.serving,
            neuron=plan.accelerator is Accelerator.NEURON,
            efa=spec.pool.efa,
        ),
        open_webui=spec.open_webui,
        storage_root=storage_needs_root(spec.storage.kind),
    )
    ns = k8s.core.v1.Namespace(
        f"{name}-namespace",
        metadata={"name": namespace, "labels": {**labels, **pod_security_labels(root)}},
        opts=pulumi.ResourceOptions(provider=cluster.k8s_provider),
    )
    waits_for: list[pulumi.Resource] = [*cluster.addon_resources, ns]
    after_cluster = pulumi.ResourceOptions.merge(
        on_cluster, pulumi.ResourceOptions(depends_on=waits_for)
    )

    pool_mode = spec.resolved_pool_mode
    # The planned type first; the pool may add others, and the pods fit the smallest.
    instance_types = [plan.instance_type, *spec.pool.instance_types]
    managed = pool_mode is PoolMode.MANAGED
    security_groups = (
        cluster.cluster_security_group_id.apply(lambda sg: [sg])
        if managed and cluster.cluster_security_group_id is not None
        else None
    )
    pool = AcceleratorPool(
        f"{name}-pool",
        AcceleratorPoolArgs(
            mode=pool_mode,
            accelerator=plan.accelerator,
            instance_types=instance_types,
            capacity_types=spec.pool.capacity_types,
            max_nodes=spec.pool_max_nodes,
            efa=spec.pool.efa,
            node_class=spec.pool.node_class.model_dump() if spec.pool.node_class else None,
            cluster_auto_mode=spec.cluster.auto_mode,
            cluster_name=cluster.cluster_name,
            node_role_name=cluster.node_role_name,
            node_role_arn=cluster.managed_node_role_arn if managed else None,
            subnet_ids=cluster.private_subnet_ids,
            security_group_ids=security_groups,
            labels=labels,
        ),
        opts=after_cluster,
    )

    storage = ModelStorage(
        f"{name}-weights",
        ModelStorageArgs(
            kind=spec.storage.kind,
            model_id=plan.model_id,
            namespace=namespace,
            size_gib=spec.storage.size_gib,
            prefix=spec.storage.prefix,
            prefetch=spec.storage.prefetch,
            hf_token=hf_token,
            bucket=spec.storage.bucket,
            region=spec.cluster.region,
            storage_class=spec.storage.storage_class,
            file_system_id=spec.storage.file_system_id,
            vpc_id=cluster.vpc_id,
            private_subnet_ids=cluster.private_subnet_ids,
            subnet_count=spec.cluster.availability_zones,
            cluster_security_group_id=cluster.cluster_security_group_id,
            oidc_provider_arn=cluster.oidc_provider_arn,
            oidc_issuer=cluster.oidc_issuer,
            labels=labels,
            # The prefetch Job runs where the model will: on the pool's nodes.
            job_placement={
                "nodeSelector": pool.node_selector,
                "tolerations": pool.tolerations,
                "affinity": pinned_to(instance_types),
            },
        ),
        opts=after_cluster,
    )

    service = InferenceService(
        name,
        InferenceServiceArgs(
            model_id=plan.model_id,
            namespace=namespace,
            mode=spec.serving,
            scheduling=Scheduling(
                node_selector=pool.node_selector,
                tolerations=pool.tolerations,
                resource_name=pool.resource_name,
                efa=pool.efa,
                efa_devices=instance.efa if pool.efa else 0,
                instance_types=list(dict.fromkeys(instance_types)),
                pod_annotations=pool.pod_annotations,
            ),
            tensor_parallel=plan.tensor_parallel,
            pipeline_parallel=plan.pipeline_parallel,
            devices_per_node=plan.devices_per_node,
            cores_per_device=instance.chip.cores,
            max_model_len=plan.max_model_len,
            max_num_seqs=spec.vllm.max_num_seqs or plan.max_num_seqs,
            gpu_memory_utilization=plan.gpu_memory_utilization,
            cold_start_s=plan.cold_start_s,
            replicas=spec.replicas,
            storage=ModelVolume(
                volume=storage.volume,
                mount_path=storage.mount_path,
                model_path=storage.model_path,
                download_container=storage.download_container,
                service_account_name=storage.service_account_name,
                needs_root=storage.needs_root,
            ),
            hf_token_secret_name=storage.hf_token_secret_name,
            extra_args=tuple(spec.vllm.extra_args),
            trust_remote_code=spec.vllm.trust_remote_code,
            exposure=spec.exposure.kind,
            cidrs=tuple(spec.exposure.cidrs),
            open_webui=spec.open_webui,
            api_key=api_key,
            api_key_version=api_key_version,
            # A pool that adds nodes can start the new pod before stopping the old.
            surge=pool_mode in (PoolMode.KARPENTER, PoolMode.AUTO_MODE),
            labels=labels,
        ),
        # The server starts after its weights volume (and prefetch Job) and pool.
        opts=pulumi.ResourceOptions.merge(
            after_cluster, pulumi.ResourceOptions(depends_on=[storage, pool])
        ),
    )
    return endpoint_outputs(spec, plan, service, expires_at)


def endpoint_outputs(
    spec: EndpointSpec, plan: Estimate, service: InferenceService, expires_at: datetime | None
) -> dict[str, Any]:
    """The stack outputs of an endpoint (what the control plane shows users)."""
    outputs: dict[str, Any] = {
        "endpoint": spec.name,
        "url": service.url,
        "model": plan.model_id,
        "namespace": spec.resolved_namespace,
        "service": service.service_name,
        "instance_type": plan.instance_type,
        "accelerator": plan.accelerator.value,
        "tensor_parallel": plan.tensor_parallel,
        "pipeline_parallel": plan.pipeline_parallel,
        "replicas": spec.replicas,
        "cost_per_hour": round(plan.cost_per_hour * spec.replicas, 3),
        "max_model_len": plan.max_model_len,
        "kv_cache_tokens": plan.kv_tokens,
        "decode_tokens_per_s": round(plan.decode_tokens_per_s, 1),
        "cold_start_s": round(plan.cold_start_s),
        "expires_at": expires_at.isoformat() if expires_at else None,
    }
    if spec.render_only:
        outputs["render_dir"] = spec.cluster.render_dir
    return outputs


def build_platform(spec: PlatformSpec) -> dict[str, Any]:
    """Create the shared platform cluster and export what endpoint stacks read.

    Returns:
        Nothing more to export: :func:`export_platform_outputs` exports the
        shared-mode contract itself.
    """
    provider = aws.Provider(f"{spec.name}-aws", region=spec.region)
    cluster = Cluster(
        spec.name,
        ClusterArgs.from_platform(spec),
        opts=pulumi.ResourceOptions(providers=[provider]),
    )
    export_platform_outputs(cluster)
    return {}
