"""Per-pod network namespaces, the way a kubelet's bridge CNI plugin wires them.

One Linux bridge per local node, named after its /24 (``rft-<hex of the /24>``, at most 15
characters), holds the node IP (``.1/24``). Each pod gets a network namespace
``rft-<hex of the /24>-<pod uid>`` (``/run/netns/<name>``) with ``lo`` up and one end of a
veth pair named ``eth0`` holding the pod IP (/24) and a default route via the node IP; the
other end (``rfv<uid prefix>``) is a port of the bridge. The host reaches pods at their IPs
over the bridge, pods reach each other across it, and the containers of one pod share its
loopback, so servers bind ``0.0.0.0`` like in a real cluster.

A ``local`` route covering the pod range (``ip route add local 198.18.0.0/16 dev lo``, what the
shared mode of network.py adds) would make the host deliver pod IPs to itself. The bridge
therefore also gets a route for its /24 in the ``local`` table: longest-prefix match within
that table sends pod traffic to the bridge whether or not such a route exists, so the agent
never has to remove a route another cluster may rely on.

Processes enter a pod's namespace through ``nsenter --net=<path> --`` prefixed to their argv
(it execs in place: the pid stays the container's); sockets are made inside a namespace by a
thread that ``setns``-es into it (:func:`in_netns`): a socket stays in the namespace it was
created in.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import logging
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

log = logging.getLogger(__name__)

NETNS_DIR = Path("/run/netns")
_CLONE_NEWNET = 0x40000000
_IP_TIMEOUT_SECONDS = 30.0

T = TypeVar("T")


class NetnsError(RuntimeError):
    """A network namespace, veth or bridge could not be set up."""


def _ip_tool() -> str:
    found = shutil.which("ip") or next((p for p in ("/usr/sbin/ip", "/sbin/ip") if os.path.exists(p)), None)
    if found is None:
        raise NetnsError("the ip command (iproute2) is missing")
    return found


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [_ip_tool(), *args], capture_output=True, text=True, check=False, timeout=_IP_TIMEOUT_SECONDS
    )
    if check and result.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {result.stderr.strip() or f'exit {result.returncode}'}")
    return result


def _exists_ok(*args: str) -> None:
    """Run ``ip args``; an object that already exists is fine (an earlier agent's bridge)."""
    result = _ip(*args, check=False)
    if result.returncode != 0 and not any(
        text in result.stderr for text in ("File exists", "already assigned", "already exists")
    ):
        raise NetnsError(f"ip {' '.join(args)}: {result.stderr.strip()}")


def _nsenter() -> str:
    found = shutil.which("nsenter") or next(
        (p for p in ("/usr/bin/nsenter", "/bin/nsenter") if os.path.exists(p)), None
    )
    if found is None:
        raise NetnsError("nsenter (util-linux) is missing")
    return found


def nsenter_prefix(path: Path) -> list[str]:
    """The argv prefix that runs a command inside the namespace at ``path`` (same pid)."""
    return [_nsenter(), f"--net={path}", "--"]


def _setns(path: Path) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def in_netns(path: Path, fn: Callable[[], T]) -> T:
    """``fn()`` run by a thread inside the network namespace at ``path`` (the caller's stays put).

    Sockets ``fn`` creates belong to that namespace for good and may be used from any thread.
    """
    outcome: list[T] = []
    errors: list[BaseException] = []

    def body() -> None:
        try:
            _setns(path)
            outcome.append(fn())
        except BaseException as exc:  # handed to the caller
            errors.append(exc)

    thread = threading.Thread(target=body, name=f"netns-{path.name}", daemon=True)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return outcome[0]


def names_for(subnet: ipaddress.IPv4Network) -> str:
    """The bridge's name, also the prefix of this node's pod namespaces: ``rft-<8 hex digits>``."""
    return f"rft-{int(subnet.network_address):08x}"


class Bridge:
    """The node's bridge: created (or taken over from an earlier agent of this /24), deleted at close."""

    def __init__(self, subnet: ipaddress.IPv4Network, node_ip: str) -> None:
        self.subnet = subnet
        self.node_ip = node_ip
        self.name = names_for(subnet)

    def create(self) -> None:
        """The bridge with the node IP, up, and its /24 routed to it even past a covering local route."""
        _nsenter()  # fail early where processes could not enter a namespace
        NETNS_DIR.mkdir(parents=True, exist_ok=True)
        _exists_ok("link", "add", self.name, "type", "bridge")
        _exists_ok("addr", "add", f"{self.node_ip}/{self.subnet.prefixlen}", "dev", self.name)
        _ip("link", "set", self.name, "up")
        result = _ip(
            "route",
            "replace",
            str(self.subnet),
            "dev",
            self.name,
            "src",
            self.node_ip,
            "table",
            "local",
            check=False,
        )
        if result.returncode != 0:
            log.warning(
                "could not route %s to %s in the local table: %s", self.subnet, self.name, result.stderr
            )

    def namespace_prefix(self) -> str:
        return f"{self.name}-"

    def leftover_namespaces(self) -> list[str]:
        """Pod namespaces of this /24 that exist now (an earlier agent's, after a crash)."""
        with contextlib.suppress(FileNotFoundError):
            return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(self.namespace_prefix()))
        return []

    def sweep(self) -> None:
        """Delete every pod namespace of this /24 (their veth pairs go with them)."""
        for name in self.leftover_namespaces():
            log.info("deleting the leftover pod network namespace %s", name)
            _ip("netns", "delete", name, check=False)

    def delete(self) -> None:
        """Remove the pods' namespaces, the local-table route and the bridge."""
        self.sweep()
        _ip("route", "del", str(self.subnet), "dev", self.name, "table", "local", check=False)
        _ip("link", "del", self.name, check=False)

    def self_test(self, probe_ip: str) -> None:
        """Make a namespace at ``probe_ip``, listen inside it, connect from the host; raise if that fails."""
        sandbox = PodSandbox(self, "selftest", probe_ip)
        try:
            sandbox.create()

            def listen() -> socket.socket:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.bind(("0.0.0.0", 0))  # noqa: S104 - inside the probe's own namespace
                sock.listen(1)
                return sock

            listener = in_netns(sandbox.path, listen)
            with listener:
                port = listener.getsockname()[1]
                with socket.create_connection((probe_ip, port), timeout=5):
                    listener.settimeout(5)
                    accepted, _ = listener.accept()
                    accepted.close()
        except OSError as exc:
            raise NetnsError(f"host -> pod namespace at {probe_ip}: {exc}") from exc
        finally:
            sandbox.delete()


