"""An image the local node cannot run: the pod waits in ImagePullBackOff, like on a kubelet.

It is not failed (its ReplicaSet would replace it at once, again and again); its container
waits with ErrImagePull, then ImagePullBackOff, retried with back-off (1 s doubling here), until
the pod is deleted.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from kubernetes import client, watch
from rft_devcluster.handle import ClusterHandle, as_dict
from rft_devcluster.waiting import wait_for

from tests.localnode.support import (
    ON_LOCAL_NODE,
    bare_pod,
    condition,
    pod_spec,
    python_container,
    wait_pod,
    wait_pod_gone,
)

pytestmark = [pytest.mark.cluster, pytest.mark.localnode]

IMAGE = "registry.example.com/unknown/app:1.0"
UNRUNNABLE = {"name": "app", "image": IMAGE, "command": ["app", "--serve"]}


def _delete_pod(cluster: ClusterHandle, namespace: str, name: str) -> None:
    """Delete the pod and wait until the node has removed it (its pull retries end with it)."""
    with cluster.api_client() as api:
        client.CoreV1Api(api).delete_namespaced_pod(name, namespace)
    wait_pod_gone(cluster, namespace, name, timeout=30)


def _waiting(status: dict[str, Any]) -> dict[str, Any]:
    waiting: dict[str, Any] = (status.get("state") or {}).get("waiting") or {}
    return waiting


def _history(
    cluster: ClusterHandle, namespace: str, pod: dict[str, Any], key: str, until: list[str]
) -> list[tuple[str, str]]:
    """(phase, waiting reason of the first ``key`` status) of every version of the pod, from its
    creation on, until the reasons seen include ``until`` in order (or 30 s pass)."""
    seen: list[tuple[str, str]] = []
    with cluster.api_client() as api:
        stream = watch.Watch().stream(
            client.CoreV1Api(api).list_namespaced_pod,
            namespace,
            field_selector=f"metadata.name={pod['metadata']['name']}",
            resource_version=pod["metadata"]["resourceVersion"],
            timeout_seconds=30,
        )
        for event in stream:
            status = event["raw_object"].get("status") or {}
            statuses = status.get(key) or [{}]
            entry = (status.get("phase", ""), _waiting(statuses[0]).get("reason", ""))
            if not seen or seen[-1] != entry:
                seen.append(entry)
            reasons = iter(reason for _, reason in seen)
            if all(wanted in reasons for wanted in until):  # a subsequence, in order
                break
    return seen


def test_a_pod_with_an_image_the_node_cannot_run_waits_and_retries_until_deleted(
    cluster: ClusterHandle, namespace: str
) -> None:
    [created] = cluster.apply(bare_pod("unrunnable", pod_spec(UNRUNNABLE)), namespace=namespace)

    # Pulled, failed, backed off, pulled again (1 s, then 2 s later), failed, backed off.
    retried = ["ErrImagePull", "ImagePullBackOff", "ErrImagePull", "ImagePullBackOff"]
    seen = _history(cluster, namespace, created, "containerStatuses", until=retried)
    reasons = iter(reason for _, reason in seen)
    assert all(wanted in reasons for wanted in retried), seen
    assert {phase for phase, _ in seen} <= {"", "Pending"}, seen

    pod = wait_pod(
        cluster,
        namespace,
        "unrunnable",
        lambda p: _waiting(p["status"]["containerStatuses"][0]).get("reason") == "ImagePullBackOff",
        "be in ImagePullBackOff",
    )
    status = pod["status"]
    assert status["phase"] == "Pending"
    assert "reason" not in status
    [container] = status["containerStatuses"]
    assert {k: container[k] for k in ("name", "image", "ready", "started", "restartCount")} == {
        "name": "app",
        "image": IMAGE,
        "ready": False,
        "started": False,
        "restartCount": 0,
    }
    message = _waiting(container)["message"]
    assert message.startswith(f'Back-off pulling image "{IMAGE}": ErrImagePull: ')
    assert "has no local stand-in on this node" in message
    assert "rft-trainer" in message
    assert "vllm-openai" in message
    for type_ in ("Ready", "ContainersReady"):
        found = condition(pod, type_)
        assert found is not None
        assert (found["status"], found.get("reason")) == ("False", "ContainersNotReady")
        assert found["message"] == "containers with unready status: [app]"

    _delete_pod(cluster, namespace, "unrunnable")


def test_an_init_container_with_such_an_image_keeps_the_pod_initializing(
    cluster: ClusterHandle, namespace: str
) -> None:
    spec = pod_spec(python_container("main", "print('never')"), initContainers=[UNRUNNABLE])
    [created] = cluster.apply(bare_pod("init-unrunnable", spec), namespace=namespace)

    seen = _history(cluster, namespace, created, "initContainerStatuses", until=["ImagePullBackOff"])
    assert "ImagePullBackOff" in {reason for _, reason in seen}, seen
    assert {phase for phase, _ in seen} <= {"", "Pending"}, seen

    pod = wait_pod(
        cluster,
        namespace,
        "init-unrunnable",
        lambda p: (
            _waiting(p["status"]["initContainerStatuses"][0]).get("reason")
            in ("ErrImagePull", "ImagePullBackOff")
        ),
        "wait for its init container's image",
    )
    assert pod["status"]["phase"] == "Pending"
    initialized = condition(pod, "Initialized")
    assert initialized is not None
    assert (initialized["status"], initialized["reason"]) == ("False", "ContainersNotInitialized")
    assert initialized["message"] == "containers with incomplete status: [app]"
    [main] = pod["status"]["containerStatuses"]
    assert (_waiting(main)["reason"], main["ready"], main["started"]) == ("PodInitializing", False, False)

    _delete_pod(cluster, namespace, "init-unrunnable")


def test_a_deployment_with_such_an_image_keeps_one_waiting_pod(
    cluster: ClusterHandle, namespace: str
) -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "unrunnable"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "unrunnable"}},
            "template": {
                "metadata": {"labels": {"app": "unrunnable"}},
                "spec": {"nodeSelector": ON_LOCAL_NODE, "containers": [UNRUNNABLE]},
            },
        },
    }
    cluster.apply(deployment, namespace=namespace)

    with cluster.api_client() as api:
        core, apps = client.CoreV1Api(api), client.AppsV1Api(api)

        def pods() -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = as_dict(
                core.list_namespaced_pod(namespace, label_selector="app=unrunnable")
            )["items"]
            return found

        def backing_off() -> dict[str, Any] | None:
            [pod] = pods()
            statuses = pod["status"].get("containerStatuses") or [{}]
            return pod if _waiting(statuses[0]).get("reason") == "ImagePullBackOff" else None

        first = wait_for(backing_off, timeout=30, what="the Deployment's pod to be in ImagePullBackOff")

        # Several retries' worth of time (1, 2, then 4 s apart): the same pod, still waiting.
        for _ in range(10):
            time.sleep(0.5)
            now = pods()
            assert [(p["metadata"]["uid"], p["status"]["phase"]) for p in now] == [
                (first["metadata"]["uid"], "Pending")
            ]
            assert "deletionTimestamp" not in now[0]["metadata"]

        apps.delete_namespaced_deployment("unrunnable", namespace, propagation_policy="Foreground")
        wait_for(lambda: pods() == [], timeout=30, what="the Deployment's pods to be deleted")
