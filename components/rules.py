"""Every limit, pattern and cross-field rule about names and values, defined once.

The endpoint spec (:mod:`components.config`), the components and the HTTP
request model all import their rules from here, so a value the spec accepts is
a value every component accepts. Each ``check_*`` function raises
``ValueError`` whose message starts with the field it names (``labels: ...``),
which is how every error of the project reads.

Kubernetes rules follow the API server's own validation
(``k8s.io/apimachinery/pkg/util/validation``): DNS-1123 labels and
subdomains, DNS-1035 labels, qualified names for label keys, label values and
resource quantities. AWS rules follow each service's naming rules.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta

# -- sizes ---------------------------------------------------------------------------

#: The longest free-form string a spec field takes (names, ids); anything longer
#: is refused before any pattern is tried on it.
MAX_STRING_LEN = 256
INSTANCE_TYPE_MAX_LEN = 64

# -- endpoint names -----------------------------------------------------------------

#: Endpoint names are DNS-1035 labels (Services must start with a letter) of at
#: most this many characters, so that every name the builder derives from them
#: (``COMPONENT_SUFFIXES``) and every name a component derives from those stays
#: within the Kubernetes (63) and AWS limits (IAM roles 64, S3 buckets 63).
NAME_MAX_LEN = 40
NAME_RE = re.compile(rf"^[a-z]([a-z0-9-]{{0,{NAME_MAX_LEN - 2}}}[a-z0-9])?$")
#: What the endpoint builder appends to the endpoint name to name each component.
COMPONENT_SUFFIXES: Mapping[str, str] = {"storage": "-weights", "pool": "-pool"}
#: The longest name a component is given by the endpoint builder.
COMPONENT_NAME_MAX_LEN = NAME_MAX_LEN + max(len(s) for s in COMPONENT_SUFFIXES.values())

# -- Kubernetes ---------------------------------------------------------------------

DNS1123_LABEL_MAX_LEN = 63
DNS1123_LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
DNS1123_SUBDOMAIN_MAX_LEN = 253
DNS1123_SUBDOMAIN_RE = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
#: The name part of a qualified name (label keys, taint keys): 63 characters.
_QUALIFIED_NAME_RE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
LABEL_VALUE_MAX_LEN = 63
LABEL_VALUE_RE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
#: A resource quantity as the components write them (``4``, ``500m``, ``16Gi``).
QUANTITY_RE = re.compile(r"^[0-9]+(\.[0-9]+)?(m|Ki|Mi|Gi|Ti|k|M|G|T)?$")
#: Labels a spec may set on its objects and nodes.
MAX_LABELS = 16
#: Label key domains (and their subdomains) that belong to Kubernetes, its
#: controllers and this project: a user label there could steer scheduling,
#: disruption or Pod Security, or impersonate an object the project manages.
RESERVED_LABEL_DOMAINS: tuple[str, ...] = (
    "kubernetes.io",
    "k8s.io",
    "karpenter.sh",
    "karpenter.k8s.aws",
    "amazonaws.com",
    "llm-endpoints",
)


def is_label_key(key: str) -> bool:
    """Whether ``key`` is a qualified name (``[prefix/]name``) the API server accepts."""
    prefix, _, name = key.rpartition("/")
    if prefix and (
        len(prefix) > DNS1123_SUBDOMAIN_MAX_LEN or not DNS1123_SUBDOMAIN_RE.match(prefix)
    ):
        return False
    return bool(_QUALIFIED_NAME_RE.match(name))


def check_labels(
    labels: Mapping[str, str],
    *,
    field: str = "labels",
    reserved: Iterable[str] = (),
    reserved_by: str = "the project",
) -> dict[str, str]:
    """Validate Kubernetes labels.

    Args:
        labels: Keys and values.
        field: The field named in errors.
        reserved: Exact keys the caller sets itself (refused here).
        reserved_by: Who sets them, for the error.

    Raises:
        ValueError: naming the field, the key and what would be valid.
    """
    reserved = frozenset(reserved)
    for key, value in labels.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValueError(f"{field}: keys and values must be strings")
        if not is_label_key(key):
            raise ValueError(
                f"{field}: {key!r} is not a valid Kubernetes label key ([prefix/]name, the name at "
                "most 63 letters, digits, '-', '_' or '.', starting and ending alphanumeric)"
            )
        if key in reserved:
            raise ValueError(f"{field}: {key!r} is set by {reserved_by} itself")
        if not LABEL_VALUE_RE.match(value):
            raise ValueError(
                f"{field}: the value of {key!r} is not a valid Kubernetes label value (at most 63 "
                "letters, digits, '-', '_' or '.', starting and ending alphanumeric)"
            )
    return dict(labels)


def is_reserved_label_key(key: str) -> bool:
    """Whether a label key's prefix is a reserved domain or one of its subdomains."""
    prefix = key.rpartition("/")[0]
    return any(prefix == d or prefix.endswith("." + d) for d in RESERVED_LABEL_DOMAINS)


