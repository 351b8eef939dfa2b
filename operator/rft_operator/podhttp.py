"""HTTP to pods, whose answers the operator does not trust.

A pod's image may be its author's choice (within the admin's allow-list), so what it answers is
theirs too. Every request the operator sends to a pod (the adapter sidecar, the trainer's progress
endpoint) goes through here:

- redirects are never followed (a 3xx is an error): a pod cannot point the operator's requests
  at another address, such as a cloud metadata service or an internal API;
- no proxy from the operator's environment is used for pod addresses;
- an answer is read up to `MAX_ANSWER_BYTES`;
- errors name the URL, the HTTP status and, for a JSON error, its short `type` (vLLM's
  `BadRequestError`, `NotFoundError`), never the answer's text: nothing a pod says reaches an
  object's status. The answer's start goes to the operator's log, for the admin.
"""

from __future__ import annotations

import json
import logging
import re
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)

MAX_ANSWER_BYTES = 16 * 1024 * 1024
LOGGED_ANSWER_CHARS = 300
_TYPE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")


class PodHTTPError(RuntimeError):
    """The pod could not be reached, refused, redirected, or answered too much."""


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # urllib then raises the 3xx as an HTTPError


_OPENER = urllib.request.build_opener(_NoRedirects(), urllib.request.ProxyHandler({}))


def pod_base_url(pod_ip: str, port: int) -> str:
    """`http://<pod IP>:<port>`, the IP bracketed when it is IPv6."""
    host = f"[{pod_ip}]" if ":" in pod_ip else pod_ip
    return f"http://{host}:{port}"


def error_type(answer: bytes) -> str | None:
    """The `type` of a JSON error answer ({"error": {"type": ...}} or {"type": ...}), if it is a
    short identifier."""
    try:
        body = json.loads(answer)
    except ValueError:
        return None
    if isinstance(body, dict):
        inner = body.get("error", body)
        kind = inner.get("type") if isinstance(inner, dict) else None
        if isinstance(kind, str) and _TYPE.match(kind):
            return kind
    return None


def request(
    url: str,
    payload: dict[str, Any] | None = None,
    timeout: float = 10.0,
    headers: Mapping[str, str] | None = None,
) -> bytes:
    """GET (or POST `payload` as JSON to) `url` on a pod; the answer's bytes."""
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(  # noqa: S310 - http to a pod IP the operator chose
        url,
        data=data,
        headers={"Content-Type": "application/json", **(headers or {})},
        method="GET" if data is None else "POST",
    )
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            answer: bytes = resp.read(MAX_ANSWER_BYTES + 1)
    except urllib.error.HTTPError as exc:
        answer = exc.read(MAX_ANSWER_BYTES)
        log.info("%s: HTTP %s: %s", url, exc.code, answer[:LOGGED_ANSWER_CHARS].decode(errors="replace"))
        if 300 <= exc.code < 400:
            raise PodHTTPError(
                f"{url}: HTTP {exc.code}: a redirect, which the operator does not follow"
            ) from None
        kind = error_type(answer)
        raise PodHTTPError(
            f"{url}: HTTP {exc.code}" + (f" ({kind})" if kind else "") + "; see the operator's log"
        ) from None
    except OSError as exc:
        raise PodHTTPError(f"{url}: {type(exc).__name__}: {getattr(exc, 'reason', None) or exc}") from None
    if len(answer) > MAX_ANSWER_BYTES:
        raise PodHTTPError(f"{url}: the answer exceeds {MAX_ANSWER_BYTES} bytes")
    return answer
