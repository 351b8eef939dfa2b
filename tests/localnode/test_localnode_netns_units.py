"""Pieces of the per-pod network namespaces that need no cluster: which host addresses a pod's
env names, which of them the host serves, names, and a relay through a real namespace."""

from __future__ import annotations

import ipaddress
import socket
import subprocess
import threading
from collections.abc import Iterator

import pytest
from rft_devcluster.localnode.loopback_forward import (
    LoopbackForwarder,
    host_listeners,
    loopback_targets,
    served_by_host,
)
from rft_devcluster.localnode.netns import Bridge, NetnsError, PodSandbox, names_for, nsenter_prefix

from tests.host_capability import require_host
from tests.localnode.support import netns_unsupported


def test_loopback_targets_are_found_in_env_values() -> None:
    values = [
        "http://127.0.0.1:5000",
        "https://localhost:6443/api",
        "tcp://127.0.0.1:6443",
        "127.0.0.1:4443",  # STORAGE_EMULATOR_HOST style, no scheme
        "http://127.77.1.2:8000/v1",
        "http://198.18.1.2:8000",  # a pod IP: not the host's loopback
        "http://1127.0.0.1:80",  # not an address
        "127.0.0.1",  # no port
        "localhost:99999",  # no such port
        "notlocalhost:80",
    ]
    assert loopback_targets(values) == {
        ("127.0.0.1", 5000),
        ("127.0.0.1", 6443),
        ("127.0.0.1", 4443),
        ("127.77.1.2", 8000),
    }


def test_host_listeners_see_a_listening_socket() -> None:
    with socket.socket() as v4, socket.socket(socket.AF_INET6) as v6:
        v4.bind(("127.0.0.1", 0))
        v4.listen()
        v6.bind(("::", 0))
        v6.listen()
        port4, port6 = v4.getsockname()[1], v6.getsockname()[1]
        listeners = host_listeners()
        assert ("127.0.0.1", port4) in listeners
        assert ("0.0.0.0", port6) in listeners  # noqa: S104 - a wildcard IPv6 socket takes IPv4 too
        wanted = {("127.0.0.1", port4), ("127.0.0.1", port6), ("127.0.0.2", port4), ("127.0.0.1", 1)}
        assert served_by_host(wanted, listeners) == {("127.0.0.1", port4), ("127.0.0.1", port6)}


def test_names_fit_interface_limits() -> None:
    subnet = ipaddress.IPv4Network("198.18.255.0/24")
    bridge = Bridge(subnet, "198.18.255.1")
    sandbox = PodSandbox(bridge, "0b9c3f5e-1d2a-4c8b-9e7f-6a5b4c3d2e1f", "198.18.255.2")
    assert names_for(subnet) == bridge.name == "rft-c612ff00"
    assert len(bridge.name) <= 15
    assert len(sandbox.host_veth) <= 15
    assert sandbox.name == "rft-c612ff00-0b9c3f5e-1d2a-4c8b-9e7f-6a5b4c3d2e1f"


@pytest.fixture
def bridge() -> Iterator[Bridge]:
    """A bridge on a /24 no local node hands out (the range's first), if this host allows it."""
    why = netns_unsupported()
    require_host(None if why is None else f"this host cannot make network namespaces: {why}")
    subnet = ipaddress.IPv4Network("198.18.0.0/24")
    made = Bridge(subnet, "198.18.0.1")
    try:
        made.create()
    except NetnsError as exc:
        pytest.fail(f"the host can make bridges, but Bridge.create failed: {exc}")
    try:
        yield made
    finally:
        made.delete()


def test_a_pod_namespace_reaches_the_hosts_loopback_through_the_forwarder(bridge: Bridge) -> None:
    sandbox = PodSandbox(bridge, "00000000-0000-4000-8000-00000000unit", "198.18.0.2")
    sandbox.create()
    forwarder = LoopbackForwarder(sandbox.path, "unit/pod")
    with socket.socket() as service:
        service.bind(("127.0.0.1", 0))
        service.listen()
        port = service.getsockname()[1]

        def answer() -> None:
            conn, _ = service.accept()
            with conn:
                conn.sendall(b"host:" + conn.recv(100))

        threading.Thread(target=answer, daemon=True).start()
        try:
            forwarder.start([("127.0.0.1", port)])
            assert forwarder.targets == [("127.0.0.1", port)]
            code = (
                "import socket, sys; c = socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=5); "
                "c.sendall(b'pod'); c.shutdown(socket.SHUT_WR); print(c.recv(100).decode())"
            )
            out = subprocess.run(
                [*nsenter_prefix(sandbox.path), "python3", "-c", code, str(port)],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            )
            assert out.stdout.strip() == "host:pod"
        finally:
            forwarder.stop()
            sandbox.delete()
    assert not sandbox.path.exists()
    assert (
        subprocess.run(["ip", "link", "show", sandbox.host_veth], capture_output=True, check=False).returncode
        != 0
    )
