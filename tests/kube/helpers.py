"""What a test against the local cluster uses: waits that explain themselves, and requests.

``Kube`` wraps the session's ``Cluster`` (``tests/kube/sim.py``) for tests that
deploy something (a stack, a manifest) and check what the cluster did: pods
Ready, where they run, their events, HTTP answers through the API server's
service proxy (or straight to a Service's ready endpoints, as an in-cluster
client would get them through kube-proxy), deletions, Karpenter's nodes. Every
wait polls with a generous deadline and, when it runs out, says what it saw:
the objects' conditions and events, Karpenter's NodeClaims and log, the fake
pod servers' state.
"""

from __future__ import annotations

import http.client
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.kube.api import Api, ApiError, Response, SimError, wait_for
from tests.kube.sim import Cluster, _conditions


def pod_ready(pod: Mapping[str, Any]) -> bool:
    """Whether a pod reports the Ready condition True."""
    conds = (pod.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)


def condition(obj: Mapping[str, Any], kind: str) -> dict[str, Any] | None:
    """One status condition of an object (None when it has none of that type)."""
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind:
            return dict(c)
    return None


class Kube:
    """The session's cluster as a stack test sees it.

    Attributes:
        cluster: The running ``Cluster``.
        api: A client of its API server (admin).
        kubeconfig: Its admin kubeconfig (for Pulumi, kubectl).
    """

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.api: Api = cluster.api
        self.kubeconfig: Path = cluster.kubeconfig

    # -- pods ---------------------------------------------------------------------

    def pods(self, namespace: str, selector: str = "") -> list[dict[str, Any]]:
        """The pods of a namespace matching a label selector."""
        return self.api.list_objects("v1", "Pod", namespace, selector=selector)

    def wait_pods_ready(
        self,
        namespace: str,
        selector: str,
        timeout: float = 180.0,
        *,
        count: int | None = None,
    ) -> list[dict[str, Any]]:
        """Wait until the selected pods exist and are all Ready.

        Args:
            namespace: Their namespace.
            selector: A label selector (``app.kubernetes.io/instance=x``).
            timeout: Seconds.
            count: How many there must be; at least one if None.

        Returns:
            The pods.

        Raises:
            SimError: on timeout, with each pod's phase, conditions, node and
                events, and the scheduler's and Karpenter's view.
        """

        def ready() -> list[dict[str, Any]] | None:
            pods = self.pods(namespace, selector)
            enough = len(pods) == count if count is not None else bool(pods)
            return pods if enough and all(pod_ready(p) for p in pods) else None

        what = f"pods {selector!r} in {namespace} to be Ready" + (
            f" ({count} of them)" if count is not None else ""
        )
        return list(
            wait_for(
                what,
                ready,
                timeout=timeout,
                interval=0.5,
                explain=lambda: self.pods_report(namespace, selector),
            )
        )

    def node_of(self, pod: Mapping[str, Any] | str, namespace: str | None = None) -> dict[str, Any]:
        """The Node a pod is bound to.

        Args:
            pod: The pod object, or its name (then give ``namespace``).
            namespace: The pod's namespace when ``pod`` is a name.

        Raises:
            SimError: when the pod is not bound to a node.
        """
        obj: Mapping[str, Any]
        if isinstance(pod, str):
            if namespace is None:
                raise SimError("node_of: give the namespace with a pod name")
            obj = self.api.get("v1", "Pod", pod, namespace)
        else:
            obj = pod
        node = (obj.get("spec") or {}).get("nodeName")
        meta = obj.get("metadata") or {}
        if not node:
            raise SimError(
                f"pod {meta.get('namespace')}/{meta.get('name')} is not bound to a node: "
                f"{_conditions(obj)}"
            )
        return dict(self.api.get("v1", "Node", node))

    def events_of(self, namespace: str, name: str) -> list[str]:
        """``Reason: message`` of the events about one object, oldest first."""
        return self.api.events(namespace, name)

    def delete_pod(
        self, namespace: str, name: str, *, wait: bool = True, timeout: float = 60.0
    ) -> None:
        """Delete a pod (as a node drain or a crash would end it) and wait until it is gone."""
        self.api.delete("v1", "Pod", name, namespace)
        if wait:
            self.wait_gone("Pod", name, namespace, api_version="v1", timeout=timeout)

    def wait_gone(
        self,
        kind: str,
        name: str,
        namespace: str | None = None,
        *,
        api_version: str | None = None,
        timeout: float = 120.0,
    ) -> None:
        """Wait until an object no longer exists (finalizers done).

        Args:
            kind: Its kind (``Pod``, ``RayService``, ``NodePool``...).
            name: Its name.
            namespace: Its namespace (None for cluster-scoped kinds).
            api_version: Its group/version; found by discovery if None.
            timeout: Seconds.
        """
        version = api_version or self.api.api_version_of(kind)

        def gone() -> bool:
            return self.api.get_or_none(version, kind, name, namespace) is None

        def explain() -> str:
            obj = self.api.get_or_none(version, kind, name, namespace) or {}
            meta = obj.get("metadata") or {}
            lines = [
                f"{kind} {name}: deletionTimestamp {meta.get('deletionTimestamp')}, "
                f"finalizers {meta.get('finalizers')}, {_conditions(obj)}"
            ]
            if namespace:
                lines += [f"  event: {e}" for e in self.events_of(namespace, name)[-10:]]
            return "\n".join(lines)

        where = f" in {namespace}" if namespace else ""
        wait_for(f"{kind} {name}{where} to be gone", gone, timeout=timeout, explain=explain)

    def wait_condition(
        self,
        api_version: str,
        kind: str,
        name: str,
        namespace: str | None = None,
        *,
        condition_type: str = "Ready",
        status: str = "True",
        timeout: float = 180.0,
    ) -> dict[str, Any]:
        """Wait until an object's status condition has a status; return the object.

        For the custom resources Pulumi does not await (RayService's ``Ready``,
        LeaderWorkerSet's ``Available``).
        """

        def reached() -> dict[str, Any] | None:
            obj = self.api.get_or_none(api_version, kind, name, namespace)
            c = condition(obj, condition_type) if obj else None
            return obj if c and c.get("status") == status else None

        def explain() -> str:
            obj = self.api.get_or_none(api_version, kind, name, namespace) or {}
            lines = [f"{kind} {name}: {_conditions(obj)}"]
            if namespace:
                lines += [f"  event: {e}" for e in self.events_of(namespace, name)[-15:]]
                lines.append(self.pods_report(namespace, ""))
            return "\n".join(lines)

        return dict(
            wait_for(
                f"{kind} {name} to report {condition_type}={status}",
                reached,
                timeout=timeout,
                interval=0.5,
                explain=explain,
            )
        )

    # -- HTTP to the pods ---------------------------------------------------------

    def proxy_request(
        self,
        method: str,
        namespace: str,
        service: str,
        port: int | str,
        path: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> Response:
        """A request to a Service through the API server's service proxy.

        ``/api/v1/namespaces/NS/services/NAME:PORT/proxy/PATH``: the API server
        picks a ready endpoint from the Service's EndpointSlices and forwards
        the request to the pod's IP, where ``serving.py`` answers for the
        container. The answer is the pod's (status, body), or the API server's
        503 when the Service has no ready endpoint.

        The API server removes the ``Authorization`` header of every request
        it authenticates (k8s.io/apiserver filters/authentication.go), so a
        bearer key never reaches the pod this way: use ``service_request`` for
        that (asking for it here raises, so a test cannot pass by accident).

        Raises:
            SimError: when ``headers`` carry ``Authorization``.
        """
        sent = dict(headers or {})
        if any(k.lower() == "authorization" for k in sent):
            raise SimError(
                "the API server strips Authorization from proxied requests "
                "(apiserver filters/authentication.go); use Kube.service_request to send a "
                "bearer key to the pods"
            )
        if body is not None:
            sent.setdefault("Content-Type", "application/json")
        proxied = f"/api/v1/namespaces/{namespace}/services/{service}:{port}/proxy"
        return self.api.raw(method, proxied + _slash(path), body, headers=sent, timeout=timeout)

    def proxy_get(
        self,
        namespace: str,
        service: str,
        port: int | str,
        path: str,
        headers: Mapping[str, str] | None = None,
        *,
        timeout: float = 30.0,
    ) -> Response:
        """GET through the API server's service proxy (see ``proxy_request``)."""
        return self.proxy_request(
            "GET", namespace, service, port, path, headers=headers, timeout=timeout
        )

    def service_endpoints(
        self, namespace: str, service: str, port: int | str
    ) -> list[tuple[str, int, str]]:
        """The ready endpoints of one Service port: (IP, target port, pod name).

        Read from the EndpointSlices the controller-manager keeps, as
        kube-proxy would.

        Raises:
            SimError: when the Service has no such port.
        """
        svc = self.api.get("v1", "Service", service, namespace)
        ports = svc["spec"].get("ports") or []
        match = [p for p in ports if p.get("name") == port or str(p.get("port")) == str(port)]
        if not match:
            raise SimError(f"Service {namespace}/{service} has no port {port!r}: {ports}")
        port_name = match[0].get("name", "")
        slices = self.api.list_objects(
            "discovery.k8s.io/v1",
            "EndpointSlice",
            namespace,
            selector=f"kubernetes.io/service-name={service}",
        )
        out = []
        for sl in slices:
            numbers = [p["port"] for p in sl.get("ports") or [] if p.get("name", "") == port_name]
            for ep in sl.get("endpoints") or []:
                ready = (ep.get("conditions") or {}).get("ready")
                if ready and numbers:
                    pod = (ep.get("targetRef") or {}).get("name", "")
                    out.append((ep["addresses"][0], int(numbers[0]), pod))
        return out

    def service_request(
        self,
        method: str,
        namespace: str,
        service: str,
        port: int | str,
        path: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> Response:
        """A request to a Service as an in-cluster client makes it (through kube-proxy).

        Sent straight to one of the Service's ready endpoints (the
        EndpointSlice controller's choice of pods; kube-proxy would balance
        over the same set), every header included. There is no kube-proxy or
        cluster DNS here, so this stands in for ``http://svc.ns:port``.

        Raises:
            SimError: when the Service has no ready endpoint (a client would
                get "connection refused" from kube-proxy's reject rule).
        """
        endpoints = self.service_endpoints(namespace, service, port)
        if not endpoints:
            raise SimError(
                f"Service {namespace}/{service} port {port} has no ready endpoints\n"
                + self.pods_report(namespace, "")
            )
        ip, number, _ = endpoints[0]
        sent = dict(headers or {})
        if body is not None:
            sent.setdefault("Content-Type", "application/json")
        conn = http.client.HTTPConnection(ip, number, timeout=timeout)
        try:
            conn.request(method, _slash(path), body=body, headers=sent)
            resp = conn.getresponse()
            data = resp.read()
            return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
        finally:
            conn.close()

    def service_get(
        self,
        namespace: str,
        service: str,
        port: int | str,
        path: str,
        headers: Mapping[str, str] | None = None,
        *,
        timeout: float = 30.0,
    ) -> Response:
        """GET as an in-cluster client (see ``service_request``)."""
        return self.service_request(
            "GET", namespace, service, port, path, headers=headers, timeout=timeout
        )

    # -- Karpenter ----------------------------------------------------------------

    def karpenter_report(self, nodepool: str | None = None) -> str:
        """NodePools, NodeClaims (conditions), their nodes and Karpenter's log tail."""
        return self.cluster.karpenter_report(nodepool)

    def hurry_consolidation(
        self, nodepool: str, consolidate_after: str = "0s", *, budget: str | None = None
    ) -> None:
        """Make Karpenter remove a NodePool's empty nodes now (``consolidateAfter``).

        The project's pools wait 10 minutes; Karpenter has no global setting
        for it, so the harness patches the NodePool (a merge patch, which takes
        the fields from Pulumi's field manager: run it after the last ``up``).

        Args:
            nodepool: The NodePool.
            consolidate_after: The new ``consolidateAfter``.
            budget: Replace the disruption budgets by one allowing this many
                nodes at once (``"100%"``); None keeps the pool's. Karpenter
                removes at most the budget's nodes per disruption round, and a
                round takes ~25 s here (10 s polling, 15 s validation), so with
                the project's ``nodes: 1`` budget N empty nodes take ~25 s x N.
        """
        disruption: dict[str, Any] = {"consolidateAfter": consolidate_after}
        if budget is not None:
            disruption["budgets"] = [{"nodes": budget}]
        self.api.merge_patch(
            "karpenter.sh/v1", "NodePool", nodepool, {"spec": {"disruption": disruption}}
        )

    def wait_nodepool_empty(self, nodepool: str, timeout: float | None = None) -> None:
        """Wait until Karpenter has removed every node and NodeClaim of a NodePool.

        Karpenter's disruption controller looks for empty nodes every 10 s,
        waits out ``consolidateAfter`` (see ``hurry_consolidation``), validates
        for 15 s, and removes as many nodes as the pool's budget allows per
        round (one, with the project's budgets; the default is 10%, rounded up).

        Args:
            nodepool: The NodePool.
            timeout: Seconds; by default 60 s plus 40 s per node it has now.
        """
        selector = f"karpenter.sh/nodepool={nodepool}"
        if timeout is None:
            timeout = 60.0 + 40.0 * len(self.api.list_objects("v1", "Node", selector=selector))

        def empty() -> bool:
            nodes = self.api.list_objects("v1", "Node", selector=selector)
            claims = self.api.list_objects("karpenter.sh/v1", "NodeClaim", selector=selector)
            return not nodes and not claims

        wait_for(
            f"Karpenter to remove the nodes of NodePool {nodepool}",
            empty,
            timeout=timeout,
            interval=1.0,
            explain=lambda: self.karpenter_report(nodepool),
        )

    def wait_pod_on_new_node(
        self, namespace: str, pod: str, timeout: float = 240.0
    ) -> dict[str, Any]:
        """Wait until a pod Karpenter provisions for is Ready; return its node.

        On timeout the error carries the pod's conditions and events and
        ``karpenter_report`` (NodeClaims and their conditions, Karpenter's log).
        """

        def running() -> str | None:
            p = self.api.get("v1", "Pod", pod, namespace)
            return str(p["spec"]["nodeName"]) if pod_ready(p) else None

        def explain() -> str:
            return self.pods_report(namespace, "", only=pod) + "\n" + self.karpenter_report()

        name = wait_for(
            f"Karpenter to launch a node for pod {namespace}/{pod}",
            running,
            timeout=timeout,
            interval=0.5,
            explain=explain,
        )
        return dict(self.api.get("v1", "Node", name))

    # -- reports ------------------------------------------------------------------

    def pods_report(self, namespace: str, selector: str, *, only: str | None = None) -> str:
        """Each pod's phase, conditions, node, IP and recent events, and the fake servers."""
        lines = [f"pods in {namespace}" + (f" ({selector})" if selector else "") + ":"]
        try:
            pods = self.pods(namespace, selector)
        except (ApiError, OSError) as e:
            return f"(could not list pods: {e})"
        for p in pods:
            meta, st = p["metadata"], p.get("status") or {}
            if only and meta["name"] != only:
                continue
            lines.append(
                f"  {meta['name']}: {st.get('phase')} on {p['spec'].get('nodeName')!r} "
                f"ip {st.get('podIP')!r}; {_conditions(p)}"
            )
            lines += [f"    event: {e}" for e in self.events_of(namespace, meta["name"])[-8:]]
        if len(lines) == 1:
            lines.append("  (none)")
        if self.cluster.pod_servers is not None:
            lines.append(self.cluster.pod_servers.describe())
        return "\n".join(lines)


def _slash(path: str) -> str:
    return path if path.startswith("/") else "/" + path