def check_user_labels(labels: Mapping[str, str], field: str = "labels") -> dict[str, str]:
    """Labels a spec may set: valid, at most ``MAX_LABELS``, none under a reserved domain."""
    if len(labels) > MAX_LABELS:
        raise ValueError(f"{field}: at most {MAX_LABELS} labels, got {len(labels)}")
    check_labels(labels, field=field)
    for key in labels:
        if is_reserved_label_key(key):
            raise ValueError(
                f"{field}: {key!r} is under a reserved prefix "
                f"({', '.join(RESERVED_LABEL_DOMAINS)}); use a prefix of your own"
            )
    return dict(labels)


def check_taint_key(value: str, field: str = "taint_key") -> str:
    """A taint key: a qualified name, like a label key."""
    if not is_label_key(value):
        raise ValueError(f"{field}: {value!r} is not a qualified Kubernetes key ([prefix/]name)")
    return value


#: A Karpenter duration (``10m``, ``720h``), or ``Never``.
DURATION_RE = re.compile(r"^(\d+[smh])+$")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600}


def duration_seconds(value: str, field: str) -> float:
    """Seconds of a Karpenter duration; ``Never`` is infinite.

    Raises:
        ValueError: naming the field when it is neither.
    """
    if value == "Never":
        return float("inf")
    if not DURATION_RE.match(value):
        raise ValueError(f"{field}: {value!r} is not a duration like '10m' or '720h', or 'Never'")
    return float(sum(int(n) * _DURATION_UNITS[u] for n, u in re.findall(r"(\d+)([smh])", value)))


def check_dns_label(value: str, field: str) -> str:
    """A DNS-1123 label (namespaces, most object names)."""
    if not DNS1123_LABEL_RE.match(value):
        raise ValueError(
            f"{field}: {value!r} is not a DNS-1123 label (at most 63 lowercase letters, "
            "digits and '-', starting and ending with a letter or digit)"
        )
    return value


#: Namespaces an endpoint may never take (it creates, labels and deletes its own).
RESERVED_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})


def check_endpoint_namespace(value: str, field: str = "namespace") -> str:
    """The namespace an endpoint owns: a DNS-1123 label, not a system namespace."""
    check_dns_label(value, field)
    if value in RESERVED_NAMESPACES or value.startswith("kube-"):
        raise ValueError(
            f"{field}: {value!r} belongs to the cluster; an endpoint creates and deletes a "
            "namespace of its own"
        )
    return value


def check_dns_subdomain(value: str, field: str) -> str:
    """A DNS-1123 subdomain (StorageClass and other cluster-scoped names)."""
    if len(value) > DNS1123_SUBDOMAIN_MAX_LEN or not DNS1123_SUBDOMAIN_RE.match(value):
        raise ValueError(
            f"{field}: {value!r} is not a DNS-1123 subdomain (lowercase letters, digits, "
            "'-' and '.', at most 253 characters)"
        )
    return value


def check_quantity(value: str, field: str) -> str:
    """A Kubernetes resource quantity."""
    if not QUANTITY_RE.match(value):
        raise ValueError(f"{field}: {value!r} is not a Kubernetes quantity such as 4, 500m, 16Gi")
    return value


# -- names the components are given --------------------------------------------------


def check_name(value: str, field: str = "name") -> str:
    """An endpoint name: a DNS-1035 label of at most ``NAME_MAX_LEN`` characters."""
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise ValueError(
            f"{field}: {value!r} is not a DNS-1123 label of at most {NAME_MAX_LEN} characters "
            "(lowercase letters, digits and '-', starting with a letter and ending with a "
            "letter or digit)"
        )
    return value


