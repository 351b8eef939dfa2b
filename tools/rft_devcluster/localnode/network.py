"""Pod IPs on one host: every pod gets its own address that the host can reach.

Two ways to place the pods (``namespaces``):

* ``auto`` (the default): every pod in its own network namespace, wired to a bridge that
  holds the node IP, like a kubelet with a bridge CNI plugin (see netns.py). It takes root
  or CAP_NET_ADMIN, ``ip`` and ``nsenter``, and a routed range: ``198.18.0.0/16``, or the
  CIDR asked for. The agent checks it works (a namespace the host can connect to) before
  using it; otherwise it warns once and falls back to ``shared``.
* ``shared``: every pod in the host's namespace, each at its own address, so a server must
  bind its pod IP (two pods binding ``0.0.0.0`` on one port collide). The range:

  * ``loopback``: 127.77.0.0/16. Reachable everywhere, even where only 127.0.0.0/8 traffic
    is allowed, but the EndpointSlice API rejects loopback addresses, so the
    controller-manager cannot publish these pods; see endpoints.py for how the agent
    publishes them instead. Asking for ``loopback`` also means ``shared``.
  * a routed range: Linux delivers locally any address in a ``local`` route, so one route
    makes a whole range behave like 127.0.0.0/8::

        ip route add local 198.18.0.0/16 dev lo

    198.18.0.0/15 is reserved for network benchmarking (RFC 2544) and is not routed on the
    internet. ``auto`` uses it, adding the route itself when it may (CAP_NET_ADMIN), and
    falls back to loopback otherwise. (The namespaced mode never adds this route, and routes
    its /24 past it when another cluster did.)

Each agent on the host claims one /24 of the range with a lock file, so several local
clusters never hand out the same address; the node takes ``.1``, pods ``.2``-``.254``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import ipaddress
import logging
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from rft_devcluster.localnode.netns import Bridge, NetnsError, PodSandbox

log = logging.getLogger(__name__)

DEFAULT_ROUTED_RANGE = "198.18.0.0/16"
LOOPBACK_RANGE = "127.77.0.0/16"
# What an operator working with local nodes may contact (its RFT_PROGRESS_POLL): their pods'
# addresses in either kind of range, never the made-up ones of kwok's fake nodes.
OPERATOR_POLL_SCOPE = f"127.0.0.0/8,{DEFAULT_ROUTED_RANGE}"
_LOCK_DIR = Path(os.environ.get("XDG_RUNTIME_DIR") or "/tmp") / "rft-localnode-subnets"  # noqa: S108


class PodNetworkExhaustedError(RuntimeError):
    """No free pod address (or no free /24 on this host)."""


def _is_local_address(ip: str) -> bool:
    """True if a socket can bind ``ip``, i.e. the host delivers it locally."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((ip, 0))
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                return False
            raise
    return True


def _try_add_local_route(cidr: str) -> None:
    ip_tool = shutil.which("ip")
    if ip_tool is None:
        return
    result = subprocess.run(
        [ip_tool, "route", "add", "local", cidr, "dev", "lo"], capture_output=True, text=True, check=False
    )
    if result.returncode == 0:
        log.info("added route: local %s dev lo", cidr)
    else:
        log.info("could not add route local %s dev lo: %s", cidr, result.stderr.strip())


def _routable_range(requested: str) -> ipaddress.IPv4Network:
    if requested == "loopback":
        return ipaddress.IPv4Network(LOOPBACK_RANGE)
    network = ipaddress.IPv4Network(DEFAULT_ROUTED_RANGE if requested == "auto" else requested)
    probe = str(network.network_address + 1)
    if not _is_local_address(probe):
        _try_add_local_route(str(network))
    if _is_local_address(probe):
        return network
    if requested != "auto":
        raise RuntimeError(
            f"{network} is not local to this host; run: sudo ip route add local {network} dev lo"
        )
    log.warning(
        "pod IPs fall back to loopback (%s): Services will have no endpoints. To fix, run once: "
        "sudo ip route add local %s dev lo",
        LOOPBACK_RANGE,
        DEFAULT_ROUTED_RANGE,
    )
    return ipaddress.IPv4Network(LOOPBACK_RANGE)


@dataclass
class _Claim:
    subnet: ipaddress.IPv4Network
    lock_file: IO[bytes]


def _claim_subnet(
    candidates: Iterable[ipaddress.IPv4Network], preferred: ipaddress.IPv4Network | None
) -> _Claim:
    _LOCK_DIR.mkdir(parents=True, exist_ok=True)
    ordered = [preferred] if preferred else []
    ordered += [c for c in candidates if c != preferred]
    for subnet in ordered:
        lock_file = (_LOCK_DIR / f"{subnet.network_address}.lock").open("ab")
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.close()
            continue
        return _Claim(subnet, lock_file)
    raise PodNetworkExhaustedError("every /24 of the pod range is claimed by another local node")


