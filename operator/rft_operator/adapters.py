"""Talking to serving pods' adapter sidecar (vLLM's protocol, bucket URLs for adapter paths).

The operator asks each ready replica of a base deployment which models it serves
(`GET /v1/models`), loads missing adapters (`POST /v1/load_lora_adapter`), checks a loaded
adapter's canary (`POST /v1/completions` with `prompt_logprobs`, `rft.canary`) and unloads them
(`POST /v1/unload_lora_adapter`), and reads vLLM's Prometheus metrics (`GET /metrics`, the
autoscaler's load). Which pod addresses may be contacted follows the operator's
`progress_poll` setting (every pod in a cluster, loopback pods only in development). Every call
carries the Deployment's admin token (`rft_operator.admintoken`): the sidecar refuses any other.
"""

from __future__ import annotations

import json
from typing import Any

from rft.api.model import AdapterCanary
from rft.canary import request_body, served_logprobs

from rft_operator import podhttp


class AdapterAdminError(RuntimeError):
    """A replica refused or could not be reached."""


def _request(url: str, payload: dict[str, Any] | None, timeout: float, token: str) -> Any:
    try:
        body = podhttp.request(url, payload, timeout, headers={"Authorization": f"Bearer {token}"})
    except podhttp.PodHTTPError as exc:
        raise AdapterAdminError(str(exc)) from None
    try:
        return json.loads(body) if body.strip().startswith((b"{", b"[")) else body.decode(errors="replace")
    except ValueError:
        return body.decode(errors="replace")


def served_models(pod_ip: str, port: int, timeout: float = 5.0, *, token: str) -> set[str]:
    body = _request(f"{podhttp.pod_base_url(pod_ip, port)}/v1/models", None, timeout, token)
    if not isinstance(body, dict):
        raise AdapterAdminError(f"{pod_ip}:{port}: /v1/models answered something other than a model list")
    return {str(m.get("id")) for m in body.get("data", [])}


def server_metrics(pod_ip: str, port: int, timeout: float = 5.0, *, token: str) -> str:
    """vLLM's Prometheus text (GET /metrics, passed through by the sidecar)."""
    body = _request(f"{podhttp.pod_base_url(pod_ip, port)}/metrics", None, timeout, token)
    if not isinstance(body, str):
        raise AdapterAdminError(f"{pod_ip}:{port}: /metrics answered JSON, not Prometheus text")
    return body


def load_adapter(
    pod_ip: str,
    port: int,
    name: str,
    path: str,
    timeout: float = 600.0,
    *,
    in_place: bool = False,
    token: str,
) -> None:
    """Load the adapter at `path` (a bucket URL) as `name`; `in_place` replaces the one served under
    that name without a moment of not serving it (vLLM's load_inplace)."""
    body: dict[str, Any] = {"lora_name": name, "lora_path": path}
    if in_place:
        body["load_inplace"] = True
    _request(f"{podhttp.pod_base_url(pod_ip, port)}/v1/load_lora_adapter", body, timeout, token)


def unload_adapter(pod_ip: str, port: int, name: str, timeout: float = 60.0, *, token: str) -> None:
    _request(f"{podhttp.pod_base_url(pod_ip, port)}/v1/unload_lora_adapter", {"lora_name": name}, timeout, token)


def canary_logprobs(
    pod_ip: str, port: int, name: str, canary: AdapterCanary, timeout: float = 60.0, *, token: str
) -> list[float]:
    """The replica's logprobs of the canary's tokens under the adapter served as `name`."""
    body = _request(f"{podhttp.pod_base_url(pod_ip, port)}/v1/completions", request_body(name, canary), timeout, token)
    if not isinstance(body, dict):
        raise AdapterAdminError(
            f"{pod_ip}:{port}: /v1/completions answered something other than a completion"
        )
    try:
        return served_logprobs(body, canary.token_ids)
    except ValueError as exc:
        raise AdapterAdminError(f"{pod_ip}:{port}: {exc}") from None
