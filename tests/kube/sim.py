"""A local Kubernetes control plane for the tests, on loopback, with EC2-shaped fake nodes.

Real kube-apiserver, etcd, kube-controller-manager and kube-scheduler, kwok for
the nodes' and pods' lifecycle (no kubelet), and the controllers the platform
installs: the KubeRay operator, the LeaderWorkerSet controller (its webhook on
127.0.0.1 with a certificate made here) and Karpenter with its KWOK cloud
provider, whose instance types come from ``components.eks_node`` (with the
Auto Mode labels of ``nodes.py``). Everything is built by
``scripts/install-kube-sim`` (see shared K8S_SIM.md for the recipe).

What runs in the pods is faked by ``serving.py`` (vLLM's OpenAI server, the
Ray dashboard and Serve proxy, Open WebUI), listening on the pods' own IPs:
the pod range is routed to ``lo`` in the network namespace, so the API
server's service proxy, EndpointSlices and KubeRay (through the proxy) reach
them as they would reach the containers.

It runs only inside a loopback-only network namespace, so that nothing the
controllers dial can leave the machine, and so that the harness may route the
pod range to ``lo`` there::

    unshare -n sh -c 'ip link set lo up && exec .venv/bin/pytest tests/kube'
    unshare -n sh -c 'ip link set lo up && exec .venv/bin/python -m tests.kube.sim up'

``python -m tests.kube.sim up`` starts one and waits for Ctrl-C; ``status``
prints what a running one (found by its state file) is doing; ``down`` stops
it. The harness talks to the API server with the standard library only
(http.client and ssl with the admin client certificate); certificates are made
with the openssl command.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import contextlib
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from components import eks_node
from components.catalog import INSTANCES, Accelerator, InstanceType, get_instance
from tests.kube import nodes, serving
from tests.kube.api import (
    Api,
    ApiError,
    Response,
    SimError,
    _Cert,
    parse_quantity,
    quantities_equal,
    wait_for,
)

__all__ = [
    "Api",
    "ApiError",
    "Cluster",
    "ClusterConfig",
    "Response",
    "SimError",
    "karpenter_instance_types",
    "parse_quantity",
    "quantities_equal",
    "wait_for",
]

REPO = Path(__file__).resolve().parents[2]
CRD_DIR = REPO / "tests" / "data" / "crds"
INSTALLER = REPO / "scripts" / "install-kube-sim"
OPENSSL = "/usr/bin/openssl"
NETNS_COMMAND = "unshare -n sh -c 'ip link set lo up && exec .venv/bin/pytest tests/kube'"

# The CRDs the harness installs: everything under tests/data/crds whose
# controller runs here (the AWS load balancer controller does not), the
# AWS-flavoured Karpenter CRDs (so NodePools validate as on EKS, with the
# karpenter.k8s.aws labels allowed), plus the two the toolchain copies out of
# the module cache (KWOKNodeClass, LWS's DisaggregatedSet).
CRD_FOLDERS = ("kuberay-v", "lws-v", "karpenter-v")

# Cluster addressing. The service range is what EKS uses by default (no
# kube-proxy: ClusterIPs lead nowhere). kwok hands out pod IPs from POD_CIDR,
# starting after its address; the harness makes the whole range local on lo in
# its network namespace so the fake servers can listen on the pods' IPs. Not
# 127.0.0.0/8: EndpointSlices refuse loopback addresses (ValidateEndpointIP,
# k8s pkg/apis/core/validation), so Services would have no endpoints.
SERVICE_CIDR = "10.100.0.0/16"
POD_CIDR = "10.244.0.1/16"
POD_NETWORK = "10.244.0.0/16"
KWOK_ANNOTATION = "kwok.x-k8s.io/node"
ADMISSION_PLUGINS = (
    "NamespaceLifecycle,LimitRanger,ServiceAccount,DefaultStorageClass,DefaultTolerationSeconds,"
    "NodeRestriction,PodSecurity,Priority,ResourceQuota,RuntimeClass,TaintNodesByCondition,"
    "StorageObjectInUseProtection,PersistentVolumeClaimResize,MutatingAdmissionWebhook,"
    "ValidatingAdmissionPolicy,ValidatingAdmissionWebhook"
)
# Karpenter's KWOK provider subtracts this fixed overhead from an instance
# type's `resources` to get a node's allocatable (sigs.k8s.io/karpenter v1.14.1
# kwok/cloudprovider/helpers.go newInstanceType: KubeReserved 100m, 10Mi), so the
# instance-types file adds it back to land on EKS's allocatable exactly.
KWOK_PROVIDER_OVERHEAD_CPU_MILLIS = 100
KWOK_PROVIDER_OVERHEAD_MEMORY_MIB = 10

# libyaml's loader when PyYAML was built with it: the pure-Python one takes
# seconds over the CRDs.
_YAML_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# How long stop() waits after SIGTERM before it sends SIGKILL.
STOP_GRACE_S = 3.0

STATE_FILE = Path(tempfile.gettempdir()) / "llm-endpoints-kube-sim.json"


def _log_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- checks


def check_network_namespace() -> None:
    """Refuse to run outside a loopback-only network namespace.

    Raises:
        SimError: naming the command to use when any interface other than ``lo``
            exists here, or when ``lo`` is down.
    """
    # /proc/self/net is this process's namespace (/sys/class/net is the one
    # that mounted /sys, so it would still show the host's interfaces).
    lines = Path("/proc/self/net/dev").read_text().splitlines()[2:]
    interfaces = sorted(line.split(":", 1)[0].strip() for line in lines if ":" in line)
    if interfaces != ["lo"]:
        raise SimError(
            "the local Kubernetes control plane runs only in a loopback-only network namespace, "
            f"and this one has interfaces {interfaces}; run it as\n    {NETNS_COMMAND}"
        )
    try:
        with socket.create_server(("127.0.0.1", 0)) as server:
            port = server.getsockname()[1]
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError as e:
        raise SimError(
            f"loopback is down in this network namespace ({e}); bring it up first:\n"
            f"    {NETNS_COMMAND}"
        ) from None


def route_pod_network(network: str = POD_NETWORK) -> None:
    """Make every address of the pod range local on ``lo`` (in this network namespace).

    A ``local`` route, as the kernel has for 127.0.0.0/8: any address in it can
    be bound and connected to, so a fake server can listen on a pod's IP and
    the API server's proxy can dial it. Only called after
    ``check_network_namespace``: the route lives and dies with the harness's
    own namespace.

    Raises:
        SimError: when the route cannot be added (naming the ip command's error).
    """
    ip = shutil.which("ip", path="/usr/sbin:/sbin:/usr/bin:/bin")
    if ip is None:
        raise SimError("the ip command (iproute2) is missing; it routes the pod range to lo")
    proc = subprocess.run(
        [ip, "route", "replace", "local", network, "dev", "lo", "table", "local"],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise SimError(
            f"could not route the pod range {network} to lo ({proc.stderr.strip()}); "
            "the harness needs CAP_NET_ADMIN in its network namespace (run it as root "
            f"inside unshare -n):\n    {NETNS_COMMAND}"
        )


def toolchain_dir() -> Path:
    """The folder holding the control plane's ``bin/`` (``scripts/install-kube-sim --path``).

    Raises:
        SimError: when the control plane has not been installed.
    """
    try:
        out = subprocess.run(
            [str(INSTALLER), "--path"], check=True, capture_output=True, text=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise SimError(f"{INSTALLER} --path failed: {e}") from None
    path = Path(out.strip().splitlines()[-1])
    if not (path / ".complete").is_file():
        raise SimError(
            f"the local control plane is not installed at {path}; run scripts/install-kube-sim "
            "(or `make setup`) first"
        )
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now.

    The components are Go programs that cannot take an inherited socket, so
    the port is closed again before they bind it; a component that then loses
    the race exits with "address already in use" and is started again on new
    ports (see ``_Component``).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------- certificates


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run([OPENSSL, *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SimError(f"openssl {' '.join(args)} failed: {proc.stderr.strip()}")


class _Pki:
    """A throwaway CA and the certificates the cluster's parts present.

    EC P-256 keys throughout: quick to make, and accepted by every component
    (the API server signs service-account tokens with ES256 from an EC key).
    """

    def __init__(self, folder: Path) -> None:
        self.dir = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.ca = _Cert(folder / "ca.crt", folder / "ca.key")
        _openssl(
            "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key", cwd=folder
        )
        _openssl(
            "req", "-x509", "-new", "-key", "ca.key", "-sha256", "-days", "2",
            "-subj", "/CN=llm-endpoints-kube-sim-ca", "-out", "ca.crt", cwd=folder,
        )  # fmt: skip
        self.sa_key = folder / "sa.key"
        self.sa_pub = folder / "sa.pub"
        _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-out", "sa.key", cwd=folder)  # fmt: skip
        _openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=folder)

    def issue(
        self, name: str, subject: str, *, server_names: Sequence[str] = (), client: bool = True
    ) -> _Cert:
        """Sign a certificate for a client identity or a server name."""
        key, csr, crt, ext = (f"{name}.{s}" for s in ("key", "csr", "crt", "ext"))
        usage = "clientAuth" if client else "serverAuth"
        lines = [
            "basicConstraints=critical,CA:FALSE",
            "keyUsage=critical,digitalSignature",
            f"extendedKeyUsage={usage}",
        ]
        if server_names:
            sans = [f"IP:{n}" if n[0].isdigit() else f"DNS:{n}" for n in server_names]
            lines.append("subjectAltName=" + ",".join(sans))
        (self.dir / ext).write_text("\n".join(lines) + "\n")
        _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key, cwd=self.dir)
        _openssl("req", "-new", "-key", key, "-subj", subject, "-out", csr, cwd=self.dir)
        _openssl(
            "x509", "-req", "-in", csr, "-CA", "ca.crt", "-CAkey", "ca.key",
            # A random serial rather than -CAcreateserial: certificates are
            # issued in parallel and would race on the serial file.
            "-set_serial", str(secrets.randbits(63)),
            "-days", "2", "-sha256", "-extfile", ext, "-out", crt, cwd=self.dir,
        )  # fmt: skip
        return _Cert(self.dir / crt, self.dir / key)


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(path: Path, server: str, ca: Path, cert: _Cert, user: str) -> Path:
    """Write a self-contained kubeconfig (certificates embedded) for one identity."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "kube-sim",
                "cluster": {"server": server, "certificate-authority-data": _b64(ca)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": _b64(cert.cert),
                    "client-key-data": _b64(cert.key),
                },
            }
        ],
        "contexts": [{"name": "kube-sim", "context": {"cluster": "kube-sim", "user": user}}],
        "current-context": "kube-sim",
    }
    path.write_text(yaml.safe_dump(config))
    return path


