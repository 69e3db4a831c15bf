"""Pinned images and chart versions. Nothing in the project uses ``latest``.

Bump a pin here and nowhere else; the unit tests check that every image the
components emit is one of these.
"""

from __future__ import annotations

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

# Serving images.
VLLM_IMAGE = "vllm/vllm-openai:v0.10.2"  # gpt-oss needs >= 0.10.1
VLLM_NEURON_IMAGE = (
    "public.ecr.aws/neuron/pytorch-inference-vllm-neuronx:0.9.1-neuronx-py310-sdk2.25.0-ubuntu22.04"
)
RAY_VLLM_IMAGE = "rayproject/ray-llm:2.49.0-py311-cu128"
RAY_VLLM_NEURON_IMAGE = VLLM_NEURON_IMAGE
OPEN_WEBUI_IMAGE = "ghcr.io/open-webui/open-webui:v0.6.26"
# Used by the prefetch Job and the download-at-start init container.
HF_DOWNLOADER_IMAGE = "python:3.12.11-slim-bookworm"
HF_HUB_VERSION = "0.35.3"
# The s3 prefetch Job uploads with boto3 (Mountpoint volumes are read-only).
BOTO3_VERSION = "1.44.5"

# Add-on Helm charts (installed by the dedicated/platform cluster).
KARPENTER_CHART = "oci://public.ecr.aws/karpenter/karpenter"
KARPENTER_VERSION = SHARED["KARPENTER_VERSION"]
NVIDIA_DEVICE_PLUGIN_CHART = "nvidia-device-plugin"
NVIDIA_DEVICE_PLUGIN_REPO = "https://nvidia.github.io/k8s-device-plugin"
NVIDIA_DEVICE_PLUGIN_VERSION = "0.17.4"
NEURON_CHART = "oci://public.ecr.aws/neuron/neuron-helm-chart"
NEURON_CHART_VERSION = "1.3.0"
AWS_LB_CONTROLLER_CHART = "aws-load-balancer-controller"
AWS_LB_CONTROLLER_REPO = "https://aws.github.io/eks-charts"
AWS_LB_CONTROLLER_VERSION = "1.13.4"
LWS_CHART = "oci://registry.k8s.io/lws/charts/lws"
LWS_VERSION = SHARED["LWS_VERSION"]
KUBERAY_CHART = "kuberay-operator"
KUBERAY_REPO = "https://ray-project.github.io/kuberay-helm/"
KUBERAY_VERSION = SHARED["KUBERAY_VERSION"]
DCGM_EXPORTER_CHART = "dcgm-exporter"
DCGM_EXPORTER_REPO = "https://nvidia.github.io/dcgm-exporter/helm-charts"
DCGM_EXPORTER_VERSION = "4.4.1"

# EKS managed add-ons (None: the default version for the cluster's Kubernetes).
EKS_ADDONS = {
    "aws-fsx-csi-driver": None,
    "aws-mountpoint-s3-csi-driver": None,
    "aws-efs-csi-driver": None,
    "eks-pod-identity-agent": None,
}

ALL_IMAGES = frozenset(
    {VLLM_IMAGE, VLLM_NEURON_IMAGE, RAY_VLLM_IMAGE, OPEN_WEBUI_IMAGE, HF_DOWNLOADER_IMAGE}
)

# Node images. Karpenter resolves the alias to the AL2023 AMI of that release
# (the NVIDIA or Neuron variant for accelerated instance types); "@latest"
# would roll every GPU node whenever AWS publishes an AMI, so it is pinned.
# Source: github.com/awslabs/amazon-eks-ami/releases (v20251023).
KARPENTER_AMI_ALIAS = "al2023@v20251023"
