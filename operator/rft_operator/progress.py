"""Reading a running trainer's progress from its GET /progress endpoint.

The trainer has no Kubernetes API access; the operator asks it. Which pod IPs may be asked (the
trainers' progress, the serving pods' adapter sidecars) is a setting: in a real cluster every pod
IP ("all"); on a development machine only the local node's pod addresses (comma-separated CIDRs,
or "loopback" for 127.0.0.0/8 and ::1), so fake nodes' made-up addresses are never contacted.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import logging
import math

from rft.api.reinforcement_step import HISTORY_LENGTH, STATUS_METRICS, StepPoint, StepProgress
from rft.contracts.trainer_config import ProgressReport

from rft_operator import podhttp

log = logging.getLogger(__name__)

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
LOOPBACK_NETWORKS = ("127.0.0.0/8", "::1/128")


@functools.cache
def poll_networks(scope: str) -> tuple[IpNetwork, ...] | None:
    """The networks a scope admits: None for "all", () for "off". Raises ValueError naming a bad entry."""
    if scope == "all":
        return None
    if scope == "off":
        return ()
    entries = LOOPBACK_NETWORKS if scope == "loopback" else [e.strip() for e in scope.split(",")]
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(
                f"{entry!r} is not a CIDR (the scope is all, off, loopback or comma-separated CIDRs)"
            ) from None
    return tuple(networks)


def may_poll(pod_ip: str | None, scope: str) -> bool:
    """Whether the operator may contact `pod_ip` under `scope` (see `poll_networks`)."""
    networks = poll_networks(scope)
    if not pod_ip or networks == ():
        return False
    if networks is None:
        return True
    try:
        address = ipaddress.ip_address(pod_ip)
    except ValueError:
        return False
    return any(address in network for network in networks)


def fetch_progress(pod_ip: str, port: int, timeout: float = 1.0) -> ProgressReport | None:
    """The trainer's latest progress, or None when it cannot be had right now."""
    url = f"{podhttp.pod_base_url(pod_ip, port)}/progress"
    try:
        return ProgressReport.model_validate(json.loads(podhttp.request(url, timeout=timeout)))
    except (podhttp.PodHTTPError, ValueError) as exc:
        log.debug("no progress from %s: %s", url, exc)
        return None


def _decimal(value: float | None) -> str | None:
    return None if value is None or not math.isfinite(value) else f"{value:.6g}"


def live_progress(previous: StepProgress | None, report: ProgressReport) -> StepProgress:
    """The step's status.progress from the trainer's latest report: the latest values of a few
    metrics and a short history (the last HISTORY_LENGTH optimizer steps polled), so the status
    stays small; the full series is published beside the checkpoint."""
    history = list(previous.history) if previous is not None else []
    if report.step > 0 and (not history or history[-1].step < report.step):
        history.append(
            StepPoint(
                step=report.step,
                loss=_decimal(report.loss),
                mean_reward=_decimal(report.metrics.get("mean_reward")),
            )
        )
    metrics = {
        key: text
        for key in STATUS_METRICS
        if key in report.metrics and (text := _decimal(report.metrics[key])) is not None
    }
    return StepProgress(
        epoch=report.epoch,
        step=report.step,
        total_steps=report.total_steps,
        loss=_decimal(report.loss),
        mean_reward=_decimal(report.mean_reward),
        metrics=metrics,
        history=history[-HISTORY_LENGTH:],
    )
