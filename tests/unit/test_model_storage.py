"""ModelStorage: every kind, against mocks, asserting the properties that matter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pulumi
import pytest

from components import _versions
from components.config import StorageKind
from components.model_storage import (
    COMPLETE_MARKER,
    DOWNLOAD_SCRIPT,
    HF_TOKEN_KEY,
    ModelStorage,
    ModelStorageArgs,
    s3_read_policy,
)
from tests.unit.conftest import RecordingMocks, resolve, settle
from tests.unit.k8s_validate import is_secret, validate_recorded

MODEL = "openai/gpt-oss-20b"
TOKEN = "hf_unit_test_token_value"
NET = {
    "vpc_id": "vpc-123",
    "private_subnet_ids": ["subnet-a", "subnet-b", "subnet-c"],
    "cluster_security_group_id": "sg-cluster",
}
OIDC = {
    "oidc_provider_arn": (
        "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/ABC"
    ),
    "oidc_issuer": "https://oidc.eks.us-east-1.amazonaws.com/id/ABC",
}


class StorageMocks(RecordingMocks):
    """Adds the computed outputs of a new S3 bucket."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        rid, outputs = super().new_resource(args)
        if args.typ == "aws:s3/bucket:Bucket":
            outputs.setdefault("bucket", f"{args.name}-0a1b2c")
        return rid, outputs


@pytest.fixture
def smocks() -> Iterator[StorageMocks]:
    m = StorageMocks()
    pulumi.runtime.set_mocks(m, project="llm-endpoints", stack="test", preview=False)
    yield m
    pulumi.runtime.settings.reset_options()


def build(kind: StorageKind, **kw: Any) -> ModelStorage:
    args = ModelStorageArgs(kind=kind, model_id=kw.pop("model_id", MODEL), namespace="llm", **kw)
    st = ModelStorage("ep", args)
    settle()
    return st


def k8s_one(mocks: RecordingMocks, kind: str) -> dict[str, Any]:
    return mocks.one(kind).inputs


def no_literal(value: Any, secret: str) -> None:
    """Fail if ``secret`` appears anywhere outside an engine secret wrapper."""
    if is_secret(value):
        return
    if isinstance(value, dict):
        for v in value.values():
            no_literal(v, secret)
    elif isinstance(value, list):
        for v in value:
            no_literal(v, secret)
    else:
        assert secret not in str(value), f"token found in plain config: {value!r}"


# -- fsx --------------------------------------------------------------------------


def test_fsx_security_group_opens_only_lustre_ports_from_the_cluster(mocks: RecordingMocks) -> None:
    build(StorageKind.FSX, size_gib=1200, prefetch=True, **NET)
    sg = mocks.one("aws:ec2/securityGroup:SecurityGroup").inputs
    assert sg["vpcId"] == "vpc-123"
    ranges = sorted((r["fromPort"], r["toPort"]) for r in sg["ingress"])
    assert ranges == [(988, 988), (1018, 1023)]
    for rule in sg["ingress"]:
        assert rule["protocol"] == "tcp"
        assert rule["securityGroups"] == ["sg-cluster"]
        assert rule["self"] is True
        assert "cidrBlocks" not in rule
    clients = mocks.by_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
    assert sorted((r.inputs["fromPort"], r.inputs["toPort"]) for r in clients) == [
        (988, 988),
        (1018, 1023),
    ]
    assert {r.inputs["securityGroupId"] for r in clients} == {"sg-cluster"}


