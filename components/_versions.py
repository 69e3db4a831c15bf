"""Pinned images and chart versions. Nothing in the project uses ``latest``.

Bump a pin here and nowhere else; the unit tests check that every image the
components emit is one of these.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources


def _shared_versions() -> dict[str, str]:
    """``KEY=value`` lines of ``versions.env`` (package data, shared with the shell installers)."""
    out = {}
    text = resources.files("components").joinpath("versions.env").read_text()
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            out[key] = value
    return out


SHARED = _shared_versions()
PULUMI_VERSION = SHARED["PULUMI_VERSION"]
KUBERNETES_PROVIDER_VERSION = SHARED["KUBERNETES_PROVIDER_VERSION"]

# Serving images. Each one's vLLM, its user and what it can serve are facts of
# the image (see IMAGES below); the planner predicts the vLLM of the image a
# stack runs.
VLLM_VERSION = "0.33.0"
#: The vLLM OpenAI server (``vllm serve``), as vLLM publishes it.
VLLM_IMAGE = f"vllm/vllm-openai:v{VLLM_VERSION}"
#: The same with the AWS EFA libraries and aws-ofi-nccl (NCCL over EFA), for
#: multi-node serving; vLLM publishes it beside the plain image from 0.33.
VLLM_EFA_IMAGE = f"vllm/vllm-openai:v{VLLM_VERSION}-efa"
#: Neuron SDK 2.31 is the last release whose vLLM (0.16, Neuron fork) supports
#: Inferentia2; later Neuron vLLM images support only Trainium 2/3.
VLLM_NEURON_VERSION = "0.16.0"
NEURON_SDK_VERSION = "2.31.1"
VLLM_NEURON_IMAGE = (
    "public.ecr.aws/neuron/pytorch-inference-vllm-neuronx:"
    f"{VLLM_NEURON_VERSION}-neuronx-py312-sdk{NEURON_SDK_VERSION}-ubuntu24.04"
)
#: Ray Serve LLM: the newest Ray release ships vLLM 0.29.0 (ray[llm] pins it).
RAY_VERSION = "2.60.0"
RAY_VLLM_VERSION = "0.29.0"
RAY_VLLM_IMAGE = f"rayproject/ray-llm:{RAY_VERSION}-py312-cu130"
#: No published image has Ray and vLLM-Neuron for inf2: this project's, built
#: from images/ray-neuron/Dockerfile (FROM VLLM_NEURON_IMAGE, plus Ray and the
#: Serve app in images/ray-neuron/). Build and push it, then set its name here.
RAY_VLLM_NEURON_IMAGE = "llm-endpoints/ray-vllm-neuron:2.60.0-sdk2.31.1"
OPEN_WEBUI_IMAGE = "ghcr.io/open-webui/open-webui:v0.12.4"
#: Ray Serve LLM has no API keys: an nginx in front of Ray Serve checks the
#: endpoint's key (unprivileged image: runs as UID 101).
AUTH_PROXY_IMAGE = "nginxinc/nginx-unprivileged:1.29.3-alpine"
# Used by the prefetch Job and the download-at-start init container.
HF_DOWNLOADER_IMAGE = "python:3.12.16-slim-trixie"
HF_HUB_VERSION = "2.4.0"
# The s3 prefetch Job uploads with boto3 (Mountpoint volumes are read-only).
BOTO3_VERSION = "1.44.8"


@dataclass(frozen=True)
class Image:
    """Facts of a serving image the pods depend on.

    Attributes:
        vllm: The vLLM version inside (None: none).
        uid: The user to run as (0: the image needs root, so its namespace gets
            Pod Security ``baseline``; otherwise ``restricted`` is possible).
        gid: The group to run as (the one its writable paths belong to).
        home: HOME for that user (a writable volume is mounted there).
        families: Instance families the image can serve on (empty: any NVIDIA).
        source: Where these facts come from.
    """

    vllm: str | None
    uid: int
    gid: int
    home: str
    families: tuple[str, ...] = ()
    source: str = ""


IMAGES: dict[str, Image] = {
    VLLM_IMAGE: Image(
        VLLM_VERSION, 2000, 0, "/home/vllm",
        source="vllm-project/vllm@v0.33.0 docker/Dockerfile: user vllm, uid 2000, gid 0",
    ),
    VLLM_EFA_IMAGE: Image(
        VLLM_VERSION, 2000, 0, "/home/vllm",
        source="the same Dockerfile, -efa target (publish-release-images.sh)",
    ),
    VLLM_NEURON_IMAGE: Image(
        VLLM_NEURON_VERSION, 0, 0, "/root", families=("inf2", "trn1"),
        source="aws-neuron deep-learning-containers Dockerfile.neuronx@2.31.1: no USER (root)",
    ),
    RAY_VLLM_IMAGE: Image(
        RAY_VLLM_VERSION, 1000, 100, "/home/ray",
        source="ray-project/ray docker/base-deps/Dockerfile: ray uid 1000 gid 100; "
        "python/requirements/llm (ray[llm] 2.60.0 pins vllm 0.29.0)",
    ),
    RAY_VLLM_NEURON_IMAGE: Image(
        VLLM_NEURON_VERSION, 0, 0, "/root", families=("inf2", "trn1"),
        source="images/ray-neuron/Dockerfile (FROM the Neuron vLLM image, root)",
    ),
    OPEN_WEBUI_IMAGE: Image(
        None, 0, 0, "/root",
        source="open-webui/open-webui@v0.12.4 Dockerfile: ARG UID=0 (non-root untested)",
    ),
    AUTH_PROXY_IMAGE: Image(None, 101, 101, "/tmp", source="nginxinc/docker-nginx-unprivileged"),
    HF_DOWNLOADER_IMAGE: Image(
        None, 0, 0, "/tmp", source="python:slim has no user of its own; see storage/download.py"
    ),
}  # fmt: skip

# Add-on Helm charts (installed by the dedicated/platform cluster).
KARPENTER_CHART = "oci://public.ecr.aws/karpenter/karpenter"
KARPENTER_VERSION = SHARED["KARPENTER_VERSION"]
NVIDIA_DEVICE_PLUGIN_CHART = "nvidia-device-plugin"
NVIDIA_DEVICE_PLUGIN_REPO = "https://nvidia.github.io/k8s-device-plugin"
NVIDIA_DEVICE_PLUGIN_VERSION = "0.20.0"
NEURON_CHART = "oci://public.ecr.aws/neuron/neuron-helm-chart"
NEURON_CHART_VERSION = "1.10.0"
AWS_LB_CONTROLLER_CHART = "aws-load-balancer-controller"
AWS_LB_CONTROLLER_REPO = "https://aws.github.io/eks-charts"
AWS_LB_CONTROLLER_VERSION = "3.5.0"
LWS_CHART = "oci://registry.k8s.io/lws/charts/lws"
LWS_VERSION = SHARED["LWS_VERSION"]
KUBERAY_CHART = "kuberay-operator"
KUBERAY_REPO = "https://ray-project.github.io/kuberay-helm/"
KUBERAY_VERSION = SHARED["KUBERAY_VERSION"]
DCGM_EXPORTER_CHART = "dcgm-exporter"
DCGM_EXPORTER_REPO = "https://nvidia.github.io/dcgm-exporter/helm-charts"
DCGM_EXPORTER_VERSION = "4.8.2"
EFA_DEVICE_PLUGIN_CHART = "aws-efa-k8s-device-plugin"
EFA_DEVICE_PLUGIN_REPO = "https://aws.github.io/eks-charts"
EFA_DEVICE_PLUGIN_VERSION = "0.5.30"

# EKS managed add-ons (None: the default version for the cluster's Kubernetes).
EKS_ADDONS = {
    "aws-fsx-csi-driver": None,
    "aws-mountpoint-s3-csi-driver": None,
    "aws-efs-csi-driver": None,
    "eks-pod-identity-agent": None,
}

ALL_IMAGES = frozenset(IMAGES)

# Node images. Karpenter resolves the alias to the AL2023 AMI of that release
# (the NVIDIA or Neuron variant for accelerated instance types); "@latest"
# would roll every GPU node whenever AWS publishes an AMI, so it is pinned.
# Source: github.com/awslabs/amazon-eks-ami/releases (v20260930: NVIDIA driver
# 580, which the CUDA 13 serving images need).
KARPENTER_AMI_ALIAS = "al2023@v20260930"

# EKS Kubernetes versions in standard support on 2026-12-01 (1.34 leaves it on
# 2026-12-02): docs.aws.amazon.com/eks/latest/userguide/kubernetes-versions.html.
EKS_STANDARD_SUPPORT = ("1.35", "1.36")
EKS_KUBERNETES_VERSION = "1.36"
