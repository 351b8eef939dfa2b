"""Reading where a Job is from its own conditions and its pods' container states.

Terminal outcomes come from the Job's conditions (Complete / Failed), never from the first failed
pod: a pod that failed and was retried is not a failed step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Obj = dict[str, Any]
# What the Job controller puts on each pod of an Indexed Job.
COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"


@dataclass(frozen=True)
class JobState:
    outcome: Literal["complete", "failed"] | None
    reason: str
    message: str
    active: int
    failed_pods: int
    suspended: bool
    running_pod: Obj | None
    succeeded_pods: int = 0
    """Pods that exited 0 (the Job's Complete condition may not be there yet)."""


def _condition(job: Obj, type_: str) -> Obj | None:
    for cond in job.get("status", {}).get("conditions", []) or []:
        if cond.get("type") == type_ and cond.get("status") == "True":
            return cond  # type: ignore[no-any-return]
    return None


def job_state(job: Obj, pods: list[Obj]) -> JobState:
    status = job.get("status", {})
    outcome: Literal["complete", "failed"] | None = None
    reason = message = ""
    if (cond := _condition(job, "Complete")) is not None:
        outcome, reason, message = "complete", cond.get("reason", ""), cond.get("message", "")
    elif (cond := _condition(job, "Failed")) is not None:
        outcome, reason, message = "failed", cond.get("reason", ""), cond.get("message", "")
    # Only rank 0 reports (progress, result). On a multi-node step that is the pod of completion
    # index 0: torchrun's c10d rendezvous ranks the agents by their host's FQDN, and the pod of index
    # 0 (`<job>-0.<job>.<ns>.svc...`) sorts first.
    running = min(
        (
            p
            for p in pods
            if p.get("status", {}).get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
        ),
        key=completion_index,
        default=None,
    )
    return JobState(
        outcome=outcome,
        reason=reason,
        message=message,
        active=int(status.get("active", 0) or 0),
        failed_pods=int(status.get("failed", 0) or 0),
        suspended=_condition(job, "Suspended") is not None,
        running_pod=running,
        succeeded_pods=sum(1 for p in pods if p.get("status", {}).get("phase") == "Succeeded"),
    )


def completion_index(pod: Obj) -> int:
    """The pod's index in an Indexed Job (0 for any other pod)."""
    value = (pod["metadata"].get("annotations") or {}).get(COMPLETION_INDEX_ANNOTATION, "0")
    try:
        return int(value)
    except ValueError:
        return 0


def _terminated(pod: Obj, container: str) -> Obj | None:
    for cs in pod.get("status", {}).get("containerStatuses", []) or []:
        if cs.get("name") == container:
            term: Obj | None = cs.get("state", {}).get("terminated") or cs.get("lastState", {}).get(
                "terminated"
            )
            return term
    return None


def termination_message(pods: list[Obj], container: str, *, succeeded: bool) -> tuple[str | None, int | None]:
    """The termination message and exit code of the newest pod that succeeded (or failed)."""
    wanted = "Succeeded" if succeeded else "Failed"
    candidates = []
    for pod in pods:
        if pod.get("status", {}).get("phase") != wanted:
            continue
        term = _terminated(pod, container)
        if term is not None:
            # A multi-node step's pods all succeed; only the one running rank 0 writes a message.
            candidates.append((bool(term.get("message")), term.get("finishedAt") or "", term))
    if not candidates:
        return None, None
    *_, newest = max(candidates, key=lambda c: (c[0], c[1]))
    return newest.get("message"), newest.get("exitCode")


def owned_by(pod: Obj, job: Obj) -> bool:
    """Whether the Job controls the pod (its owner reference carries the Job's uid): a result is
    taken only from such a pod, never from one that merely carries the Job's label."""
    uid = job.get("metadata", {}).get("uid")
    return bool(uid) and any(
        ref.get("uid") == uid and ref.get("controller")
        for ref in pod["metadata"].get("ownerReferences") or []
    )