def test_fsx_file_system_and_static_volume(mocks: RecordingMocks) -> None:
    st = build(StorageKind.FSX, size_gib=2400, prefetch=True, **NET)
    fs = mocks.one("aws:fsx/lustreFileSystem:LustreFileSystem")
    assert fs.inputs["deploymentType"] == "SCRATCH_2"
    assert fs.inputs["storageCapacity"] == 2400
    assert fs.inputs["subnetIds"] == "subnet-a"
    assert fs.inputs["securityGroupIds"] == ["ep-fsx-id"]
    pv = k8s_one(mocks, "kubernetes:core/v1:PersistentVolume")
    csi = pv["spec"]["csi"]
    assert csi["driver"] == "fsx.csi.aws.com"
    assert csi["volumeHandle"] == "ep-fsx-id"
    assert csi["volumeAttributes"] == {
        "dnsname": "ep-fsx-id.fsx.us-east-1.amazonaws.com",
        "mountname": "abcdefgh",
    }
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    assert pv["spec"]["capacity"] == {"storage": "2400Gi"}
    assert pv["spec"]["claimRef"] == {"namespace": "llm", "name": "ep-models"}
    pvc = k8s_one(mocks, "kubernetes:core/v1:PersistentVolumeClaim")
    assert pvc["spec"]["storageClassName"] == ""
    assert pvc["spec"]["volumeName"] == pv["metadata"]["name"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert resolve(st.volume["persistentVolumeClaim"]["claimName"]) == "ep-models"
    assert st.model_path == f"/models/{MODEL}"
    assert st.mount_path == "/models"
    assert not st.read_only and not st.download_at_start
    assert resolve(st.file_system_id) == "ep-fsx-id"
    assert validate_recorded(mocks) == 3  # PV, PVC, Job


def test_fsx_prefetch_job_downloads_into_the_claim(mocks: RecordingMocks) -> None:
    st = build(StorageKind.FSX, prefetch=True, hf_token=pulumi.Output.secret(TOKEN), **NET)
    job = k8s_one(mocks, "kubernetes:batch/v1:Job")
    assert job["metadata"]["name"] == "ep-prefetch" == st.prefetch_job_name
    pod = job["spec"]["template"]["spec"]
    assert pod["volumes"] == [
        {"name": "models", "persistentVolumeClaim": {"claimName": "ep-models"}}
    ]
    (c,) = pod["containers"]
    assert c["image"] == _versions.HF_DOWNLOADER_IMAGE
    assert c["command"] == ["python", "-c", DOWNLOAD_SCRIPT]
    env = {e["name"]: e for e in c["env"]}
    assert env["MODEL_ID"]["value"] == MODEL
    assert env["MODEL_PATH"]["value"] == f"/models/{MODEL}"
    assert env["HF_HUB_REQUIREMENT"]["value"] == f"huggingface_hub=={_versions.HF_HUB_VERSION}"
    assert env["HF_TOKEN"] == {
        "name": "HF_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "ep-hf-token", "key": HF_TOKEN_KEY}},
    }
    assert c["volumeMounts"] == [{"name": "models", "mountPath": "/models"}]
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert "ttlSecondsAfterFinished" not in job["spec"]
    assert validate_recorded(mocks) == 4


# -- s3 ---------------------------------------------------------------------------


def test_s3_new_bucket_is_private_encrypted_owner_enforced(smocks: StorageMocks) -> None:
    st = build(StorageKind.S3, prefetch=True, **OIDC)
    assert smocks.one("aws:s3/bucket:Bucket").inputs["forceDestroy"] is True
    pab = smocks.one("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock").inputs
    assert all(
        pab[k] is True
        for k in (
            "blockPublicAcls",
            "blockPublicPolicy",
            "ignorePublicAcls",
            "restrictPublicBuckets",
        )
    )
    sse = smocks.one(
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
    ).inputs
    assert sse["rules"][0]["applyServerSideEncryptionByDefault"] == {"sseAlgorithm": "AES256"}
    own = smocks.one("aws:s3/bucketOwnershipControls:BucketOwnershipControls").inputs
    assert own["rule"] == {"objectOwnership": "BucketOwnerEnforced"}
    assert resolve(st.bucket_name) == "ep-models-0a1b2c"
    assert validate_recorded(smocks) == 5  # 2 ServiceAccounts, PV, PVC, Job


def test_s3_read_policy_is_scoped_to_the_model_prefix(smocks: StorageMocks) -> None:
    build(StorageKind.S3, prefetch=True, prefix="models/gpt-oss", **OIDC)
    policies = {
        r.name: json.loads(r.inputs["policy"]) for r in smocks.by_type("aws:iam/policy:Policy")
    }
    read = policies["ep-s3-read"]
    bucket = "ep-models-0a1b2c"
    (ls,) = [s for s in read["Statement"] if s["Action"] == "s3:ListBucket"]
    assert ls["Resource"] == f"arn:aws:s3:::{bucket}"
    assert ls["Condition"] == {"StringLike": {"s3:prefix": ["models/gpt-oss/", "models/gpt-oss/*"]}}
    (get,) = [s for s in read["Statement"] if s["Action"] == "s3:GetObject"]
    assert get["Resource"] == f"arn:aws:s3:::{bucket}/models/gpt-oss/*"
    resources = [s["Resource"] for s in read["Statement"]]
    assert f"arn:aws:s3:::{bucket}/*" not in resources
    assert all(s["Effect"] == "Allow" for s in read["Statement"])
    # The writer adds puts on the same prefix only.
    (put,) = [s for s in policies["ep-s3-write"]["Statement"] if "s3:PutObject" in s["Action"]]
    assert put["Resource"] == f"arn:aws:s3:::{bucket}/models/gpt-oss/*"
    for p in policies.values():
        for s in p["Statement"]:
            assert "*" not in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])


