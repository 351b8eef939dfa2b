"""Cluster DNS on the local node: pods of an Indexed Job with a headless Service find each other by
name (CoreDNS, rft_devcluster.clusterdns), with the hostname, /etc/hosts and resolv.conf the
kubelet would give them (localnode/poddns.py)."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from rft_devcluster.handle import ClusterHandle

from tests.host_capability import require_host
from tests.localnode.support import ON_LOCAL_NODE, job_pods, log_text, python_container, wait_job_finished

pytestmark = [pytest.mark.cluster, pytest.mark.localnode]

PEER = """
import json, os, socket, threading, time

index = int(os.environ["JOB_COMPLETION_INDEX"])
peer = f"pair-{1 - index}.pair"
server = socket.create_server(("0.0.0.0", 7000))

def serve():
    while True:
        conn, _ = server.accept()
        conn.sendall(socket.gethostname().encode())
        conn.close()

threading.Thread(target=serve, daemon=True).start()
deadline = time.monotonic() + 60
while True:
    try:
        with socket.create_connection((peer, 7000), timeout=2) as conn:
            answer = conn.recv(100).decode()
        break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.2)
print(json.dumps({
    "hostname": socket.gethostname(),
    "fqdn": socket.getfqdn(),
    "peer_ip": socket.gethostbyname(peer),
    "peer_answer": answer,
    "service": sorted(socket.gethostbyname_ex("pair")[2]),
    "resolv": open("/etc/resolv.conf").read(),
}), flush=True)
time.sleep(3)  # the peer may still be connecting
"""


def _objects() -> list[dict[str, Any]]:
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "pair"},
        "spec": {
            "clusterIP": "None",
            "selector": {"app": "pair"},
            "publishNotReadyAddresses": True,
            "ports": [{"name": "peer", "port": 7000}],
        },
    }
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "pair"},
        "spec": {
            "completionMode": "Indexed",
            "completions": 2,
            "parallelism": 2,
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": {"app": "pair"}},
                "spec": {
                    "subdomain": "pair",
                    "restartPolicy": "Never",
                    "nodeSelector": ON_LOCAL_NODE,
                    "containers": [python_container("peer", PEER)],
                },
            },
        },
    }
    return [service, job]


def test_indexed_job_pods_meet_by_name_through_the_headless_service(
    cluster: ClusterHandle, namespace: str
) -> None:
    require_host(None if os.geteuid() == 0 else "cluster DNS needs root: port 53 and a mount and UTS namespace per pod")
    node = cluster.local_node
    assert node is not None, "the cluster has no local node"
    # Root can: a cluster without DNS is a failure, not a skip.
    assert node.cluster_dns, f"the local cluster has no DNS: {node.no_cluster_dns}"
    for obj in _objects():
        cluster.apply(obj, namespace=namespace)
    done = wait_job_finished(cluster, namespace, "pair", timeout=120)
    pods = sorted(job_pods(cluster, namespace, "pair"), key=lambda p: p["spec"]["hostname"])
    assert any(c["type"] == "Complete" for c in done["status"]["conditions"]), [
        log_text(p)[-2000:] for p in pods
    ]

    ips = [p["status"]["podIP"] for p in pods]
    reports = [json.loads(log_text(p).strip().splitlines()[-1]) for p in pods]
    for index, report in enumerate(reports):
        # The Job controller names the pods' hosts pair-<index>; the kubelet's files make the FQDN.
        assert report["hostname"] == f"pair-{index}"
        assert report["fqdn"] == f"pair-{index}.pair.{namespace}.svc.cluster.local"
        assert report["peer_ip"] == ips[1 - index]  # CoreDNS, from the Service's EndpointSlice
        assert report["peer_answer"] == f"pair-{1 - index}"
        assert report["service"] == sorted(ips)
        lines = report["resolv"].splitlines()
        # The host's search domains, if any, follow the cluster's.
        assert lines[0].startswith(f"search {namespace}.svc.cluster.local svc.cluster.local cluster.local")
        assert lines[1:] == [f"nameserver {node.cluster_dns}", "options ndots:5"]