# --------------------------------------------------------------------------- components


def _http_ok(url: str, *, context: ssl.SSLContext | None = None) -> bool:
    parsed = urllib.parse.urlsplit(url)
    host = parsed.hostname or "127.0.0.1"
    conn: http.client.HTTPConnection
    if parsed.scheme == "https":
        conn = http.client.HTTPSConnection(host, parsed.port, context=context, timeout=2)
    else:
        conn = http.client.HTTPConnection(host, parsed.port, timeout=2)
    try:
        conn.request("GET", parsed.path)
        resp = conn.getresponse()
        resp.read()
        return resp.status == 200
    except OSError:
        return False
    finally:
        conn.close()


_INSECURE = ssl.create_default_context()
_INSECURE.check_hostname = False
# Health endpoints of the controller-manager and scheduler serve self-signed
# certificates on loopback; only their answer matters here.
_INSECURE.verify_mode = ssl.CERT_NONE


@dataclass
class _Launch:
    """What one attempt at starting a component runs."""

    argv: list[str]
    env: dict[str, str]
    ready: Callable[[], bool]
    waits_for: str


@dataclass
class _Component:
    """One process of the cluster, its log and how to tell it is up.

    ``prepare`` is called again with fresh ports when an attempt lost its
    port to another process ("address already in use").
    """

    name: str
    prepare: Callable[[], _Launch]
    log: Path
    popen: subprocess.Popen[bytes] | None = None
    launch: _Launch | None = None
    attempts: int = 0
    started: float = 0.0
    ready_at: float | None = None

    @property
    def ready_after(self) -> float | None:
        """Seconds from this attempt's start until its readiness check passed."""
        return None if self.ready_at is None else self.ready_at - self.started

    def start(self) -> None:
        self.attempts += 1
        self.ready_at = None
        self.launch = self.prepare()
        with self.log.open("ab") as out:
            out.write(f"--- attempt {self.attempts}: {' '.join(self.launch.argv)}\n".encode())
            out.flush()
            self.popen = subprocess.Popen(
                self.launch.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.launch.env,
                # Own process group: stop() signals exactly what it started.
                start_new_session=True,
            )
        self.started = time.monotonic()
        # Readiness is polled from the start, so the time recorded is the
        # component's own even while the harness waits for something else.
        threading.Thread(
            target=self._watch,
            args=(self.popen, self.launch),
            name=f"ready-{self.name}",
            daemon=True,
        ).start()

    def _watch(self, popen: subprocess.Popen[bytes], launch: _Launch) -> None:
        while popen.poll() is None and popen is self.popen:
            if launch.ready():
                if popen is self.popen:
                    self.ready_at = time.monotonic()
                return
            time.sleep(0.05)

    def tail(self) -> str:
        """The last attempt's log: all of it if short, else its head and tail.

        The head is kept because a Go program that rejects its flags prints
        the reason first and its whole usage after it.
        """
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "    (no log)"
        lines = text.rsplit("--- attempt ", 1)[-1].splitlines()[1:]
        if len(lines) > 30:
            lines = [*lines[:6], f"... ({len(lines) - 26} lines) ...", *lines[-20:]]
        return "\n".join("    " + line for line in lines)


# --------------------------------------------------------------------------- the cluster


@dataclass
class ClusterConfig:
    """What the simulated cluster looks like.

    Attributes:
        region: The region every node reports.
        zones: Zones Karpenter may launch into (the first is the fake nodes' default).
        karpenter_plugins: Device plugins the platform installs, so Karpenter's
            instance types (and so its nodes) carry their extended resources.
        capacity_types: Purchase options Karpenter's instance types offer.
        workdir: Where certificates, data and logs go; a fresh temp dir if None.
        serve_pods: Run the fake container processes of ``serving.py`` on the
            pods' IPs (vLLM, Ray dashboard and Serve proxy, Open WebUI).
        auto_mode: The cluster is an EKS Auto Mode cluster: every node
            Karpenter launches also carries ``eks.amazonaws.com/compute-type:
            auto``. (The ``eks.amazonaws.com/instance-*`` labels are on every
            Auto Mode-capable type's offerings either way, so an Auto Mode
            NodePool provisions in any session.)
        platform_daemonsets: Create ``eks_node.PLATFORM_DAEMONSETS`` as real
            DaemonSets at start (the ``platform_daemonsets`` fixture does it
            for one test instead).
        karpenter_log_level: Karpenter's LOG_LEVEL (``debug`` explains its
            scheduling decisions at length).
    """

    region: str = "us-east-1"
    zones: tuple[str, ...] = ("us-east-1a", "us-east-1b")
    karpenter_plugins: frozenset[eks_node.DevicePlugin] = frozenset(eks_node.DevicePlugin)
    capacity_types: tuple[eks_node.CapacityType, ...] = (
        eks_node.CapacityType.ON_DEMAND,
        eks_node.CapacityType.SPOT,
    )
    workdir: Path | None = None
    serve_pods: bool = True
    auto_mode: bool = False
    platform_daemonsets: bool = False
    karpenter_log_level: str = "info"


