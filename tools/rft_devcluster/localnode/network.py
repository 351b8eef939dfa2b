"""Pod IPs on one host: every pod gets its own address that the host can reach.

Two kinds of ranges work:

* ``loopback`` (the default): 127.77.0.0/16. Reachable everywhere, even where only
  127.0.0.0/8 traffic is allowed, but the EndpointSlice API rejects loopback addresses, so
  the controller-manager cannot publish these pods; see endpoints.py for how the agent
  publishes them instead.
* a routed range: Linux delivers locally any address in a ``local`` route, so one route
  makes a whole range behave like 127.0.0.0/8::

      ip route add local 198.18.0.0/16 dev lo

  198.18.0.0/15 is reserved for network benchmarking (RFC 2544) and is not routed on the
  internet. ``auto`` uses it, adding the route itself when it may (CAP_NET_ADMIN), and
  falls back to loopback otherwise.

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

log = logging.getLogger(__name__)

DEFAULT_ROUTED_RANGE = "198.18.0.0/16"
LOOPBACK_RANGE = "127.77.0.0/16"
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


class PodNetwork:
    """This node's /24: its own address and a pool of pod addresses."""

    def __init__(self, requested: str, state_file: Path) -> None:
        routable = _routable_range(requested)
        preferred = None
        with contextlib.suppress(FileNotFoundError, ValueError):
            previous = ipaddress.IPv4Network(state_file.read_text().strip())
            if previous.subnet_of(routable):
                preferred = previous
        # Skip the range's first /24 (its .1 is what _routable_range probes).
        candidates = list(routable.subnets(new_prefix=24))[1:]
        self._claim = _claim_subnet(candidates, preferred)
        self.subnet = self._claim.subnet
        self.loopback = self.subnet.subnet_of(ipaddress.IPv4Network("127.0.0.0/8"))
        state_file.parent.mkdir(parents=True, exist_ok=True)
        state_file.write_text(f"{self.subnet}\n")
        hosts = list(self.subnet.hosts())
        self.node_ip = str(hosts[0])
        self._pool = [str(h) for h in hosts[1:]]
        self._in_use: set[str] = set()
        self._next = 0
        self._lock = threading.Lock()

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
        """Give up this node's /24."""
        self._claim.lock_file.close()
