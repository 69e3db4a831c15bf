"""The worker's scheduling verdicts and the endpoint's pod health, over API objects
shaped like the Kubernetes client's (the real API is in tests/kube)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace as NS
from typing import Any

from automation.kube import Health, PodState, SchedulingWatch, pod_health, pod_state

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def pod(name: str, *, scheduled: tuple[str, str, str] | None = None, ready: bool = False,
        waiting: tuple[str, str] | None = None, phase: str = "Pending") -> Any:  # fmt: skip
    conditions = []
    if scheduled is not None:
        status, reason, message = scheduled
        conditions.append(NS(type="PodScheduled", status=status, reason=reason, message=message))
    conditions.append(NS(type="Ready", status="True" if ready else "False", reason="", message=""))
    statuses = []
    if waiting is not None:
        statuses.append(
            NS(name="vllm", state=NS(waiting=NS(reason=waiting[0], message=waiting[1])))
        )
    return NS(
        metadata=NS(name=name, deletion_timestamp=None),
        status=NS(
            phase=phase,
            conditions=conditions,
            container_statuses=statuses,
            init_container_statuses=[],
        ),
    )


def event(pod_name: str, reason: str, component: str, message: str, at: int) -> Any:
    return NS(
        reason=reason,
        message=message,
        source=NS(component=component),
        reporting_component=component,
        last_timestamp=T0 + timedelta(seconds=at),
        event_time=None,
        metadata=NS(creation_timestamp=T0),
        involved_object=NS(name=pod_name),
    )


class FakeCore:
    def __init__(self) -> None:
        self.pods: list[Any] = []
        self.events: list[Any] = []

    def list_namespaced_pod(self, _ns: str, **_kw: Any) -> Any:
        return NS(items=self.pods)

    def list_namespaced_event(self, _ns: str, **_kw: Any) -> Any:
        return NS(items=self.events)


UNSCHED = ("False", "Unschedulable", "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.")


def test_a_standing_scheduler_verdict_ends_the_wait_after_the_grace() -> None:
    core, now = FakeCore(), [0.0]
    lines: list[str] = []
    watch = SchedulingWatch(core, "ns", grace_s=30, clock=lambda: now[0], report=lines.append)
    core.pods = [pod("ep-0", scheduled=UNSCHED)]
    assert watch.poll() is None
    now[0] = 29.0
    assert watch.poll() is None
    now[0] = 30.0
    verdict = watch.poll()
    assert verdict == f"pod ep-0 cannot be scheduled: {UNSCHED[2]}"
    # Said once, not on every poll.
    assert lines == [f"[watch] pod ep-0 cannot be scheduled: {UNSCHED[2]}"]


def test_karpenters_own_verdict_is_the_reason_given() -> None:
    core, now = FakeCore(), [0.0]
    watch = SchedulingWatch(core, "ns", grace_s=30, clock=lambda: now[0])
    core.pods = [pod("ep-0", scheduled=UNSCHED)]
    why = 'Failed to schedule pod, incompatible with nodepool "ep-pool", no instance type satisfied'
    core.events = [
        event("ep-0", "FailedScheduling", "default-scheduler", UNSCHED[2], 0),
        event("ep-0", "FailedScheduling", "karpenter", why, 1),
    ]
    watch.poll()
    now[0] = 31.0
    assert watch.poll() == f"pod ep-0 cannot be scheduled: {why}"


def test_a_pod_karpenter_nominated_is_waiting_for_its_node_not_stuck() -> None:
    core, now = FakeCore(), [0.0]
    watch = SchedulingWatch(core, "ns", grace_s=30, clock=lambda: now[0])
    core.pods = [pod("ep-0", scheduled=UNSCHED)]
    core.events = [
        event("ep-0", "FailedScheduling", "default-scheduler", UNSCHED[2], 0),
        event("ep-0", "Nominated", "karpenter", "Pod should schedule on: nodeclaim/ep-x", 2),
    ]
    for t in (0.0, 40.0, 400.0):
        now[0] = t
        assert watch.poll() is None


def test_a_verdict_that_clears_starts_over() -> None:
    core, now = FakeCore(), [0.0]
    watch = SchedulingWatch(core, "ns", grace_s=30, clock=lambda: now[0])
    core.pods = [pod("ep-0", scheduled=UNSCHED)]
    watch.poll()
    now[0] = 20.0
    core.pods = [pod("ep-0", scheduled=("True", "", ""), phase="Running")]
    assert watch.poll() is None
    now[0] = 25.0
    core.pods = [pod("ep-1", scheduled=UNSCHED)]  # the replacement, stuck anew
    assert watch.poll() is None
    now[0] = 54.0
    assert watch.poll() is None
    now[0] = 55.0
    assert watch.poll() is not None


def test_pod_states_say_why_a_pod_is_not_ready() -> None:
    assert pod_state(pod("a", ready=True, phase="Running")) == PodState("a", "Running", True)
    assert pod_state(pod("b", scheduled=UNSCHED)).reason == f"not scheduled: {UNSCHED[2]}"
    stuck = pod_state(
        pod(
            "c",
            scheduled=("True", "", ""),
            waiting=("CreateContainerConfigError", 'secret "ep-api-key" not found'),
        )
    )
    assert stuck.reason == 'vllm: CreateContainerConfigError (secret "ep-api-key" not found)'
    assert pod_state(pod("d", scheduled=("True", "", ""), phase="Running")).reason == "starting"


def test_health_is_serving_only_when_every_pod_is_ready() -> None:
    core = FakeCore()
    core.pods = [pod("ep-1", ready=True, phase="Running"), pod("ep-0", scheduled=UNSCHED)]
    h = pod_health(core, "ns", "ep")
    assert [p.name for p in h.pods] == ["ep-0", "ep-1"] and not h.serving
    assert h.detail.startswith("1/2 pods ready; ep-0 is Pending: not scheduled: 0/3 nodes")
    core.pods = [pod("ep-1", ready=True, phase="Running")]
    assert pod_health(core, "ns", "ep").serving
    assert not Health().serving and Health().detail == "no pods"


def test_an_unreachable_cluster_is_reported_not_raised() -> None:
    class Down(FakeCore):
        def list_namespaced_pod(self, _ns: str, **_kw: Any) -> Any:
            raise ConnectionRefusedError("connection refused")

    h = pod_health(Down(), "ns", "ep")
    assert not h.serving and h.detail.startswith("cannot read the pods: ConnectionRefusedError")
