"""How long a server replica took to become Ready, and where the time went, read from its pod's
status (the scheduler's, the kubelet's and the readiness gate's timestamps): waiting for a node,
fetching the model (the init container), starting the server until it answers and serves its
adapters (the main container's start to the pod's Ready condition)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rft.api.deployment import ColdStart

Obj = dict[str, Any]


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _condition_time(pod: Obj, kind: str) -> datetime | None:
    for cond in pod.get("status", {}).get("conditions") or []:
        if cond.get("type") == kind and cond.get("status") == "True":
            return _time(cond.get("lastTransitionTime"))
    return None


def _terminated(statuses: list[Obj], name: str) -> tuple[datetime | None, datetime | None]:
    for status in statuses:
        if status.get("name") == name:
            done = (status.get("state") or {}).get("terminated") or {}
            return _time(done.get("startedAt")), _time(done.get("finishedAt"))
    return None, None


def _started(statuses: list[Obj], name: str) -> datetime | None:
    for status in statuses:
        if status.get("name") == name:
            return _time(((status.get("state") or {}).get("running") or {}).get("startedAt"))
    return None


def cold_start(pod: Obj, init_container: str, server_container: str) -> ColdStart | None:
    """The cold start of a Ready pod (None while it is not Ready, or its timestamps are missing)."""
    status = pod.get("status") or {}
    created = _time(pod["metadata"].get("creationTimestamp"))
    scheduled = _condition_time(pod, "PodScheduled")
    ready = _condition_time(pod, "Ready")
    fetch_start, fetch_end = _terminated(status.get("initContainerStatuses") or [], init_container)
    server_start = _started(status.get("containerStatuses") or [], server_container)
    if (
        created is None
        or scheduled is None
        or ready is None
        or fetch_start is None
        or fetch_end is None
        or server_start is None
    ):
        return None

    def seconds(start: datetime, end: datetime) -> int:
        return max(0, round((end - start).total_seconds()))

    return ColdStart(
        pod=pod["metadata"]["name"],
        node=pod.get("spec", {}).get("nodeName"),
        ready_at=ready,
        schedule_seconds=seconds(created, scheduled),
        fetch_seconds=seconds(fetch_start, fetch_end),
        start_seconds=seconds(server_start, ready),
        total_seconds=seconds(created, ready),
    )


def describe(cold: ColdStart) -> str:
    return (
        f"pod {cold.pod} ready {cold.total_seconds}s after creation: scheduled in {cold.schedule_seconds}s, "
        f"model fetched in {cold.fetch_seconds}s, server loaded and serving in {cold.start_seconds}s"
    )