def check_component_name(value: str, what: str) -> str:
    """The name the endpoint builder gives a component (``<endpoint><suffix>``).

    Components accept the longest such name (``COMPONENT_NAME_MAX_LEN``), so
    every endpoint name the spec accepts builds.
    """
    if (
        not isinstance(value, str)
        or len(value) > COMPONENT_NAME_MAX_LEN
        or not DNS1123_LABEL_RE.match(value)
        or not value[0].isalpha()
    ):
        raise ValueError(
            f"name: {value!r} must be a DNS-1035 label of at most {COMPONENT_NAME_MAX_LEN} "
            f"characters (it names the {what})"
        )
    return value


# -- models ---------------------------------------------------------------------------

#: A Hugging Face repository id: ``owner/name``, no ``--`` or ``..`` (the Hub
#: forbids both), nothing that a shell, template or argument parser treats
#: specially.
MODEL_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
#: A catalog alias such as ``llama3-8b`` (no owner part).
MODEL_ALIAS_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
MODEL_ID_MAX_LEN = 193


def check_model_id(value: str, field: str = "model") -> str:
    """A Hugging Face model id (it need not be in the catalog)."""
    if not MODEL_ID_RE.fullmatch(value) or "--" in value or ".." in value:
        raise ValueError(
            f"{field}: {value!r} is not a Hugging Face model id of the form owner/name "
            "(letters, digits, '_', '.', '-'; no '--' or '..')"
        )
    return value


#: An inline ``config.json`` (``model_config``), whether a request, a stack file or
#: the Hub gave it: at most this many bytes as compact JSON, this deep, and this
#: many values in all. Real configs are 1-60 KiB and 5 deep (a compressed-tensors
#: ``ignore`` list is the largest part), so these refuse only what is not a config.
MODEL_CONFIG_MAX_BYTES = 256 * 1024
MODEL_CONFIG_MAX_DEPTH = 12
MODEL_CONFIG_MAX_VALUES = 20_000


def check_model_config(value: object, field: str = "model_config") -> dict[str, object]:
    """A ``config.json`` object within the bounds above (walked without recursion).

    Raises:
        ValueError: naming the field and the bound, or what is not JSON in it.
    """
    if not isinstance(value, dict):
        raise ValueError(
            f"{field}: must be a JSON object (the model's config.json), got {type(value).__name__}"
        )
    stack: list[tuple[object, int]] = [(value, 1)]
    count = 0
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MODEL_CONFIG_MAX_VALUES:
            raise ValueError(f"{field}: more than {MODEL_CONFIG_MAX_VALUES} values in all")
        if isinstance(node, dict | list) and depth > MODEL_CONFIG_MAX_DEPTH:
            raise ValueError(f"{field}: nested deeper than {MODEL_CONFIG_MAX_DEPTH} levels")
        if isinstance(node, dict):
            if not all(isinstance(k, str) for k in node):
                raise ValueError(f"{field}: object keys must be strings")
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
        elif not (node is None or isinstance(node, str | int | float | bool)):
            raise ValueError(f"{field}: holds a {type(node).__name__}, which is not JSON")
    try:
        size = len(json.dumps(value, allow_nan=False, separators=(",", ":")).encode())
    except ValueError:
        raise ValueError(f"{field}: holds NaN or Infinity, which is not JSON") from None
    if size > MODEL_CONFIG_MAX_BYTES:
        raise ValueError(
            f"{field}: {size} bytes as JSON, more than the {MODEL_CONFIG_MAX_BYTES} allowed"
        )
    return value


# -- time to live -----------------------------------------------------------------------

TTL_RE = re.compile(r"^(\d{1,12})([mhd])$")
TTL_UNITS = {"m": "minutes", "h": "hours", "d": "days"}
MIN_TTL = timedelta(minutes=10)
MAX_TTL = timedelta(days=30)
TTL_MAX_LEN = 16


def parse_ttl(value: str | int | timedelta, field: str = "ttl") -> timedelta:
    """A time to live: ``30m``, ``8h``, ``2d`` or seconds, within ``MIN_TTL`` and ``MAX_TTL``.

    Raises:
        ValueError: naming the field; never an overflow, whatever the number.
    """
    if isinstance(value, timedelta):
        ttl = value
    elif isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value <= MAX_TTL.total_seconds():
            raise ValueError(f"{field}: {value!r} is outside the allowed range 10m to 30d")
        ttl = timedelta(seconds=value)
    elif isinstance(value, str) and (m := TTL_RE.match(value.strip())):
        try:
            ttl = timedelta(**{TTL_UNITS[m.group(2)]: int(m.group(1))})
        except OverflowError:
            ttl = timedelta.max  # refused just below, like any other too-long ttl
    else:
        raise ValueError(f"{field}: {value!r} is not a duration like '30m', '8h' or '2d'")
    if not MIN_TTL <= ttl <= MAX_TTL:
        raise ValueError(f"{field}: {value!r} is outside the allowed range 10m to 30d")
    return ttl


