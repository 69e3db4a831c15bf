"""How an endpoint is reached: an ALB Ingress (internal by default), and Open WebUI."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components import _versions
from components.config import ExposureKind, ServingMode
from components.serving.pods import (
    HEALTH_PATH,
    SECURITY_CONTEXT,
    WEBUI,
    WEBUI_PORT,
    PodBuilder,
)
from components.serving.scripts import PORT


def ingress(
    b: PodBuilder, service_name: str, in_cluster: str
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
        # Every mode's Service answers /health without a key (vLLM, or the
        # auth proxy in front of Ray Serve).
        "alb.ingress.kubernetes.io/healthcheck-path": HEALTH_PATH,
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
            # The UI calls the endpoint like any client: with its key.
            b.api_key_env("OPENAI_API_KEY"),
            {"name": "ENABLE_OLLAMA_API", "value": "false"},
            {"name": "DEFAULT_MODELS", "value": a.model_id},
            {"name": "DO_NOT_TRACK", "value": "1"},
            {"name": "ANONYMIZED_TELEMETRY", "value": "false"},
        ],
        "resources": {
            "requests": WEBUI.quantities(),
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
    # On the pool's nodes: an endpoint brings everything it runs (a cluster
    # need not have CPU nodes with room for it).
    spec = b.pod_spec([container], accelerator=False, on_pool=True)
    # Chats and users live with the pod: the UI is a convenience, not a record.
    spec["volumes"].append({"name": "webui-data", "emptyDir": {"sizeLimit": "5Gi"}})
    k8s.apps.v1.Deployment(
        f"{web}-deployment",
        metadata=b.meta(web, labels),
        spec={
            "replicas": 1,
            "selector": {"matchLabels": b.selector("webui", app="open-webui")},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": b.template_annotations(scrape=False),
                },
                "spec": spec,
            },
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


#: Ray's dashboard and dashboard agent: KubeRay reads Serve's status there. They
#: also accept jobs (arbitrary code), so nothing else may reach them.
RAY_CONTROL_PORTS = (8265, 52365)


def network_policy(b: PodBuilder, *, public_ports: list[int], kuberay_namespace: str) -> None:
    """Who may reach the endpoint's pods: the rest of the endpoint (its own
    namespace), anyone on the ports that check the API key (and Open WebUI's),
    and for Ray the KubeRay operator on the dashboard; nothing else (Ray Serve's
    own port, the rendezvous and Ray's internals stay inside the endpoint)."""
    rules: list[dict[str, Any]] = [
        {"from": [{"podSelector": {}}]},
        {"ports": [{"port": p, "protocol": "TCP"} for p in public_ports]},
    ]
    if ServingMode(b.args.mode) is ServingMode.RAY_SERVICE:
        operator = {"kubernetes.io/metadata.name": kuberay_namespace}
        rules.append(
            {
                "from": [{"namespaceSelector": {"matchLabels": operator}}],
                "ports": [{"port": p, "protocol": "TCP"} for p in RAY_CONTROL_PORTS],
            }
        )
    k8s.networking.v1.NetworkPolicy(
        f"{b.name}-ingress-policy",
        metadata=b.meta(f"{b.name}-ingress", b.labels("network-policy")),
        spec={"podSelector": {}, "policyTypes": ["Ingress"], "ingress": rules},
        opts=b.child(),
    )
