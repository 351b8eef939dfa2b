"""A network namespace per pod: servers bind 0.0.0.0, a pod's containers share its loopback, the
host reaches pods at their IPs, pods reach each other and the host's loopback services, and the
namespace and veth go away with the pod."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client
from rft_devcluster.handle import ClusterHandle
from rft_devcluster.waiting import wait_for

from tests.host_capability import require_host
from tests.localnode.support import (
    bare_pod,
    link_exists,
    netns_unsupported,
    phase_in,
    pod_host_veth,
    pod_name_server,
    pod_netns_path,
    pod_spec,
    python_container,
    read_pod,
    terminated,
    wait_pod,
    wait_pod_gone,
)

pytestmark = [pytest.mark.cluster, pytest.mark.localnode]

# Binds 0.0.0.0:8000 in every pod: only possible when each pod has its own namespace.
SERVER = pod_name_server('"0.0.0.0"', 8000)

# The pod's second container: its own pod's server on loopback, the apiserver through the
# env the node gives every pod, a host service through an env URL; then it stays up.
CLIENT = """
    import os, ssl, time, urllib.request

    def get(url, **kw):
        for _ in range(300):
            try:
                with urllib.request.urlopen(url, timeout=2, **kw) as resp:
                    return resp.status, resp.read().decode()
            except urllib.error.HTTPError as exc:
                return exc.code, ""
            except OSError:
                time.sleep(0.1)
        raise SystemExit(f"no answer from {url}")

    print("loopback:", get("http://127.0.0.1:8000/")[1], flush=True)
    sa = "/var/run/secrets/kubernetes.io/serviceaccount"
    token = open(f"{sa}/token").read()
    context = ssl.create_default_context(cafile=f"{sa}/ca.crt")
    host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
    request = urllib.request.Request(f"https://{host}:{port}/version", headers={"Authorization": f"Bearer {token}"})
    print("apiserver:", get(request, context=context)[0], flush=True)
    print("host service:", get(os.environ["HOST_SERVICE_URL"])[1], flush=True)
    time.sleep(3600)
"""

LOOPBACK_PROBE = [
    "python",
    "-c",
    "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/', timeout=2)",
]


class _HostService:
    """An HTTP server on the host's 127.0.0.1 (like moto or MLflow) answering ``host``."""

    def __init__(self) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", "4")
                self.end_headers()
                self.wfile.write(b"host")

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def host_service() -> Iterator[_HostService]:
    service = _HostService()
    try:
        yield service
    finally:
        service.server.shutdown()
        service.server.server_close()


@pytest.fixture(autouse=True)
def _namespaced_node(cluster: ClusterHandle) -> None:
    why = netns_unsupported()
    require_host(None if why is None else f"this host cannot make network namespaces: {why}")
    node = cluster.local_node
    assert node is not None, "the cluster has no local node"
    # The host can: a node that fell back to the shared namespace is a failure, not a skip.
    assert node.pod_network_mode == "netns", "the local node fell back to the host's network namespace"


def _web_pod(name: str, host_service_port: int) -> dict[str, Any]:
    pod_name = {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    server = python_container(
        "server",
        SERVER,
        env=[pod_name],
        ports=[{"name": "http", "containerPort": 8000}],
        readinessProbe={"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
    )
    sidecar = python_container(
        "client",
        CLIENT,
        env=[{"name": "HOST_SERVICE_URL", "value": f"http://localhost:{host_service_port}/"}],
        readinessProbe={"exec": {"command": LOOPBACK_PROBE}, "periodSeconds": 1},
    )
    return bare_pod(name, pod_spec(server, sidecar, restart_policy="Always", terminationGracePeriodSeconds=2))


def _ready(pod: dict[str, Any]) -> bool:
    statuses = pod["status"].get("containerStatuses") or []
    return (
        pod["status"].get("phase") == "Running" and len(statuses) == 2 and all(s["ready"] for s in statuses)
    )


def _log(pod: dict[str, Any], container: str) -> str:
    logs = next(c["message"] for c in pod["status"]["conditions"] if c["type"] == "rft-operator.io/LogPath")
    return (Path(logs) / f"{container}.log").read_text()


def test_each_pod_serves_0000_in_its_own_namespace(
    cluster: ClusterHandle, namespace: str, host_service: _HostService
) -> None:
    names = ("web-a", "web-b")
    cluster.apply([_web_pod(n, host_service.port) for n in names], namespace=namespace)
    pods = {n: wait_pod(cluster, namespace, n, _ready, "both containers ready", timeout=120) for n in names}

    ips = {n: pods[n]["status"]["podIP"] for n in names}
    assert len(set(ips.values())) == 2
    for name in names:
        pod = pods[name]
        assert pod["status"]["hostIP"] != ips[name]
        # The host (where probes and port-forward clients run) reaches each pod at its own IP.
        assert httpx.get(f"http://{ips[name]}:8000/", timeout=5).text == name
        assert pod_netns_path(pod).exists()
        assert link_exists(pod_host_veth(pod))

        def client_done(pod_name: str = name) -> str | None:
            text = _log(read_pod(cluster, namespace, pod_name), "client")
            return text if "host service:" in text else None

        log = wait_for(client_done, timeout=60, what=f"{name}'s client to report")
        # Its own pod's server on 127.0.0.1, not the other pod's nor the host's.
        assert f"loopback: {name}\n" in log
        assert "apiserver: 200\n" in log
        assert "host service: host\n" in log

    # Pod to pod across the bridge: a third pod asks web-b at its pod IP, then ends.
    peer = python_container(
        "peer",
        f"""
        import urllib.request
        print(urllib.request.urlopen("http://{ips["web-b"]}:8000/", timeout=10).read().decode(), flush=True)
        """,
    )
    cluster.apply(bare_pod("peer", pod_spec(peer)), namespace=namespace)
    done = wait_pod(cluster, namespace, "peer", phase_in("Succeeded", "Failed"), "finish", timeout=90)
    assert terminated(done)["exitCode"] == 0, _log(done, "peer")
    assert _log(done, "peer").strip() == "web-b"
    # A finished pod's namespace is torn down (its IP stays in the status, as with the kubelet).
    wait_for(lambda: not pod_netns_path(done).exists(), timeout=30, what="the finished pod's namespace to go")

    with cluster.api_client() as api:
        core = client.CoreV1Api(api)
        for name in (*names, "peer"):
            core.delete_namespaced_pod(name, namespace)
    for name in (*names, "peer"):
        wait_pod_gone(cluster, namespace, name, timeout=60)
    for name in names:
        assert not pod_netns_path(pods[name]).exists(), "the namespace goes with the pod"
        assert not link_exists(pod_host_veth(pods[name])), "and so does its veth"
