"""A small client of the local control plane's API server, on the standard library only.

JSON over HTTPS with a client certificate (``http.client`` and ``ssl``): requests,
raw answers (for the service proxy, whose answers are the pods' own), watches,
discovery, and the polling helper every wait in the harness uses. Split out of
``tests/kube/sim.py`` so that the pieces built on it (the fake pod processes in
``serving.py``, the test helpers) need not import the whole cluster.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any


class SimError(RuntimeError):
    """The local control plane could not be set up or did not do what was asked."""


@dataclass(frozen=True)
class _Cert:
    cert: Path
    key: Path


class ApiError(SimError):
    """The API server answered with an error status.

    Attributes:
        status: HTTP status.
        body: The decoded Status object (or ``{"message": text}``).
    """

    def __init__(self, method: str, path: str, status: int, body: dict[str, Any]) -> None:
        self.status = status
        self.body = body
        super().__init__(f"{method} {path}: {status} {body.get('message', body)}")


@dataclass(frozen=True)
class Response:
    """An HTTP answer as it came back (the service proxy passes the pod's through).

    Attributes:
        status: HTTP status.
        headers: Response headers (names lower-cased).
        body: The raw body.
    """

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    @property
    def text(self) -> str:
        """The body as text."""
        return self.body.decode(errors="replace")

    def json(self) -> Any:
        """The body decoded as JSON.

        Raises:
            SimError: when it is not JSON (naming the status and the start of the body).
        """
        try:
            return json.loads(self.body)
        except json.JSONDecodeError:
            raise SimError(f"expected JSON, got {self.status}: {self.text[:300]!r}") from None


@dataclass(frozen=True)
class _Resource:
    plural: str
    namespaced: bool
    group_version: str


class Api:
    """A small client of the API server: JSON over HTTPS with a client certificate."""

    def __init__(self, host: str, port: int, ca: Path, cert: _Cert) -> None:
        self.host, self.port = host, port
        self._ctx = ssl.create_default_context(cafile=str(ca))
        self._ctx.load_cert_chain(str(cert.cert), str(cert.key))
        self._resources: dict[tuple[str, str], _Resource] = {}
        self._kinds: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    def _connection(self, timeout: float) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(self.host, self.port, context=self._ctx, timeout=timeout)

    def raw(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> Response:
        """Send one request; return the answer whatever its status.

        Raises:
            OSError: when the API server cannot be reached.
        """
        conn = self._connection(timeout)
        try:
            conn.request(method, path, body=body, headers=dict(headers or {}))
            resp = conn.getresponse()
            data = resp.read()
            return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
        finally:
            conn.close()

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        timeout: float = 30.0,
    ) -> Any:
        """Send one request; return the decoded JSON answer.

        Raises:
            ApiError: for an error status.
        """
        data = (
            None
            if body is None
            else (body if isinstance(body, bytes) else json.dumps(body).encode())
        )
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = content_type
        resp = self.raw(method, path, data, headers=headers, timeout=timeout)
        try:
            decoded = json.loads(resp.body) if resp.body else {}
        except json.JSONDecodeError:
            decoded = {"message": resp.text}
        if resp.status >= 400:
            raise ApiError(method, path, resp.status, decoded if isinstance(decoded, dict) else {})
        return decoded

    def resource(self, api_version: str, kind: str) -> _Resource:
        """Look a kind up by discovery (cached; refreshed when a kind is new)."""
        key = (api_version, kind)
        if key not in self._resources:
            base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
            for r in self.request("GET", base)["resources"]:
                if "/" not in r["name"]:
                    self._resources[(api_version, r["kind"])] = _Resource(
                        r["name"], r["namespaced"], api_version
                    )
        if key not in self._resources:
            raise SimError(f"the API server serves no kind {kind!r} in {api_version!r}")
        return self._resources[key]

    def api_version_of(self, kind: str) -> str:
        """The preferred group/version serving a kind (``"Deployment"`` -> ``"apps/v1"``).

        Raises:
            SimError: when no group serves it, or several do (pass the version then).
        """
        with self._lock:
            if kind not in self._kinds:
                self._discover_kinds()
            found = self._kinds.get(kind, [])
        if len(found) != 1:
            what = f"several groups ({', '.join(found)})" if found else "no group"
            raise SimError(f"{what} serve kind {kind!r}; name its api_version")
        return found[0]

    def _discover_kinds(self) -> None:
        self._kinds = {}
        versions = ["v1"] + [
            g["preferredVersion"]["groupVersion"] for g in self.request("GET", "/apis")["groups"]
        ]
        for gv in versions:
            base = "/api/v1" if gv == "v1" else f"/apis/{gv}"
            for r in self.request("GET", base)["resources"]:
                if "/" not in r["name"]:
                    self._kinds.setdefault(r["kind"], []).append(gv)

    def path(
        self, api_version: str, kind: str, namespace: str | None = None, name: str = ""
    ) -> str:
        """The REST path of a kind, optionally of one named object."""
        r = self.resource(api_version, kind)
        base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        if r.namespaced:
            if not namespace:
                raise SimError(f"{kind} is namespaced: give a namespace")
            base += f"/namespaces/{namespace}"
        return f"{base}/{r.plural}" + (f"/{name}" if name else "")

    def apply(self, obj: Mapping[str, Any], *, manager: str = "kube-sim") -> Any:
        """Server-side apply an object (created or updated, conflicts forced)."""
        meta = obj["metadata"]
        path = self.path(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])
        query = urllib.parse.urlencode({"fieldManager": manager, "force": "true"})
        return self.request(
            "PATCH", f"{path}?{query}", obj, content_type="application/apply-patch+yaml"
        )

    def merge_patch(
        self,
        api_version: str,
        kind: str,
        name: str,
        patch: Mapping[str, Any],
        namespace: str | None = None,
    ) -> Any:
        """JSON-merge-patch one object (e.g. a label, a field the harness overrides)."""
        return self.request(
            "PATCH",
            self.path(api_version, kind, namespace, name),
            dict(patch),
            content_type="application/merge-patch+json",
        )

    def create(self, obj: Mapping[str, Any]) -> Any:
        """Create an object (POST); fails if it exists."""
        meta = obj["metadata"]
        return self.request(
            "POST", self.path(obj["apiVersion"], obj["kind"], meta.get("namespace")), obj
        )

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> Any:
        """Read one object."""
        return self.request("GET", self.path(api_version, kind, namespace, name))

    def get_or_none(
        self, api_version: str, kind: str, name: str, namespace: str | None = None
    ) -> dict[str, Any] | None:
        """Read one object; None when it does not exist."""
        try:
            return dict(self.get(api_version, kind, name, namespace))
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    def list_objects(
        self, api_version: str, kind: str, namespace: str | None = None, *, selector: str = ""
    ) -> list[Any]:
        """List objects (of one namespace, or cluster-wide for cluster-scoped kinds)."""
        r = self.resource(api_version, kind)
        if r.namespaced and namespace is None:
            base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
            path = f"{base}/{r.plural}"
        else:
            path = self.path(api_version, kind, namespace)
        if selector:
            path += "?" + urllib.parse.urlencode({"labelSelector": selector})
        return [dict(i) for i in self.request("GET", path)["items"]]

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> None:
        """Delete one object (background propagation); absent is fine."""
        with contextlib.suppress(ApiError):
            self.request(
                "DELETE",
                self.path(api_version, kind, namespace, name),
                {"propagationPolicy": "Background"},
            )

    def events(self, namespace: str, name: str) -> list[str]:
        """The messages of the events about one object, oldest first."""
        items = self.list_objects("v1", "Event", namespace)
        items = [e for e in items if e["involvedObject"].get("name") == name]
        items.sort(key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
        return [f"{e.get('reason')}: {e.get('message')}" for e in items]

    def watch(
        self,
        collection: str,
        resource_version: str,
        *,
        stop: threading.Event,
        timeout_s: int = 60,
    ) -> Iterator[dict[str, Any]]:
        """Watch a collection path from a resourceVersion; yield its events until it ends.

        The stream ends when the server closes it (``timeout_s``, bounded server
        side) or ``stop`` is set (a helper thread then shuts the socket, which
        ends the blocking read; a socket timeout would not do: once a read
        times out, Python's socket file refuses every later read). A ``410
        Gone`` arrives as an ``ERROR`` event, which the caller answers with a
        fresh list.

        Args:
            collection: e.g. ``/api/v1/pods``.
            resource_version: Where to start (a list's ``metadata.resourceVersion``).
            stop: Set to end the watch.
            timeout_s: How long the server keeps the stream open.

        Yields:
            Watch events: ``{"type": ADDED|MODIFIED|DELETED|BOOKMARK|ERROR, "object": ...}``.
        """
        query = urllib.parse.urlencode(
            {
                "watch": "true",
                "resourceVersion": resource_version,
                "allowWatchBookmarks": "true",
                "timeoutSeconds": str(timeout_s),
            }
        )
        conn = self._connection(timeout=timeout_s + 30)
        done = threading.Event()
        try:
            conn.request("GET", f"{collection}?{query}", headers={"Accept": "application/json"})
            resp = conn.getresponse()
            if resp.status != 200:
                raise ApiError("WATCH", collection, resp.status, {"message": resp.read()[:300]})
            sock = conn.sock

            def cut_on_stop() -> None:
                while not done.is_set():
                    if stop.wait(0.5):
                        with contextlib.suppress(OSError):
                            if sock is not None:
                                sock.shutdown(socket.SHUT_RDWR)
                        return

            threading.Thread(target=cut_on_stop, name="watch-stop", daemon=True).start()
            while not stop.is_set():
                line = resp.readline()
                if not line:
                    return
                if line.strip():
                    yield json.loads(line)
        finally:
            done.set()
            conn.close()


def wait_for(
    what: str,
    check: Callable[[], Any],
    *,
    timeout: float = 120.0,
    interval: float = 0.2,
    explain: Callable[[], str] | None = None,
) -> Any:
    """Poll ``check`` until it returns something truthy; return that.

    Args:
        what: What is awaited, for the error.
        check: Returns the awaited thing, or something falsy while it is not there.
        timeout: Seconds before giving up.
        interval: Seconds between polls.
        explain: Called on timeout; its text (component log tails, object
            conditions) is appended to the error.

    Raises:
        SimError: naming ``what``, the last exception or value seen, and ``explain``'s text.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = check()
            if last:
                return last
        except (SimError, OSError) as e:
            last = e
        if time.monotonic() > deadline:
            message = f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})"
            if explain is not None:
                try:
                    message += "\n" + explain()
                except (SimError, OSError) as e:
                    message += f"\n(could not collect diagnostics: {e})"
            raise SimError(message)
        time.sleep(interval)


_QUANTITY_SUFFIXES = {
    "m": Fraction(1, 1000), "": Fraction(1), "k": Fraction(10**3), "M": Fraction(10**6),
    "G": Fraction(10**9), "T": Fraction(10**12), "Ki": Fraction(2**10), "Mi": Fraction(2**20),
    "Gi": Fraction(2**30), "Ti": Fraction(2**40),
}  # fmt: skip


def parse_quantity(quantity: str) -> Fraction:
    """A Kubernetes quantity as a number (``"17Gi"`` and ``"17408Mi"`` compare equal).

    Raises:
        SimError: for a form this harness does not know (exponents, Pi/Ei).
    """
    number = quantity.rstrip("kKMGTimu")
    suffix = quantity[len(number) :]
    if suffix not in _QUANTITY_SUFFIXES or not number:
        raise SimError(f"unsupported quantity {quantity!r}")
    return Fraction(number) * _QUANTITY_SUFFIXES[suffix]


def quantities_equal(a: Mapping[str, str], b: Mapping[str, str]) -> bool:
    """Whether two resource lists hold the same amounts, whatever their spelling."""
    return a.keys() == b.keys() and all(parse_quantity(a[k]) == parse_quantity(b[k]) for k in a)
