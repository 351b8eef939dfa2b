"""Pod status the way the kubelet reports it: phase, conditions, and writing it back."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from rft_devcluster.localnode.config import LOG_PATH_CONDITION
from rft_devcluster.localnode.container import RunState, now_rfc3339
from rft_devcluster.localnode.kubeapi import ApiError, KubeApi, pod_path

log = logging.getLogger(__name__)

_ATTEMPTS = 50

# The condition types this agent owns; others (PodScheduled, readiness gates...) are kept.
OWNED_CONDITIONS = (
    "PodReadyToStartContainers",
    "Initialized",
    "ContainersReady",
    "Ready",
    LOG_PATH_CONDITION,
)


def will_restart(restart_policy: str, exit_code: int) -> bool:
    """Whether a container that exited with ``exit_code`` is started again."""
    return restart_policy == "Always" or (restart_policy == "OnFailure" and exit_code != 0)


def terminal_phase(states: Sequence[RunState]) -> str:
    """Succeeded if every container exited 0, else Failed (for containers that will not restart)."""
    codes = [s.terminated["exitCode"] for s in states if s.terminated is not None]
    return "Succeeded" if codes and len(codes) == len(states) and all(c == 0 for c in codes) else "Failed"


class ConditionBook:
    """Pod conditions with lastTransitionTime that changes only when the status changes."""

    def __init__(self, existing: Sequence[dict[str, Any]] = ()) -> None:
        self._conditions: dict[str, dict[str, Any]] = {
            c["type"]: dict(c) for c in existing if c["type"] in OWNED_CONDITIONS
        }

    def set(self, type_: str, status: bool, reason: str = "", message: str = "") -> None:
        """Record condition ``type_``; the transition time moves only on a status change."""
        value = "True" if status else "False"
        previous = self._conditions.get(type_)
        changed = previous is None or previous.get("status") != value
        condition: dict[str, Any] = {
            "type": type_,
            "status": value,
            "lastProbeTime": None,
            "lastTransitionTime": now_rfc3339()
            if changed or previous is None
            else previous["lastTransitionTime"],
        }
        if reason:
            condition["reason"] = reason
        if message:
            condition["message"] = message
        self._conditions[type_] = condition

    def get(self, type_: str) -> dict[str, Any] | None:
        """The condition of ``type_``, if recorded."""
        return self._conditions.get(type_)

    def owned(self) -> list[dict[str, Any]]:
        """The conditions this agent writes."""
        return [dict(c) for c in self._conditions.values()]


def merge_status(current: dict[str, Any], ours: dict[str, Any]) -> dict[str, Any]:
    """``current`` pod status with our fields replaced; foreign conditions are kept."""
    merged = {**current, **{k: v for k, v in ours.items() if k != "conditions"}}
    our_types = {c["type"] for c in ours.get("conditions", [])}
    merged["conditions"] = [
        c for c in current.get("conditions", []) if c["type"] not in our_types
    ] + ours.get("conditions", [])
    for key in ("reason", "message"):
        if key not in ours:
            merged.pop(key, None)
    return merged


class StatusWriter:
    """Writes a pod's status through the pods/status subresource (read, merge, replace, retry)."""

    def __init__(self, api: KubeApi, namespace: str, name: str, uid: str) -> None:
        self._api = api
        self._namespace = namespace
        self._name = name
        self._uid = uid

    def write(self, ours: dict[str, Any]) -> bool:
        """Write ``ours`` into the pod's status; False if the pod is gone (or another pod took its name)."""
        path = pod_path(self._namespace, self._name)
        for attempt in range(_ATTEMPTS):
            try:
                current = self._api.get(path)
            except ApiError as exc:
                if exc.status == 404:
                    return False
                # The Node authorizer learns that a pod is bound to this node from its own
                # informers: right after binding it may still say "no relationship found".
                if exc.status == 403 and attempt < _ATTEMPTS - 1:
                    time.sleep(0.2)
                    continue
                raise
            if current["metadata"]["uid"] != self._uid:
                return False
            current["status"] = merge_status(current.get("status") or {}, ours)
            try:
                self._api.replace(f"{path}/status", current)
                return True
            except ApiError as exc:
                if exc.status in (403, 409):
                    time.sleep(0.05 if exc.status == 409 else 0.2)
                    continue
                if exc.status == 404:
                    return False
                raise
        log.warning("pod %s/%s: status write kept conflicting", self._namespace, self._name)
        return True

    def delete_final(self) -> None:
        """Remove the pod from the API once its containers stopped (grace period 0, uid precondition)."""
        body = {"gracePeriodSeconds": 0, "preconditions": {"uid": self._uid}}
        for attempt in range(_ATTEMPTS):
            try:
                self._api.delete(pod_path(self._namespace, self._name), body)
                return
            except ApiError as exc:
                if exc.status in (404, 409):
                    return
                if exc.status != 403 or attempt == _ATTEMPTS - 1:
                    raise
                time.sleep(0.2)
