"""Why pods are stuck, as a served model's or a step's status reports it (pure)."""

from __future__ import annotations

from typing import Any

from rft_operator.podtrouble import pod_trouble


def pod(name: str, *, waiting: str | None = None, init: bool = False, **status: Any) -> dict[str, Any]:
    container = {"name": "server", "state": {"waiting": {"reason": waiting, "message": f"{waiting} detail"}}}
    key = "initContainerStatuses" if init else "containerStatuses"
    return {"metadata": {"name": name}, "status": {key: [container] if waiting else [], **status}}


def test_a_container_that_cannot_pull_its_image_is_named() -> None:
    trouble = pod_trouble([pod("a", waiting="ContainerCreating"), pod("b", waiting="ImagePullBackOff")])
    assert trouble is not None
    assert trouble.reason == "ImagePullBackOff"
    assert trouble.message == "pod b, container server: ImagePullBackOff detail"


def test_init_containers_and_crash_loops_count() -> None:
    trouble = pod_trouble([pod("a", waiting="CrashLoopBackOff", init=True)])
    assert trouble is not None
    assert trouble.reason == "CrashLoopBackOff"


def test_an_unschedulable_pod_says_why() -> None:
    scheduled = {
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
    }
    trouble = pod_trouble([pod("a", conditions=[scheduled])])
    assert trouble is not None
    assert trouble.reason == "Unschedulable"
    assert "Insufficient nvidia.com/gpu" in trouble.message


def test_pods_on_their_way_or_being_deleted_are_no_trouble() -> None:
    deleting = pod("b", waiting="ImagePullBackOff")
    deleting["metadata"]["deletionTimestamp"] = "2026-12-04T00:00:00Z"
    assert (
        pod_trouble([pod("a", waiting="ContainerCreating"), pod("c", waiting="PodInitializing"), deleting])
        is None
    )
    assert pod_trouble([]) is None