def test_s3_mountpoint_volume_is_read_only_with_pod_credentials(smocks: StorageMocks) -> None:
    st = build(StorageKind.S3, bucket="team-models", region="us-west-2", **OIDC)
    pv = k8s_one(smocks, "kubernetes:core/v1:PersistentVolume")["spec"]
    assert pv["csi"]["driver"] == "s3.csi.aws.com"
    assert pv["csi"]["volumeAttributes"] == {
        "bucketName": "team-models",
        "authenticationSource": "pod",
    }
    assert pv["mountOptions"] == [
        "read-only",
        "allow-other",
        "region us-west-2",
        f"prefix {MODEL}/",
    ]
    assert pv["accessModes"] == ["ReadOnlyMany"]
    pvc = k8s_one(smocks, "kubernetes:core/v1:PersistentVolumeClaim")["spec"]
    assert pvc["accessModes"] == ["ReadOnlyMany"]
    assert st.read_only and not st.download_at_start and st.download_container is None
    assert st.volume["persistentVolumeClaim"]["readOnly"] is True
    assert st.mount_path == st.model_path == f"/models/{MODEL}"
    # The serving pods' service account carries the IRSA read role.
    sa = k8s_one(smocks, "kubernetes:core/v1:ServiceAccount")
    assert sa["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": "arn:aws:iam:us-east-1:123456789012:ep-models"
    }
    assert resolve(st.service_account_name) == "ep-models"
    role = smocks.one("aws:iam/role:Role").inputs
    cond = json.loads(role["assumeRolePolicy"])["Statement"][0]["Condition"]["StringEquals"]
    assert (
        cond["oidc.eks.us-east-1.amazonaws.com/id/ABC:sub"] == "system:serviceaccount:llm:ep-models"
    )
    assert cond["oidc.eks.us-east-1.amazonaws.com/id/ABC:aud"] == "sts.amazonaws.com"
    att = smocks.one("aws:iam/rolePolicyAttachment:RolePolicyAttachment").inputs
    assert att["policyArn"] == "arn:aws:iam:us-east-1:123456789012:ep-s3-read"
    assert not smocks.by_type("aws:s3/bucket:Bucket")
    assert validate_recorded(smocks) == 3


def test_s3_without_oidc_uses_driver_credentials(smocks: StorageMocks) -> None:
    st = build(StorageKind.S3, bucket="team-models")
    pv = k8s_one(smocks, "kubernetes:core/v1:PersistentVolume")["spec"]
    assert "authenticationSource" not in pv["csi"]["volumeAttributes"]
    assert st.service_account_name is None
    assert not smocks.by_type("aws:iam/role:Role")
    assert resolve(st.read_policy_arn) == "arn:aws:iam:us-east-1:123456789012:ep-s3-read"


def test_s3_prefetch_uploads_with_its_own_writer_account(smocks: StorageMocks) -> None:
    st = build(StorageKind.S3, prefetch=True, hf_token=TOKEN, **OIDC)
    pod = k8s_one(smocks, "kubernetes:batch/v1:Job")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "ep-prefetch"
    assert pod["volumes"] == [{"name": "scratch", "emptyDir": {}}]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["S3_BUCKET"] == "ep-models-0a1b2c"
    assert env["S3_PREFIX"] == MODEL
    assert env["BOTO3_REQUIREMENT"] == f"boto3=={_versions.BOTO3_VERSION}"
    roles = {
        r.name: json.loads(r.inputs["assumeRolePolicy"])
        for r in smocks.by_type("aws:iam/role:Role")
    }
    sub = roles["ep-prefetch"]["Statement"][0]["Condition"]["StringEquals"]
    assert (
        sub["oidc.eks.us-east-1.amazonaws.com/id/ABC:sub"]
        == "system:serviceaccount:llm:ep-prefetch"
    )
    # A plain-string token is still stored as a secret.
    secret = k8s_one(smocks, "kubernetes:core/v1:Secret")
    assert is_secret(secret["stringData"])
    assert st.prefetch_job_name == "ep-prefetch"