class PodSandbox:
    """One pod's namespace and veth pair (idempotent create, delete)."""

    def __init__(self, bridge: Bridge, uid: str, ip: str) -> None:
        self.bridge = bridge
        self.ip = ip
        self.name = f"{bridge.namespace_prefix()}{uid}"
        self.path = NETNS_DIR / self.name
        # Interface names hold at most 15 characters; the uid's first 12 hex digits are unique enough.
        self.host_veth = "rfv" + uid.replace("-", "")[:12]

    def exists(self) -> bool:
        return self.path.exists()

    def create(self) -> None:
        """A fresh namespace (an existing one of the same name is replaced) wired to the bridge."""
        if self.exists():
            self.delete()
        _ip("link", "del", self.host_veth, check=False)
        _ip("netns", "add", self.name)
        try:
            ns = ("-n", self.name)
            _ip("link", "add", self.host_veth, "type", "veth", "peer", "name", "eth0", "netns", self.name)
            _ip("link", "set", self.host_veth, "master", self.bridge.name, "up")
            _ip(*ns, "addr", "add", f"{self.ip}/{self.bridge.subnet.prefixlen}", "dev", "eth0")
            _ip(*ns, "link", "set", "lo", "up")
            _ip(*ns, "link", "set", "eth0", "up")
            _ip(*ns, "route", "add", "default", "via", self.bridge.node_ip)
        except NetnsError:
            self.delete()
            raise

    def delete(self) -> None:
        """Remove the namespace and the veth pair (nothing left if they were never made)."""
        if self.exists():
            _ip("netns", "delete", self.name, check=False)
        _ip("link", "del", self.host_veth, check=False)
