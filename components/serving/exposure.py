"""How an endpoint is reached: an ALB Ingress (internal by default), and Open WebUI."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components import _versions
from components.config import ExposureKind, ServingMode
from components.serving.pods import (
    HEALTH_PATH,
    RAY_HEALTH_PATH,
    SECURITY_CONTEXT,
    WEBUI_PORT,
    PodBuilder,
)
from components.serving.scripts import PORT


def ingress(
    b: PodBuilder, mode: ServingMode, service_name: str, in_cluster: str
) -> tuple[pulumi.Output[str], pulumi.Output[str]]:
    """An ALB Ingress to the endpoint's Service.

    Returns:
        The ALB's hostname (empty until known) and the endpoint URL.
    """
    a, name = b.args, b.name
    # The CIDRs were checked with the args (rules.check_exposure_cidrs).
    public = ExposureKind(a.exposure) is ExposureKind.PUBLIC_ALB
    annotations = {
        "alb.ingress.kubernetes.io/scheme": "internet-facing" if public else "internal",
        "alb.ingress.kubernetes.io/target-type": "ip",
        "alb.ingress.kubernetes.io/healthcheck-path": (
            RAY_HEALTH_PATH if mode is ServingMode.RAY_SERVICE else HEALTH_PATH
        ),
        # Streamed completions can stay quiet for minutes.
        "alb.ingress.kubernetes.io/load-balancer-attributes": ("idle_timeout.timeout_seconds=600"),
    }
    if a.cidrs:
        annotations["alb.ingress.kubernetes.io/inbound-cidrs"] = ",".join(a.cidrs)
    if a.certificate_arn:
        annotations["alb.ingress.kubernetes.io/listen-ports"] = '[{"HTTPS": 443}]'
        annotations["alb.ingress.kubernetes.io/certificate-arn"] = a.certificate_arn
    else:
        annotations["alb.ingress.kubernetes.io/listen-ports"] = '[{"HTTP": 80}]'
    ingress = k8s.networking.v1.Ingress(
        f"{name}-ingress",
        metadata=b.meta(name, b.labels("ingress"), annotations=annotations),
        spec={
            "ingressClassName": "alb",
            "rules": [
                {
                    "http": {
                        "paths": [
                            {
                                "path": "/",
                                "pathType": "Prefix",
                                "backend": {
                                    "service": {
                                        "name": service_name,
                                        "port": {"number": PORT},
                                    }
                                },
                            }
                        ]
                    }
                }
            ],
        },
        opts=b.awaited(),
    )
    scheme = "https" if a.certificate_arn else "http"
    hostname = ingress.status.apply(_hostname)
    # Until the ALB has a name (and in render mode, where it never does),
    # the in-cluster URL is the one that works.
    return hostname, hostname.apply(lambda h: f"{scheme}://{h}/v1" if h else in_cluster)


def open_webui(b: PodBuilder, service_name: str) -> str:
    """Open WebUI pointed at the endpoint; returns its Service's name."""
    a, name = b.args, b.name
    web = f"{name}-webui"
    labels = b.labels("webui", app="open-webui")
    container = {
        "name": "open-webui",
        "image": _versions.OPEN_WEBUI_IMAGE,
        "ports": [{"name": "http", "containerPort": WEBUI_PORT, "protocol": "TCP"}],
        "env": [
            {"name": "OPENAI_API_BASE_URL", "value": f"http://{service_name}:{PORT}/v1"},
            {"name": "ENABLE_OLLAMA_API", "value": "false"},
            {"name": "DEFAULT_MODELS", "value": a.model_id},
            {"name": "DO_NOT_TRACK", "value": "1"},
            {"name": "ANONYMIZED_TELEMETRY", "value": "false"},
        ],
        "resources": {
            "requests": {"cpu": "500m", "memory": "1Gi"},
            "limits": {"memory": "2Gi"},
        },
        "volumeMounts": [{"name": "webui-data", "mountPath": "/app/backend/data"}],
        "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 10},
        "livenessProbe": {
            "httpGet": {"path": "/health", "port": "http"},
            "periodSeconds": 20,
            "initialDelaySeconds": 60,
        },
        "securityContext": dict(SECURITY_CONTEXT),
    }
    spec = b.pod_spec([container], accelerator=False)
    # Chats and users live with the pod: the UI is a convenience, not a record.
    spec["volumes"] = [{"name": "webui-data", "emptyDir": {"sizeLimit": "5Gi"}}]
    k8s.apps.v1.Deployment(
        f"{web}-deployment",
        metadata=b.meta(web, labels),
        spec={
            "replicas": 1,
            "selector": {"matchLabels": b.selector("webui", app="open-webui")},
            "template": {"metadata": {"labels": labels}, "spec": spec},
        },
        opts=b.child(),
    )
    k8s.core.v1.Service(
        f"{web}-svc",
        metadata=b.meta(web, labels),
        spec={
            "type": "ClusterIP",
            "selector": b.selector("webui", app="open-webui"),
            "ports": [
                {"name": "http", "port": WEBUI_PORT, "targetPort": "http", "protocol": "TCP"}
            ],
        },
        opts=b.child(),
    )
    return web


def _hostname(status: Any) -> str:
    """The first load-balancer hostname of an Ingress status, or ''."""
    try:
        return str(status.load_balancer.ingress[0].hostname or "")
    except (AttributeError, IndexError, TypeError):
        return ""