def karpenter_instance_types(config: ClusterConfig) -> list[dict[str, Any]]:
    """The KWOK provider's instance-types file, written from the catalog.

    Each type's ``resources`` is the EKS allocatable of ``components.eks_node``
    (Karpenter's estimate of an AL2023 node it launches) plus the KWOK
    provider's fixed overhead, so that the nodes it creates report exactly the
    EKS allocatable. Every offering also carries the ``karpenter.k8s.aws/*``
    labels, the ``eks.amazonaws.com/instance-*`` labels of EKS Auto Mode (for
    the types Auto Mode offers; ``nodes.auto_mode_instance_labels``) and the
    region as single-value requirements: the provider then treats them as well
    known and puts them on its nodes, so NodePools that select on them behave
    as on EKS. (So a Karpenter node here also carries the Auto Mode labels,
    which a real one would not; ``eks.amazonaws.com/compute-type: auto`` only
    with ``config.auto_mode``.) Spot offerings carry the on-demand price (the
    catalog has no spot prices).

    Args:
        config: Zones, capacity types and installed device plugins.

    Returns:
        The JSON document (a list of InstanceTypeOptions).
    """
    out = []
    for inst in INSTANCES.values():
        shape = eks_node.node_shape(
            inst, eks_node.Provisioner.KARPENTER, plugins=config.karpenter_plugins
        )
        alloc = shape.allocatable
        resources = {
            "cpu": f"{alloc.cpu_millis + KWOK_PROVIDER_OVERHEAD_CPU_MILLIS}m",
            "memory": f"{alloc.memory_mib + KWOK_PROVIDER_OVERHEAD_MEMORY_MIB}Mi",
            "ephemeral-storage": f"{alloc.ephemeral_mib}Mi",
            "pods": str(alloc.pods),
            **{k: str(v) for k, v in alloc.extended.items()},
        }
        labels = eks_node.karpenter_instance_labels(inst)
        auto = nodes.auto_mode_instance_labels(inst)
        labels.update(auto)
        if auto and config.auto_mode:
            key, value = nodes.AUTO_MODE_COMPUTE_TYPE
            labels[key] = value
        labels["topology.kubernetes.io/region"] = config.region
        if inst.accelerator is Accelerator.NVIDIA:
            labels["nvidia.com/gpu.present"] = "true"
        fixed = [{"key": k, "operator": "In", "values": [v]} for k, v in sorted(labels.items())]
        offerings = [
            {
                "Price": inst.price_per_hour,
                "Available": True,
                "Requirements": [
                    {"key": "karpenter.sh/capacity-type", "operator": "In", "values": [ct.value]},
                    {"key": "topology.kubernetes.io/zone", "operator": "In", "values": [zone]},
                    *fixed,
                ],
            }
            for zone in config.zones
            for ct in config.capacity_types
        ]
        out.append(
            {
                "name": inst.name,
                "offerings": offerings,
                "architecture": "amd64",
                "operatingSystems": ["linux"],
                "resources": resources,
            }
        )
    return out


