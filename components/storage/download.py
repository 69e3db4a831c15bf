"""How weights get into a volume: the idempotent downloader and the HF token's env.

The same download runs either once, as the prefetch Job, or as an init
container of the serving pods. It writes ``COMPLETE_MARKER`` next to the
weights last, and a later run that finds it does nothing. The Hugging Face
token reaches every container that needs it by reference to its Secret
(:func:`hf_token_env`), never as a value.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pulumi

from components import _versions

#: The Secret key holding the Hugging Face token.
HF_TOKEN_KEY = "token"
#: Written last by a finished download; its presence makes later runs no-ops.
COMPLETE_MARKER = ".llm-endpoints-complete"
#: Checkpoint copies vLLM never reads (Meta's consolidated ``.pth`` under
#: ``original/``, Apple Metal weights of gpt-oss under ``metal/``); skipping
#: them halves some downloads.
IGNORE_PATTERNS = ("original/*", "metal/*")
#: How long the prefetch Job may run before Pulumi gives up on it.
PREFETCH_TIMEOUT = "90m"
PREFETCH_DEADLINE_S = 2 * 3600

#: Restricted container settings. The user is the pod's: the serving image's
#: (init container), DOWNLOADER_UID (prefetch Job), or root where the volume
#: is writable only by root (ModelStorage.needs_root).
SECURITY_CONTEXT = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}

#: The downloader. Runs in HF_DOWNLOADER_IMAGE; installs its pinned libraries
#: only when the image lacks them, and only after the idempotency check, so a
#: finished volume costs one ``stat`` (or one S3 HEAD). Plain ``python -c`` so
#: no ConfigMap is needed; every input comes from the environment.
DOWNLOAD_SCRIPT = r"""
import os, pathlib, subprocess, sys

model_id = os.environ["MODEL_ID"]
marker = os.environ["COMPLETE_MARKER"]
target = pathlib.Path(os.environ["MODEL_PATH"])
bucket = os.environ.get("S3_BUCKET")
prefix = os.environ.get("S3_PREFIX", "").strip("/")


def need(module, requirement):
    try:
        __import__(module)
    except ImportError:
        lib = "/tmp/pylib"
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-cache-dir",
                        "--disable-pip-version-check", "--target", lib, requirement], check=True)
        sys.path.insert(0, lib)


if bucket:
    need("boto3", os.environ["BOTO3_REQUIREMENT"])
    import boto3
    from botocore.exceptions import ClientError

    s3 = boto3.client("s3", region_name=os.environ.get("AWS_REGION"))
    try:
        s3.head_object(Bucket=bucket, Key=f"{prefix}/{marker}")
        print(f"s3://{bucket}/{prefix}: weights already present; nothing to do", flush=True)
        sys.exit(0)
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
            raise
elif (target / marker).exists():
    print(f"{target}: weights already present; nothing to do", flush=True)
    sys.exit(0)

need("huggingface_hub", os.environ["HF_HUB_REQUIREMENT"])
from huggingface_hub import snapshot_download

target.mkdir(parents=True, exist_ok=True)
snapshot_download(
    repo_id=model_id,
    revision=os.environ.get("MODEL_REVISION") or None,
    local_dir=str(target),
    ignore_patterns=[p for p in os.environ.get("IGNORE_PATTERNS", "").split(",") if p],
)
if bucket:
    files = [p for p in sorted(target.rglob("*"))
             if p.is_file() and ".cache" not in p.relative_to(target).parts]
    for path in files:
        key = f"{prefix}/{path.relative_to(target).as_posix()}"
        print(f"upload {key}", flush=True)
        s3.upload_file(str(path), bucket, key)
    s3.put_object(Bucket=bucket, Key=f"{prefix}/{marker}", Body=model_id.encode())
else:
    (target / marker).write_text(model_id + "\n")
print(f"{model_id}: download complete", flush=True)
"""


def hf_token_env(secret_name: pulumi.Input[str] | None) -> list[dict[str, Any]]:
    """``HF_TOKEN`` from the token's Secret (nothing when there is no token)."""
    if secret_name is None:
        return []
    return [
        {
            "name": "HF_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": secret_name, "key": HF_TOKEN_KEY}},
        }
    ]


def download_env(
    model_id: str,
    model_path: str,
    *,
    revision: str | None = None,
    hf_token_secret: pulumi.Input[str] | None = None,
) -> list[dict[str, Any]]:
    """The downloader's inputs: everything comes from the environment."""
    env = [
        {"name": "MODEL_ID", "value": model_id},
        {"name": "MODEL_PATH", "value": model_path},
        {"name": "MODEL_REVISION", "value": revision or ""},
        {"name": "COMPLETE_MARKER", "value": COMPLETE_MARKER},
        {"name": "IGNORE_PATTERNS", "value": ",".join(IGNORE_PATTERNS)},
        {"name": "HF_HUB_REQUIREMENT", "value": f"huggingface_hub=={_versions.HF_HUB_VERSION}"},
        {"name": "BOTO3_REQUIREMENT", "value": f"boto3=={_versions.BOTO3_VERSION}"},
        # Keep caches off the image's read-only-ish home and out of the volume root.
        {"name": "HF_HOME", "value": "/tmp/hf-home"},
        {"name": "HF_HUB_DISABLE_TELEMETRY", "value": "1"},
    ]
    return env + hf_token_env(hf_token_secret)


def download_container(
    env: Sequence[dict[str, Any]], mounts: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    """The ``download-model`` container (init container or the prefetch Job's)."""
    return {
        "name": "download-model",
        "image": _versions.HF_DOWNLOADER_IMAGE,
        "command": ["python", "-c", DOWNLOAD_SCRIPT],
        "env": list(env),
        "volumeMounts": list(mounts),
        "resources": {
            "requests": {"cpu": "1", "memory": "2Gi"},
            "limits": {"memory": "4Gi"},
        },
        "securityContext": dict(SECURITY_CONTEXT),
    }
