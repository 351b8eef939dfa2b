"""Starting and stopping the local control plane as processes on loopback ports.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok (fake GPU nodes) and,
optionally, the local node agent. Everything lives under one state directory except etcd's
data, which goes to tmpfs (``/dev/shm``) when there is one.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import ipaddress
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from rft_devcluster import clusterdns, fake_nodes, kwok_stages, pki
from rft_devcluster.handle import ClusterHandle, LocalNodeInfo, as_dict
from rft_devcluster.kubeconfig import write_kubeconfig
from rft_devcluster.processes import ProcessRecord, spawn, stop_group, tail
from rft_devcluster.rbac import grant_cluster_role
from rft_devcluster.state import ClusterState, Status, write_state
from rft_devcluster.waiting import free_port, wait_for

SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
KUBERNETES_SERVICE_IP = "10.0.0.1"
# kwok's default pod CIDR overlaps the service range above; give its fake pods their own.
KWOK_POD_CIDR = "10.200.0.1/16"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
LOCAL_NODE_NAME = "local-node"
HELPER_USER = "rft-devcluster:local-node-helper"

_ETCD_DIR_PREFIX = "rft-devcluster-etcd-"
START_ATTEMPTS = 3
# What Go servers log when a port picked free was taken before they could bind it.
_PORT_CLASH = "address already in use"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class LocalNodeOptions:
    """How to start the local node agent."""

    name: str = LOCAL_NODE_NAME
    gpus: int = 0
    gpu_product: str = "NVIDIA-A100-SXM4-80GB"
    cpu: str = "4"
    memory: str = "16Gi"
    pods: int = 32
    # "auto" (198.18.0.0/16: on a bridge with a network namespace per pod where the agent may
    # make them, else shared with a local route for the range if possible, else loopback),
    # "loopback" (127.77.x.y in the host's namespace: reachable only from this host; the
    # apiserver refuses loopback addresses in EndpointSlices, so the agent publishes them
    # itself) or a CIDR. See localnode/network.py.
    pod_network: str = "auto"
    # "auto": a network namespace per pod where possible (servers bind 0.0.0.0, a pod's
    # containers share its loopback); "shared": every pod in the host's namespace.
    pod_netns: str = "auto"
    # KEY=VALUE pairs the emulated EKS pod identity webhook adds to IRSA pods (emulator endpoint).
    workload_identity_env: tuple[tuple[str, str], ...] = ()
    # Taints the Node registers with (key, value, effect), like the kubelet's --register-with-taints.
    taints: tuple[tuple[str, str, str], ...] = ()


def local_node_argv(
    opts: LocalNodeOptions, *, kubeconfig: Path, helper: Path, root_dir: Path, cluster_dns: str | None
) -> list[str]:
    """The command line of a local node agent (``python -m rft_devcluster.localnode``)."""
    return [
        sys.executable,
        "-m",
        "rft_devcluster.localnode",
        f"--kubeconfig={kubeconfig}",
        f"--helper-kubeconfig={helper}",
        f"--node-name={opts.name}",
        f"--root-dir={root_dir}",
        f"--pod-network={opts.pod_network}",
        f"--pod-netns={opts.pod_netns}",
        *(f"--workload-identity-env={k}={v}" for k, v in opts.workload_identity_env),
        f"--cpu={opts.cpu}",
        f"--memory={opts.memory}",
        f"--pods={opts.pods}",
        f"--gpus={opts.gpus}",
        f"--gpu-product={opts.gpu_product}",
        *(f"--register-with-taints={k}={v}:{e}" for k, v, e in opts.taints),
        # The pods' nameserver: CoreDNS (clusterdns.py), on this node's IP ("node") or another's.
        *([f"--cluster-dns={cluster_dns}"] if cluster_dns else []),
    ]


def read_local_node_network(root_dir: Path) -> str | None:
    """The /24 a local node agent with this root directory claimed, once it has."""
    with contextlib.suppress(FileNotFoundError):
        return (root_dir / "pod-network").read_text().strip() or None
    return None


def read_local_node_mode(root_dir: Path) -> str:
    """``netns`` or ``shared`` (localnode/network.py), once the agent has chosen."""
    with contextlib.suppress(FileNotFoundError):
        return (root_dir / "pod-network-mode").read_text().strip() or "shared"
    return "shared"


@dataclass(frozen=True)
class ClusterOptions:
    """What to start and how long to wait for it."""

    gpu_nodes: int = 2
    local_node: LocalNodeOptions | None = None
    startup_timeout: float = 120.0
    stop_grace_seconds: float = 10.0
    # Extra command-line flags, e.g. for load tests: the controller-manager's and scheduler's
    # client-side rate limits (20 and 50 requests/s by default) would otherwise be what is measured.
    apiserver_args: tuple[str, ...] = ()
    controller_manager_args: tuple[str, ...] = ()
    scheduler_args: tuple[str, ...] = ()
    # CoreDNS (clusterdns.py) on the local node's IP, the pods' nameserver, where the host allows
    # it (root); elsewhere the cluster has no DNS and LocalNodeInfo.no_cluster_dns says why.
    cluster_dns: bool = True


class ClusterStartError(RuntimeError):
    """A component did not come up; the message includes the tail of its log."""


@dataclass
class _Component:
    name: str
    popen: subprocess.Popen[bytes]
    record: ProcessRecord
    log_path: Path


@dataclass(frozen=True)
class _Paths:
    state_dir: Path

    @property
    def pki(self) -> Path:
        return self.state_dir / "pki"

    @property
    def kubeconfigs(self) -> Path:
        return self.state_dir / "kubeconfigs"

    @property
    def logs(self) -> Path:
        return self.state_dir / "logs"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    def kubeconfig(self, user: str) -> Path:
        return self.kubeconfigs / f"{user}.kubeconfig"

    def log(self, component: str) -> Path:
        return self.logs / f"{component}.log"


def _etcd_data_dir() -> Path:
    """A fresh directory for etcd, on tmpfs when available (fsyncs then cost nothing).

    Its name carries our pid; directories left by processes that died without cleaning up
    (SIGKILL) are removed here.
    """
    shm = Path("/dev/shm")  # noqa: S108 - tmpfs on purpose, a private mkdtemp directory
    base = shm if shm.is_dir() and shm.stat().st_mode & 0o002 else Path(tempfile.gettempdir())
    for stale in base.glob(f"{_ETCD_DIR_PREFIX}*"):
        owner = stale.name.removeprefix(_ETCD_DIR_PREFIX).split("-", 1)[0]
        if owner.isdigit() and not psutil.pid_exists(int(owner)):
            shutil.rmtree(stale, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{_ETCD_DIR_PREFIX}{os.getpid()}-", dir=base))


def _node_schedulable(node: dict[str, Any]) -> bool:
    """Ready, and the node-lifecycle controller has removed its ``not-ready`` taint.

    Pods created while that taint is on may wait in the scheduler's backoff queue.
    """
    conditions = node.get("status", {}).get("conditions", [])
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
    tainted = any(t["key"] == "node.kubernetes.io/not-ready" for t in node.get("spec", {}).get("taints", []))
    return ready and not tainted


def _grant_local_node_helper(admin: ClusterHandle, user: str) -> None:
    """What the local node agent needs beyond a node's rights, granted to its second identity.

    A node may write only pod status and read only what its pods reference. The agent also
    annotates pods with their log path, reads ServiceAccounts (the emulated IRSA webhook), and
    publishes loopback pod addresses in EndpointSlices of its own (see localnode/endpoints.py).
    """
    name = "rft-devcluster:local-node-helper"
    grant_cluster_role(
        admin,
        name,
        user,
        [
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "patch"]},
            {"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["get"]},
            # Tokens for the emulated IRSA webhook's volume (audience sts.amazonaws.com), which
            # the NodeRestriction plugin refuses the node because the stored pod lacks it.
            {"apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"]},
            {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "watch"]},
            {
                "apiGroups": ["discovery.k8s.io"],
                "resources": ["endpointslices"],
                "verbs": ["get", "list", "watch", "create", "update", "delete"],
            },
        ],
    )


class ControlPlane:
    """Owns the processes of one local cluster; :meth:`stop` leaves none behind.

    Use as a context manager, or call :meth:`start` and :meth:`stop`; an ``atexit`` hook
    stops it too if the interpreter exits first.
    """

    def __init__(
        self,
        state_dir: Path,
        bin_dir: Path,
        options: ClusterOptions | None = None,
        *,
        progress: Progress | None = None,
        supervisor: ProcessRecord | None = None,
    ) -> None:
        self.paths = _Paths(state_dir.resolve())
        self.bin_dir = bin_dir
        self.options = options or ClusterOptions()
        self._progress = progress or (lambda _msg: None)
        self._supervisor = supervisor
        self._components: list[_Component] = []
        self._lock = threading.Lock()
        self._etcd_data_dir: Path | None = None
        self._ca_pair: pki.KeyPair | None = None
        self._server = ""
        self._handle: ClusterHandle | None = None
        self._stopped = False
        self._coredns: Path | None = None
        self._no_cluster_dns = ""

    # ----------------------------------------------------------------- lifecycle

    def __enter__(self) -> ClusterHandle:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    @property
    def handle(self) -> ClusterHandle:
        """The running cluster (after :meth:`start`)."""
        if self._handle is None:
            raise RuntimeError("the control plane is not started")
        return self._handle

    def start(self) -> ClusterHandle:
        """Start every component, wait until the cluster is usable, and return its handle.

        Ports are picked free just before use; if another process grabs one in between, the
        start is retried from scratch (up to :data:`START_ATTEMPTS` times). On failure
        everything already started is stopped and :class:`ClusterStartError` (or the waiting
        timeout) is raised.
        """
        atexit.register(self.stop)
        started = time.monotonic()
        self.paths.state_dir.mkdir(parents=True, exist_ok=True)
        self._write_state(Status.STARTING)
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                handle = self._start_all()
                break
            except ClusterStartError as exc:
                if _PORT_CLASH not in str(exc) or attempt == START_ATTEMPTS:
                    self._fail(exc)
                    raise
                self._progress(f"a port was taken meanwhile; starting again ({exc})")
                self._stop_components()
            except BaseException as exc:
                self._fail(exc)
                raise
        self._handle = handle
        self._write_state(Status.READY)
        self._progress(f"cluster ready in {time.monotonic() - started:.1f}s")
        return handle

    def _fail(self, exc: BaseException) -> None:
        self._write_state(Status.FAILED, error=str(exc))
        self.stop(final_status=Status.FAILED, error=str(exc))

    def stop(self, *, final_status: str = Status.STOPPED, error: str = "") -> None:
        """Stop every process this control plane started (idempotent) and remove etcd's data."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._stop_components(error=error)
        self._write_state(final_status, components=[], error=error)
        atexit.unregister(self.stop)

    def _stop_components(self, *, error: str = "") -> None:
        with self._lock:
            components, self._components = self._components, []
        if components:
            self._write_state(Status.STOPPING, components=components, error=error)
        # Reverse order: nodes and controllers go before the apiserver, the apiserver before etcd.
        for comp in reversed(components):
            stop_group(comp.record, grace_seconds=self.options.stop_grace_seconds, popen=comp.popen)
        if self._etcd_data_dir is not None:
            shutil.rmtree(self._etcd_data_dir, ignore_errors=True)
            self._etcd_data_dir = None

    def dead_components(self) -> list[str]:
        """Names of the components whose process has exited."""
        return [c.name for c in self._components if c.popen.poll() is not None]

    # ----------------------------------------------------------------- steps

    def _prepare_cluster_dns(self) -> None:
        """Locate (or build) CoreDNS before anything starts, or note why the cluster has no DNS."""
        if not self.options.cluster_dns:
            self._no_cluster_dns = "the cluster was started without cluster DNS"
        elif not self.options.local_node:
            self._no_cluster_dns = "no local node: no pod that could use cluster DNS"
        else:
            self._no_cluster_dns = clusterdns.unavailable()
        if self._no_cluster_dns:
            self._progress(f"no cluster DNS: {self._no_cluster_dns}")
            return
        try:
            self._coredns = clusterdns.ensure_coredns()
        except clusterdns.ClusterDNSUnavailableError as exc:
            raise ClusterStartError(str(exc)) from exc

    def _start_all(self) -> ClusterHandle:
        self._prepare_cluster_dns()
        ca = self._write_pki()
        etcd_url = self._start_etcd()
        self._start_apiserver(ca, etcd_url)
        admin = ClusterHandle(
            state_dir=self.paths.state_dir,
            kubeconfig=self.paths.admin_kubeconfig,
            server=self._server,
            bin_dir=self.bin_dir,
            ca_path=self.paths.pki / "ca.crt",
        )
        kcm_port = self._start_controller_manager()
        scheduler_port = self._start_scheduler()
        self._start_kwok()
        local_node = self._start_local_node(ca, admin) if self.options.local_node else None
        if local_node is not None:
            local_node = self._start_cluster_dns(ca, admin, local_node)
        gpu_nodes = self._create_gpu_nodes(admin)
        self._wait_https_health("kube-controller-manager", kcm_port)
        self._wait_https_health("kube-scheduler", scheduler_port)
        self._wait_default_service_account(admin)
        self._wait_nodes_ready(admin, [*gpu_nodes, *([local_node.name] if local_node else [])])
        return ClusterHandle(
            state_dir=admin.state_dir,
            kubeconfig=admin.kubeconfig,
            server=admin.server,
            bin_dir=admin.bin_dir,
            ca_path=admin.ca_path,
            gpu_nodes=tuple(gpu_nodes),
            local_node=local_node,
        )

    def _write_pki(self) -> pki.KeyPair:
        pki_dir = self.paths.pki
        pki_dir.mkdir(parents=True, exist_ok=True)
        ca = self._ca_pair = pki.make_ca()
        ca.write(pki_dir / "ca.crt", pki_dir / "ca.key")
        serving = pki.issue_certificate(
            ca,
            "kube-apiserver",
            dns_names=[
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
            ip_addresses=["127.0.0.1", KUBERNETES_SERVICE_IP],
            server=True,
            client=False,
        )
        serving.write(pki_dir / "apiserver.crt", pki_dir / "apiserver.key")
        sa_private, sa_public = pki.make_signing_key()
        (pki_dir / "sa.key").write_bytes(sa_private)
        (pki_dir / "sa.key").chmod(0o600)
        (pki_dir / "sa.pub").write_bytes(sa_public)
        return ca

    def _user_kubeconfig(self, ca: pki.KeyPair, user: str, groups: Sequence[str], path: Path) -> pki.KeyPair:
        """Issue a client certificate for ``user`` in ``groups`` and write a kubeconfig using it."""
        cert = pki.issue_certificate(ca, user, organizations=groups)
        write_kubeconfig(
            path,
            server=self._server,
            ca_pem=ca.cert_pem,
            user=user,
            client_cert_pem=cert.cert_pem,
            client_key_pem=cert.key_pem,
        )
        return cert

    def _spawn(self, name: str, argv: Sequence[str]) -> _Component:
        log_path = self.paths.log(name)
        popen, record = spawn(name, argv, log_path=log_path)
        component = _Component(name, popen, record, log_path)
        with self._lock:
            self._components.append(component)
        self._write_state(Status.STARTING)
        return component

    def _fail_if_dead(self, component: _Component) -> None:
        code = component.popen.poll()
        if code is not None:
            raise ClusterStartError(
                f"{component.name} exited with code {code}; last lines of {component.log_path}:\n"
                f"{tail(component.log_path)}"
            )

    def _wait(self, components: Sequence[_Component], probe: Callable[[], object], what: str) -> None:
        """Poll ``probe`` until truthy, failing early if one of ``components`` exits."""

        def check_alive() -> None:
            for component in components:
                self._fail_if_dead(component)

        def guarded() -> object:
            check_alive()
            return probe()

        logs = "\n".join(f"last lines of {c.log_path}:\n{tail(c.log_path)}" for c in components)

        started = time.monotonic()
        try:
            wait_for(
                guarded,
                timeout=self.options.startup_timeout,
                what=what,
                on_timeout=lambda: logs,
                fatal=(ClusterStartError,),
            )
        except Exception as exc:
            check_alive()
            raise ClusterStartError(str(exc)) from exc
        self._progress(f"{what}: ok ({time.monotonic() - started:.1f}s)")

    def _start_etcd(self) -> str:
        self._etcd_data_dir = _etcd_data_dir()
        client_port, peer_port = free_port(), free_port()
        client_url, peer_url = f"http://127.0.0.1:{client_port}", f"http://127.0.0.1:{peer_port}"
        etcd = self._spawn(
            "etcd",
            [
                str(self.bin_dir / "etcd"),
                "--name=default",
                f"--data-dir={self._etcd_data_dir}",
                f"--listen-client-urls={client_url}",
                f"--advertise-client-urls={client_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                "--unsafe-no-fsync",
                "--log-level=warn",
                "--quota-backend-bytes=4294967296",
            ],
        )

        def healthy() -> bool:
            response = httpx.get(f"{client_url}/health", timeout=2)
            return response.status_code == 200 and response.json().get("health") == "true"

        self._wait([etcd], healthy, "etcd healthy")
        return client_url

    def _start_apiserver(self, ca: pki.KeyPair, etcd_url: str) -> None:
        port = free_port()
        self._server = f"https://127.0.0.1:{port}"
        pki_dir = self.paths.pki
        admin = self._user_kubeconfig(ca, "admin", ["system:masters"], self.paths.admin_kubeconfig)
        # httpx wants the admin's certificate and key in one PEM file.
        admin_pem = pki_dir / "admin.pem"
        admin_pem.write_bytes(admin.cert_pem + admin.key_pem)
        admin_pem.chmod(0o600)
        apiserver = self._spawn(
            "kube-apiserver",
            [
                str(self.bin_dir / "kube-apiserver"),
                f"--etcd-servers={etcd_url}",
                f"--secure-port={port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--cert-dir={pki_dir}",
                f"--tls-cert-file={pki_dir / 'apiserver.crt'}",
                f"--tls-private-key-file={pki_dir / 'apiserver.key'}",
                f"--client-ca-file={pki_dir / 'ca.crt'}",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={pki_dir / 'sa.pub'}",
                f"--service-account-signing-key-file={pki_dir / 'sa.key'}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                "--allow-privileged=true",
                # The endpoint reconciler would publish 127.0.0.1 for the `kubernetes` Service,
                # which Endpoints validation rejects (loopback); nothing here needs it.
                "--endpoint-reconciler-type=none",
                "--profiling=false",
                *self.options.apiserver_args,
            ],
        )
        ssl_context = ssl.create_default_context(cafile=str(pki_dir / "ca.crt"))
        ssl_context.load_cert_chain(str(admin_pem))

        def ready() -> bool:
            return httpx.get(f"{self._server}/readyz", verify=ssl_context, timeout=5).status_code == 200

        self._wait([apiserver], ready, "kube-apiserver ready")

    def _component_flags(self, kubeconfig: Path, port: int, name: str) -> list[str]:
        cert_dir = self.paths.pki / name
        cert_dir.mkdir(parents=True, exist_ok=True)
        return [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--leader-elect=false",
            f"--secure-port={port}",
            "--bind-address=127.0.0.1",
            f"--cert-dir={cert_dir}",
        ]

    def _start_controller_manager(self) -> int:
        ca = self._ca()
        kubeconfig = self.paths.kubeconfig("kube-controller-manager")
        self._user_kubeconfig(ca, "system:kube-controller-manager", [], kubeconfig)
        port = free_port()
        pki_dir = self.paths.pki
        self._spawn(
            "kube-controller-manager",
            [
                str(self.bin_dir / "kube-controller-manager"),
                *self._component_flags(kubeconfig, port, "kube-controller-manager"),
                "--controllers=*",
                f"--service-account-private-key-file={pki_dir / 'sa.key'}",
                f"--root-ca-file={pki_dir / 'ca.crt'}",
                f"--cluster-signing-cert-file={pki_dir / 'ca.crt'}",
                f"--cluster-signing-key-file={pki_dir / 'ca.key'}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--use-service-account-credentials=true",
                *self.options.controller_manager_args,
            ],
        )
        return port

    def _start_scheduler(self) -> int:
        kubeconfig = self.paths.kubeconfig("kube-scheduler")
        self._user_kubeconfig(self._ca(), "system:kube-scheduler", [], kubeconfig)
        port = free_port()
        self._spawn(
            "kube-scheduler",
            [
                str(self.bin_dir / "kube-scheduler"),
                *self._component_flags(kubeconfig, port, "kube-scheduler"),
                *self.options.scheduler_args,
            ],
        )
        return port

    def _start_kwok(self) -> None:
        kubeconfig = self.paths.kubeconfig("kwok")
        self._user_kubeconfig(self._ca(), "kwok", ["system:masters"], kubeconfig)
        config_path = self.paths.state_dir / "kwok.yaml"
        config_path.write_text(kwok_stages.render_kwok_config())
        self._spawn(
            "kwok",
            [
                str(self.bin_dir / "kwok"),
                f"--kubeconfig={kubeconfig}",
                f"--config={config_path}",
                f"--manage-nodes-with-annotation-selector="
                f"{fake_nodes.KWOK_NODE_ANNOTATION}={fake_nodes.KWOK_NODE_ANNOTATION_VALUE}",
                f"--cidr={KWOK_POD_CIDR}",
                "--node-ip=10.199.0.1",
            ],
        )

    def _start_local_node(self, ca: pki.KeyPair, admin: ClusterHandle) -> LocalNodeInfo:
        opts = self.options.local_node
        assert opts is not None
        kubeconfig = self.paths.kubeconfig("local-node")
        self._user_kubeconfig(ca, f"system:node:{opts.name}", ["system:nodes"], kubeconfig)
        # A node may write only pod status; the rest goes through a second identity.
        helper = self.paths.kubeconfig("local-node-helper")
        self._user_kubeconfig(ca, HELPER_USER, [], helper)
        _grant_local_node_helper(admin, HELPER_USER)
        root_dir = self.paths.state_dir / "local-node"
        # A fresh etcd knows none of an earlier run's pods: start from an empty directory.
        shutil.rmtree(root_dir, ignore_errors=True)
        argv = local_node_argv(
            opts,
            kubeconfig=kubeconfig,
            helper=helper,
            root_dir=root_dir,
            cluster_dns="node" if self._coredns is not None else None,
        )
        component = self._spawn("local-node", argv)

        def chosen_network() -> str | None:
            self._fail_if_dead(component)
            return read_local_node_network(root_dir)

        network = wait_for(
            chosen_network,
            timeout=self.options.startup_timeout,
            what="the local node agent to choose its pod network",
            on_timeout=lambda: tail(component.log_path),
            fatal=(ClusterStartError,),
        )
        return LocalNodeInfo(
            name=opts.name,
            root_dir=root_dir,
            pod_network=network,
            gpus=opts.gpus,
            log_path=component.log_path,
            pod_network_mode=read_local_node_mode(root_dir),
        )

    def _start_cluster_dns(self, ca: pki.KeyPair, admin: ClusterHandle, node: LocalNodeInfo) -> LocalNodeInfo:
        """CoreDNS on the local node's IP, port 53, serving the cluster's names from the apiserver."""
        if self._coredns is None:
            return dataclasses.replace(node, no_cluster_dns=self._no_cluster_dns)
        kubeconfig = self.paths.kubeconfig("coredns")
        self._user_kubeconfig(ca, clusterdns.USER, [], kubeconfig)
        clusterdns.grant_coredns(admin)
        node_ip = str(next(ipaddress.IPv4Network(node.pod_network).hosts()))
        ready_port = free_port()
        conf = self.paths.state_dir / "coredns" / "Corefile"
        conf.parent.mkdir(parents=True, exist_ok=True)
        conf.write_text(
            clusterdns.corefile(
                listen_ip=node_ip,
                kubeconfig=kubeconfig,
                context=clusterdns.USER,
                health_port=free_port(),
                ready_port=ready_port,
            )
        )
        component = self._spawn("coredns", [str(self._coredns), "-conf", str(conf)])

        def ready() -> bool:
            # 200 once every plugin is ready: the kubernetes plugin has synced with the apiserver.
            return httpx.get(f"http://127.0.0.1:{ready_port}/ready", timeout=2).status_code == 200

        self._wait([component], ready, "CoreDNS ready")
        return dataclasses.replace(node, cluster_dns=node_ip)

    def _ca(self) -> pki.KeyPair:
        if self._ca_pair is None:
            raise RuntimeError("the CA is made first, in _write_pki")
        return self._ca_pair

    def _create_gpu_nodes(self, admin: ClusterHandle) -> list[str]:
        names = []
        with admin.api_client() as api:
            core = client.CoreV1Api(api)
            for manifest in fake_nodes.gpu_node_manifests(self.options.gpu_nodes):
                try:
                    core.create_node(client.V1Node.model_validate(manifest))
                except ApiException as exc:
                    if exc.status != 409:
                        raise
                names.append(manifest["metadata"]["name"])
        return names

    def _component(self, name: str) -> _Component:
        return next(c for c in self._components if c.name == name)

    def _wait_https_health(self, name: str, port: int) -> None:
        def healthy() -> bool:
            # Their serving certificates are self-signed, and /healthz is public on them.
            return httpx.get(f"https://127.0.0.1:{port}/healthz", verify=False, timeout=2).status_code == 200  # noqa: S501

        self._wait([self._component(name)], healthy, f"{name} healthy")

    def _wait_default_service_account(self, admin: ClusterHandle) -> None:
        # Pods need their namespace's `default` ServiceAccount, made by the controller-manager.
        with admin.api_client() as api:
            core = client.CoreV1Api(api)
            self._wait(
                [self._component("kube-controller-manager")],
                lambda: core.read_namespaced_service_account("default", "default"),
                "ServiceAccount default/default",
            )

    def _wait_nodes_ready(self, admin: ClusterHandle, names: Sequence[str]) -> None:
        if not names:
            return
        with admin.api_client() as api:
            core = client.CoreV1Api(api)

            def all_ready() -> bool:
                return all(_node_schedulable(as_dict(core.read_node(name))) for name in names)

            owners = [c for c in self._components if c.name in ("kwok", "local-node")]
            self._wait(owners, all_ready, f"nodes Ready and untainted ({', '.join(names)})")

    def _write_state(
        self, status: str, *, components: Sequence[_Component] | None = None, error: str = ""
    ) -> None:
        comps = self._components if components is None else components
        handle = self._handle
        state = ClusterState(
            status=status,
            server=self._server,
            kubeconfig=str(self.paths.admin_kubeconfig),
            bin_dir=str(self.bin_dir),
            etcd_data_dir=str(self._etcd_data_dir or ""),
            supervisor=self._supervisor,
            processes=[c.record for c in comps],
            gpu_nodes=list(handle.gpu_nodes) if handle else [],
            local_node=handle.local_node.to_json() if handle and handle.local_node else None,
            error=error,
        )
        write_state(self.paths.state_dir, state)
