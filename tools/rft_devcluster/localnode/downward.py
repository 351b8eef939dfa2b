"""The downward API: pod fields and container resources as strings (env values and files)."""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Any

from rft_devcluster.localnode.config import NodeCapacity

_SUBSCRIPT = re.compile(r"^metadata\.(labels|annotations)\['([^']+)'\]$")
_SUFFIXES: dict[str, Decimal] = {
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
}


class DownwardApiError(ValueError):
    """A field path or resource the downward API does not offer."""


def parse_quantity(quantity: str | int | float) -> Decimal:
    """A Kubernetes quantity (``500m``, ``2Gi``, ``1e3``) as a number."""
    text = str(quantity).strip()
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if text.endswith(suffix) and not text.endswith("e" + suffix):
            return Decimal(text[: -len(suffix)]) * _SUFFIXES[suffix]
    return Decimal(text)


def _format_map(values: dict[str, str]) -> str:
    # The kubelet's format for whole label/annotation maps: key="value" lines, sorted.
    return "\n".join(f'{k}="{v}"' for k, v in sorted(values.items()))


def field_value(pod: dict[str, Any], field_path: str, *, pod_ip: str, host_ip: str) -> str:
    """The value of ``field_path`` (``metadata.name``, ``status.podIP``, ...) for ``pod``."""
    meta, spec = pod["metadata"], pod["spec"]
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
        "status.hostIP": host_ip,
        "status.hostIPs": host_ip,
    }
    if field_path in simple:
        return str(simple[field_path])
    if field_path in ("metadata.labels", "metadata.annotations"):
        return _format_map(meta.get(field_path.split(".")[1]) or {})
    match = _SUBSCRIPT.match(field_path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    raise DownwardApiError(f"unsupported fieldPath {field_path!r}")


def resource_value(
    pod: dict[str, Any], container_name: str, resource: str, divisor: str | None, capacity: NodeCapacity
) -> str:
    """A container's request or limit (``limits.cpu``, ``requests.memory``...), in units of ``divisor``.

    Like the kubelet, a missing limit falls back to the node's allocatable amount and the
    result is rounded up.
    """
    containers = [*pod["spec"].get("initContainers", []), *pod["spec"]["containers"]]
    container = next((c for c in containers if c["name"] == container_name), None)
    if container is None:
        raise DownwardApiError(f"no container {container_name!r} for resourceFieldRef")
    kind, _, name = resource.partition(".")
    if kind not in ("limits", "requests") or not name:
        raise DownwardApiError(f"unsupported resource {resource!r}")
    resources = container.get("resources") or {}
    value = (resources.get(kind) or {}).get(name)
    if value is None and kind == "requests":
        value = (resources.get("limits") or {}).get(name)
    if value is None:
        value = capacity.resources().get(name, "0") if kind == "limits" else "0"
    amount = parse_quantity(value) / parse_quantity(divisor or "1")
    return str(math.ceil(amount))
