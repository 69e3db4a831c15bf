"""The reference stacks on the local control plane: their Kubernetes side, for real.

:func:`on_the_sim` turns a stack file's endpoint spec into the one this cluster
can take, changing only what needs AWS and nothing a pod's placement depends
on:

* ``cluster``: ``existing``, the local cluster's kubeconfig (Auto Mode
  declared for an ``auto-mode`` pool, as an Auto Mode cluster would be).
* ``pool``: a ``karpenter`` or ``auto-mode`` pool keeps its mode, instance
  types, capacity types and limits, and points at Karpenter's KWOK node class
  (the KWOK provider launches no EC2NodeClass); a ``managed`` pool's node group
  is pre-created as EKS would make it (``Cluster.add_managed_node_group``:
  the pool's labels and taint, EFA interfaces) and the spec uses it as an
  existing cluster's nodes (``none``).
* ``storage``: FSx and S3 (AWS file systems) become a ``pvc`` of the same size
  on a pre-created PersistentVolume; prefetch stays (its Job runs).
* ``exposure``: an ALB (no load balancer controller here) becomes ``cluster``.

:func:`deploy` and :func:`destroy` run the real Pulumi engine (the project's
``StackService``, its pinned CLI and kubernetes provider) with a deadline.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import yaml

from automation.settings import Settings
from automation.stacks import ApiKey, StackResult, StackService
from components.config import EndpointSpec, parse_spec
from tests.kube.helpers import Kube
from tests.kube.nodes import KWOK_NODE_CLASS_REF

REPO = Path(__file__).resolve().parents[2]
#: The StorageClass name of the pre-created volumes (no provisioner: static binding).
SIM_STORAGE_CLASS = "kube-sim-static"
#: The endpoint key every stack test deploys with.
API_KEY = "llme-" + "5" * 48


def stack_file_spec(stack: str) -> dict[str, Any]:
    """The ``llm-endpoints:endpoint`` object of ``stacks/Pulumi.<stack>.yaml``."""
    data = yaml.safe_load((REPO / "stacks" / f"Pulumi.{stack}.yaml").read_text())
    return copy.deepcopy(data["config"]["llm-endpoints:endpoint"])


@dataclass
class SimPlan:
    """What a reference spec needs on this cluster before ``up``.

    Attributes:
        spec: The spec to deploy.
        managed_nodes: (instance type, count, EFA) of a node group to pre-create.
        volume_gib: Size of a PersistentVolume to pre-create, or 0.
        changed: What was changed and why (for the test's report).
    """

    spec: dict[str, Any]
    managed_nodes: tuple[str, int, bool] | None = None
    volume_gib: int = 0
    changed: list[str] = field(default_factory=list)


def on_the_sim(raw: dict[str, Any], kube: Kube, *, name: str | None = None) -> SimPlan:
    """The spec of a stack file as this cluster takes it (see the module docstring)."""
    spec = copy.deepcopy(raw)
    if name:
        spec["name"] = name
    plan = SimPlan(spec)
    pool = dict(spec.get("pool") or {})
    mode = pool.get("mode")
    cluster: dict[str, Any] = {"mode": "existing", "kubeconfig": str(kube.kubeconfig)}
    if mode in ("karpenter", "auto-mode"):
        pool["node_class"] = dict(KWOK_NODE_CLASS_REF)
        plan.changed.append(f"pool: {mode} NodePool on Karpenter's KWOK node class")
        if mode == "auto-mode":
            cluster["auto_mode"] = True
    elif mode == "managed":
        instance = spec["instance_type"]
        count = max(int(pool.get("max_nodes", 1)), int(spec.get("pipeline_parallel", 1)))
        plan.managed_nodes = (instance, count, bool(pool.get("efa")))
        pool = {"mode": "none"}
        plan.changed.append(f"pool: managed node group pre-created ({count} x {instance})")
    spec["pool"] = pool
    spec["cluster"] = cluster
    storage = dict(spec.get("storage") or {})
    kind = storage.get("kind", "none")
    if kind in ("fsx", "s3", "pvc"):
        size = int(storage.get("size_gib") or 200)
        storage = {
            "kind": "pvc",
            "size_gib": size,
            "storage_class": SIM_STORAGE_CLASS,
            "prefetch": bool(storage.get("prefetch", kind != "pvc")),
        }
        plan.volume_gib = size
        if kind != "pvc":
            plan.changed.append(f"storage: {kind} as a {size} GiB PersistentVolume")
    spec["storage"] = storage
    exposure = dict(spec.get("exposure") or {})
    if exposure.get("kind", "cluster") != "cluster":
        plan.changed.append(f"exposure: {exposure['kind']} as cluster (no ALB here)")
        spec["exposure"] = {"kind": "cluster"}
    return plan


def persistent_volume(kube: Kube, name: str, gib: int) -> None:
    """A PersistentVolume a claim of :data:`SIM_STORAGE_CLASS` binds to."""
    kube.api.apply(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": name, "labels": {"kube-sim/test-volume": name}},
            "spec": {
                "capacity": {"storage": f"{gib}Gi"},
                "accessModes": ["ReadWriteOnce", "ReadWriteMany", "ReadOnlyMany"],
                "storageClassName": SIM_STORAGE_CLASS,
                "persistentVolumeReclaimPolicy": "Delete",
                "hostPath": {"path": f"/tmp/kube-sim-volumes/{name}"},
            },
        }
    )


@dataclass
class Deployed:
    """An endpoint stack on the cluster."""

    spec: EndpointSpec
    outputs: dict[str, Any]
    result: StackResult
    log: list[str]


class Engine:
    """The project's StackService on a private state folder, with deadlines."""

    def __init__(self, state: Path) -> None:
        self.settings = Settings(state_dir=state)
        self.service = StackService(self.settings)
        self.work = state / "work"

    def deploy(self, spec: dict[str, Any], *, timeout: float = 420.0) -> Deployed:
        parsed = parse_spec(spec)
        log: list[str] = []
        with _deadline(timeout, f"pulumi up of {parsed.name}", log):
            result = self.service.up(
                parsed,
                work_dir=self.work / f"up-{parsed.name}",
                hf_token="hf_kubeSimToken0123456789",
                api_key=ApiKey(API_KEY, 1),
                on_output=log.append,
            )
        return Deployed(parsed, dict(result.outputs), result, log)

    def destroy(self, name: str, *, timeout: float = 300.0) -> StackResult:
        log: list[str] = []
        with _deadline(timeout, f"pulumi destroy of {name}", log):
            return self.service.destroy(
                name, work_dir=self.work / f"destroy-{name}", on_output=log.append
            )


@contextmanager
def _deadline(seconds: float, what: str, log: list[str]) -> Iterator[None]:
    """Cancel the engine (SIGINT to this process's pulumi CLIs, as Ctrl-C would)
    when ``what`` outlasts ``seconds``; the error then carries the log's tail."""
    fired = threading.Event()

    def cancel() -> None:
        fired.set()
        for child in psutil.Process().children(recursive=True):
            try:
                if child.name() == "pulumi":
                    child.send_signal(2)
            except psutil.Error:
                continue

    timer = threading.Timer(seconds, cancel)
    timer.start()
    try:
        yield
    except Exception as e:
        tail = "\n".join(log[-40:])
        why = f"{what} ran past {seconds:g}s and was cancelled" if fired.is_set() else what
        raise AssertionError(f"{why}: {e}\n--- engine output (tail) ---\n{tail}") from e
    finally:
        timer.cancel()