# -- efs / pvc / none -------------------------------------------------------------


def test_efs_new_file_system_mount_targets_and_nfs_rule(mocks: RecordingMocks) -> None:
    st = build(StorageKind.EFS, size_gib=500, **NET)
    fs = mocks.one("aws:efs/fileSystem:FileSystem").inputs
    assert fs["encrypted"] is True
    targets = mocks.by_type("aws:efs/mountTarget:MountTarget")
    assert sorted(t.inputs["subnetId"] for t in targets) == ["subnet-a", "subnet-b", "subnet-c"]
    assert all(t.inputs["fileSystemId"] == "ep-efs-id" for t in targets)
    sg = mocks.one("aws:ec2/securityGroup:SecurityGroup").inputs
    (rule,) = sg["ingress"]
    assert (rule["fromPort"], rule["toPort"], rule["protocol"]) == (2049, 2049, "tcp")
    assert rule["securityGroups"] == ["sg-cluster"]
    pv = k8s_one(mocks, "kubernetes:core/v1:PersistentVolume")["spec"]
    assert pv["csi"] == {"driver": "efs.csi.aws.com", "volumeHandle": "ep-efs-id"}
    # No prefetch: the serving pods download once into the shared volume.
    assert st.download_at_start and st.download_container is not None
    assert validate_recorded(mocks) == 2


def test_efs_with_an_output_subnet_list_needs_a_count(mocks: RecordingMocks) -> None:
    subnets = pulumi.Output.from_input(["subnet-x", "subnet-y"])
    with pytest.raises(ValueError, match=r"^subnet_count:"):
        build(
            StorageKind.EFS,
            vpc_id="vpc-1",
            private_subnet_ids=subnets,
            cluster_security_group_id="sg",
        )
    build(
        StorageKind.EFS,
        vpc_id="vpc-1",
        private_subnet_ids=subnets,
        subnet_count=2,
        cluster_security_group_id="sg",
    )
    targets = mocks.by_type("aws:efs/mountTarget:MountTarget")
    assert sorted(t.inputs["subnetId"] for t in targets) == ["subnet-x", "subnet-y"]


def test_efs_existing_file_system_creates_no_aws_resources(mocks: RecordingMocks) -> None:
    st = build(StorageKind.EFS, file_system_id="fs-0123456789abcdef0")
    assert not [r for r in mocks.resources if r.typ.startswith("aws:")]
    pv = k8s_one(mocks, "kubernetes:core/v1:PersistentVolume")["spec"]
    assert pv["csi"]["volumeHandle"] == "fs-0123456789abcdef0"
    assert resolve(st.file_system_id) == "fs-0123456789abcdef0"


def test_pvc_dynamic_claim(mocks: RecordingMocks) -> None:
    st = build(StorageKind.PVC, storage_class="gp3", size_gib=100, prefetch=True)
    pvc = k8s_one(mocks, "kubernetes:core/v1:PersistentVolumeClaim")
    assert pvc["spec"] == {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "100Gi"}},
        "storageClassName": "gp3",
    }
    assert pvc["metadata"]["annotations"] == {"pulumi.com/skipAwait": "true"}
    assert not mocks.by_type("kubernetes:core/v1:PersistentVolume")
    assert not st.download_at_start
    assert st.prefetch_job_name == "ep-prefetch"
    assert validate_recorded(mocks) == 2


def test_none_is_ephemeral_and_downloads_at_start(mocks: RecordingMocks) -> None:
    st = build(StorageKind.NONE, size_gib=40, hf_token=pulumi.Output.secret(TOKEN))
    assert st.volume == {"name": "models", "emptyDir": {"sizeLimit": "40Gi"}}
    assert st.download_at_start and st.prefetch_job_name is None
    c = st.download_container
    assert c is not None
    assert c["volumeMounts"] == [{"name": "models", "mountPath": "/models"}]
    (tok,) = [e for e in c["env"] if e["name"] == "HF_TOKEN"]
    assert resolve(tok["valueFrom"]["secretKeyRef"]["name"]) == "ep-hf-token"
    assert "value" not in tok
    assert not [r for r in mocks.resources if "PersistentVolume" in r.typ]
    assert validate_recorded(mocks) == 1  # the Secret


