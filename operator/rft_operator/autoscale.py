"""How many replicas a base Deployment runs: minReplicaCount..maxReplicaCount, from vLLM's load.

What an HPA with scale-down stabilization does, decided by the operator from the servers' own
Prometheus gauges (no metrics adapter needed). Every replica's `vllm:num_requests_running` and
`vllm:num_requests_waiting` are summed into the requests in flight; the load calls for
ceil(in flight / targetRequestsPerReplica) replicas, within the bounds. More replicas come at once;
fewer only once the load has called for fewer for the whole scaleDownDelaySeconds, and then as
many as the most it called for in that window. A replica whose metrics could not be read may hide
requests: the operator scales up on what it read, and never down.

`decide` is pure: the previous decision (kept in the Deployment's status, so it survives restarts),
the spec's bounds and policy, the load and the time in; the next decision out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from prometheus_client.parser import text_string_to_metric_families

RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"


def requests_in_flight(metrics: str) -> float:
    """Requests running plus waiting in a vLLM server's Prometheus text (GET /metrics), summed over
    label sets (vLLM labels by model_name, and by engine). ValueError when the text does not parse
    or carries neither gauge (not a vLLM server, or one that is not up yet)."""
    total, seen = 0.0, False
    for family in text_string_to_metric_families(metrics):
        if family.name in (RUNNING, WAITING):
            for sample in family.samples:
                if sample.name == family.name:
                    total += sample.value
                    seen = True
    if not seen:
        raise ValueError(f"no {RUNNING} or {WAITING} in the metrics")
    return total


@dataclass(frozen=True)
class Load:
    """What the replicas reported: requests in flight on those read, and how many were not read."""

    in_flight: float
    unread: int = 0


@dataclass(frozen=True)
class ScaleState:
    """A decision, as status keeps it: replicas to run, and a scale-down waiting for its window
    (since when the load has called for fewer, and the most it called for since)."""

    desired: int
    pending_since: datetime | None = None
    pending_to: int | None = None


@dataclass(frozen=True)
class Decision:
    state: ScaleState
    # Why `state.desired` differs from the previous decision's; "" when it does not.
    reason: str = ""


def recommend(in_flight: float, target: int, lowest: int, highest: int) -> int:
    """ceil(in_flight / target) replicas, within lowest..highest."""
    return min(highest, max(lowest, math.ceil(in_flight / target)))


def decide(
    previous: ScaleState | None,
    *,
    lowest: int,
    highest: int,
    target: int,
    delay_seconds: int,
    load: Load | None,
    now: datetime,
) -> Decision:
    """The next decision. `previous` None: the first one (minReplicaCount). `load` None: nothing was
    read (the bounds are equal, or nothing could be): the bounds decide alone."""
    before = previous.desired if previous is not None else None
    current = min(highest, max(lowest, before if before is not None else lowest))
    bounds_reason = ""
    if before is not None and current != before:
        bounds_reason = (
            f"maxReplicaCount is {highest}" if current < before else f"minReplicaCount is {lowest}"
        )
    pending_since = previous.pending_since if previous is not None else None
    pending_to = previous.pending_to if previous is not None else None
    if pending_to is not None:
        pending_to = min(highest, max(lowest, pending_to))
    if pending_since is None or pending_to is None or pending_to >= current:
        pending_since, pending_to = None, None
    if load is None or lowest == highest:
        if lowest == highest:
            pending_since, pending_to = None, None
        return Decision(ScaleState(current, pending_since, pending_to), bounds_reason)

    wanted = recommend(load.in_flight, target, lowest, highest)
    why = f"{load.in_flight:g} requests in flight, target {target} per replica"
    if load.unread:
        why += f" ({load.unread} replica(s) not read)"
    if wanted > current:
        return Decision(ScaleState(wanted), why)
    if wanted == current:
        return Decision(ScaleState(current), bounds_reason)
    if load.unread:
        # Unread replicas may carry the load that would keep them: no scale-down on missing data,
        # and the window neither starts nor ends.
        return Decision(ScaleState(current, pending_since, pending_to), bounds_reason)
    if pending_since is None or pending_to is None:
        pending_since, pending_to = now, wanted
    else:
        pending_to = max(pending_to, wanted)
    if (now - pending_since).total_seconds() < delay_seconds:
        return Decision(ScaleState(current, pending_since, pending_to), bounds_reason)
    # The window has passed: down to the most the load called for in it. Should the load call
    # for fewer still, the next window starts now.
    after = ScaleState(pending_to, now, wanted) if wanted < pending_to else ScaleState(pending_to)
    since = f"{pending_since:%Y-%m-%dT%H:%M:%SZ}"
    return Decision(after, f"{why}; no more than {pending_to} called for since {since}")
