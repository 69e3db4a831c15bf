"""What an endpoint's pods are doing on its cluster, read through the Kubernetes API.

Two readers over one namespace (every endpoint has its own):

* :func:`pod_health`: the endpoint's pods right now (ready or not, and why
  not), for ``GET /v1/endpoints/{name}``.
* :class:`SchedulingWatch`: polled by the worker while ``pulumi up`` waits for
  the pods. A pod that cannot be placed is a verdict, not a wait: the
  scheduler says so in the pod's ``PodScheduled`` condition and Karpenter in a
  ``FailedScheduling`` event; a pod Karpenter has nominated for a new node is
  still on its way. A verdict that stands for :data:`VERDICT_GRACE_S` ends the
  operation with that reason, instead of Pulumi waiting out its timeout.

Only reads (list pods, list events) are made; the kubeconfig is the target's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: How long a scheduling verdict must stand before the operation fails on it
#: (a node being added, or a pod being replaced, gets this long to resolve it).
VERDICT_GRACE_S = 30.0
#: Container waiting reasons that explain a pod that is not ready.
STUCK_REASONS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "CrashLoopBackOff",
    }
)
ENDPOINT_LABEL = "llm-endpoints/endpoint"
#: Karpenter's events on pods (pkg/controllers/provisioning and scheduling).
KARPENTER_NOMINATED = "Nominated"
FAILED_SCHEDULING = "FailedScheduling"


def core_api(kubeconfig: Path) -> Any:
    """A CoreV1Api for a kubeconfig file (exec credential plugins included)."""
    from kubernetes import client, config

    return client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))


@dataclass(frozen=True)
class PodState:
    """One pod of an endpoint.

    Attributes:
        name: The pod.
        phase: Pending, Running, ...
        ready: Its Ready condition is True.
        reason: Why it is not ready (scheduling, image, config), or "".
    """

    name: str
    phase: str
    ready: bool
    reason: str = ""


@dataclass(frozen=True)
class Health:
    """An endpoint's pods: all ready (serving), or what holds them back."""

    pods: list[PodState] = field(default_factory=list)
    error: str = ""

    @property
    def serving(self) -> bool:
        return bool(self.pods) and all(p.ready for p in self.pods) and not self.error

    @property
    def detail(self) -> str:
        if self.error:
            return self.error
        if not self.pods:
            return "no pods"
        waiting = [p for p in self.pods if not p.ready]
        if not waiting:
            return f"{len(self.pods)}/{len(self.pods)} pods ready"
        first = waiting[0]
        why = f": {first.reason}" if first.reason else ""
        return (
            f"{len(self.pods) - len(waiting)}/{len(self.pods)} pods ready; "
            f"{first.name} is {first.phase}{why}"
        )


def _condition(pod: Any, kind: str) -> Any:
    for c in (pod.status.conditions or []) if pod.status else []:
        if c.type == kind:
            return c
    return None


def pod_state(pod: Any) -> PodState:
    """A pod's readiness and, when not ready, the first reason the API gives."""
    name, phase = pod.metadata.name, (pod.status.phase if pod.status else "") or "Unknown"
    ready = _condition(pod, "Ready")
    if ready is not None and ready.status == "True":
        return PodState(name, phase, True)
    if pod.metadata.deletion_timestamp is not None:
        return PodState(name, phase, False, "terminating")
    scheduled = _condition(pod, "PodScheduled")
    if scheduled is not None and scheduled.status == "False":
        return PodState(
            name, phase, False, f"not scheduled: {scheduled.message or scheduled.reason}"
        )
    statuses = [*(pod.status.init_container_statuses or []), *(pod.status.container_statuses or [])]
    for cs in statuses:
        waiting = cs.state.waiting if cs.state else None
        if waiting is not None and waiting.reason:
            msg = f" ({waiting.message})" if waiting.message else ""
            return PodState(name, phase, False, f"{cs.name}: {waiting.reason}{msg}")
    return PodState(name, phase, False, "starting" if phase == "Running" else "")


