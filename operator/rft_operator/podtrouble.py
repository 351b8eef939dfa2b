"""Why pods are not running yet, read from their status as the kubelet and scheduler write it.

A served model's Deployment (or a step) that waits on pods which cannot start would otherwise
say only "0/1 replicas ready": the reasons users need (the image cannot be pulled, the pod does
not fit on any node, the container crashes) are in the pods' statuses.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# Container waiting reasons that mean "stuck", not "on its way" (ContainerCreating,
# PodInitializing): the kubelet's image, config and crash back-off reasons.
STUCK_WAITING_REASONS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
        "CrashLoopBackOff",
    }
)


@dataclass(frozen=True)
class PodTrouble:
    """The first reason found, with the pod (and container) it is about."""

    reason: str
    message: str


def pod_trouble(pods: Iterable[dict[str, Any]]) -> PodTrouble | None:
    """The first stuck pod's reason (a stuck container, else unschedulable), or None."""
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        if pod["metadata"].get("deletionTimestamp"):
            continue
        name = pod["metadata"]["name"]
        status = pod.get("status") or {}
        for container in [
            *(status.get("initContainerStatuses") or []),
            *(status.get("containerStatuses") or []),
        ]:
            waiting = (container.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in STUCK_WAITING_REASONS:
                detail = waiting.get("message") or waiting["reason"]
                last = ((container.get("lastState") or {}).get("terminated") or {}).get("message")
                if last:  # why it crashed, in its own words (the termination message or log tail)
                    detail += f"; last exit: {last.strip()[-600:]}"
                return PodTrouble(waiting["reason"], f"pod {name}, container {container['name']}: {detail}")
        for condition in status.get("conditions") or []:
            if (
                condition.get("type") == "PodScheduled"
                and condition.get("status") == "False"
                and condition.get("reason") == "Unschedulable"
            ):
                detail = condition.get("message") or "no node fits it"
                return PodTrouble("Unschedulable", f"pod {name} cannot be scheduled: {detail}")
    return None
