"""Why pods are not running yet, read from their status as the kubelet and scheduler write it.

A served model's Deployment (or a step) that waits on pods which cannot start would otherwise
say only "0/1 replicas ready": the reasons users need (the image cannot be pulled, the pod does
not fit on any node, the container crashes) are in the pods' statuses.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
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
    since: datetime | None = None
    """Since when it has been stuck, at the latest: the pod's creation for a container reason,
    the PodScheduled condition's transition for Unschedulable."""

    @property
    def image(self) -> bool:
        """The image cannot be pulled (or is not a valid image name)."""
        return self.reason in IMAGE_REASONS

    def overdue(self, now: datetime, stuck_seconds: float, unschedulable_seconds: float) -> bool:
        """Stuck for longer than its deadline (a deadline of 0 never passes)."""
        limit = unschedulable_seconds if self.reason == "Unschedulable" else stuck_seconds
        return bool(limit) and self.since is not None and (now - self.since).total_seconds() >= limit


IMAGE_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


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
                return PodTrouble(
                    waiting["reason"],
                    f"pod {name}, container {container['name']}: {detail}",
                    _time(pod["metadata"].get("creationTimestamp")),
                )
        for condition in status.get("conditions") or []:
            if (
                condition.get("type") == "PodScheduled"
                and condition.get("status") == "False"
                and condition.get("reason") == "Unschedulable"
            ):
                detail = condition.get("message") or "no node fits it"
                return PodTrouble(
                    "Unschedulable",
                    f"pod {name} cannot be scheduled: {detail}",
                    _time(condition.get("lastTransitionTime"))
                    or _time(pod["metadata"].get("creationTimestamp")),
                )
    return None
