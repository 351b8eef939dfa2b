"""A container's environment: env, envFrom and valueFrom resolved, ``$(VAR)`` expanded."""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from typing import Any

from rft_devcluster.localnode.downward import DownwardApiError, field_value, resource_value
from rft_devcluster.localnode.kubeapi import ApiError, KubeApi
from rft_devcluster.localnode.volumes import PodContext, PodSetupError

_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.\-]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: defined variables are replaced, ``$$`` escapes ``$``."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _REFERENCE.sub(substitute, text)


class EnvResolver:
    """Resolves env for the containers of one pod (ConfigMaps and Secrets read once per pod)."""

    def __init__(self, api: KubeApi, ctx: PodContext) -> None:
        self._api = api
        self._ctx = ctx
        self._cache: dict[tuple[str, str], dict[str, str] | None] = {}

    def _source(self, kind: str, name: str, optional: bool) -> dict[str, str] | None:
        key = (kind, name)
        if key not in self._cache:
            plural = "configmaps" if kind == "configMap" else "secrets"
            try:
                obj = self._api.get(f"/api/v1/namespaces/{self._ctx.namespace}/{plural}/{name}")
            except ApiError as exc:
                if exc.status == 404 and optional:
                    self._cache[key] = None
                    return None
                raise PodSetupError(f"{kind} {name}: {exc}", permanent=False) from exc
            data = obj.get("data") or {}
            if kind == "secret":
                data = {k: base64.b64decode(v).decode(errors="replace") for k, v in data.items()}
            self._cache[key] = dict(data)
        return self._cache[key]

    def _key(self, kind: str, ref: dict[str, Any]) -> str | None:
        optional = bool(ref.get("optional", False))
        data = self._source(kind, ref["name"], optional)
        if data is None or ref["key"] not in data:
            if optional:
                return None
            raise PodSetupError(f"{kind} {ref['name']} has no key {ref['key']!r}", permanent=False)
        return data[ref["key"]]

    def resolve(self, container: dict[str, Any], base: Mapping[str, str]) -> dict[str, str]:
        """The container's environment on top of ``base``, in the kubelet's order."""
        env = dict(base)
        for source in container.get("envFrom", []):
            prefix = source.get("prefix", "")
            for kind in ("configMap", "secret"):
                ref = source.get(f"{kind}Ref")
                if ref:
                    data = self._source(kind, ref["name"], bool(ref.get("optional", False))) or {}
                    env.update({f"{prefix}{k}": v for k, v in data.items()})
        ctx = self._ctx
        for var in container.get("env", []):
            name = var["name"]
            if "valueFrom" not in var:
                env[name] = expand(var.get("value", ""), env)
                continue
            value_from = var["valueFrom"]
            value: str | None
            try:
                if "fieldRef" in value_from:
                    value = field_value(
                        ctx.pod, value_from["fieldRef"]["fieldPath"], pod_ip=ctx.pod_ip, host_ip=ctx.host_ip
                    )
                elif "resourceFieldRef" in value_from:
                    ref = value_from["resourceFieldRef"]
                    value = resource_value(
                        ctx.pod,
                        ref.get("containerName") or container["name"],
                        ref["resource"],
                        ref.get("divisor"),
                        ctx.capacity,
                    )
                elif "configMapKeyRef" in value_from:
                    value = self._key("configMap", value_from["configMapKeyRef"])
                elif "secretKeyRef" in value_from:
                    value = self._key("secret", value_from["secretKeyRef"])
                else:
                    raise PodSetupError(
                        f"env {name}: unsupported valueFrom {sorted(value_from)}", permanent=True
                    )
            except DownwardApiError as exc:
                raise PodSetupError(f"env {name}: {exc}", permanent=True) from exc
            if value is not None:
                env[name] = value
        return env
