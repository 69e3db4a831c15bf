"""ModelStorage: where the model weights live, and how a pod gets them.

Kinds (:class:`~components.config.StorageKind`):

* ``fsx`` — an FSx for Lustre file system (``SCRATCH_2``) in one private subnet,
  its security group (LNET ports 988 and 1018-1023 from the cluster), a static
  ``PersistentVolume`` on the ``fsx.csi.aws.com`` driver and a claim bound to it.
* ``s3`` — a new bucket (private, encrypted, owner-enforced) or an existing one,
  mounted read-only through Mountpoint for S3 (``s3.csi.aws.com``, static PV),
  with an IAM policy that reads only the model's prefix. With the cluster's OIDC
  provider given, the policy is attached to an IRSA role of the endpoint's own
  service account and the volume uses pod-level credentials
  (``authenticationSource: pod``), so endpoints sharing a cluster cannot read
  each other's weights; without it the policy is exposed for the CSI driver's
  role (driver-level credentials).
* ``efs`` — an encrypted EFS file system with a mount target per private subnet
  and a security group on 2049 (or an existing file system), static PV + claim.
* ``pvc`` — a dynamically provisioned claim of a storage class.
* ``none`` — an ephemeral ``emptyDir``; the weights are downloaded when the pod
  starts by an init container.

Weights reach a writable volume either once, by the prefetch Job
(``{name}-prefetch``, ``prefetch=True``), or by the same download running as an
init container of the serving pods (:attr:`ModelStorage.download_at_start`).
Both are idempotent: the download writes ``.llm-endpoints-complete`` next to the
weights last, and a later run that finds it does nothing. S3 volumes are
read-only (Mountpoint cannot rename files, which ``huggingface_hub`` does while
downloading), so for ``s3`` the Job downloads to scratch space and uploads.

The Hugging Face token: this component owns the Kubernetes Secret
``{name}-hf-token`` (key ``token``), built from a Pulumi secret with
``stringData`` so the value stays encrypted in state. It lives here, not in the
service, because storage is the first consumer in dependency order: the prefetch
Job runs before the server exists, so a Secret owned by the service could not be
relied on yet. The service reads it through :attr:`ModelStorage.hf_token_secret_name`,
an Output that also orders the service's pods after the Secret.

Wiring (``components/endpoint.py``): hand :attr:`~ModelStorage.volume`,
``mount_path``, ``model_path``, ``download_container`` and
``service_account_name`` to the service, and create the service with
``depends_on=[storage]`` so that the server starts only after the prefetch Job
has finished.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from components import rules
from components.config import StorageKind
from components.iam import IamMode, ServiceAccount, WorkloadIdentity, service_account_role
from components.storage.download import (
    COMPLETE_MARKER,
    DOWNLOAD_SCRIPT,
    HF_TOKEN_KEY,
    IGNORE_PATTERNS,
    PREFETCH_DEADLINE_S,
    PREFETCH_TIMEOUT,
    download_container,
    download_env,
)
from components.storage.filesystems import (
    StaticVolume,
    efs_volume,
    fsx_volume,
    subnet_count,
)
from components.storage.policies import s3_read_policy, s3_write_policy

__all__ = [
    "COMPLETE_MARKER",
    "DOWNLOAD_SCRIPT",
    "HF_TOKEN_KEY",
    "IGNORE_PATTERNS",
    "ModelStorage",
    "ModelStorageArgs",
    "s3_read_policy",
    "s3_write_policy",
]

#: Where every volume is mounted (S3 mounts the model's prefix one level down).
MOUNT_ROOT = "/models"
#: The pod volume's name; the service mounts it by this name.
VOLUME_NAME = "models"
_ACCESS_MODES = ("ReadWriteOnce", "ReadWriteOncePod", "ReadWriteMany")
_VOLUME_KINDS = (StorageKind.FSX, StorageKind.EFS, StorageKind.PVC)
#: File systems whose root directory belongs to root (FSx for Lustre, EFS
#: without an access point): only root may write the weights into them.
_ROOT_OWNED_KINDS = (StorageKind.FSX, StorageKind.EFS)
#: Who the prefetch Job runs as where the volume allows it (any non-root user
#: will do: the files it writes are world-readable).
DOWNLOADER_UID = 1000


def storage_needs_root(kind: StorageKind) -> bool:
    """Whether filling this kind of volume takes root (see :data:`_ROOT_OWNED_KINDS`)."""
    return StorageKind(kind) in _ROOT_OWNED_KINDS


@dataclass(frozen=True)
class ModelStorageArgs:
    """Inputs of :class:`ModelStorage`.

    Attributes:
        kind: fsx, s3, efs, pvc or none.
        model_id: Hugging Face model id (``owner/name``); also the default prefix.
        namespace: Namespace of the claim, Secret, service accounts and Job.
        size_gib: Volume capacity. fsx: 1200, 2400 or a multiple of 2400
            (SCRATCH_2); pvc/efs: the claim's request; none: the ``emptyDir`` limit
            (about 1.2x the checkpoint is enough).
        prefix: Directory (fsx/efs/pvc/none) or key prefix (s3) of the weights;
            default: the model id.
        prefetch: Download the weights once with a Job before serving.
        revision: Hugging Face revision (branch, tag or commit) to download.
        hf_token: Hugging Face token, a Pulumi secret (plain strings are made
            secret). None for public models.
        bucket: s3: an existing bucket holding (or to hold) the weights; a new
            private bucket is created when None.
        region: AWS region of the bucket (Mountpoint needs it).
        storage_class: pvc: the StorageClass; None uses the cluster default.
        access_mode: pvc: the claim's access mode. ReadWriteOnce (EBS) attaches to
            one node: fine for one replica; use an RWX class (EFS) for more.
        file_system_id: efs: an existing file system (none is created).
        vpc_id: fsx/efs: the cluster's VPC.
        private_subnet_ids: fsx/efs: private subnets (fsx uses the first; efs gets
            a mount target in each).
        subnet_count: efs: how many subnets ``private_subnet_ids`` holds, when it
            is an Output (one mount target per subnet is created up front).
        cluster_security_group_id: fsx/efs: the security group of the nodes.
        oidc_provider_arn: s3: the cluster's IAM OIDC provider, for IRSA roles.
        oidc_issuer: s3: the cluster's OIDC issuer URL (with or without https://).
        labels: Extra labels for the Kubernetes objects.
        tags: Extra tags for the AWS resources.
        job_placement: Where the prefetch Job's pod runs (``nodeSelector``,
            ``tolerations``, ``affinity`` of a pod spec): the accelerator pool's
            nodes, as every pod of an endpoint, since a cluster need not have a
            CPU node for it. Its node then serves the model once it is done.
    """

    kind: StorageKind
    model_id: str
    namespace: str
    size_gib: int = 1200
    prefix: str | None = None
    prefetch: bool = False
    revision: str | None = None
    hf_token: pulumi.Input[str] | None = None
    bucket: str | None = None
    region: str = "us-east-1"
    storage_class: str | None = None
    access_mode: str = "ReadWriteOnce"
    file_system_id: str | None = None
    job_placement: Mapping[str, Any] = field(default_factory=dict)
    vpc_id: pulumi.Input[str] | None = None
    private_subnet_ids: pulumi.Input[Sequence[pulumi.Input[str]]] | None = None
    subnet_count: int | None = None
    cluster_security_group_id: pulumi.Input[str] | None = None
    oidc_provider_arn: pulumi.Input[str] | None = None
    oidc_issuer: pulumi.Input[str] | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)


def _validate(name: str, a: ModelStorageArgs) -> str:
    """Check the args; return the effective prefix. Raises ValueError naming the field."""
    rules.check_component_name(name, "claim, Secret and Job")
    kind = StorageKind(a.kind)
    rules.check_model_id(a.model_id)
    rules.check_dns_label(a.namespace, "namespace")
    prefix = rules.check_prefix(a.prefix if a.prefix is not None else a.model_id, "prefix")
    rules.check_labels(a.labels)
    rules.check_storage(
        kind.value,
        size_gib=a.size_gib,
        prefetch=a.prefetch,
        bucket=a.bucket,
        storage_class=a.storage_class,
        file_system_id=a.file_system_id,
        field_prefix="",
    )
    if a.access_mode not in _ACCESS_MODES:
        raise ValueError(f"access_mode: {a.access_mode!r} is not one of {', '.join(_ACCESS_MODES)}")
    needs_network = kind is StorageKind.FSX or (kind is StorageKind.EFS and not a.file_system_id)
    if needs_network:
        for fld in ("vpc_id", "private_subnet_ids", "cluster_security_group_id"):
            if getattr(a, fld) is None:
                raise ValueError(
                    f"{fld}: kind {kind.value!r} creates AWS resources in the VPC and needs it"
                )
    if kind is StorageKind.EFS and not a.file_system_id:
        if not isinstance(a.private_subnet_ids, Sequence) and not a.subnet_count:
            raise ValueError(
                "subnet_count: private_subnet_ids is an Output, so say how many subnets it "
                "holds (one EFS mount target is created per subnet)"
            )
        count = subnet_count(a)
        if count < 1:
            raise ValueError("private_subnet_ids: EFS needs at least one subnet for a mount target")
    if kind is StorageKind.S3:
        if (a.oidc_provider_arn is None) != (a.oidc_issuer is None):
            raise ValueError("oidc_issuer: give both oidc_provider_arn and oidc_issuer, or neither")
        if a.prefetch and a.oidc_provider_arn is None:
            raise ValueError(
                "oidc_provider_arn: the s3 prefetch Job writes to the bucket with its own IRSA "
                "role; give the cluster's oidc_provider_arn and oidc_issuer"
            )
    return prefix


class ModelStorage(pulumi.ComponentResource):
    """The volume that holds a model's weights, and how they get there.

    Attributes:
        volume: Pod volume (a Kubernetes ``Volume`` dict named ``models``).
        mount_path: Where the service mounts :attr:`volume`.
        model_path: The weights' directory inside the pod; vLLM's ``--model``.
        read_only: True when the volume itself cannot be written (s3).
        download_at_start: True when the serving pods must download the weights
            (kind none, or a writable volume without prefetch); see
            :attr:`download_container`.
        needs_root: Writing the weights takes root (FSx, EFS): the pods that
            download them run as root.
        download_container: The init container that downloads the weights into
            :attr:`volume` at :attr:`model_path` (idempotent), or None.
        prefetch_job_name: Name of the prefetch Job, or None.
        prefetch_job: The prefetch Job resource (for ``depends_on``), or None.
        hf_token_secret_name: Name of the Secret holding the token (key
            ``token``), or None when no token was given.
        service_account_name: Service account the serving pods must run as
            (s3 with IRSA: it carries the read role), or None.
        claim_name: The PersistentVolumeClaim's name, or None (kind none).
        bucket_name: s3: the bucket.
        read_policy_arn: s3: the IAM policy that reads the model prefix (attach
            it to the CSI driver's role when no OIDC provider was given).
        file_system_id: fsx/efs: the file system.
    """

    TYPE: ClassVar[str] = "llm-endpoints:components:ModelStorage"

    volume: dict[str, Any]
    mount_path: str
    model_path: str
    read_only: bool
    download_at_start: bool
    needs_root: bool
    download_container: dict[str, Any] | None
    prefetch_job_name: str | None
    prefetch_job: k8s.batch.v1.Job | None
    hf_token_secret_name: pulumi.Output[str] | None
    service_account_name: pulumi.Output[str] | None
    claim_name: pulumi.Output[str] | None
    bucket_name: pulumi.Output[str] | None
    read_policy_arn: pulumi.Output[str] | None
    file_system_id: pulumi.Output[str] | None

    def __init__(
        self, name: str, args: ModelStorageArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        prefix = _validate(name, args)
        super().__init__(self.TYPE, name, None, opts)
        self._name = name
        self._args = args
        self._prefix = prefix
        kind = StorageKind(args.kind)
        self._labels = {
            "llm-endpoints/endpoint": name,
            **args.labels,
            "app.kubernetes.io/name": "model-storage",
            "app.kubernetes.io/instance": name,
            "app.kubernetes.io/managed-by": "pulumi",
        }
        self._tags = {**args.tags, "llm-endpoints/storage": name}

        self.read_only = kind is StorageKind.S3
        self.needs_root = storage_needs_root(kind)
        self.model_path = f"{MOUNT_ROOT}/{prefix}"
        self.mount_path = self.model_path if kind is StorageKind.S3 else MOUNT_ROOT
        self.download_at_start = kind is StorageKind.NONE or (
            kind in _VOLUME_KINDS and not args.prefetch
        )
        self.prefetch_job_name = None
        self.prefetch_job = None
        self.hf_token_secret_name = None
        self.service_account_name = None
        self.claim_name = None
        self.bucket_name = None
        self.read_policy_arn = None
        self.file_system_id = None

        if args.hf_token is not None:
            secret = k8s.core.v1.Secret(
                f"{name}-hf-token",
                metadata=self._meta(f"{name}-hf-token"),
                type="Opaque",
                # stringData from a Pulumi secret: encrypted in state, never a literal.
                string_data={HF_TOKEN_KEY: pulumi.Output.secret(args.hf_token)},
                opts=self._child(),
            )
            self.hf_token_secret_name = secret.metadata.name

        writer_sa: pulumi.Output[str] | None = None
        if kind is StorageKind.FSX:
            self._fsx()
        elif kind is StorageKind.EFS:
            self._efs()
        elif kind is StorageKind.PVC:
            self._dynamic_claim()
        elif kind is StorageKind.S3:
            writer_sa = self._s3()
        if kind is StorageKind.NONE:
            self.volume = {"name": VOLUME_NAME, "emptyDir": {"sizeLimit": f"{args.size_gib}Gi"}}
        elif kind is not StorageKind.S3:
            self.volume = {
                "name": VOLUME_NAME,
                "persistentVolumeClaim": {"claimName": self.claim_name},
            }

        self.download_container = self._downloader() if self.download_at_start else None
        if args.prefetch:
            self._prefetch(kind, writer_sa)

        self.register_outputs(
            {
                "model_path": self.model_path,
                "mount_path": self.mount_path,
                "read_only": self.read_only,
                "download_at_start": self.download_at_start,
                "needs_root": self.needs_root,
                "prefetch_job_name": self.prefetch_job_name,
                "hf_token_secret_name": self.hf_token_secret_name,
                "service_account_name": self.service_account_name,
                "claim_name": self.claim_name,
                "bucket_name": self.bucket_name,
                "read_policy_arn": self.read_policy_arn,
                "file_system_id": self.file_system_id,
            }
        )

    # -- helpers --------------------------------------------------------------

    def _child(self, **kwargs: Any) -> pulumi.ResourceOptions:
        # Providers (kubernetes, aws) are inherited from this component's opts.
        return pulumi.ResourceOptions(parent=self, **kwargs)

    def _meta(self, obj_name: str, **extra: Any) -> dict[str, Any]:
        return {
            "name": obj_name,
            "namespace": self._args.namespace,
            "labels": self._labels,
            **extra,
        }

    def _downloader(self) -> dict[str, Any]:
        a = self._args
        env = download_env(
            a.model_id,
            self.model_path,
            revision=a.revision,
            hf_token_secret=self.hf_token_secret_name,
        )
        return download_container(env, [{"name": VOLUME_NAME, "mountPath": self.mount_path}])

    # -- kinds ------------------------------------------------------------------

    def _static_claim(
        self,
        csi: dict[str, Any],
        access_mode: str,
        mount_options: list[pulumi.Input[str]] | None,
        depends_on: list[pulumi.Resource] | None = None,
    ) -> None:
        """A PersistentVolume for an existing volume, and a claim bound only to it."""
        a, name = self._args, self._name
        claim = f"{name}-models"
        # PVs are cluster-scoped: the namespace keeps two endpoints' names apart.
        pv_name = f"{a.namespace}-{name}-models"
        pv_spec: dict[str, Any] = {
            "capacity": {"storage": f"{a.size_gib}Gi"},
            "accessModes": [access_mode],
            "volumeMode": "Filesystem",
            # Retain: Delete would ask the CSI driver to delete a file system
            # or bucket that Pulumi owns (or that is not ours at all).
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "claimRef": {"namespace": a.namespace, "name": claim},
            "csi": csi,
        }
        if mount_options:
            pv_spec["mountOptions"] = mount_options
        pv = k8s.core.v1.PersistentVolume(
            f"{name}-pv",
            metadata={"name": pv_name, "labels": self._labels},
            spec=pv_spec,
            opts=self._child(depends_on=depends_on or []),
        )
        pvc = k8s.core.v1.PersistentVolumeClaim(
            f"{name}-pvc",
            metadata=self._meta(claim),
            spec={
                "accessModes": [access_mode],
                "storageClassName": "",
                "volumeName": pv.metadata.name,
                "resources": {"requests": {"storage": f"{a.size_gib}Gi"}},
            },
            opts=self._child(),
        )
        self.claim_name = pvc.metadata.name

    def _fsx(self) -> None:
        self._static(fsx_volume(self._name, self._args, self._tags, self._child()))

    def _efs(self) -> None:
        self._static(efs_volume(self._name, self._args, self._tags, self._child()))

    def _static(self, vol: StaticVolume) -> None:
        self.file_system_id = vol.file_system_id
        self._static_claim(vol.csi, vol.access_mode, vol.mount_options, vol.depends_on)

    def _dynamic_claim(self) -> None:
        a, name = self._args, self._name
        spec: dict[str, Any] = {
            "accessModes": [a.access_mode],
            "resources": {"requests": {"storage": f"{a.size_gib}Gi"}},
        }
        if a.storage_class is not None:
            spec["storageClassName"] = a.storage_class
        pvc = k8s.core.v1.PersistentVolumeClaim(
            f"{name}-pvc",
            # WaitForFirstConsumer classes (EBS gp3 on EKS) bind only when a pod
            # uses the claim, and that pod depends on this claim: don't wait.
            metadata=self._meta(f"{name}-models", annotations={"pulumi.com/skipAwait": "true"}),
            spec=spec,
            opts=self._child(),
        )
        self.claim_name = pvc.metadata.name

    def _s3(self) -> pulumi.Output[str] | None:
        """Bucket, scoped policies, IRSA roles and the Mountpoint volume.

        Returns:
            The prefetch Job's service account name (None without prefetch).
        """
        a, name, prefix = self._args, self._name, self._prefix
        if a.bucket is None:
            bucket = aws.s3.Bucket(
                f"{name}-models",
                # Owned by this endpoint and holding only a re-downloadable copy of
                # public weights: let destroy (and the TTL teardown) empty it.
                force_destroy=True,
                tags=self._tags,
                opts=self._child(),
            )
            aws.s3.BucketPublicAccessBlock(
                f"{name}-models",
                bucket=bucket.id,
                block_public_acls=True,
                block_public_policy=True,
                ignore_public_acls=True,
                restrict_public_buckets=True,
                opts=self._child(),
            )
            aws.s3.BucketOwnershipControls(
                f"{name}-models",
                bucket=bucket.id,
                rule={"object_ownership": "BucketOwnerEnforced"},
                opts=self._child(),
            )
            aws.s3.BucketServerSideEncryptionConfiguration(
                f"{name}-models",
                bucket=bucket.id,
                rules=[
                    {
                        "apply_server_side_encryption_by_default": {"sse_algorithm": "AES256"},
                        "bucket_key_enabled": True,
                    }
                ],
                opts=self._child(),
            )
            bucket_name: pulumi.Output[str] = bucket.bucket
        else:
            bucket_name = pulumi.Output.from_input(a.bucket)
        self.bucket_name = bucket_name

        read = aws.iam.Policy(
            f"{name}-s3-read",
            description=f"Read s3 model prefix {prefix} ({name})",
            policy=bucket_name.apply(lambda b: json.dumps(s3_read_policy(b, prefix))),
            tags=self._tags,
            opts=self._child(),
        )
        self.read_policy_arn = read.arn

        volume_attributes: dict[str, pulumi.Input[str]] = {"bucketName": bucket_name}
        writer_sa: pulumi.Output[str] | None = None
        if a.oidc_provider_arn is not None and a.oidc_issuer is not None:
            self.service_account_name = self._irsa_account(f"{name}-models", read)
            # Pod-level credentials: Mountpoint assumes the serving pod's role.
            volume_attributes["authenticationSource"] = "pod"
            if a.prefetch:
                write = aws.iam.Policy(
                    f"{name}-s3-write",
                    description=f"Write s3 model prefix {prefix} ({name} prefetch)",
                    policy=bucket_name.apply(lambda b: json.dumps(s3_write_policy(b, prefix))),
                    tags=self._tags,
                    opts=self._child(),
                )
                writer_sa = self._irsa_account(f"{name}-prefetch", write)

        self._static_claim(
            {
                "driver": "s3.csi.aws.com",
                # Unique per cluster: the driver keys mounts on the handle.
                "volumeHandle": f"s3-{a.namespace}-{name}-models",
                "volumeAttributes": volume_attributes,
            },
            "ReadOnlyMany",
            # allow-other: the server may run as another user than Mountpoint.
            ["read-only", "allow-other", f"region {a.region}", f"prefix {prefix}/"],
        )
        self.volume = {
            "name": VOLUME_NAME,
            "persistentVolumeClaim": {"claimName": self.claim_name, "readOnly": True},
        }
        return writer_sa

    def _irsa_account(self, sa_name: str, policy: aws.iam.Policy) -> pulumi.Output[str]:
        """An IAM role trusted by one service account, and that service account."""
        a = self._args
        identity = WorkloadIdentity(
            IamMode.IRSA, oidc_provider_arn=a.oidc_provider_arn, oidc_issuer=a.oidc_issuer
        )
        role = service_account_role(
            sa_name,
            ServiceAccount(a.namespace, sa_name),
            identity,
            tags=dict(self._tags),
            opts=self._child(),
        )
        aws.iam.RolePolicyAttachment(
            sa_name, role=role.name, policy_arn=policy.arn, opts=self._child()
        )
        sa = k8s.core.v1.ServiceAccount(
            sa_name,
            metadata=self._meta(sa_name, annotations={"eks.amazonaws.com/role-arn": role.arn}),
            # IRSA projects its own token; the Kubernetes API token is not needed.
            automount_service_account_token=False,
            opts=self._child(),
        )
        return sa.metadata.name

    def _prefetch(self, kind: StorageKind, writer_sa: pulumi.Output[str] | None) -> None:
        a, name = self._args, self._name
        job_name = f"{name}-prefetch"
        security: dict[str, Any] = {"seccompProfile": {"type": "RuntimeDefault"}}
        if not self.needs_root:
            uid = DOWNLOADER_UID
            security |= {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": uid}
            security |= {"fsGroup": uid, "fsGroupChangePolicy": "OnRootMismatch"}
        pod: dict[str, Any] = {
            "restartPolicy": "OnFailure",
            "automountServiceAccountToken": False,
            "securityContext": security,
            **copy.deepcopy(dict(a.job_placement)),
        }
        if kind is StorageKind.S3:
            # Download to scratch, then upload; the Mountpoint volume is read-only.
            scratch = "/scratch/model"
            env = [
                *download_env(
                    a.model_id,
                    scratch,
                    revision=a.revision,
                    hf_token_secret=self.hf_token_secret_name,
                ),
                {"name": "S3_BUCKET", "value": self.bucket_name},
                {"name": "S3_PREFIX", "value": self._prefix},
                {"name": "AWS_REGION", "value": a.region},
            ]
            pod["containers"] = [
                download_container(env, [{"name": "scratch", "mountPath": "/scratch"}])
            ]
            pod["volumes"] = [{"name": "scratch", "emptyDir": {}}]
            pod["serviceAccountName"] = writer_sa
        else:
            pod["containers"] = [self._downloader()]
            pod["volumes"] = [self.volume]
        labels = {**self._labels, "app.kubernetes.io/component": "prefetch"}
        self.prefetch_job = k8s.batch.v1.Job(
            job_name,
            metadata=self._meta(job_name),
            spec={
                "backoffLimit": 4,
                "activeDeadlineSeconds": PREFETCH_DEADLINE_S,
                # No ttlSecondsAfterFinished: Pulumi would see the Job vanish and
                # re-run the (idempotent, but slow to start) download on every up.
                "template": {"metadata": {"labels": labels}, "spec": pod},
            },
            opts=self._child(
                custom_timeouts=pulumi.CustomTimeouts(
                    create=PREFETCH_TIMEOUT, update=PREFETCH_TIMEOUT
                )
            ),
        )
        self.prefetch_job_name = job_name