def test_hf_token_secret_stays_secret(mocks: RecordingMocks) -> None:
    token = pulumi.Output.secret(TOKEN)
    st = build(StorageKind.PVC, hf_token=token, prefetch=True)
    secret = mocks.one("kubernetes:core/v1:Secret")
    assert secret.name == "ep-hf-token"
    # The engine received the value wrapped as a secret ...
    assert is_secret(secret.inputs["stringData"])
    assert secret.inputs["stringData"]["value"] == {HF_TOKEN_KEY: TOKEN}
    # ... and nothing else carries it in the clear.
    for r in mocks.resources:
        no_literal(r.inputs, TOKEN)
    assert resolve(st.hf_token_secret_name) == "ep-hf-token"


def test_no_token_no_secret(mocks: RecordingMocks) -> None:
    st = build(StorageKind.NONE)
    assert st.hf_token_secret_name is None
    assert not mocks.by_type("kubernetes:core/v1:Secret")
    assert st.download_container is not None
    assert "HF_TOKEN" not in {e["name"] for e in st.download_container["env"]}


def test_children_inherit_the_providers(mocks: RecordingMocks) -> None:
    import pulumi_kubernetes as k8s

    provider = k8s.Provider("render", render_yaml_to_directory="out")
    ModelStorage(
        "ep",
        ModelStorageArgs(kind=StorageKind.PVC, model_id=MODEL, namespace="llm", prefetch=True),
        pulumi.ResourceOptions(providers=[provider]),
    )
    settle()
    children = [r for r in mocks.resources if r.typ.startswith("kubernetes:core") or "Job" in r.typ]
    assert children and all(r.provider and "render" in r.provider for r in children)


# -- validation -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "kw", "field"),
    [
        (StorageKind.FSX, {"size_gib": 3600, **NET}, "size_gib"),
        (StorageKind.FSX, {"vpc_id": "vpc-1"}, "private_subnet_ids"),
        (StorageKind.NONE, {"prefetch": True}, "prefetch"),
        (StorageKind.S3, {}, "prefetch"),
        (StorageKind.S3, {"prefetch": True}, "oidc_provider_arn"),
        (StorageKind.S3, {"bucket": "Bad_Bucket"}, "bucket"),
        (StorageKind.PVC, {"bucket": "b-1"}, "bucket"),
        (StorageKind.FSX, {"storage_class": "gp3", **NET}, "storage_class"),
        (StorageKind.EFS, {}, "vpc_id"),
        (StorageKind.EFS, {"file_system_id": "vol-1"}, "file_system_id"),
        (StorageKind.PVC, {"prefix": "/abs/path"}, "prefix"),
        (StorageKind.PVC, {"prefix": "a/../b"}, "prefix"),
        (StorageKind.PVC, {"access_mode": "ReadOnly"}, "access_mode"),
        (StorageKind.PVC, {"labels": {"team": "x" * 64}}, "labels"),
        (StorageKind.PVC, {"model_id": "not a model"}, "model"),
        (StorageKind.S3, {"bucket": "b-12", "oidc_issuer": "https://x"}, "oidc_issuer"),
    ],
)
def test_bad_args_name_the_field(
    mocks: RecordingMocks, kind: StorageKind, kw: dict, field: str
) -> None:
    with pytest.raises(ValueError, match=rf"^{field}:"):
        build(kind, **kw)
    assert not mocks.resources  # validated before any resource


def test_bad_name_is_refused(mocks: RecordingMocks) -> None:
    with pytest.raises(ValueError, match=r"^name:"):
        ModelStorage(
            "Bad_Name", ModelStorageArgs(kind=StorageKind.NONE, model_id=MODEL, namespace="llm")
        )


def test_s3_read_policy_helper_never_grants_the_whole_bucket() -> None:
    doc = json.dumps(s3_read_policy("b", "p/q"))
    assert "arn:aws:s3:::b/*" not in doc
    assert "arn:aws:s3:::b/p/q/*" in doc


# -- the download script, run for real against fake libraries ----------------------

_FAKE_HUB = """
import os, pathlib
CALLS = pathlib.Path(os.environ["FAKE_CALLS"])
def snapshot_download(repo_id, revision, local_dir, ignore_patterns):
    with CALLS.open("a") as f:
        f.write(f"{repo_id} {revision} {','.join(ignore_patterns)}\\n")
    assert os.environ.get("HF_TOKEN") == "tok", "token comes from the environment"
    root = pathlib.Path(local_dir)
    (root / "config.json").write_text("{}")
    (root / "sub").mkdir(exist_ok=True)
    (root / "sub" / "model.safetensors").write_text("w")
    (root / ".cache").mkdir(exist_ok=True)
    (root / ".cache" / "lock").write_text("")
"""

