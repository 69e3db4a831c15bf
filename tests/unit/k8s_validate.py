"""Validate Kubernetes manifests the components emit, offline.

Built-in kinds are checked against the Kubernetes OpenAPI schemas that the
``kubernetes-validate`` package bundles (strict variant: unknown fields are
errors, so a misspelt key fails the test instead of being dropped by the API
server). Custom resources are checked against minimal JSON schemas written here
from the upstream CRD definitions (sources below); their pod templates reuse the
core ``PodSpec`` schema, which is what the CRDs embed.

On top of the schemas, a few rules that the API server enforces in code (not in
OpenAPI) are checked too, because they are exactly the mistakes a generator
makes: an explicit ``metadata.name`` (render-to-directory mode rejects
``generateName``), DNS names, label syntax, volume mounts that name a volume of
the pod, ``value`` xor ``valueFrom`` in env, and extended resources
(``nvidia.com/gpu``) set as limits with requests equal to them.

Sources of the custom-resource schemas (``openAPIV3Schema`` of each CRD, fields
the project uses kept with their types, enums, patterns and required lists):

* LeaderWorkerSet ``leaderworkerset.x-k8s.io/v1``: kubernetes-sigs/lws v0.7.0,
  ``config/crd/bases/leaderworkerset.x-k8s.io_leaderworkersets.yaml``
  (matches ``_versions.LWS_VERSION``).
* RayService ``ray.io/v1``: ray-project/kuberay v1.4.2,
  ``helm-chart/kuberay-operator/crds/ray.io_rayservices.yaml``
  (matches ``_versions.KUBERAY_VERSION``).
* NodePool ``karpenter.sh/v1`` and EC2NodeClass ``karpenter.k8s.aws/v1``:
  aws/karpenter-provider-aws v1.6.3, ``pkg/apis/crds/karpenter.sh_nodepools.yaml``
  and ``pkg/apis/crds/karpenter.k8s.aws_ec2nodeclasses.yaml``
  (matches ``_versions.KARPENTER_VERSION``). CEL rules (``x-kubernetes-validations``)
  cannot be expressed in JSON Schema; the ones that matter here are re-stated
  with ``if``/``then`` or ``oneOf`` and marked as such.

Use :func:`validate_manifest` on one dict, or :func:`validate_recorded` on the
test mocks to validate every Kubernetes object a test registered.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from functools import cache
from importlib import resources
from typing import Any

import jsonschema
import kubernetes_validate
from referencing import Registry, Resource

from components._versions import EKS_KUBERNETES_VERSION

#: The Kubernetes version manifests are validated against (the cluster default,
#: ``ClusterSpec.kubernetes_version``). kubernetes-validate 1.37 bundles 1.25-1.37.
KUBERNETES_VERSION = EKS_KUBERNETES_VERSION
_SCHEMA_DIR = f"v{KUBERNETES_VERSION}.0-local-strict"
_DEFS_ID = "https://kubernetes.io/api/_definitions.json"

#: The marker the Pulumi engine wraps secret values in (see pulumi.runtime.rpc).
_SECRET_SIG = "4dabf18193072939515e22adb298388d"
_SECRET_VALUE = "1b47061264138c4ac30d75fd1eb44270"

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[KMGTPE]i?|[mkMGTPE]|u|n)?$")


class ManifestError(AssertionError):
    """A manifest the API server would reject; the message names the field path."""


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"{_DEFS_ID}#/$defs/{name}"}


_STR = {"type": "string"}
_BOOL = {"type": "boolean"}
_INT32 = {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1}
_STR_MAP = {"type": "object", "additionalProperties": _STR}
_INT_OR_STRING = {"type": ["integer", "string"]}
_QUALIFIED_KEY = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*(\/))?"
    r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$"
)

#: controller-gen embeds a trimmed ObjectMeta in pod templates of CRDs.
_EMBEDDED_META = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "annotations": _STR_MAP,
        "finalizers": {"type": "array", "items": _STR},
        "labels": _STR_MAP,
        "name": _STR,
        "namespace": _STR,
    },
}
_POD_TEMPLATE = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"metadata": _EMBEDDED_META, "spec": _ref("io.k8s.api.core.v1.PodSpec")},
}


def _cr(api_version: str, kind: str, spec: dict[str, Any], *, spec_required: bool) -> dict:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata"] + (["spec"] if spec_required else []),
        "properties": {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": _ref("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"),
            "spec": spec,
            # status is written by the controller; a manifest never sets it.
        },
    }


# leaderworkerset.x-k8s.io/v1, lws v0.7.0.
_LWS_SPEC = {
    "type": "object",
    "additionalProperties": False,
    "required": ["leaderWorkerTemplate"],
    "properties": {
        "replicas": _INT32,
        "startupPolicy": {"enum": ["LeaderCreated", "LeaderReady"]},
        "networkConfig": {
            "type": "object",
            "additionalProperties": False,
            "required": ["subdomainPolicy"],
            "properties": {"subdomainPolicy": {"enum": ["Shared", "UniquePerReplica"]}},
        },
        "rolloutStrategy": {
            "type": "object",
            "additionalProperties": False,
            "required": ["type"],
            "properties": {
                "type": {"enum": ["RollingUpdate"]},
                "rollingUpdateConfiguration": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "maxSurge": _INT_OR_STRING,
                        "maxUnavailable": _INT_OR_STRING,
                        "partition": _INT32,
                    },
                },
            },
        },
        "leaderWorkerTemplate": {
            "type": "object",
            "additionalProperties": False,
            "required": ["workerTemplate"],
            "properties": {
                "leaderTemplate": _POD_TEMPLATE,
                "workerTemplate": _POD_TEMPLATE,
                "size": _INT32,
                "restartPolicy": {"enum": ["Default", "RecreateGroupOnPodRestart", "None"]},
                "subGroupPolicy": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "subGroupPolicyType": {"enum": ["LeaderWorker", "LeaderExcluded"]},
                        "subGroupSize": _INT32,
                    },
                },
            },
        },
    },
}

# ray.io/v1, KubeRay v1.4.2.
_RAY_WORKER_GROUP = {
    "type": "object",
    "additionalProperties": False,
    "required": ["groupName", "maxReplicas", "minReplicas", "template"],
    "properties": {
        "groupName": _STR,
        "idleTimeoutSeconds": _INT32,
        "maxReplicas": _INT32,
        "minReplicas": _INT32,
        "numOfHosts": _INT32,
        "rayStartParams": _STR_MAP,
        "replicas": _INT32,
        "scaleStrategy": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"workersToDelete": {"type": "array", "items": _STR}},
        },
        "suspend": _BOOL,
        "template": _POD_TEMPLATE,
    },
}
_RAY_SERVICE_SPEC = {
    "type": "object",
    "additionalProperties": False,
    "required": ["rayClusterConfig"],
    "properties": {
        "deploymentUnhealthySecondThreshold": _INT32,
        "serviceUnhealthySecondThreshold": _INT32,
        "excludeHeadPodFromServeSvc": _BOOL,
        "serveConfigV2": _STR,
        # An embedded Service; KubeRay fills selector and ports.
        "serveService": {"type": "object"},
        # The CRD types it as a string; the operator accepts NewCluster and None.
        "upgradeStrategy": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"type": _STR},
        },
        "rayClusterConfig": {
            "type": "object",
            "additionalProperties": False,
            "required": ["headGroupSpec"],
            "properties": {
                "autoscalerOptions": {"type": "object"},
                "enableInTreeAutoscaling": _BOOL,
                "gcsFaultToleranceOptions": {"type": "object", "required": ["redisAddress"]},
                "headServiceAnnotations": _STR_MAP,
                "managedBy": {"enum": ["ray.io/kuberay-operator", "kueue.x-k8s.io/multikueue"]},
                "rayVersion": _STR,
                "suspend": _BOOL,
                "headGroupSpec": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["template"],
                    "properties": {
                        "enableIngress": _BOOL,
                        "headService": {"type": "object"},
                        "rayStartParams": _STR_MAP,
                        "serviceType": _STR,
                        "template": _POD_TEMPLATE,
                    },
                },
                "workerGroupSpecs": {"type": "array", "items": _RAY_WORKER_GROUP},
            },
        },
    },
}

# karpenter.sh/v1 NodePool, Karpenter v1.6.3.
_TAINT = {
    "type": "object",
    "additionalProperties": False,
    "required": ["effect", "key"],
    "properties": {
        "effect": {"enum": ["NoSchedule", "PreferNoSchedule", "NoExecute"]},
        "key": {"type": "string", "pattern": _QUALIFIED_KEY},
        "value": {"type": "string", "pattern": _QUALIFIED_KEY},
        "timeAdded": {"type": "string", "format": "date-time"},
    },
}
_DURATION_OR_NEVER = {"type": "string", "pattern": r"^(([0-9]+(s|m|h))+|Never)$"}
_REQUIREMENT = {
    "type": "object",
    "additionalProperties": False,
    "required": ["key", "operator"],
    "properties": {
        "key": {"type": "string", "pattern": _QUALIFIED_KEY, "maxLength": 316},
        "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]},
        "values": {
            "type": "array",
            "items": {
                "type": "string",
                "maxLength": 63,
                "pattern": r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$",
            },
        },
        "minValues": {"type": "integer", "minimum": 1, "maximum": 50},
    },
    # CEL: In needs values; Gt/Lt need exactly one non-negative integer.
    "allOf": [
        {
            "if": {"properties": {"operator": {"const": "In"}}},
            "then": {"required": ["values"], "properties": {"values": {"minItems": 1}}},
        },
        {
            "if": {"properties": {"operator": {"enum": ["Gt", "Lt"]}}},
            "then": {
                "required": ["values"],
                "properties": {
                    "values": {"minItems": 1, "maxItems": 1, "items": {"pattern": r"^[0-9]+$"}}
                },
            },
        },
    ],
}
_NODEPOOL_SPEC = {
    "type": "object",
    "additionalProperties": False,
    "required": ["template"],
    "properties": {
        "weight": {"type": "integer", "minimum": 1, "maximum": 100},
        "limits": {"type": "object", "additionalProperties": _INT_OR_STRING},
        "disruption": {
            "type": "object",
            "additionalProperties": False,
            "required": ["consolidateAfter"],
            "properties": {
                "consolidateAfter": _DURATION_OR_NEVER,
                "consolidationPolicy": {"enum": ["WhenEmpty", "WhenEmptyOrUnderutilized"]},
                "budgets": {
                    "type": "array",
                    "maxItems": 50,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["nodes"],
                        "properties": {
                            "nodes": {
                                "type": "string",
                                "pattern": r"^((100|[0-9]{1,2})%|[0-9]+)$",
                            },
                            "duration": {
                                "type": "string",
                                "pattern": r"^((([0-9]+(h|m))|([0-9]+h[0-9]+m))(0s)?)$",
                            },
                            "schedule": _STR,
                            "reasons": {
                                "type": "array",
                                "items": {"enum": ["Underutilized", "Empty", "Drifted"]},
                            },
                        },
                        # CEL: schedule and duration come together.
                        "dependentRequired": {
                            "schedule": ["duration"],
                            "duration": ["schedule"],
                        },
                    },
                },
            },
        },
        "template": {
            "type": "object",
            "additionalProperties": False,
            "required": ["spec"],
            "properties": {
                "metadata": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"annotations": _STR_MAP, "labels": _STR_MAP},
                },
                "spec": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["nodeClassRef", "requirements"],
                    "properties": {
                        "expireAfter": _DURATION_OR_NEVER,
                        "terminationGracePeriod": {
                            "type": "string",
                            "pattern": r"^([0-9]+(s|m|h))+$",
                        },
                        "nodeClassRef": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["group", "kind", "name"],
                            "properties": {
                                "group": {"type": "string", "pattern": r"^[^/]+$"},
                                "kind": {"type": "string", "minLength": 1},
                                "name": {"type": "string", "minLength": 1},
                            },
                        },
                        "requirements": {"type": "array", "maxItems": 100, "items": _REQUIREMENT},
                        "taints": {"type": "array", "items": _TAINT},
                        "startupTaints": {"type": "array", "items": _TAINT},
                    },
                },
            },
        },
    },
}

# karpenter.k8s.aws/v1 EC2NodeClass, Karpenter v1.6.3.
_SELECTOR_TAGS = {"type": "object", "additionalProperties": {"type": "string", "minLength": 1}}


def _selector_terms(properties: dict[str, Any]) -> dict[str, Any]:
    """EC2NodeClass ``*SelectorTerms``: 1-30 terms, each naming at least one field."""
    return {
        "type": "array",
        "minItems": 1,
        "maxItems": 30,
        "items": {
            "type": "object",
            "additionalProperties": False,
            "minProperties": 1,
            "properties": properties,
        },
    }


_EC2NODECLASS_SPEC = {
    "type": "object",
    "additionalProperties": False,
    "required": ["amiSelectorTerms", "securityGroupSelectorTerms", "subnetSelectorTerms"],
    # CEL: exactly one of role and instanceProfile.
    "oneOf": [{"required": ["role"]}, {"required": ["instanceProfile"]}],
    "properties": {
        "amiFamily": {
            "enum": ["AL2", "AL2023", "Bottlerocket", "Custom", "Windows2019", "Windows2022"]
        },
        "amiSelectorTerms": _selector_terms(
            {
                "alias": {
                    "type": "string",
                    "maxLength": 30,
                    # CEL: family@version with a known family.
                    "pattern": r"^(al2|al2023|bottlerocket|windows2019|windows2022)@.+$",
                },
                "id": {"type": "string", "pattern": "ami-[0-9a-z]+"},
                "name": _STR,
                "owner": _STR,
                "ssmParameter": _STR,
                "tags": _SELECTOR_TAGS,
            }
        ),
        "associatePublicIPAddress": _BOOL,
        "blockDeviceMappings": {
            "type": "array",
            "maxItems": 50,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "deviceName": _STR,
                    "rootVolume": _BOOL,
                    "ebs": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "deleteOnTermination": _BOOL,
                            "encrypted": _BOOL,
                            "iops": {"type": "integer"},
                            "kmsKeyID": _STR,
                            "snapshotID": _STR,
                            "throughput": {"type": "integer"},
                            "volumeInitializationRate": {
                                "type": "integer",
                                "minimum": 100,
                                "maximum": 300,
                            },
                            "volumeSize": {
                                "type": "string",
                                "pattern": (
                                    r"^((?:[1-9][0-9]{0,3}|[1-4][0-9]{4}|[5][0-8][0-9]{3}|59000)Gi"
                                    r"|(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|[6][0-3][0-9]{3}|64000)G"
                                    r"|([1-9]||[1-5][0-7]|58)Ti|([1-9]||[1-5][0-9]|6[0-3]|64)T)$"
                                ),
                            },
                            "volumeType": {
                                "enum": ["standard", "io1", "io2", "gp2", "sc1", "st1", "gp3"]
                            },
                        },
                    },
                },
            },
        },
        "capacityReservationSelectorTerms": {"type": "array", "maxItems": 30},
        "context": _STR,
        "detailedMonitoring": _BOOL,
        "instanceProfile": {"type": "string", "minLength": 1},
        "instanceStorePolicy": {"enum": ["RAID0"]},
        "kubelet": {"type": "object"},
        "metadataOptions": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "httpEndpoint": {"enum": ["enabled", "disabled"]},
                "httpProtocolIPv6": {"enum": ["enabled", "disabled"]},
                "httpPutResponseHopLimit": {"type": "integer", "minimum": 1, "maximum": 64},
                "httpTokens": {"enum": ["required", "optional"]},
            },
        },
        "role": {"type": "string", "minLength": 1},
        "securityGroupSelectorTerms": _selector_terms(
            {
                "id": {"type": "string", "pattern": "sg-[0-9a-z]+"},
                "name": _STR,
                "tags": _SELECTOR_TAGS,
            }
        ),
        "subnetSelectorTerms": _selector_terms(
            {"id": {"type": "string", "pattern": "subnet-[0-9a-z]+"}, "tags": _SELECTOR_TAGS}
        ),
        "tags": {"type": "object", "additionalProperties": _STR},
        "userData": _STR,
    },
}

#: (apiVersion, kind) -> JSON schema of the whole object.
CRD_SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    ("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet"): _cr(
        "leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet", _LWS_SPEC, spec_required=True
    ),
    ("ray.io/v1", "RayService"): _cr(
        "ray.io/v1", "RayService", _RAY_SERVICE_SPEC, spec_required=True
    ),
    ("karpenter.sh/v1", "NodePool"): _cr(
        "karpenter.sh/v1", "NodePool", _NODEPOOL_SPEC, spec_required=True
    ),
    ("karpenter.k8s.aws/v1", "EC2NodeClass"): _cr(
        "karpenter.k8s.aws/v1", "EC2NodeClass", _EC2NODECLASS_SPEC, spec_required=True
    ),
}


@cache
def _registry() -> Registry:
    path = resources.files(kubernetes_validate).joinpath(
        f"kubernetes-json-schema/{_SCHEMA_DIR}/_definitions.json"
    )
    defs = json.loads(path.read_text())
    return Registry().with_resource(_DEFS_ID, Resource.from_contents(defs))


def unwrap_secrets(value: Any) -> Any:
    """Replace the engine's secret wrappers with the values they hold."""
    if isinstance(value, Mapping):
        if value.get(_SECRET_SIG) == _SECRET_VALUE:
            return unwrap_secrets(value.get("value"))
        return {k: unwrap_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap_secrets(v) for v in value]
    return value


