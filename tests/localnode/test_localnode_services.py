"""A Deployment and Service on the local node: readiness probes, pod IPs, EndpointSlices."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from kubernetes import client
from rft_devcluster.handle import ClusterHandle, as_dict
from rft_devcluster.waiting import wait_for

from tests.localnode.support import ON_LOCAL_NODE, pod_name_server, python_container

pytestmark = [pytest.mark.cluster, pytest.mark.localnode]

SERVER = pod_name_server('os.environ["POD_IP"]', 8080)


def _deployment(replicas: int) -> dict[str, Any]:
    container = python_container(
        "server",
        SERVER,
        ports=[{"name": "http", "containerPort": 8080}],
        env=[
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        ],
        readinessProbe={"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 1},
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "echo"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "echo"}},
            "template": {
                "metadata": {"labels": {"app": "echo"}},
                "spec": {"nodeSelector": ON_LOCAL_NODE, "terminationGracePeriodSeconds": 5, "containers": [container]},
            },
        },
    }


SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "echo"},
    "spec": {"selector": {"app": "echo"}, "ports": [{"name": "web", "port": 80, "targetPort": "http"}]},
}


def test_deployment_becomes_available_and_answers_at_its_endpoints(cluster: ClusterHandle, namespace: str) -> None:
    cluster.apply([_deployment(replicas=2), SERVICE], namespace=namespace)

    with cluster.api_client() as api:
        apps, core, discovery = client.AppsV1Api(api), client.CoreV1Api(api), client.DiscoveryV1Api(api)

        def available() -> dict[str, Any] | None:
            deployment = as_dict(apps.read_namespaced_deployment("echo", namespace))
            return deployment if deployment["status"].get("readyReplicas") == 2 else None

        wait_for(available, timeout=90, what="Deployment echo to have 2 ready replicas")
        pods = as_dict(core.list_namespaced_pod(namespace, label_selector="app=echo"))["items"]

        def ready_addresses() -> set[str] | None:
            slices = as_dict(
                discovery.list_namespaced_endpoint_slice(namespace, label_selector="kubernetes.io/service-name=echo")
            )["items"]
            ready = {
                address
                for s in slices
                for e in s.get("endpoints") or []
                if (e.get("conditions") or {}).get("ready")
                for address in e["addresses"]
            }
            return ready if len(ready) == 2 else None

        addresses = wait_for(ready_addresses, timeout=30, what="EndpointSlices to list both pods")

    pod_ips = {p["status"]["podIP"] for p in pods}
    assert addresses == pod_ips
    assert len(pod_ips) == 2, "each pod has its own address"
    assert all(p["spec"]["nodeName"] == "local-node" for p in pods)
    assert all(p["status"]["containerStatuses"][0]["ready"] for p in pods)

    names = {p["metadata"]["name"] for p in pods}
    for ip in pod_ips:
        assert httpx.get(f"http://{ip}:8080/", timeout=5).text in names
    address, port = cluster.ready_endpoint(namespace, "echo", "web")
    assert port == 8080
    assert httpx.get(f"http://{address}:{port}/", timeout=5).text in names


def test_readiness_follows_the_probe(cluster: ClusterHandle, namespace: str) -> None:
    # Ready only while /tmp/ready exists (an exec probe), so the test can flip it.
    code = """
        import time
        time.sleep(3600)
    """
    container = python_container(
        "main",
        code,
        readinessProbe={"exec": {"command": ["test", "-e", "/flags/ready"]}, "periodSeconds": 1, "failureThreshold": 1},
        volumeMounts=[{"name": "flags", "mountPath": "/flags"}],
    )
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "flippy"},
        "spec": {
            "nodeSelector": ON_LOCAL_NODE,
            "terminationGracePeriodSeconds": 1,
            "containers": [container],
            "volumes": [{"name": "flags", "emptyDir": {}}],
        },
    }
    cluster.apply(pod, namespace=namespace)

    with cluster.api_client() as api:
        core = client.CoreV1Api(api)

        def ready_is(value: bool) -> dict[str, Any] | None:
            found = as_dict(core.read_namespaced_pod("flippy", namespace))
            statuses = found["status"].get("containerStatuses") or [{}]
            running = "running" in (statuses[0].get("state") or {})
            return found if running and statuses[0].get("ready") is value else None

        running = wait_for(lambda: ready_is(False), timeout=30, what="pod running, not ready")
        flags_dir = cluster.local_node.root_dir if cluster.local_node else None
        assert flags_dir is not None
        uid = running["metadata"]["uid"][:8]
        (flags_dir / "pods" / f"{namespace}_flippy_{uid}" / "volumes" / "flags" / "ready").write_text("")
        ready = wait_for(lambda: ready_is(True), timeout=30, what="pod ready after the flag appears")

    ready_condition = next(c for c in ready["status"]["conditions"] if c["type"] == "Ready")
    assert ready_condition["status"] == "True"
