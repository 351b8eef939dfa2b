"""The operator's admin tokens: what lets it, and only it, load and unload adapters on server pods.

Each `Deployment` has its own token, HMAC-SHA256 of the Deployment's namespace, name and uid under
the operator's key. Its server pods hold only the token's SHA-256 (`rft.pods.admin_guard`), in their
spec: reading a pod gives nothing usable, and a token of one Deployment opens no other.

The key lives in a Secret of the operator's own namespace, which the operator makes on its first
start (32 random bytes) and reads on every later one, so tokens, and with them server pod
templates, stay the same across restarts, upgrades and leader changes. Deleting the Secret rotates
every token: the next reconcile of each Deployment rolls its server pods. The operator needs `get`
(on that name) and `create` on Secrets in its own namespace, nothing in the users' namespaces.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from rft.pods.admin_guard import token_sha256

from rft_operator import naming

log = logging.getLogger(__name__)

KEY_FIELD = "key"
KEY_BYTES = 32


class AdminKeyError(RuntimeError):
    """The key Secret cannot be read or made (RBAC, or a Secret of that name without a key)."""


class AdminTokens:
    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise AdminKeyError("the admin key must be at least 16 bytes")
        self._key = key

    def token(self, namespace: str, name: str, uid: str) -> str:
        """The admin token of Deployment `namespace/name` with `uid` (a re-made Deployment of the
        same name gets a new one)."""
        message = f"{namespace}/{name}/{uid}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def token_sha256(self, namespace: str, name: str, uid: str) -> str:
        """What the Deployment's server pods hold."""
        return token_sha256(self.token(namespace, name, uid))

    @classmethod
    def load_or_create(cls, core: client.CoreV1Api, namespace: str, secret_name: str) -> AdminTokens:
        """The key from Secret `namespace/secret_name`, made first if it does not exist (two
        operators starting at once: the second's create fails and it reads the first's)."""
        for _ in range(2):
            try:
                secret = core.read_namespaced_secret(secret_name, namespace)
            except ApiException as exc:
                if exc.status != 404:
                    raise AdminKeyError(
                        f"cannot read Secret {namespace}/{secret_name} (the adapter admin key): "
                        f"HTTP {exc.status} {exc.reason}"
                    ) from None
            else:
                encoded = (secret.data or {}).get(KEY_FIELD)
                if not encoded:
                    raise AdminKeyError(f"Secret {namespace}/{secret_name} has no {KEY_FIELD!r} entry")
                return cls(base64.b64decode(encoded))
            key = secrets.token_bytes(KEY_BYTES)
            body = client.V1Secret(
                metadata=client.V1ObjectMeta(
                    name=secret_name, namespace=namespace, labels={naming.LABEL_MANAGED_BY: naming.MANAGER}
                ),
                type="Opaque",
                data={KEY_FIELD: base64.b64encode(key).decode()},
            )
            try:
                core.create_namespaced_secret(namespace, body)
            except ApiException as exc:
                if exc.status == 409:
                    continue  # made meanwhile by another replica: read it
                raise AdminKeyError(
                    f"cannot create Secret {namespace}/{secret_name} (the adapter admin key): "
                    f"HTTP {exc.status} {exc.reason}"
                ) from None
            log.info("made the adapter admin key in Secret %s/%s", namespace, secret_name)
            return cls(key)
        raise AdminKeyError(f"Secret {namespace}/{secret_name} was made and is gone again")