def is_secret(value: Any) -> bool:
    """True when a recorded input is wrapped as a secret by the engine."""
    return isinstance(value, Mapping) and value.get(_SECRET_SIG) == _SECRET_VALUE


def _path(parts: Iterable[Any]) -> str:
    return ".".join(str(p) for p in parts) or "<root>"


def _fail(where: str, path: str, msg: str) -> None:
    raise ManifestError(f"{where}: {path}: {msg}")


def _check_labels(where: str, path: str, labels: Any) -> None:
    if labels is None:
        return
    for key, value in labels.items():
        prefix, _, name = key.rpartition("/")
        if prefix and (len(prefix) > 253 or not DNS1123_SUBDOMAIN.match(prefix)):
            _fail(where, path, f"label key {key!r} has an invalid prefix")
        if len(name) > 63 or not LABEL_NAME.match(name):
            _fail(where, path, f"label key {key!r} is not a valid label name")
        if not isinstance(value, str) or len(value) > 63 or not LABEL_VALUE.match(value):
            _fail(where, path, f"label {key}={value!r} is not a valid label value")


def _extended(resource: str) -> bool:
    # Extended resources are domain-prefixed names outside kubernetes.io.
    prefix = resource.split("/", 1)[0] if "/" in resource else ""
    return bool(prefix) and not (prefix == "kubernetes.io" or prefix.endswith(".kubernetes.io"))


