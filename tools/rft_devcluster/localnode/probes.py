"""Readiness, liveness and startup probes (httpGet, tcpSocket, exec) with the kubelet's thresholds."""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from typing import Any

import httpx

ExecFn = Callable[[list[str], float], int]


def _port(value: int | str, named_ports: Mapping[str, int]) -> int:
    if isinstance(value, int) or str(value).isdigit():
        return int(value)
    if value not in named_ports:
        raise ValueError(f"no container port named {value!r}")
    return named_ports[value]


class Probe:
    """One probe of one container; :attr:`healthy` follows the success/failure thresholds."""

    def __init__(
        self,
        spec: Mapping[str, Any],
        *,
        initial: bool,
        pod_ip: str,
        named_ports: Mapping[str, int],
        exec_fn: ExecFn,
        started_at: float,
    ) -> None:
        self._spec = spec
        self._pod_ip = pod_ip
        self._named_ports = named_ports
        self._exec = exec_fn
        self.healthy = initial
        self.last_error = ""
        self._successes = 0
        self._failures = 0
        self.period = float(spec.get("periodSeconds", 10))
        self.timeout = float(spec.get("timeoutSeconds", 1))
        self._success_threshold = int(spec.get("successThreshold", 1))
        self._failure_threshold = int(spec.get("failureThreshold", 3))
        self._next_at = started_at + float(spec.get("initialDelaySeconds", 0))

    def due(self, now: float) -> bool:
        """Whether the probe should run at monotonic time ``now``."""
        return now >= self._next_at

    def run(self, now: float) -> bool:
        """Probe once, update :attr:`healthy`, and return whether it changed."""
        self._next_at = now + self.period
        ok = self._check()
        before = self.healthy
        if ok:
            self._successes, self._failures = self._successes + 1, 0
            if self._successes >= self._success_threshold:
                self.healthy = True
        else:
            self._failures, self._successes = self._failures + 1, 0
            if self._failures >= self._failure_threshold:
                self.healthy = False
        return before != self.healthy

    def _check(self) -> bool:
        spec = self._spec
        try:
            if "httpGet" in spec:
                return self._http(spec["httpGet"])
            if "tcpSocket" in spec:
                tcp = spec["tcpSocket"]
                address = (tcp.get("host") or self._pod_ip, _port(tcp["port"], self._named_ports))
                with socket.create_connection(address, timeout=self.timeout):
                    return True
            if "exec" in spec:
                code = self._exec(list(spec["exec"]["command"]), self.timeout)
                self.last_error = "" if code == 0 else f"exec probe exited {code}"
                return code == 0
            self.last_error = f"unsupported probe handler {sorted(spec)}"
        except (OSError, httpx.HTTPError, ValueError) as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
        return False

    def _http(self, get: Mapping[str, Any]) -> bool:
        scheme = str(get.get("scheme", "HTTP")).lower()
        host = get.get("host") or self._pod_ip
        port = _port(get["port"], self._named_ports)
        path = get.get("path", "/")
        headers = {h["name"]: h["value"] for h in get.get("httpHeaders", [])}
        # Like the kubelet: HTTPS probes do not verify certificates.
        response = httpx.get(
            f"{scheme}://{host}:{port}{path}",
            headers=headers,
            timeout=self.timeout,
            verify=False,  # noqa: S501
        )
        self.last_error = "" if 200 <= response.status_code < 400 else f"HTTP {response.status_code}"
        return 200 <= response.status_code < 400