NAMESPACE_MODES = ("auto", "shared")
MODE_FILE = "pod-network-mode"


def _preferred(state_file: Path, routable: ipaddress.IPv4Network) -> ipaddress.IPv4Network | None:
    with contextlib.suppress(FileNotFoundError, ValueError):
        previous = ipaddress.IPv4Network(state_file.read_text().strip())
        if previous.subnet_of(routable):
            return previous
    return None


def _claim_in(routable: ipaddress.IPv4Network, state_file: Path) -> _Claim:
    # Skip the range's first /24 (its .1 is what _routable_range probes).
    candidates = list(routable.subnets(new_prefix=24))[1:]
    return _claim_subnet(candidates, _preferred(state_file, routable))


class PodNetwork:
    """This node's /24: its own address, a pool of pod addresses, and (namespaced) its bridge."""

    def __init__(self, requested: str, state_file: Path, namespaces: str = "auto") -> None:
        if namespaces not in NAMESPACE_MODES:
            raise ValueError(f"pod network namespaces: {namespaces!r} is not one of {NAMESPACE_MODES}")
        self.bridge: Bridge | None = None
        claim = self._namespaced(requested, state_file) if namespaces == "auto" else None
        if claim is None:
            claim = _claim_in(_routable_range(requested), state_file)
        self._claim = claim
        self.subnet = claim.subnet
        self.loopback = self.subnet.subnet_of(ipaddress.IPv4Network("127.0.0.0/8"))
        hosts = list(self.subnet.hosts())
        self.node_ip = str(hosts[0])
        self._pool = [str(h) for h in hosts[1:]]
        self._in_use: set[str] = set()
        self._next = 0
        self._lock = threading.Lock()
        state_file.parent.mkdir(parents=True, exist_ok=True)
        # The mode first: whoever waits for the subnet file finds the mode written.
        (state_file.parent / MODE_FILE).write_text(f"{self.mode}\n")
        state_file.write_text(f"{self.subnet}\n")

    @property
    def mode(self) -> str:
        """``netns`` (a namespace per pod) or ``shared`` (every pod in the host's)."""
        return "netns" if self.bridge is not None else "shared"

    def _namespaced(self, requested: str, state_file: Path) -> _Claim | None:
        """Claim a /24 and make its bridge; None (after one warning) where namespaces cannot be had."""
        if requested == "loopback":
            log.info("pod network 'loopback': pods share the host's network namespace")
            return None
        routable = ipaddress.IPv4Network(DEFAULT_ROUTED_RANGE if requested == "auto" else requested)
        claim = _claim_in(routable, state_file)
        hosts = list(claim.subnet.hosts())
        bridge = Bridge(claim.subnet, str(hosts[0]))
        try:
            bridge.create()
            bridge.sweep()  # an earlier agent's pods (after a crash); recovered pods get fresh ones
            bridge.self_test(str(hosts[-1]))
        except (NetnsError, OSError, subprocess.SubprocessError) as exc:
            log.warning(
                "pods share the host's network namespace (no namespace per pod: %s). Servers in "
                "pods must bind their pod IP; two pods binding 0.0.0.0 on one port collide.",
                exc,
            )
            with contextlib.suppress(NetnsError, OSError, subprocess.SubprocessError):
                bridge.delete()
            claim.lock_file.close()
            return None
        self.bridge = bridge
        log.info(
            "pod network namespaces on bridge %s (%s, node IP %s)", bridge.name, claim.subnet, bridge.node_ip
        )
        return claim

    def sandbox(self, uid: str, ip: str) -> PodSandbox | None:
        """The pod's namespace and veth (not created yet); None in the shared mode."""
        return PodSandbox(self.bridge, uid, ip) if self.bridge is not None else None

    def reserve(self, ip: str) -> bool:
        """Mark ``ip`` as taken (a pod recovered after a restart); False if it is not ours."""
        with self._lock:
            if ip not in self._pool:
                return False
            self._in_use.add(ip)
            return True

    def allocate(self) -> str:
        """A free pod address; addresses are handed out round-robin so reuse comes late."""
        with self._lock:
            for _ in range(len(self._pool)):
                ip = self._pool[self._next]
                self._next = (self._next + 1) % len(self._pool)
                if ip not in self._in_use:
                    self._in_use.add(ip)
                    return ip
        raise PodNetworkExhaustedError(f"all addresses of {self.subnet} are in use")

    def release(self, ip: str) -> None:
        """Return ``ip`` to the pool."""
        with self._lock:
            self._in_use.discard(ip)

    def close(self) -> None:
        """Remove the bridge (and any pod namespace left on it); give up this node's /24."""
        if self.bridge is not None:
            try:
                self.bridge.delete()
            except (NetnsError, OSError, subprocess.SubprocessError):
                log.exception("could not remove bridge %s", self.bridge.name)
        self._claim.lock_file.close()