def _check_pod_spec(where: str, path: str, spec: Mapping[str, Any]) -> None:
    volumes = {v["name"] for v in spec.get("volumes") or []}
    if len(volumes) != len(spec.get("volumes") or []):
        _fail(where, f"{path}.volumes", "volume names must be unique")
    names: set[str] = set()
    for group in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(group) or []):
            cpath = f"{path}.{group}[{i}]"
            if not DNS1123_LABEL.match(c["name"]) or len(c["name"]) > 63:
                _fail(where, cpath, f"container name {c['name']!r} is not a DNS-1123 label")
            if c["name"] in names:
                _fail(where, cpath, f"duplicate container name {c['name']!r}")
            names.add(c["name"])
            if not c.get("image"):
                _fail(where, cpath, "image is required")
            for m in c.get("volumeMounts") or []:
                if m["name"] not in volumes:
                    _fail(where, cpath, f"volumeMount {m['name']!r} names no volume of the pod")
            env_names = [e["name"] for e in c.get("env") or []]
            if len(env_names) != len(set(env_names)):
                _fail(where, cpath, f"duplicate env names in {env_names}")
            for e in c.get("env") or []:
                if "value" in e and "valueFrom" in e:
                    _fail(where, cpath, f"env {e['name']} sets both value and valueFrom")
            res = c.get("resources") or {}
            limits, requests = res.get("limits") or {}, res.get("requests") or {}
            for kind, q in [*limits.items(), *requests.items()]:
                if not QUANTITY.match(str(q)):
                    _fail(where, cpath, f"resource {kind}={q!r} is not a quantity")
            for r, q in requests.items():
                if _extended(r) and str(limits.get(r)) != str(q):
                    _fail(
                        where,
                        cpath,
                        f"extended resource {r} must be set in limits, with requests equal to it",
                    )
            ports = [p.get("name") for p in c.get("ports") or [] if p.get("name")]
            if len(ports) != len(set(ports)):
                _fail(where, cpath, f"duplicate port names {ports}")
            for p in ports:
                if len(p) > 15 or not DNS1123_LABEL.match(p) or not re.search("[a-z]", p):
                    _fail(where, cpath, f"port name {p!r} is not an IANA service name")