def pod_health(core: Any, namespace: str, endpoint: str, timeout_s: float = 3.0) -> Health:
    """The endpoint's pods now (an unreachable cluster is reported, not raised)."""
    try:
        pods = core.list_namespaced_pod(
            namespace, label_selector=f"{ENDPOINT_LABEL}={endpoint}", _request_timeout=timeout_s
        ).items
    except Exception as e:  # the cluster's answer (or its absence) is the report
        return Health(error=f"cannot read the pods: {type(e).__name__}: {str(e)[:200]}")
    return Health([pod_state(p) for p in sorted(pods, key=lambda p: p.metadata.name)])


class SchedulingWatch:
    """Decides, poll by poll, whether an endpoint's pods cannot be placed.

    Args:
        core: CoreV1Api of the target cluster.
        namespace: The endpoint's namespace.
        grace_s: How long a verdict must stand (:data:`VERDICT_GRACE_S`).
        clock: Monotonic seconds (tests pass their own).
        report: Receives a line whenever what holds a pod back changes.
    """

    def __init__(
        self,
        core: Any,
        namespace: str,
        *,
        grace_s: float = VERDICT_GRACE_S,
        clock: Callable[[], float] = time.monotonic,
        report: Callable[[str], None] | None = None,
    ) -> None:
        self.core, self.namespace, self.grace_s = core, namespace, grace_s
        self.clock, self.report = clock, report
        self._since: dict[str, float] = {}
        self._said: dict[str, str] = {}

    def _events(self) -> dict[str, tuple[str, str]]:
        """The latest Karpenter/scheduler verdict per pod: (reason, message)."""
        latest: dict[str, tuple[Any, str, str]] = {}
        events = self.core.list_namespaced_event(
            self.namespace, field_selector="involvedObject.kind=Pod", _request_timeout=5
        ).items
        for ev in events:
            if ev.reason not in (KARPENTER_NOMINATED, FAILED_SCHEDULING):
                continue
            source = (ev.source.component if ev.source else "") or ev.reporting_component or ""
            when = ev.last_timestamp or ev.event_time or ev.metadata.creation_timestamp
            pod = ev.involved_object.name
            if pod not in latest or (when and latest[pod][0] and when >= latest[pod][0]):
                tag = "karpenter" if "karpenter" in source else "scheduler"
                latest[pod] = (when, f"{tag}:{ev.reason}", ev.message or "")
        return {pod: (reason, msg) for pod, (_w, reason, msg) in latest.items()}

    def poll(self) -> str | None:
        """One look; the verdict (naming the pod and the reason) once it has stood
        for ``grace_s``, else None."""
        now = self.clock()
        pods = self.core.list_namespaced_pod(self.namespace, _request_timeout=5).items
        events = self._events()
        stuck: set[str] = set()
        for pod in pods:
            name = pod.metadata.name
            scheduled = _condition(pod, "PodScheduled")
            if scheduled is None or scheduled.status != "False":
                continue
            reason, message = events.get(name, ("", ""))
            if reason == f"karpenter:{KARPENTER_NOMINATED}":
                self._say(name, f"waiting for a new node: {message}")
                continue  # a node is on its way
            why = message if reason == f"karpenter:{FAILED_SCHEDULING}" else ""
            why = why or scheduled.message or scheduled.reason or "unschedulable"
            stuck.add(name)
            self._since.setdefault(name, now)
            self._say(name, f"cannot be scheduled: {why}")
            if now - self._since[name] >= self.grace_s:
                return f"pod {name} cannot be scheduled: {why}"
        for name in list(self._since):
            if name not in stuck:
                del self._since[name]
        return None

    def _say(self, pod: str, line: str) -> None:
        if self.report is not None and self._said.get(pod) != line:
            self._said[pod] = line
            self.report(f"[watch] pod {pod} {line}")
