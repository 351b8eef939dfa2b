"""A small JSON client of the Kubernetes REST API for the node agent (httpx, plain dicts).

The agent speaks a handful of endpoints (pods, pods/status, nodes, leases, configmaps,
secrets, TokenRequest) and needs full control of watches; plain dicts keep it independent
of a generated client's models.
"""

from __future__ import annotations

import base64
import json
import ssl
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import yaml

JsonDict = dict[str, Any]


class ApiError(RuntimeError):
    """The API server answered with an error status."""

    def __init__(self, status: int, method: str, path: str, body: str) -> None:
        self.status = status
        try:
            detail = json.loads(body).get("message", body)
        except ValueError:
            detail = body
        super().__init__(f"{method} {path}: {status} {detail}")


def _file_or_data(user: Mapping[str, Any], key: str, base_dir: Path) -> bytes | None:
    if f"{key}-data" in user:
        return base64.b64decode(user[f"{key}-data"])
    if key in user:
        path = Path(user[key])
        return (path if path.is_absolute() else base_dir / path).read_bytes()
    return None


class KubeApi:
    """Authenticated access to one API server, from a kubeconfig's current context."""

    def __init__(self, kubeconfig: Path, *, timeout: float = 30.0) -> None:
        config = yaml.safe_load(kubeconfig.read_text())
        context_name = config["current-context"]
        context = next(c["context"] for c in config["contexts"] if c["name"] == context_name)
        cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
        user = next(u["user"] for u in config["users"] if u["name"] == context["user"])
        base_dir = kubeconfig.parent
        self.server: str = cluster["server"].rstrip("/")
        ca = _file_or_data(cluster, "certificate-authority", base_dir)
        ssl_context = ssl.create_default_context(cadata=ca.decode() if ca else None)
        cert = _file_or_data(user, "client-certificate", base_dir)
        key = _file_or_data(user, "client-key", base_dir)
        if cert and key:
            # ssl loads client certificates only from files; keep them only while loading.
            with tempfile.NamedTemporaryFile("wb", suffix=".pem") as pem:
                pem.write(cert + b"\n" + key)
                pem.flush()
                ssl_context.load_cert_chain(pem.name)
        headers = {"Accept": "application/json"}
        if "token" in user:
            headers["Authorization"] = f"Bearer {user['token']}"
        self._client = httpx.Client(
            base_url=self.server,
            verify=ssl_context,
            headers=headers,
            timeout=timeout,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> JsonDict:
        """Send one request and return the decoded JSON answer; raise :class:`ApiError` on >= 400."""
        content = json.dumps(body) if body is not None else None
        headers = {"Content-Type": content_type} if content is not None else None
        response = self._client.request(method, path, params=params, content=content, headers=headers)
        if response.status_code >= 400:
            raise ApiError(response.status_code, method, path, response.text)
        result: JsonDict = response.json() if response.content else {}
        return result

    def get(self, path: str, **params: Any) -> JsonDict:
        """GET ``path``."""
        return self.request("GET", path, params=params or None)

    def create(self, path: str, body: Any) -> JsonDict:
        """POST ``body`` to ``path``."""
        return self.request("POST", path, body=body)

    def replace(self, path: str, body: Any) -> JsonDict:
        """PUT ``body`` at ``path``."""
        return self.request("PUT", path, body=body)

    def merge_patch(self, path: str, patch: Any) -> JsonDict:
        """Apply a JSON merge patch to ``path``."""
        return self.request("PATCH", path, body=patch, content_type="application/merge-patch+json")

    def strategic_patch(self, path: str, patch: Any) -> JsonDict:
        """Apply a strategic merge patch to ``path`` (lists merge by their keys)."""
        return self.request("PATCH", path, body=patch, content_type="application/strategic-merge-patch+json")

    def delete(self, path: str, body: Any = None) -> JsonDict:
        """DELETE ``path`` (with DeleteOptions in ``body``)."""
        return self.request("DELETE", path, body=body)

    def watch(self, path: str, *, timeout_seconds: int, **params: Any) -> Iterator[JsonDict]:
        """Yield watch events (``{"type": ..., "object": ...}``) until the server ends the watch."""
        query = {
            **params,
            "watch": "true",
            "timeoutSeconds": str(timeout_seconds),
            "allowWatchBookmarks": "true",
        }
        timeout = httpx.Timeout(10.0, read=timeout_seconds + 30.0)
        with self._client.stream("GET", path, params=query, timeout=timeout) as response:
            if response.status_code >= 400:
                response.read()
                raise ApiError(response.status_code, "WATCH", path, response.text)
            for line in response.iter_lines():
                if line.strip():
                    event: JsonDict = json.loads(line)
                    yield event


def pod_path(namespace: str, name: str, subresource: str = "") -> str:
    """The REST path of a pod (or one of its subresources)."""
    suffix = f"/{subresource}" if subresource else ""
    return f"/api/v1/namespaces/{namespace}/pods/{name}{suffix}"