def _pod_templates(manifest: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    spec = manifest.get("spec") or {}
    kind = manifest["kind"]
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        yield "spec.template", spec["template"]
    elif kind == "CronJob":
        yield "spec.jobTemplate.spec.template", spec["jobTemplate"]["spec"]["template"]
    elif kind == "Pod":
        yield "", manifest
    elif kind == "LeaderWorkerSet":
        lwt = spec["leaderWorkerTemplate"]
        if "leaderTemplate" in lwt:
            yield "spec.leaderWorkerTemplate.leaderTemplate", lwt["leaderTemplate"]
        yield "spec.leaderWorkerTemplate.workerTemplate", lwt["workerTemplate"]
    elif kind == "RayService":
        rc = spec["rayClusterConfig"]
        yield "spec.rayClusterConfig.headGroupSpec.template", rc["headGroupSpec"]["template"]
        for i, g in enumerate(rc.get("workerGroupSpecs") or []):
            yield f"spec.rayClusterConfig.workerGroupSpecs[{i}].template", g["template"]


def _check_semantics(manifest: Mapping[str, Any]) -> None:
    meta = manifest.get("metadata") or {}
    kind = manifest["kind"]
    name = meta.get("name")
    where = f"{kind}/{name}"
    if "generateName" in meta:
        _fail(where, "metadata.generateName", "render mode needs an explicit metadata.name")
    if not isinstance(name, str) or not name:
        raise ManifestError(f"{where}: metadata.name: an explicit name is required")
    pattern, limit = (DNS1035_LABEL, 63) if kind == "Service" else (DNS1123_SUBDOMAIN, 253)
    if len(name) > limit or not pattern.match(name):
        _fail(where, "metadata.name", f"{name!r} is not a valid {kind} name")
    ns = meta.get("namespace")
    if ns is not None and not DNS1123_LABEL.match(ns):
        _fail(where, "metadata.namespace", f"{ns!r} is not a DNS-1123 label")
    _check_labels(where, "metadata.labels", meta.get("labels"))
    selector = (manifest.get("spec") or {}).get("selector")
    if isinstance(selector, Mapping):
        _check_labels(where, "spec.selector", selector.get("matchLabels", selector))
    for path, template in _pod_templates(manifest):
        tmeta = template.get("metadata") or {}
        _check_labels(where, f"{path}.metadata.labels", tmeta.get("labels"))
        _check_pod_spec(where, f"{path}.spec" if path else "spec", template["spec"])
        match = (selector or {}).get("matchLabels") if isinstance(selector, Mapping) else None
        if match and path == "spec.template":
            labels = tmeta.get("labels") or {}
            if any(labels.get(k) != v for k, v in match.items()):
                _fail(where, "spec.selector", "selector does not match the template's labels")


def validate_manifest(manifest: Mapping[str, Any]) -> None:
    """Validate one Kubernetes object (built-in or a known custom resource).

    Raises:
        ManifestError: with the kind, name and field path of the first problem.
    """
    manifest = unwrap_secrets(dict(manifest))
    api_version, kind = manifest.get("apiVersion"), manifest.get("kind")
    if not api_version or not kind:
        raise ManifestError(f"manifest without apiVersion/kind: {sorted(manifest)}")
    name = (manifest.get("metadata") or {}).get("name")
    crd = CRD_SCHEMAS.get((api_version, kind))
    if crd is not None:
        validator = jsonschema.Draft202012Validator(
            crd, registry=_registry(), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
        )
        e = jsonschema.exceptions.best_match(validator.iter_errors(manifest))
        if e is not None:
            raise ManifestError(f"{kind}/{name}: {_path(e.absolute_path)}: {e.message}")
    else:
        try:
            kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            raise ManifestError(f"{kind}/{name}: {_path(e.path)}: {e.message}") from None
        except kubernetes_validate.SchemaNotFoundError:
            raise ManifestError(
                f"{kind}/{name}: no schema for {api_version} {kind}; if it is a custom "
                "resource, add its schema to tests/unit/k8s_validate.CRD_SCHEMAS from its CRD"
            ) from None
    _check_semantics(manifest)


def validate_recorded(mocks: Any) -> int:
    """Validate every Kubernetes object registered with the test mocks.

    Args:
        mocks: The ``RecordingMocks`` of the test (``tests/unit/conftest.py``).

    Returns:
        How many objects were validated (tests assert it is what they expect).
    """
    count = 0
    for r in mocks.resources:
        if not r.typ.startswith("kubernetes:") or "apiVersion" not in r.inputs:
            continue  # providers, Helm releases and other non-manifest resources
        validate_manifest(r.inputs)
        count += 1
    return count