_FAKE_BOTO = """
import json, os, pathlib
STATE = pathlib.Path(os.environ["FAKE_S3"])
from botocore.exceptions import ClientError
class _S3:
    def _load(self):
        return json.loads(STATE.read_text()) if STATE.exists() else {}
    def _save(self, d):
        STATE.write_text(json.dumps(d))
    def head_object(self, Bucket, Key):
        if f"{Bucket}/{Key}" not in self._load():
            raise ClientError({"Error": {"Code": "404"}}, "HeadObject")
    def upload_file(self, path, bucket, key):
        d = self._load(); d[f"{bucket}/{key}"] = pathlib.Path(path).read_text(); self._save(d)
    def put_object(self, Bucket, Key, Body):
        d = self._load(); d[f"{Bucket}/{Key}"] = Body.decode(); self._save(d)
def client(name, region_name=None):
    assert name == "s3" and region_name == "us-east-1"
    return _S3()
"""

_FAKE_BOTOCORE = """
class ClientError(Exception):
    def __init__(self, response, op):
        super().__init__(op)
        self.response = response
"""


@pytest.fixture
def fake_libs(tmp_path: Path) -> Path:
    lib = tmp_path / "lib"
    (lib / "botocore").mkdir(parents=True)
    (lib / "huggingface_hub.py").write_text(textwrap.dedent(_FAKE_HUB))
    (lib / "boto3.py").write_text(textwrap.dedent(_FAKE_BOTO))
    (lib / "botocore" / "__init__.py").write_text("")
    (lib / "botocore" / "exceptions.py").write_text(textwrap.dedent(_FAKE_BOTOCORE))
    return lib


def _run(lib: Path, tmp: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(lib),
        "FAKE_CALLS": str(tmp / "calls"),
        "FAKE_S3": str(tmp / "s3.json"),
        "MODEL_ID": MODEL,
        "COMPLETE_MARKER": COMPLETE_MARKER,
        "IGNORE_PATTERNS": "original/*,metal/*",
        # Unreachable requirements: the script must not try to install anything.
        "HF_HUB_REQUIREMENT": "no-such-package==0",
        "BOTO3_REQUIREMENT": "no-such-package==0",
        "HF_TOKEN": "tok",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-c", DOWNLOAD_SCRIPT],
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_download_script_writes_marker_and_is_idempotent(fake_libs: Path, tmp_path: Path) -> None:
    target = tmp_path / "models" / MODEL
    first = _run(fake_libs, tmp_path, MODEL_PATH=str(target))
    assert first.returncode == 0, first.stderr
    assert (target / "sub" / "model.safetensors").read_text() == "w"
    assert (target / COMPLETE_MARKER).read_text().strip() == MODEL
    second = _run(fake_libs, tmp_path, MODEL_PATH=str(target))
    assert second.returncode == 0, second.stderr
    assert "nothing to do" in second.stdout
    # The hub was asked exactly once, with the patterns that skip duplicate weights.
    assert (tmp_path / "calls").read_text().splitlines() == [f"{MODEL} None original/*,metal/*"]


def test_download_script_uploads_to_s3_and_is_idempotent(fake_libs: Path, tmp_path: Path) -> None:
    env = {
        "MODEL_PATH": str(tmp_path / "scratch"),
        "S3_BUCKET": "bkt",
        "S3_PREFIX": "models/x",
        "AWS_REGION": "us-east-1",
    }
    first = _run(fake_libs, tmp_path, **env)
    assert first.returncode == 0, first.stderr
    objects = json.loads((tmp_path / "s3.json").read_text())
    assert sorted(objects) == [
        f"bkt/models/x/{COMPLETE_MARKER}",
        "bkt/models/x/config.json",
        "bkt/models/x/sub/model.safetensors",
    ]  # .cache/ stays behind; the marker is written last
    assert list(objects)[-1] == f"bkt/models/x/{COMPLETE_MARKER}"
    second = _run(fake_libs, tmp_path, **env)
    assert second.returncode == 0 and "nothing to do" in second.stdout
    assert len((tmp_path / "calls").read_text().splitlines()) == 1
