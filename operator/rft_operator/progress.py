"""Reading a running trainer's progress from its GET /progress endpoint.

The trainer has no Kubernetes API access; the operator asks it. Which pod IPs may be asked is a
setting: in a real cluster every pod IP ("all"); on a development machine only loopback pod IPs
(the local node's), so fake nodes' made-up addresses are never contacted.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import urllib.request
from typing import Literal

from rft.trainer_config import ProgressReport

log = logging.getLogger(__name__)

PollScope = Literal["off", "loopback", "all"]


def may_poll(pod_ip: str | None, scope: PollScope) -> bool:
    if not pod_ip or scope == "off":
        return False
    if scope == "all":
        return True
    try:
        return ipaddress.ip_address(pod_ip).is_loopback
    except ValueError:
        return False


def fetch_progress(pod_ip: str, port: int, timeout: float = 1.0) -> ProgressReport | None:
    """The trainer's latest progress, or None when it cannot be had right now."""
    host = f"[{pod_ip}]" if ":" in pod_ip else pod_ip
    url = f"http://{host}:{port}/progress"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return ProgressReport.model_validate(json.loads(resp.read()))
    except (OSError, ValueError) as exc:
        log.debug("no progress from %s: %s", url, exc)
        return None