# -- exposure ---------------------------------------------------------------------------

MAX_CIDRS = 32


def check_exposure_cidrs(
    kind: str, cidrs: Sequence[str], field: str = "exposure.cidrs"
) -> list[str]:
    """Source CIDRs of an exposure kind (``cluster``, ``internal-alb``, ``public-alb``).

    One rule for every kind: a network that covers every address (``/0``) is
    refused whatever the ALB's scheme (an internal ALB with ``0.0.0.0/0``
    still admits every VPC and peered network); a public ALB needs an explicit
    list; a ClusterIP endpoint takes none.

    Returns:
        The CIDRs normalised (``ipaddress`` strict form).

    Raises:
        ValueError: naming the field and the offending network.
    """
    if len(cidrs) > MAX_CIDRS:
        raise ValueError(f"{field}: at most {MAX_CIDRS} networks, got {len(cidrs)}")
    out = []
    for cidr in cidrs:
        try:
            net = ipaddress.ip_network(cidr, strict=True)
        except (ValueError, TypeError) as e:
            raise ValueError(f"{field}: {cidr!r} is not a network CIDR ({e})") from None
        if net.prefixlen == 0:
            raise ValueError(
                f"{field}: {cidr} admits every address (0.0.0.0/0 and ::/0 are refused "
                "for every exposure); list the client networks instead, e.g. 203.0.113.0/24"
            )
        out.append(str(net))
    if kind == "public-alb" and not out:
        raise ValueError(
            f"{field}: a public-alb needs the source CIDRs allowed in, e.g. ['203.0.113.0/24']; "
            "use internal-alb for VPC-only access"
        )
    if kind == "cluster" and out:
        raise ValueError(f"{field}: applies only to ALB exposure (internal-alb or public-alb)")
    return out


# -- storage ----------------------------------------------------------------------------

#: A relative path such as ``owner/model``: the weights' folder or S3 key prefix.
PREFIX_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)*$")
PREFIX_MAX_LEN = 256
#: S3 bucket names (general purpose buckets): 3-63 characters.
BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
EFS_ID_RE = re.compile(r"^fs-[0-9a-f]{8,40}$")
#: FSx for Lustre SCRATCH_2 capacity steps (AWS FSx for Lustre user guide).
FSX_SCRATCH2_STEPS_GIB = (1200, 2400)


def check_prefix(value: str, field: str = "storage.prefix") -> str:
    """A relative path or key prefix (no leading or trailing ``/``, no ``..``)."""
    if len(value) > PREFIX_MAX_LEN or not PREFIX_RE.match(value) or ".." in value.split("/"):
        raise ValueError(
            f"{field}: {value!r} must be a relative path such as 'owner/model' (letters, "
            f"digits, '_', '.', '-', no leading or trailing '/', no '..', at most "
            f"{PREFIX_MAX_LEN} characters)"
        )
    return value


def check_bucket(value: str, field: str = "storage.bucket") -> str:
    """An S3 bucket name."""
    if not BUCKET_RE.match(value) or ".." in value:
        raise ValueError(
            f"{field}: {value!r} is not an S3 bucket name (3-63 lowercase letters, digits, "
            "'.' and '-')"
        )
    return value


def check_efs_id(value: str, field: str = "storage.file_system_id") -> str:
    """An EFS file system id."""
    if not EFS_ID_RE.match(value):
        raise ValueError(f"{field}: {value!r} is not an EFS file system id (fs-0123456789abcdef0)")
    return value


def check_fsx_size(size_gib: int, field: str = "storage.size_gib") -> int:
    """An FSx for Lustre SCRATCH_2 capacity: 1200, 2400 or a multiple of 2400 GiB."""
    small, step = FSX_SCRATCH2_STEPS_GIB
    if size_gib != small and size_gib % step:
        raise ValueError(
            f"{field}: FSx for Lustre SCRATCH_2 comes in {small} GiB or multiples of {step} GiB "
            f"({small}, {step}, {2 * step}, ...), got {size_gib}"
        )
    return size_gib


#: Which storage kinds each optional storage field applies to.
STORAGE_FIELD_KINDS: Mapping[str, tuple[str, ...]] = {
    "bucket": ("s3",),
    "storage_class": ("pvc",),
    "file_system_id": ("efs",),
}


