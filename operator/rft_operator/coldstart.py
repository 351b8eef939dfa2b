"""How long a server replica took to become Ready, and where the time went, read from its pod's
status (the scheduler's, the kubelet's and the readiness gate's timestamps): waiting for a node,
fetching the model (the init container), starting the server until it answers and serves its
adapters (the main container's start to the pod's Ready condition)."""

from __future__ import annotations

import json
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


def _terminated(statuses: list[Obj], name: str) -> tuple[datetime | None, datetime | None, Obj]:
    """When the container ran, and the JSON object of its termination message ({} if none)."""
    for status in statuses:
        if status.get("name") == name:
            done = (status.get("state") or {}).get("terminated") or {}
            try:
                report = json.loads(done.get("message") or "{}")
            except ValueError:
                report = {}
            return (
                _time(done.get("startedAt")),
                _time(done.get("finishedAt")),
                report if isinstance(report, dict) else {},
            )
    return None, None, {}


def _number(value: Any) -> float | None:
    return (
        float(value)
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
        else None
    )


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
    fetch_start, fetch_end, fetch_report = _terminated(
        status.get("initContainerStatuses") or [], init_container
    )
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
        # The fetch's own measure (rft.pods.fetch's termination message) is finer than the timestamps.
        fetch_seconds=_number(fetch_report.get("seconds")) or seconds(fetch_start, fetch_end),
        fetch_bytes=int(size) if (size := _number(fetch_report.get("bytes"))) is not None else None,
        start_seconds=seconds(server_start, ready),
        total_seconds=seconds(created, ready),
    )


def describe(cold: ColdStart) -> str:
    fetched = f"{cold.fetch_seconds:.1f}s"
    if cold.fetch_bytes is not None:
        fetched += f" ({cold.fetch_bytes / 2**20:.1f} MiB)"
    return (
        f"pod {cold.pod} ready {cold.total_seconds}s after creation: scheduled in {cold.schedule_seconds}s, "
        f"model fetched in {fetched}, server loaded and serving in {cold.start_seconds}s"
    )
