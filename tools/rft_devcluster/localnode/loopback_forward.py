"""The host's loopback services inside a pod's network namespace.

The control plane and the emulators (apiserver, moto, the GCS emulator, MLflow, stubs a test
starts) listen on the host's 127.0.0.1, and pods get their addresses through env
(``KUBERNETES_SERVICE_HOST``, ``AWS_ENDPOINT_URL``, ``STORAGE_EMULATOR_HOST``, ...). In a pod's
own namespace 127.0.0.1 is the pod's. So for every ``127.x.y.z:<port>`` or
``localhost:<port>`` named in a container's resolved env (and the apiserver's address) that
the host listens on when the pod starts, and that no container of the pod declares as a
``containerPort``, the agent listens on that address inside the pod's namespace and relays
each connection to the same address on the host. The pod's own ports win: a port a container
declares, or one the host does not serve, is left for the pod.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import re
import selectors
import socket
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path

from rft_devcluster.localnode.netns import in_netns

log = logging.getLogger(__name__)

_ADDRESS = re.compile(r"(?<![\w.])(localhost|127\.\d{1,3}\.\d{1,3}\.\d{1,3}):(\d{1,5})(?!\d)")
_POLL_SECONDS = 0.5
_CONNECT_TIMEOUT_SECONDS = 10.0
_CHUNK = 65536
_ANY = "0.0.0.0"  # noqa: S104 - what a wildcard listener shows as

Target = tuple[str, int]


def loopback_targets(values: Iterable[str]) -> set[Target]:
    """``(ip, port)`` of every loopback address with a port in ``values`` (localhost is 127.0.0.1)."""
    found: set[Target] = set()
    for value in values:
        for host, port_text in _ADDRESS.findall(value):
            port = int(port_text)
            ip = "127.0.0.1" if host == "localhost" else host
            with contextlib.suppress(ValueError):
                if ipaddress.IPv4Address(ip).is_loopback and 0 < port < 65536:
                    found.add((ip, port))
    return found


def _listening(path: str, ipv6: bool) -> set[Target]:
    found: set[Target] = set()
    try:
        with open(path, encoding="ascii") as fh:
            lines = fh.readlines()[1:]
    except OSError:
        return found
    for line in lines:
        fields = line.split()
        if len(fields) < 4 or fields[3] != "0A":  # TCP_LISTEN
            continue
        address_hex, port_hex = fields[1].split(":")
        raw = bytes.fromhex(address_hex)
        if ipv6:
            # /proc prints the address as four host-order 32-bit words.
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
            address = ipaddress.IPv6Address(raw)
            if address.ipv4_mapped is not None:
                ip = str(address.ipv4_mapped)
            else:
                ip = _ANY if address.is_unspecified else ""
        else:
            ip = str(ipaddress.IPv4Address(raw[::-1]))
        if ip:
            found.add((ip, int(port_hex, 16)))
    return found


def host_listeners() -> set[Target]:
    """TCP ``(ip, port)`` the caller's (the host's) namespace listens on; ``0.0.0.0`` for wildcards."""
    return _listening("/proc/net/tcp", ipv6=False) | _listening("/proc/net/tcp6", ipv6=True)


def served_by_host(targets: Iterable[Target], listeners: set[Target]) -> set[Target]:
    """The targets a host socket listens on (on that address or on all addresses)."""
    return {(ip, port) for ip, port in targets if (ip, port) in listeners or (_ANY, port) in listeners}


class LoopbackForwarder:
    """Listeners inside one pod's namespace, each relaying to the same address on the host."""

    def __init__(self, netns_path: Path, owner: str) -> None:
        self._netns_path = netns_path
        self._owner = owner
        self._listeners: dict[socket.socket, Target] = {}
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def targets(self) -> list[Target]:
        return sorted(self._listeners.values())

    def start(self, targets: Iterable[Target]) -> None:
        """Listen on every target inside the namespace (one that cannot be bound is skipped)."""
        wanted = sorted(set(targets))

        def bind_all() -> dict[socket.socket, Target]:
            made: dict[socket.socket, Target] = {}
            for ip, port in wanted:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    sock.bind((ip, port))
                    sock.listen(64)
                    sock.setblocking(False)
                except OSError as exc:
                    sock.close()
                    log.warning("pod %s: cannot forward %s:%d into the pod: %s", self._owner, ip, port, exc)
                    continue
                made[sock] = (ip, port)
            return made

        self._listeners = in_netns(self._netns_path, bind_all) if wanted else {}
        if not self._listeners:
            return
        log.info(
            "pod %s: host loopback forwarded into the pod: %s",
            self._owner,
            ", ".join(f"{ip}:{port}" for ip, port in self.targets),
        )
        self._thread = threading.Thread(target=self._accept_loop, name=f"forward-{self._owner}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Close the listeners and every relayed connection; wait for the accept loop."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for sock in self._listeners:
            sock.close()
        with self._lock:
            connections = list(self._connections)
            self._connections.clear()
        for sock in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept_loop(self) -> None:
        with selectors.DefaultSelector() as selector:
            for sock in self._listeners:
                selector.register(sock, selectors.EVENT_READ)
            while not self._stop.is_set():
                for key, _ in selector.select(_POLL_SECONDS):
                    listener = key.fileobj
                    assert isinstance(listener, socket.socket)
                    try:
                        inner, _peer = listener.accept()
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        if self._stop.is_set():
                            return
                        raise
                    inner.setblocking(True)
                    target = self._listeners[listener]
                    threading.Thread(
                        target=self._relay, args=(inner, target), name=f"relay-{self._owner}", daemon=True
                    ).start()

    def _track(self, *socks: socket.socket) -> bool:
        with self._lock:
            if self._stop.is_set():
                return False
            self._connections.update(socks)
            return True

    def _untrack(self, *socks: socket.socket) -> None:
        with self._lock:
            self._connections.difference_update(socks)
        for sock in socks:
            sock.close()

    def _relay(self, inner: socket.socket, target: Target) -> None:
        # This thread is in the host's namespace: the connection goes to the host's address.
        try:
            outer = socket.create_connection(target, timeout=_CONNECT_TIMEOUT_SECONDS)
        except OSError as exc:
            log.info("pod %s: forwarding to %s:%d failed: %s", self._owner, target[0], target[1], exc)
            inner.close()
            return
        outer.settimeout(None)
        if not self._track(inner, outer):
            inner.close()
            outer.close()
            return
        try:
            _pump(inner, outer, self._stop)
        finally:
            self._untrack(inner, outer)


def _pump(a: socket.socket, b: socket.socket, stop: threading.Event) -> None:
    """Copy both ways until both sides have finished sending (or ``stop``)."""
    peer: Mapping[socket.socket, socket.socket] = {a: b, b: a}
    open_reads = {a, b}
    with selectors.DefaultSelector() as selector:
        for sock in open_reads:
            selector.register(sock, selectors.EVENT_READ)
        while open_reads and not stop.is_set():
            for key, _ in selector.select(_POLL_SECONDS):
                source = key.fileobj
                assert isinstance(source, socket.socket)
                try:
                    data = source.recv(_CHUNK)
                except OSError:
                    return
                if data:
                    try:
                        peer[source].sendall(data)
                    except OSError:
                        return
                    continue
                # EOF: pass the half-close on, keep the other direction flowing.
                selector.unregister(source)
                open_reads.discard(source)
                with contextlib.suppress(OSError):
                    peer[source].shutdown(socket.SHUT_WR)