class Cluster:
    """A running local control plane (start with ``start()`` or ``with Cluster() as c``).

    Attributes:
        config: The cluster's shape.
        workdir: Certificates, etcd data, kubeconfigs and one log per component.
        kubeconfig: The admin kubeconfig (``system:masters``), fresh per cluster.
        api: A client of the API server as admin.
        timings: Seconds from start until each component was ready.
        pod_servers: The fake container processes (``serving.py``), or None
            when ``config.serve_pods`` is off.
    """

    def __init__(
        self, config: ClusterConfig | None = None, *, log: Callable[[str], None] = _log_stderr
    ) -> None:
        self.config = config or ClusterConfig()
        self._say = log
        self._own_workdir = self.config.workdir is None
        self.workdir = self.config.workdir or Path(tempfile.mkdtemp(prefix="kube-sim-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.kubeconfig = self.workdir / "admin.kubeconfig"
        self.timings: dict[str, float] = {}
        self._components: list[_Component] = []
        self._t0 = 0.0
        self._bin = Path()
        self._share = Path()
        self.api: Api
        self._apiserver_port = 0
        self._etcd_port = 0
        self.pod_servers: serving.PodServers | None = None

    # -- lifecycle -----------------------------------------------------------------

    def __enter__(self) -> Cluster:
        self.start()
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        # After a failure the logs stay for reading; otherwise nothing is left.
        if exc_type is None:
            self.cleanup()
        else:
            self.abandon()

    def _progress(self, message: str) -> None:
        self._say(f"[kube-sim {time.monotonic() - self._t0:5.1f}s] {message}")

    def start(self) -> None:
        """Start every component and wait until each is ready.

        Raises:
            SimError: naming the component, what was awaited and its log's tail.
        """
        self._t0 = time.monotonic()
        check_network_namespace()
        if self.config.serve_pods:
            route_pod_network()
        root = toolchain_dir()
        self._bin, self._share = root / "bin", root / "share"
        self._progress(f"starting in {self.workdir} (binaries from {root})")
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        total = time.monotonic() - self._t0
        self._progress(f"cluster ready in {total:.1f}s; kubeconfig {self.kubeconfig}")

    def _start(self) -> None:
        # Parsing 6 MB of CRD YAML takes a while: do it while etcd and the API
        # server start.
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            crds = pool.submit(self._load_crds)
            self._start_control_plane(crds)

    def _start_control_plane(self, crds: concurrent.futures.Future[list[dict[str, Any]]]) -> None:
        self._make_pki()
        etcd = self._add("etcd", self._etcd)
        self._wait([etcd])
        apiserver = self._add("kube-apiserver", self._apiserver)
        self._wait([apiserver])
        self._write_kubeconfigs()
        core = [
            self._add("kube-controller-manager", self._controller_manager),
            self._add("kube-scheduler", self._scheduler),
            self._add("kwok", self._kwok),
        ]
        self._install_objects(crds.result())
        controllers = [
            self._add("kuberay-operator", self._kuberay),
            self._add("lws-controller", self._lws),
            self._add("karpenter-kwok", self._karpenter),
        ]
        if self.config.serve_pods:
            self.pod_servers = serving.PodServers(
                self.api, self.workdir / "logs" / "pods.log", share=self._share
            )
            self.pod_servers.start()
        self._wait(core + controllers)
        # Pods wait for their namespace's `default` ServiceAccount, which the
        # controller-manager's serviceaccount controller creates.
        self.wait_for_default_service_account("default")
        self._mark("default ServiceAccount (serviceaccount controller)")
        if self.pod_servers is not None:
            servers = self.pod_servers
            wait_for("the fake pod servers to list the pods", servers.synced.is_set, timeout=30)
        if self.config.platform_daemonsets:
            self.install_platform_daemonsets()
            self._mark("platform DaemonSets")

    def stop(self) -> None:
        """Stop what this cluster started: SIGTERM, then SIGKILL after a short grace.

        Every process group gets SIGTERM at once, except etcd, which gets it as
        soon as the API server has exited: etcd's graceful stop waits for the
        API server's watch streams and the API server's for etcd, so signalled
        together both sat out the whole grace. Only the process groups started
        here are signalled.
        """
        if self.pod_servers is not None:
            self.pod_servers.stop()
            self.pod_servers = None
        running = [c for c in self._components if c.popen and c.popen.poll() is None]
        first = [c for c in running if c.name != "etcd"]
        last = [c for c in running if c.name == "etcd"]
        deadline = time.monotonic() + STOP_GRACE_S
        for group in (first, last):
            for c in group:
                assert c.popen is not None
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(c.popen.pid, signal.SIGTERM)
            for c in group:
                assert c.popen is not None
                with contextlib.suppress(subprocess.TimeoutExpired):
                    c.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
        killed = []
        for c in running:
            assert c.popen is not None
            if c.popen.poll() is None:
                killed.append(c.name)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(c.popen.pid, signal.SIGKILL)
                c.popen.wait()
        if killed:
            self._progress(f"stopped; killed {', '.join(killed)} after {STOP_GRACE_S:.0f}s")
        elif running:
            self._progress("stopped")
        self._components = [c for c in self._components if c not in running]

    def cleanup(self) -> None:
        """Stop, and remove the working folder if this cluster made it."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def abandon(self) -> None:
        """Stop after a failure, keeping the working folder if it holds logs to read."""
        self.stop()
        if self._own_workdir and not (self.workdir / "logs").exists():
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- starting and waiting ------------------------------------------------------

    def _add(self, name: str, prepare: Callable[[], _Launch]) -> _Component:
        c = _Component(name, prepare, self.workdir / "logs" / f"{name}.log")
        c.log.parent.mkdir(exist_ok=True)
        c.start()
        self._components.append(c)
        return c

    def _mark(self, what: str) -> None:
        self.timings[what] = time.monotonic() - self._t0
        self._progress(f"{what} ready")

    def _wait(self, components: Iterable[_Component], timeout: float = 90.0) -> None:
        pending = list(components)
        for c in pending:
            assert c.launch is not None
            self._progress(f"waiting for {c.name} ({c.launch.waits_for})")
        deadline = time.monotonic() + timeout
        while pending:
            for c in list(pending):
                assert c.popen is not None and c.launch is not None
                if c.popen.poll() is not None:
                    if c.attempts < 3 and "address already in use" in c.log.read_text(
                        errors="replace"
                    ):
                        self._progress(f"{c.name} lost a port to another process; starting again")
                        c.start()
                        continue
                    raise SimError(
                        f"{c.name} ({self._bin / c.launch.argv[0]}) exited with status "
                        f"{c.popen.returncode} while starting; log {c.log}:\n{c.tail()}"
                    )
                if c.ready_at is not None:
                    pending.remove(c)
                    self.timings[c.name] = c.ready_at - self._t0
                    self._progress(
                        f"{c.name} ready {c.ready_after:.1f}s after its start "
                        f"(at {c.ready_at - self._t0:.1f}s)"
                    )
            if pending and time.monotonic() > deadline:
                c = pending[0]
                assert c.launch is not None
                raise SimError(
                    f"{c.name} did not become ready within {timeout:.0f}s (waited for "
                    f"{c.launch.waits_for}); log {c.log}:\n{c.tail()}"
                )
            time.sleep(0.1)

    def _env(self, **extra: str) -> dict[str, str]:
        # A clean environment: no ambient KUBECONFIG or proxies; HOME in the
        # working folder so no component reads a person's ~/.kube or ~/.kwok.
        env = {"PATH": "/usr/bin:/bin", "HOME": str(self.workdir), "LANG": "C.UTF-8"}
        env.update(extra)
        return env

    def _exe(self, name: str) -> str:
        path = self._bin / name
        if not path.exists():
            raise SimError(f"{path} is missing; run scripts/install-kube-sim")
        return str(path)

    # -- certificates and kubeconfigs ---------------------------------------------

    def _make_pki(self) -> None:
        pki = self._pki = _Pki(self.workdir / "pki")
        clients = {
            "admin": "/O=system:masters/CN=kube-sim-admin",
            "controller-manager": "/CN=system:kube-controller-manager",
            "scheduler": "/CN=system:kube-scheduler",
            # The node and controller simulators act for every node and CRD:
            # cluster admins, each under its own name in the audit trail.
            "kwok": "/O=system:masters/CN=kwok",
            "kuberay": "/O=system:masters/CN=kuberay-operator",
            "lws": "/O=system:masters/CN=lws-controller",
            "karpenter": "/O=system:masters/CN=karpenter",
        }
        apiserver_names = (
            "127.0.0.1", "localhost", "10.100.0.1", "kubernetes", "kubernetes.default",
            "kubernetes.default.svc", "kubernetes.default.svc.cluster.local",
        )  # fmt: skip
        # openssl runs are independent once the CA exists: issue them at once.
        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            futures = {name: pool.submit(pki.issue, name, subj) for name, subj in clients.items()}
            apiserver = pool.submit(
                pki.issue, "apiserver", "/CN=kube-apiserver",
                client=False, server_names=apiserver_names,
            )  # fmt: skip
            webhook = pool.submit(
                pki.issue, "lws-webhook", "/CN=lws-webhook",
                client=False, server_names=("127.0.0.1",),
            )  # fmt: skip
            self._certs = {name: f.result() for name, f in futures.items()}
            self._apiserver_cert = apiserver.result()
            self._webhook_cert = webhook.result()
        self._progress(
            "certificates made (CA; admin, controller-manager, scheduler, kwok and controller "
            "clients; apiserver and LWS webhook serving; service-account key)"
        )

    def _write_kubeconfigs(self) -> None:
        server = f"https://127.0.0.1:{self._apiserver_port}"
        self._kubeconfigs = {
            name: write_kubeconfig(
                self.workdir / f"{name}.kubeconfig", server, self._pki.ca.cert, cert, name
            )
            for name, cert in self._certs.items()
        }
        self.kubeconfig = self._kubeconfigs["admin"]

    # -- the components ------------------------------------------------------------

    def _etcd(self) -> _Launch:
        client, peer = free_port(), free_port()
        self._etcd_port = client
        data = self.workdir / "etcd"
        shutil.rmtree(data, ignore_errors=True)
        argv = [
            self._exe("etcd"),
            "--name=kube-sim",
            f"--data-dir={data}",
            f"--listen-client-urls=http://127.0.0.1:{client}",
            f"--advertise-client-urls=http://127.0.0.1:{client}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=kube-sim=http://127.0.0.1:{peer}",
            # Throwaway data: skip fsync, the slowest part of etcd on a busy disk.
            "--unsafe-no-fsync",
            "--log-level=warn",
        ]
        return _Launch(
            argv,
            self._env(),
            lambda: _http_ok(f"http://127.0.0.1:{client}/health"),
            f"http://127.0.0.1:{client}/health",
        )

    def _apiserver(self) -> _Launch:
        port = free_port()
        self._apiserver_port = port
        pki = self._pki
        argv = [
            self._exe("kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{self._etcd_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={port}",
            f"--tls-cert-file={self._apiserver_cert.cert}",
            f"--tls-private-key-file={self._apiserver_cert.key}",
            f"--client-ca-file={pki.ca.cert}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            f"--enable-admission-plugins={ADMISSION_PLUGINS}",
            # No kube-apiserver Endpoints to reconcile: it is not reachable as a
            # Service from anywhere (there is no pod network).
            "--endpoint-reconciler-type=none",
            # EKS allows privileged pods (the device plugins need them).
            "--allow-privileged=true",
            "--profiling=false",
            f"--cert-dir={self.workdir / 'apiserver-certs'}",
        ]
        api = Api("127.0.0.1", port, pki.ca.cert, self._certs["admin"])
        self.api = api

        def ready() -> bool:
            try:
                conn = http.client.HTTPSConnection("127.0.0.1", port, context=api._ctx, timeout=2)
                conn.request("GET", "/readyz")
                ok = conn.getresponse().status == 200
                conn.close()
                return ok
            except OSError:
                return False

        return _Launch(argv, self._env(), ready, f"https://127.0.0.1:{port}/readyz")

    def _controller_manager(self) -> _Launch:
        port = free_port()
        pki = self._pki
        kubeconfig = self._kubeconfigs["controller-manager"]
        argv = [
            self._exe("kube-controller-manager"),
            f"--kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            f"--cert-dir={self.workdir / 'controller-manager-certs'}",
            "--leader-elect=false",
            # As kubeadm runs it: each controller under its own ServiceAccount,
            # so the bootstrap RBAC roles apply as on a real cluster.
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki.sa_key}",
            f"--root-ca-file={pki.ca.cert}",
            f"--cluster-signing-cert-file={pki.ca.cert}",
            f"--cluster-signing-key-file={pki.ca.key}",
            # Every default controller, including serviceaccount (the default
            # ServiceAccount each namespace's pods wait for).
            "--controllers=*",
        ]
        return _Launch(
            argv,
            self._env(),
            lambda: _http_ok(f"https://127.0.0.1:{port}/healthz", context=_INSECURE),
            f"https://127.0.0.1:{port}/healthz",
        )

    def _scheduler(self) -> _Launch:
        port = free_port()
        argv = [
            self._exe("kube-scheduler"),
            f"--kubeconfig={self._kubeconfigs['scheduler']}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            f"--cert-dir={self.workdir / 'scheduler-certs'}",
            "--leader-elect=false",
        ]
        return _Launch(
            argv,
            self._env(),
            lambda: _http_ok(f"https://127.0.0.1:{port}/healthz", context=_INSECURE),
            f"https://127.0.0.1:{port}/healthz",
        )

    def _kwok(self) -> _Launch:
        stages = self._share / "kwok" / "stage"
        files = [
            stages / "node" / "fast" / "node-initialize.yaml",
            stages / "node" / "heartbeat-with-lease" / "node-heartbeat-with-lease.yaml",
            *sorted((stages / "pod" / "fast").glob("*.yaml")),
            *sorted(
                p
                for p in (stages / "volume" / "fast").glob("*.yaml")
                if p.name != "storage-class.yaml"
            ),
        ]
        missing = [str(f) for f in files if not f.is_file()]
        if missing or len(files) < 5:
            raise SimError(f"kwok stage files missing ({missing}); run scripts/install-kube-sim")
        config = self.workdir / "kwok-stages.yaml"
        config.write_text("\n---\n".join(f.read_text().strip() for f in files) + "\n")
        log = self.workdir / "logs" / "kwok.log"
        offset = log.stat().st_size if log.exists() else 0
        argv = [
            self._exe("kwok"),
            f"--kubeconfig={self._kubeconfigs['kwok']}",
            f"--config={config}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={KWOK_ANNOTATION}=fake",
            "--node-lease-duration-seconds=40",
            f"--cidr={POD_CIDR}",
        ]

        def ready() -> bool:
            # kwok serves nothing here; it logs this once it watches nodes.
            try:
                with log.open("rb") as f:
                    f.seek(offset)
                    return b"Watch nodes" in f.read()
            except OSError:
                return False

        return _Launch(argv, self._env(), ready, 'its log saying "Watch nodes"')

    def _kuberay(self) -> _Launch:
        port = free_port()
        argv = [
            self._exe("kuberay-operator"),
            "--metrics-addr=0",
            f"--health-probe-bind-address=127.0.0.1:{port}",
            "--enable-leader-election=false",
            "--log-stdout-encoder=console",
            # Reach the Ray dashboard and Serve proxy through the API server's
            # services/pods proxy: without it KubeRay dials the head Service by
            # its cluster DNS name, and there is no cluster DNS here.
            "--use-kubernetes-proxy",
        ]
        env = self._env(KUBECONFIG=str(self._kubeconfigs["kuberay"]))
        return _Launch(
            argv,
            env,
            lambda: _http_ok(f"http://127.0.0.1:{port}/readyz"),
            f"http://127.0.0.1:{port}/readyz",
        )

    def _lws(self) -> _Launch:
        health, webhook = free_port(), free_port()
        self._lws_webhook_port = webhook
        certs = self.workdir / "lws-certs"
        certs.mkdir(exist_ok=True)
        shutil.copy(self._webhook_cert.cert, certs / "tls.crt")
        shutil.copy(self._webhook_cert.key, certs / "tls.key")
        config = self.workdir / "lws-config.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "config.lws.x-k8s.io/v1alpha1",
                    "kind": "Configuration",
                    "leaderElection": {"leaderElect": False},
                    "health": {"healthProbeBindAddress": f"127.0.0.1:{health}"},
                    "metrics": {"bindAddress": "0"},
                    "webhook": {"host": "127.0.0.1", "port": webhook, "certDir": str(certs)},
                    # Its own certificate rotation needs an in-cluster Service;
                    # the webhook uses the certificate made here instead.
                    "internalCertManagement": {"enable": False},
                }
            )
        )
        self._apply_lws_webhooks(webhook)
        argv = [self._exe("lws-controller"), f"--config={config}", "--zap-log-level=info"]
        env = self._env(KUBECONFIG=str(self._kubeconfigs["lws"]))
        ctx = ssl.create_default_context(cafile=str(self._pki.ca.cert))

        def ready() -> bool:
            if not _http_ok(f"http://127.0.0.1:{health}/readyz"):
                return False
            try:
                with socket.create_connection(("127.0.0.1", webhook), timeout=2) as raw:
                    ctx.wrap_socket(raw, server_hostname="127.0.0.1").close()
                return True
            except OSError:
                return False

        return _Launch(
            argv,
            env,
            ready,
            f"http://127.0.0.1:{health}/readyz and its webhook's TLS on 127.0.0.1:{webhook}",
        )

    def _karpenter(self) -> _Launch:
        metrics, health = free_port(), free_port()
        types = self.workdir / "karpenter-instance-types.json"
        types.write_text(json.dumps(karpenter_instance_types(self.config), indent=1))
        env = self._env(
            KUBECONFIG=str(self._kubeconfigs["karpenter"]),
            DISABLE_LEADER_ELECTION="true",
            # Where the Helm chart runs it; v1.14.1's core reads no such setting
            # itself, but the chart sets it and so does this.
            SYSTEM_NAMESPACE="karpenter",
            METRICS_PORT=str(metrics),
            HEALTH_PROBE_PORT=str(health),
            INSTANCE_TYPES_FILE_PATH=str(types),
            LOG_LEVEL=self.config.karpenter_log_level,
        )
        return _Launch(
            [self._exe("karpenter-kwok")],
            env,
            lambda: _http_ok(f"http://127.0.0.1:{health}/readyz"),
            f"http://127.0.0.1:{health}/readyz",
        )

    # -- objects -------------------------------------------------------------------

    def _crd_files(self) -> list[Path]:
        files = []
        for folder in sorted(CRD_DIR.iterdir()):
            if folder.is_dir() and folder.name.startswith(CRD_FOLDERS):
                files += sorted(folder.glob("*.yaml"))
        files += sorted((self._share / "crds").glob("*.yaml"))
        return files

    def _load_crds(self) -> list[dict[str, Any]]:
        docs = []
        for path in self._crd_files():
            for doc in yaml.load_all(path.read_text(), Loader=_YAML_LOADER):
                if doc and doc.get("kind") == "CustomResourceDefinition":
                    docs.append(doc)
        return docs

    def _install_objects(self, crds: list[dict[str, Any]]) -> None:
        # Server-side apply (the KubeRay and LWS CRDs are too large for the
        # last-applied annotation of a client-side apply), a few at a time so
        # the API server's two cores are both busy.
        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(self.api.apply, crds))
        names = [doc["metadata"]["name"] for doc in crds]
        self._progress(
            f"{len(names)} CRDs applied server-side; waiting until the API server serves them"
        )

        # Served is what the controllers need: each CRD's kind in discovery (a
        # small answer, where polling the CRDs themselves would move megabytes).
        wanted: dict[str, set[str]] = {}
        for doc in crds:
            spec = doc["spec"]
            for version in spec["versions"]:
                if version.get("served", True):
                    gv = f"{spec['group']}/{version['name']}"
                    wanted.setdefault(gv, set()).add(spec["names"]["plural"])

        def served(gv: str) -> bool:
            found = {r["name"] for r in self.api.request("GET", f"/apis/{gv}")["resources"]}
            return wanted[gv] <= found

        for gv in wanted:
            wait_for(f"the API server to serve {sorted(wanted[gv])} in {gv}", _bind(served, gv))
        self._mark(f"{len(names)} CRDs (served in discovery)")
        # kwok's volume stages bind PVCs of this default class (volume/fast).
        sc = yaml.safe_load(
            (self._share / "kwok" / "stage" / "volume" / "fast" / "storage-class.yaml").read_text()
        )
        self.api.apply(sc)
        self.api.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "karpenter"}})
        # Its CRD defaults the status to Ready, which Karpenter's NodePools
        # wait for; retried while discovery catches up with the new CRDs.
        node_class = {
            "apiVersion": "karpenter.kwok.sh/v1alpha1",
            "kind": "KWOKNodeClass",
            "metadata": {"name": "default"},
        }
        wait_for("KWOKNodeClass default to be created", lambda: self.api.apply(node_class))

    def _apply_lws_webhooks(self, port: int) -> None:
        """The LWS webhook configurations, pointed at 127.0.0.1 with the CA here.

        Upstream's config/webhook/manifests.yaml with its kustomize patches
        applied (they narrow the pod webhooks to LWS pods), copied from the
        module cache by the installer; the in-cluster Service reference becomes
        a URL.
        """
        folder = self._share / "lws" / "webhook"
        docs = [d for d in yaml.safe_load_all((folder / "manifests.yaml").read_text()) if d]
        for patch_file, kind in (
            ("mutating-patch.yaml", "MutatingWebhookConfiguration"),
            ("validating-patch.yaml", "ValidatingWebhookConfiguration"),
        ):
            for op in yaml.safe_load((folder / patch_file).read_text()):
                doc = next(d for d in docs if d["kind"] == kind)
                if op["op"] != "replace" or not op["path"].startswith("/webhooks/"):
                    raise SimError(f"unexpected patch {op['op']} {op['path']} in {patch_file}")
                doc["webhooks"][int(op["path"].rsplit("/", 1)[1])] = op["value"]
        ca = _b64(self._pki.ca.cert)
        for doc in docs:
            doc["metadata"]["name"] = "lws-" + doc["metadata"]["name"]
            for hook in doc["webhooks"]:
                path = hook["clientConfig"]["service"]["path"]
                hook["clientConfig"] = {"url": f"https://127.0.0.1:{port}{path}", "caBundle": ca}
            self.api.apply(doc)

    # -- helpers for tests ---------------------------------------------------------

    def wait_for_default_service_account(self, namespace: str, timeout: float = 60.0) -> None:
        """Wait until the serviceaccount controller made the namespace's ``default`` SA."""
        wait_for(
            f"ServiceAccount {namespace}/default",
            lambda: self.api.get("v1", "ServiceAccount", "default", namespace),
            timeout=timeout,
        )

    def create_namespace(self, name: str, labels: Mapping[str, str] | None = None) -> None:
        """Create (or update) a namespace and wait for its ``default`` ServiceAccount."""
        self.api.apply(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": name, "labels": dict(labels or {})},
            }
        )
        self.wait_for_default_service_account(name)

    def add_node(
        self,
        instance_type: str | InstanceType,
        *,
        name: str,
        provisioner: eks_node.Provisioner,
        capacity_type: eks_node.CapacityType,
        plugins: Iterable[eks_node.DevicePlugin],
        zone: str | None = None,
        nodegroup: str | None = None,
        labels: Mapping[str, str] | None = None,
        taints: Sequence[Mapping[str, str]] = (),
        wait_ready: bool = True,
    ) -> dict[str, Any]:
        """Create a fake node shaped like an EKS node of this instance type.

        Its labels, capacity and allocatable come from ``components.eks_node``;
        the extended resources appear only for the device plugins declared
        installed. kwok then runs its lifecycle (Ready, heartbeats, pods).

        Args:
            instance_type: Catalog instance type.
            name: Node name (also ``kubernetes.io/hostname``).
            provisioner: Karpenter or a managed node group (labels, max pods).
            capacity_type: On-demand or spot.
            plugins: Device plugins "installed" on the node.
            zone: Availability zone; the config's first zone if None.
            nodegroup: Managed node group name (required for that provisioner).
            labels: Extra labels (the pool's own).
            taints: Taints, as in a Node's ``spec.taints``.
            wait_ready: Wait for kwok to report the node Ready.

        Returns:
            The node as the API server returned it.
        """
        inst = get_instance(instance_type) if isinstance(instance_type, str) else instance_type
        shape = eks_node.node_shape(inst, provisioner, plugins=plugins)
        node_labels = eks_node.labels(
            inst,
            provisioner,
            zone=zone or self.config.zones[0],
            region=self.config.region,
            capacity_type=capacity_type,
            nodegroup=nodegroup,
        )
        node_labels.update(labels or {})
        return self.add_node_object(
            name,
            labels=node_labels,
            taints=taints,
            capacity=shape.capacity.quantities(),
            allocatable=shape.allocatable.quantities(),
            wait_ready=wait_ready,
        )

    def add_node_object(
        self,
        name: str,
        *,
        labels: Mapping[str, str],
        taints: Sequence[Mapping[str, str]],
        capacity: Mapping[str, str],
        allocatable: Mapping[str, str],
        wait_ready: bool = True,
    ) -> dict[str, Any]:
        """Create a kwok-managed Node with exactly these labels, taints and resources.

        Args:
            name: Node name (also its ``kubernetes.io/hostname`` label).
            labels: Every label but the hostname.
            taints: Taints, as in a Node's ``spec.taints``.
            capacity: ``status.capacity``.
            allocatable: ``status.allocatable``.
            wait_ready: Wait for kwok to report the node Ready.

        Returns:
            The node as the API server returned it.
        """
        version = f"v{_shared_version('KUBE_SIM_KUBERNETES_VERSION')}"
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": {**dict(labels), "kubernetes.io/hostname": name},
                "annotations": {KWOK_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            },
            "spec": {"taints": [dict(t) for t in taints]},
            "status": {
                "capacity": dict(capacity),
                "allocatable": dict(allocatable),
                "nodeInfo": {
                    "architecture": "amd64",
                    "operatingSystem": "linux",
                    "kubeletVersion": version,
                    "kubeProxyVersion": version,
                    "osImage": "Amazon Linux 2023 (simulated by kwok)",
                    "containerRuntimeVersion": "containerd://simulated",
                    "kernelVersion": "simulated",
                    "bootID": "",
                    "machineID": "",
                    "systemUUID": "",
                },
            },
        }
        created = self.api.create(node)
        if not wait_ready:
            return dict(created)
        return dict(
            wait_for(
                f"node {name} Ready and without the not-ready taint",
                lambda: self._ready_node(name),
                timeout=60,
            )
        )

    def _ready_node(self, name: str) -> dict[str, Any] | None:
        # Ready, and schedulable: the node lifecycle controller removes the
        # node.kubernetes.io/not-ready taint a moment after kwok reports Ready,
        # and until then the scheduler answers "untolerated taint(s)".
        node = self.api.get("v1", "Node", name)
        conds = node.get("status", {}).get("conditions") or []
        taints = node.get("spec", {}).get("taints") or []
        if any(t["key"] == "node.kubernetes.io/not-ready" for t in taints):
            return None
        if any(c["type"] == "Ready" and c["status"] == "True" for c in conds):
            return dict(node)
        return None

    def add_managed_node_group(
        self,
        nodegroup: str,
        instance_type: str,
        count: int,
        *,
        pool: str | None = None,
        capacity_type: eks_node.CapacityType = eks_node.CapacityType.ON_DEMAND,
        plugins: Iterable[eks_node.DevicePlugin] = frozenset(eks_node.DevicePlugin),
        zone: str | None = None,
        labels: Mapping[str, str] | None = None,
        taint_key: str | None = None,
        extra_taints: Sequence[Mapping[str, str]] = (),
        name_prefix: str | None = None,
    ) -> list[dict[str, Any]]:
        """Create the nodes of an EKS managed node group made by ``AcceleratorPool``.

        Each node is shaped by ``eks_node`` for a managed group (max pods
        capped at 110/250), labelled as EKS labels a managed group's nodes
        (``eks.amazonaws.com/nodegroup``, ``eks.amazonaws.com/capacityType``) and
        as the pool labels and taints them (``llm-endpoints/pool``,
        ``llm-endpoints/accelerator``, ``<accelerator taint>=true:NoSchedule``;
        ``nodes.accelerator_pool_marks``), with the extended resources of the
        installed device plugins (a p4d.24xlarge with nvidia and efa: 8
        ``nvidia.com/gpu``, 4 ``vpc.amazonaws.com/efa``). All in one zone, as
        the project's managed groups are (one subnet).

        Args:
            nodegroup: The node group's name.
            instance_type: Catalog instance type.
            count: Nodes (the group's fixed size).
            pool: The pool name of the label; the node group's name if None.
            capacity_type: ON_DEMAND or SPOT.
            plugins: Device plugins installed (decide the extended resources).
            zone: Their zone; the config's first if None.
            labels: The pool's extra labels.
            taint_key: The pool's taint key; the accelerator's default if None.
            extra_taints: More taints (e.g. a test's isolation taint).
            name_prefix: Node names are ``<prefix>-<i>``; the node group's name if None.

        Returns:
            The nodes, Ready.
        """
        inst = get_instance(instance_type)
        marks = nodes.accelerator_pool_marks(
            pool or nodegroup, inst.accelerator, labels=labels, taint_key=taint_key
        )
        prefix = name_prefix or nodegroup
        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool_:
            futures = [
                pool_.submit(
                    self.add_node,
                    inst,
                    name=f"{prefix}-{i}",
                    provisioner=eks_node.Provisioner.MANAGED_NODE_GROUP,
                    capacity_type=capacity_type,
                    plugins=plugins,
                    zone=zone,
                    nodegroup=nodegroup,
                    labels=marks.labels,
                    taints=[*marks.taints, *extra_taints],
                )
                for i in range(count)
            ]
            return [f.result() for f in futures]

    def add_system_nodes(
        self,
        count: int = 2,
        *,
        nodegroup: str = "system",
        instance: nodes.CpuInstance = nodes.M6I_LARGE,
        zone: str | None = None,
        labels: Mapping[str, str] | None = None,
        taints: Sequence[Mapping[str, str]] = (),
        name_prefix: str | None = None,
    ) -> list[dict[str, Any]]:
        """Create the platform's CPU system nodes (``components.cluster``'s system node group).

        m6i.large in a managed node group labelled ``llm-endpoints/role:
        system``, untainted (add-on controllers, the Ray head and Open WebUI
        run there), shaped by ``nodes.cpu_node_shape``.

        Args:
            count: Nodes (the cluster's ``system_nodes``, 2 by default).
            nodegroup: The node group's name.
            instance: The CPU instance type.
            zone: Their zone; the config's first if None.
            labels: Extra labels.
            taints: Taints (none on the platform's).
            name_prefix: Node names are ``<prefix>-<i>``; the node group's name if None.

        Returns:
            The nodes, Ready.
        """
        shape = nodes.cpu_node_shape(instance)
        key, value = nodes.SYSTEM_LABEL
        node_labels = {
            **nodes.cpu_node_labels(
                instance,
                zone=zone or self.config.zones[0],
                region=self.config.region,
                nodegroup=nodegroup,
            ),
            key: value,
            **dict(labels or {}),
        }
        prefix = name_prefix or nodegroup
        return [
            self.add_node_object(
                f"{prefix}-{i}",
                labels=node_labels,
                taints=taints,
                capacity=shape.capacity.quantities(),
                allocatable=shape.allocatable.quantities(),
            )
            for i in range(count)
        ]

    def install_platform_daemonsets(
        self,
        plugins: Iterable[eks_node.DevicePlugin] | None = None,
        *,
        timeout: float = 90.0,
    ) -> list[dict[str, Any]]:
        """Create ``eks_node.PLATFORM_DAEMONSETS`` as DaemonSets and wait until they run.

        See ``nodes.platform_daemonset_manifests``. Their pods then take their
        requests on every node they land on, as on EKS.

        Args:
            plugins: Device plugins installed; the config's ``karpenter_plugins`` if None.
            timeout: Seconds to wait until every DaemonSet's pods are Ready.

        Returns:
            The DaemonSets as created.
        """
        manifests = nodes.platform_daemonset_manifests(
            plugins=self.config.karpenter_plugins if plugins is None else plugins
        )
        for ns in nodes.daemonset_namespaces(manifests):
            if self.api.get_or_none("v1", "Namespace", ns) is None:
                self.create_namespace(ns)
        created = [self.api.apply(m) for m in manifests]

        def all_ready() -> bool:
            for m in manifests:
                meta = m["metadata"]
                ds = self.api.get("apps/v1", "DaemonSet", meta["name"], meta["namespace"])
                st = ds.get("status") or {}
                if st.get("observedGeneration", 0) < ds["metadata"]["generation"]:
                    return False
                if st.get("numberReady", 0) != st.get("desiredNumberScheduled", -1):
                    return False
            return True

        wait_for("the platform DaemonSets' pods to be Ready", all_ready, timeout=timeout)
        return created

    def remove_platform_daemonsets(self, *, timeout: float = 60.0) -> None:
        """Delete the DaemonSets ``install_platform_daemonsets`` made, and wait for their pods."""
        key, value = nodes.PLATFORM_DAEMONSET_LABEL
        selector = f"{key}={value}"
        for ds in self.api.list_objects("apps/v1", "DaemonSet", None, selector=selector):
            meta = ds["metadata"]
            self.api.delete("apps/v1", "DaemonSet", meta["name"], meta["namespace"])
        wait_for(
            "the platform DaemonSets' pods to be gone",
            lambda: not self.api.list_objects("v1", "Pod", None, selector=selector),
            timeout=timeout,
        )

    # -- diagnostics -----------------------------------------------------------------

    def log_tail(self, component: str, lines: int = 40, grep: str = "") -> str:
        """The last lines of one component's log (of its current attempt).

        Args:
            component: e.g. ``karpenter-kwok``, ``kube-scheduler``, ``kwok``,
                ``kuberay-operator``, ``pods`` (the fake pod servers).
            lines: How many.
            grep: Keep only lines containing this (case-insensitive).
        """
        log = self.workdir / "logs" / f"{component}.log"
        try:
            text = log.read_text(errors="replace")
        except OSError:
            return f"    ({log}: no log)"
        kept = text.rsplit("--- attempt ", 1)[-1].splitlines()
        if grep:
            kept = [line for line in kept if grep.lower() in line.lower()]
        return "\n".join("    " + line[:400] for line in kept[-lines:]) or "    (empty)"

    def karpenter_report(self, nodepool: str | None = None) -> str:
        """What Karpenter was doing: NodePools, NodeClaims with conditions, nodes, its log.

        Meant for timeouts waiting on Karpenter: a NodeClaim stuck before
        ``Registered`` (the KWOK provider creates the Node in a goroutine with
        four quick retries and only logs "failed creating node from nodeclaim"
        when they fail), one that is not ``Initialized`` (the node is not Ready,
        or lacks a resource its instance type promises), or no NodeClaim at all
        (the provisioner found no instance type: its log says why).

        Args:
            nodepool: Only this NodePool's objects (all if None).
        """
        selector = f"karpenter.sh/nodepool={nodepool}" if nodepool else ""
        out = ["Karpenter:"]
        pools = self.api.list_objects("karpenter.sh/v1", "NodePool")
        for np in pools:
            if nodepool and np["metadata"]["name"] != nodepool:
                continue
            out.append(f"  NodePool {np['metadata']['name']}: {_conditions(np)}")
        claims = self.api.list_objects("karpenter.sh/v1", "NodeClaim", selector=selector)
        if not claims:
            out.append("  no NodeClaims" + (f" of NodePool {nodepool}" if nodepool else ""))
        for c in claims:
            st = c.get("status") or {}
            out.append(
                f"  NodeClaim {c['metadata']['name']} (created "
                f"{c['metadata'].get('creationTimestamp')}, node {st.get('nodeName')!r}, "
                f"provider {st.get('providerID')!r}): {_conditions(c)}"
            )
        for n in self.api.list_objects("v1", "Node", selector=selector):
            taints = [f"{t['key']}:{t['effect']}" for t in n["spec"].get("taints") or []]
            out.append(f"  Node {n['metadata']['name']}: {_conditions(n)} taints {taints}")
        out.append("  kwok log, errors (it makes the nodes Ready):")
        out.append(self.log_tail("kwok", 8, grep="error"))
        out.append("  karpenter-kwok log (its decisions and errors, newest last):")
        out.append(_karpenter_decisions(self.workdir / "logs" / "karpenter-kwok.log", 25))
        return "\n".join(out)

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the toolchain's kubectl against this cluster."""
        return subprocess.run(
            [self._exe("kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            check=check,
        )

    def memory_rss_mib(self) -> dict[str, float]:
        """Resident memory of each running component, in MiB."""
        out = {}
        for c in self._components:
            if c.popen and c.popen.poll() is None:
                out[c.name] = _rss_mib(c.popen.pid)
        return out

    def status(self) -> dict[str, Any]:
        """What is running: components with PIDs, start-up times and memory."""
        rss = self.memory_rss_mib()
        return {
            "workdir": str(self.workdir),
            "kubeconfig": str(self.kubeconfig),
            "server": f"https://127.0.0.1:{self._apiserver_port}",
            "components": {
                c.name: {
                    "pid": c.popen.pid if c.popen else None,
                    "running": bool(c.popen and c.popen.poll() is None),
                    "ready_after_s": round(c.ready_after, 2) if c.ready_after else None,
                    "rss_mib": round(rss.get(c.name, 0.0), 1),
                    "log": str(c.log),
                }
                for c in self._components
            },
            "rss_total_mib": round(sum(rss.values()), 1),
            "pod_servers": self.pod_servers.served() if self.pod_servers else None,
        }


def _karpenter_decisions(log: Path, lines: int) -> str:
    """Karpenter's JSON log as one short line per decision or error (no start-up chatter)."""
    try:
        text = log.read_text(errors="replace").rsplit("--- attempt ", 1)[-1]
    except OSError:
        return f"    ({log}: no log)"
    out = []
    for raw in text.splitlines():
        try:
            entry = json.loads(raw)
        except json.JSONDecodeError:
            continue
        message = str(entry.get("message", ""))
        if entry.get("level") == "DEBUG" or message.startswith(("Starting", "starting")):
            continue
        subject = entry.get("NodeClaim") or entry.get("Pod") or entry.get("NodePool") or ""
        if isinstance(subject, dict):
            subject = "/".join(str(v) for v in (subject.get("namespace"), subject.get("name")) if v)
        line = f"{entry.get('time', '')[11:19]} {entry.get('level', '')} {message}"
        if subject:
            line += f" [{subject}]"
        for key in ("error", "instance-type", "nodepool", "provider-id", "Node"):
            if key in entry:
                line += f" {key}={str(entry[key])[:500]}"
        out.append("    " + line)
    return "\n".join(out[-lines:]) or "    (nothing but start-up)"


def _conditions(obj: Mapping[str, Any]) -> str:
    """An object's status conditions on one line: ``Type=Status(Reason: message)``."""
    conds = (obj.get("status") or {}).get("conditions") or []
    parts = []
    for c in conds:
        why = c.get("reason", "")
        if c.get("message"):
            why += f": {str(c['message'])[:200]}"
        parts.append(f"{c['type']}={c['status']}" + (f"({why})" if why else ""))
    return ", ".join(parts) or "(no conditions)"


def _bind(check: Callable[[str], bool], arg: str) -> Callable[[], bool]:
    return lambda: check(arg)


def _rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _shared_version(key: str) -> str:
    for line in (REPO / "components" / "versions.env").read_text().splitlines():
        if line.startswith(f"{key}="):
            return line.split("=", 1)[1].strip()
    raise SimError(f"components/versions.env has no {key}")


# --------------------------------------------------------------------------- command line


def _cmd_up(args: argparse.Namespace) -> int:
    cluster = Cluster(
        ClusterConfig(
            workdir=Path(args.workdir) if args.workdir else None,
            serve_pods=not args.no_serve_pods,
            auto_mode=args.auto_mode,
            platform_daemonsets=args.daemonsets,
        )
    )
    try:
        cluster.start()
    except SimError as e:
        print(f"kube-sim: error: {e}", file=sys.stderr)
        cluster.abandon()
        return 1
    status = cluster.status()
    status["pid"] = os.getpid()
    STATE_FILE.write_text(json.dumps(status, indent=1))
    print(
        f"\nkubeconfig: {cluster.kubeconfig}\n"
        f"  kubectl:  {cluster._exe('kubectl')} --kubeconfig {cluster.kubeconfig} get nodes\n"
        "  project:  LLM_ENDPOINTS_TARGET=existing "
        f"LLM_ENDPOINTS_KUBECONFIG={cluster.kubeconfig} ...\n"
        "  (run those inside this network namespace: nsenter --net=/proc/"
        f"{os.getpid()}/ns/net ...)\n"
        f"control plane: {status['rss_total_mib']:.0f} MiB resident. Ctrl-C stops it.",
        flush=True,
    )
    stop = False

    def on_signal(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        while not stop:
            time.sleep(0.5)
            dead = [c.name for c in cluster._components if c.popen and c.popen.poll() is not None]
            if dead:
                print(f"kube-sim: {', '.join(dead)} exited; stopping", file=sys.stderr)
                break
    finally:
        print("kube-sim: stopping", file=sys.stderr)
        cluster.cleanup()
        STATE_FILE.unlink(missing_ok=True)
    return 0


def _cmd_status(_: argparse.Namespace) -> int:
    if not STATE_FILE.exists():
        print("kube-sim: none running (no state file)", file=sys.stderr)
        return 1
    state = json.loads(STATE_FILE.read_text())
    for c in state["components"].values():
        c["running"] = Path(f"/proc/{c['pid']}").exists()
        c["rss_mib"] = round(_rss_mib(c["pid"]), 1)
    state["rss_total_mib"] = round(sum(c["rss_mib"] for c in state["components"].values()), 1)
    print(json.dumps(state, indent=1))
    return 0


def _cmd_down(_: argparse.Namespace) -> int:
    if not STATE_FILE.exists():
        print("kube-sim: none running (no state file)", file=sys.stderr)
        return 1
    pid = json.loads(STATE_FILE.read_text())["pid"]
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        STATE_FILE.unlink(missing_ok=True)
        print(f"kube-sim: process {pid} is gone; removed the stale state file", file=sys.stderr)
        return 1
    print(f"kube-sim: asked process {pid} to stop", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tests.kube.sim up|down|status``."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.kube.sim", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start a cluster and wait for Ctrl-C")
    up.add_argument(
        "--workdir", help="folder for certificates, data and logs (default: a temp dir)"
    )
    up.add_argument(
        "--daemonsets",
        action="store_true",
        help="create the platform's DaemonSets (components/eks_node.PLATFORM_DAEMONSETS)",
    )
    up.add_argument(
        "--auto-mode",
        action="store_true",
        help="an EKS Auto Mode cluster: Karpenter's nodes carry eks.amazonaws.com/compute-type",
    )
    up.add_argument(
        "--no-serve-pods",
        action="store_true",
        help="run no fake container processes on the pods' IPs (tests/kube/serving.py)",
    )
    up.set_defaults(func=_cmd_up)
    sub.add_parser("status", help="show the running cluster").set_defaults(func=_cmd_status)
    sub.add_parser("down", help="stop the running cluster").set_defaults(func=_cmd_down)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