def check_storage(
    kind: str,
    *,
    size_gib: int,
    prefetch: bool,
    bucket: str | None = None,
    storage_class: str | None = None,
    file_system_id: str | None = None,
    prefix: str | None = None,
    field_prefix: str = "storage.",
) -> None:
    """The rules of a weights volume, for the spec and ModelStorage alike.

    Args:
        kind: ``fsx``, ``s3``, ``efs``, ``pvc`` or ``none``.
        size_gib: Capacity.
        prefetch: Whether a Job downloads the weights before serving.
        bucket: s3: an existing bucket (None: a new one is created).
        storage_class: pvc: the StorageClass.
        file_system_id: efs: an existing file system.
        prefix: The weights' folder or key prefix.
        field_prefix: Prefix of the field names in errors (``storage.``).

    Raises:
        ValueError: naming the field.
    """
    given = {"bucket": bucket, "storage_class": storage_class, "file_system_id": file_system_id}
    for fld, value in given.items():
        if value is not None and kind not in STORAGE_FIELD_KINDS[fld]:
            kinds = " or ".join(repr(k) for k in STORAGE_FIELD_KINDS[fld])
            raise ValueError(f"{field_prefix}{fld}: applies only to storage kind {kinds}")
    if bucket is not None:
        check_bucket(bucket, f"{field_prefix}bucket")
    if storage_class is not None:
        check_dns_subdomain(storage_class, f"{field_prefix}storage_class")
    if file_system_id is not None:
        check_efs_id(file_system_id, f"{field_prefix}file_system_id")
    if prefix is not None:
        check_prefix(prefix, f"{field_prefix}prefix")
    if size_gib < 1:
        raise ValueError(f"{field_prefix}size_gib: must be at least 1, got {size_gib}")
    if kind == "fsx":
        check_fsx_size(size_gib, f"{field_prefix}size_gib")
    if prefetch and kind == "none":
        raise ValueError(
            f"{field_prefix}prefetch: kind 'none' has no volume to prefetch into; the weights "
            "are downloaded at start (set the kind to fsx, s3, efs or pvc to prefetch)"
        )
    if kind == "s3" and bucket is None and not prefetch:
        raise ValueError(
            f"{field_prefix}prefetch: a new bucket starts empty and S3 volumes are read-only; "
            "set prefetch: true, or give an existing bucket that holds the weights"
        )


# -- AWS ----------------------------------------------------------------------------------

ACM_ARN_RE = re.compile(r"^arn:aws[a-z-]*:acm:[a-z0-9-]+:[0-9]{12}:certificate/[0-9a-f-]+$")
#: Pulumi's auto-naming appends ``-`` and 7 random hex characters to a logical name.
AUTONAME_SUFFIX_LEN = 8
#: A ``name_prefix`` (IAM roles, EventBridge rules): AWS appends 26 characters.
NAME_PREFIX_MAX_LEN = 38
#: Name limits of the AWS resources the components let Pulumi auto-name
#: (IAM, S3, SQS, EC2 and EKS naming rules).
AWS_NAME_LIMITS: Mapping[str, int] = {
    "aws:iam/role:Role": 64,
    "aws:iam/policy:Policy": 128,
    "aws:s3/bucket:Bucket": 63,
    "aws:sqs/queue:Queue": 80,
    "aws:ec2/launchTemplate:LaunchTemplate": 128,
    "aws:ec2/placementGroup:PlacementGroup": 255,
    "aws:ec2/securityGroup:SecurityGroup": 255,
    "aws:eks/nodeGroup:NodeGroup": 63,
    "aws:cloudwatch/eventRule:EventRule": 64,
}


def name_prefix_for(resource_type: str, logical_name: str) -> str | None:
    """How an AWS resource is named: Pulumi's auto-name when it fits (None), else a prefix.

    Pulumi names a resource ``<logical name>-<7 hex>``; past the service's
    limit (:data:`AWS_NAME_LIMITS`) AWS refuses it, so a long logical name gets
    a truncated ``name_prefix`` instead, and AWS appends a unique suffix.
    Resources whose auto-name fits keep it (and so their physical names).
    """
    if len(logical_name) + AUTONAME_SUFFIX_LEN <= AWS_NAME_LIMITS[resource_type]:
        return None
    return logical_name[: NAME_PREFIX_MAX_LEN - 1].rstrip("-") + "-"
