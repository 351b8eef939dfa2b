"""Volumes as directories of the pod's own directory, filled the way the kubelet fills them."""

from __future__ import annotations

import base64
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rft_devcluster.localnode.config import NodeCapacity
from rft_devcluster.localnode.downward import field_value, resource_value
from rft_devcluster.localnode.kubeapi import ApiError, KubeApi

log = logging.getLogger(__name__)

DEFAULT_TOKEN_SECONDS = 3600


class PodSetupError(RuntimeError):
    """A volume or env var cannot be set up; ``permanent`` says whether retrying can help."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass
class ProjectedToken:
    """A ServiceAccount token file, refreshed before it expires (at 80% of its lifetime)."""

    path: Path
    audience: str | None
    expiration_seconds: int
    mode: int
    refresh_at: float = 0.0
    # Tokens of the emulated IRSA webhook's volume: the real pod spec does not declare their
    # audience, so the NodeRestriction plugin refuses the node; the agent's helper asks instead.
    requested_by_helper: bool = False


@dataclass(frozen=True)
class PodContext:
    """What filling volumes and env needs to know about the pod."""

    pod: dict[str, Any]
    pod_ip: str
    host_ip: str
    capacity: NodeCapacity

    @property
    def namespace(self) -> str:
        return str(self.pod["metadata"]["namespace"])


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.chmod(0o600)
    path.write_bytes(data)
    path.chmod(mode)


def _get_optional(api: KubeApi, path: str, what: str, optional: bool) -> dict[str, Any] | None:
    try:
        return api.get(path)
    except ApiError as exc:
        if exc.status == 404 and optional:
            return None
        raise PodSetupError(f"{what}: {exc}", permanent=False) from exc


class VolumeBuilder:
    """Creates the pod's volumes under ``volumes_dir`` and keeps its token files fresh."""

    def __init__(
        self,
        api: KubeApi,
        ctx: PodContext,
        volumes_dir: Path,
        *,
        helper_api: KubeApi | None = None,
        injected_volumes: frozenset[str] = frozenset(),
    ) -> None:
        self._api = api
        self._helper_api = helper_api
        self._injected = injected_volumes
        self._ctx = ctx
        self._dir = volumes_dir
        self.tokens: list[ProjectedToken] = []

    def build(self) -> dict[str, Path]:
        """Set up every volume of the pod; return volume name -> host path."""
        paths: dict[str, Path] = {}
        for volume in self._ctx.pod["spec"].get("volumes", []):
            paths[volume["name"]] = self._build_one(volume)
        return paths

    def _build_one(self, volume: dict[str, Any]) -> Path:
        name: str = volume["name"]
        target = self._dir / name
        if "hostPath" in volume:
            host = Path(str(volume["hostPath"]["path"]))
            if volume["hostPath"].get("type") in ("DirectoryOrCreate",):
                host.mkdir(parents=True, exist_ok=True)
            return host
        target.mkdir(parents=True, exist_ok=True)
        if "emptyDir" in volume:
            pass
        elif "configMap" in volume:
            self._config_map(volume["configMap"], target, volume["configMap"].get("defaultMode", 0o644))
        elif "secret" in volume:
            self._secret(volume["secret"], target, volume["secret"].get("defaultMode", 0o644))
        elif "downwardAPI" in volume:
            self._downward(volume["downwardAPI"], target, volume["downwardAPI"].get("defaultMode", 0o644))
        elif "projected" in volume:
            mode = volume["projected"].get("defaultMode", 0o644)
            for source in volume["projected"].get("sources", []):
                self._projected_source(source, target, mode, injected=name in self._injected)
        else:
            kinds = sorted(k for k in volume if k != "name")
            raise PodSetupError(f"volume {name!r}: unsupported type {kinds}", permanent=True)
        return target

    def _projected_source(
        self, source: dict[str, Any], target: Path, mode: int, *, injected: bool = False
    ) -> None:
        if "configMap" in source:
            self._config_map(source["configMap"], target, mode)
        elif "secret" in source:
            self._secret(source["secret"], target, mode)
        elif "downwardAPI" in source:
            self._downward(source["downwardAPI"], target, mode)
        elif "serviceAccountToken" in source:
            spec = source["serviceAccountToken"]
            token = ProjectedToken(
                path=target / spec["path"],
                audience=spec.get("audience"),
                expiration_seconds=int(spec.get("expirationSeconds", DEFAULT_TOKEN_SECONDS)),
                mode=mode,
                requested_by_helper=injected and self._helper_api is not None,
            )
            self.tokens.append(token)
            self._refresh_token(token)
        else:
            raise PodSetupError(f"unsupported projected source {sorted(source)}", permanent=True)

    def _items(
        self, data: dict[str, bytes], items: list[dict[str, Any]] | None, target: Path, mode: int, what: str
    ) -> None:
        if not items:
            for key, value in data.items():
                _write(target / key, value, mode)
            return
        for item in items:
            if item["key"] not in data:
                raise PodSetupError(f"{what} has no key {item['key']!r}", permanent=False)
            _write(target / item["path"], data[item["key"]], item.get("mode", mode))

    def _config_map(self, spec: dict[str, Any], target: Path, mode: int) -> None:
        path = f"/api/v1/namespaces/{self._ctx.namespace}/configmaps/{spec['name']}"
        obj = _get_optional(self._api, path, f"configmap {spec['name']}", spec.get("optional", False))
        if obj is None:
            return
        data = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
        data |= {k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()}
        self._items(data, spec.get("items"), target, mode, f"configmap {spec['name']}")

    def _secret(self, spec: dict[str, Any], target: Path, mode: int) -> None:
        name = spec.get("secretName") or spec["name"]
        path = f"/api/v1/namespaces/{self._ctx.namespace}/secrets/{name}"
        obj = _get_optional(self._api, path, f"secret {name}", spec.get("optional", False))
        if obj is None:
            return
        data = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        self._items(data, spec.get("items"), target, mode, f"secret {name}")

    def _downward(self, spec: dict[str, Any], target: Path, mode: int) -> None:
        ctx = self._ctx
        for item in spec.get("items", []):
            if "fieldRef" in item:
                value = field_value(
                    ctx.pod, item["fieldRef"]["fieldPath"], pod_ip=ctx.pod_ip, host_ip=ctx.host_ip
                )
            else:
                ref = item["resourceFieldRef"]
                value = resource_value(
                    ctx.pod, ref["containerName"], ref["resource"], ref.get("divisor"), ctx.capacity
                )
            _write(target / item["path"], value.encode(), item.get("mode", mode))

    def _refresh_token(self, token: ProjectedToken) -> None:
        meta = self._ctx.pod["metadata"]
        sa = self._ctx.pod["spec"].get("serviceAccountName") or "default"
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": [token.audience] if token.audience else [],
                "expirationSeconds": token.expiration_seconds,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": meta["name"],
                    "uid": meta["uid"],
                },
            },
        }
        try:
            api = (
                self._helper_api if token.requested_by_helper and self._helper_api is not None else self._api
            )
            answer = api.create(
                f"/api/v1/namespaces/{self._ctx.namespace}/serviceaccounts/{sa}/token", request
            )
        except ApiError as exc:
            raise PodSetupError(f"token for serviceaccount {sa}: {exc}", permanent=False) from exc
        _write(token.path, answer["status"]["token"].encode(), token.mode)
        token.refresh_at = time.monotonic() + 0.8 * token.expiration_seconds

    def refresh_due_tokens(self) -> None:
        """Renew the token files that reached 80% of their lifetime."""
        now = time.monotonic()
        for token in self.tokens:
            if now >= token.refresh_at:
                try:
                    self._refresh_token(token)
                except PodSetupError as exc:
                    token.refresh_at = now + 10.0
                    log.warning("pod %s: %s", self._ctx.pod["metadata"]["name"], exc)
