"""Who may call a training session: its API key, or a Kubernetes ServiceAccount token of its namespace.

The official client sends its `api_key` in `X-API-Key` and accepts two forms: `tml-...` (the
session's key, from its Secret) and a JWT (`eyJ...`, whose `exp` it checks itself). A Kubernetes
ServiceAccount token is a JWT, so the client carries one unchanged.

A token is checked with a TokenReview against the API server, bound to the session's own audience
(`rft.api.training_session.token_audience`: `rft-operator.io/trainingsession/<namespace>/<name>`):
a token minted for the API server, or for another session, is refused, and a token a client sends
here is no use anywhere else. The reviewed identity must be a ServiceAccount of the session's
namespace (`system:serviceaccount:<namespace>:<name>`): only whoever may run pods or request tokens
in the namespace can present one, the same people who may read the API key's Secret.

The session pod calls the API server with its own ServiceAccount token (a projected volume the
operator adds only when spec.authentication.kubernetesTokens is set), which needs
`create tokenreviews.authentication.k8s.io`: a cluster admin's grant, never the operator's.
Successful reviews are kept for a minute (never past the token's expiry), so the client's many
calls do not each cost a TokenReview.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import ssl
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("rft_trainer.session.auth")

TOKEN_REVIEW_PATH = "/apis/authentication.k8s.io/v1/tokenreviews"  # noqa: S105 - an API path
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
CACHE_SECONDS = 60.0
KEPT_REVIEWS = 1024


class AuthError(Exception):
    """A refused caller: `status` is 401 (not authenticated) or 403 (not allowed here)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Caller:
    """Who called: the API key's holder, or a ServiceAccount (its username)."""

    kind: str  # "api-key" or "kubernetes"
    name: str


def _jwt_expiry(token: str) -> float | None:
    """The `exp` claim of a JWT, unverified (only to bound the cache; the API server verifies)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        exp = claims.get("exp") if isinstance(claims, dict) else None
    except (IndexError, ValueError, binascii.Error):
        return None
    return float(exp) if isinstance(exp, int | float) else None


class TokenReviewer:
    """Checks ServiceAccount tokens with TokenReviews, as the pod's own ServiceAccount."""

    def __init__(
        self,
        *,
        api_url: str,
        credentials_dir: Path,
        audience: str,
        namespace: str,
        timeout: float = 5.0,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.token_file = credentials_dir / "token"
        self.audience = audience
        self.namespace = namespace
        self.timeout = timeout
        self._context = ssl.create_default_context(cafile=str(credentials_dir / "ca.crt"))
        self._lock = threading.Lock()
        self._reviewed: dict[str, tuple[Caller, float]] = {}

    @classmethod
    def in_cluster(cls, credentials_dir: Path, *, audience: str, namespace: str) -> TokenReviewer:
        """The API server the pod's environment names (KUBERNETES_SERVICE_HOST and _PORT)."""
        host = os.environ.get("KUBERNETES_SERVICE_HOST")
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise ValueError("KUBERNETES_SERVICE_HOST is not set: not in a pod, so no API server to ask")
        host = f"[{host}]" if ":" in host else host
        return cls(
            api_url=f"https://{host}:{port}",
            credentials_dir=credentials_dir,
            audience=audience,
            namespace=namespace,
        )

    def review(self, token: str) -> Caller:
        """The ServiceAccount `token` belongs to, or AuthError (401 / 403; 503 if the API server
        cannot be asked)."""
        key = hashlib.sha256(token.encode()).hexdigest()
        now = time.time()
        with self._lock:
            hit = self._reviewed.get(key)
        if hit is not None and hit[1] > now:
            return hit[0]
        caller = self._authorize(self._token_review(token))
        expiry = _jwt_expiry(token) or now
        with self._lock:
            self._reviewed[key] = (caller, min(now + CACHE_SECONDS, expiry))
            while len(self._reviewed) > KEPT_REVIEWS:
                self._reviewed.pop(next(iter(self._reviewed)))
        return caller

    def _token_review(self, token: str) -> dict[str, Any]:
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": [self.audience]},
        }
        own = self.token_file.read_text(encoding="utf-8").strip()  # re-read: the kubelet rotates it
        request = urllib.request.Request(  # noqa: S310 - https to the API server
            f"{self.api_url}{TOKEN_REVIEW_PATH}",
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Authorization": f"Bearer {own}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=self._context) as answer:  # noqa: S310 - https to the API server
                result: dict[str, Any] = json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            log.error("TokenReview refused (%s): %s", exc.code, detail)
            if exc.code in (401, 403):
                raise AuthError(
                    503,
                    "this session cannot check Kubernetes tokens: its ServiceAccount may not create "
                    "tokenreviews.authentication.k8s.io (a cluster admin grants it)",
                ) from None
            raise AuthError(503, f"the API server's TokenReview failed ({exc.code})") from None
        except (OSError, ValueError) as exc:
            log.error("TokenReview failed: %s", exc)
            raise AuthError(503, f"the API server cannot be reached to check the token: {exc}") from None
        return result

    def _authorize(self, review: dict[str, Any]) -> Caller:
        status = review.get("status") or {}
        if not status.get("authenticated"):
            why = status.get("error") or "not authenticated"
            raise AuthError(
                401,
                f"Kubernetes token refused: {why} (a token for this session has audience {self.audience})",
            )
        if self.audience not in (status.get("audiences") or []):
            raise AuthError(401, f"Kubernetes token refused: it is not bound to audience {self.audience}")
        username = str((status.get("user") or {}).get("username", ""))
        prefix = f"{SERVICE_ACCOUNT_PREFIX}{self.namespace}:"
        if not username.startswith(prefix):
            raise AuthError(
                403,
                f"{username or 'this identity'} may not use this session: only ServiceAccounts of "
                f"namespace {self.namespace} may",
            )
        return Caller("kubernetes", username)


class Authenticator:
    """The session's API key, and Kubernetes tokens when a reviewer is given."""

    def __init__(self, api_key: str, reviewer: TokenReviewer | None = None) -> None:
        self.api_key = api_key
        self.reviewer = reviewer

    def authenticate(self, presented: str | None) -> Caller:
        if not presented:
            raise AuthError(401, "missing X-API-Key (the session's API key or a Kubernetes token)")
        if presented.startswith("eyJ"):  # a JWT: the client's other credential form
            if self.reviewer is None:
                raise AuthError(
                    401,
                    "this session does not accept Kubernetes tokens (spec.authentication.kubernetesTokens "
                    "is off): use its API key",
                )
            return self.reviewer.review(presented)
        if not hmac.compare_digest(presented.encode(), self.api_key.encode()):
            raise AuthError(401, "wrong X-API-Key")
        return Caller("api-key", "api-key")
