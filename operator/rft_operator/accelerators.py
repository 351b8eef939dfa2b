"""Where pods for an accelerator type go: node selector, tolerations and resource names.

The defaults follow the labels NVIDIA's GPU feature discovery puts on nodes
(`nvidia.com/gpu.product`) and the taint managed node pools commonly carry
(`nvidia.com/gpu=present:NoSchedule` on EKS/GKE GPU pools). Clusters that label nodes
differently override the mapping with a YAML file (operator setting `acceleratorMapFile`,
Helm value `acceleratorMap`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field
from rft.api.common import ACCELERATOR_TYPES

GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


class Placement(BaseModel):
    """How pods of one accelerator type are placed."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    resource: str | None = Field(
        default="nvidia.com/gpu", description="Extended resource requested per accelerator; None for CPU."
    )
    node_selector: dict[str, str] = Field(default_factory=dict, alias="nodeSelector")
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    cpu_per_accelerator: str = Field(default="8", alias="cpuPerAccelerator")
    memory_per_accelerator: str = Field(default="64Gi", alias="memoryPerAccelerator")
    gpus_per_node: int = Field(
        default=8,
        ge=1,
        le=64,
        alias="gpusPerNode",
        description="Accelerators of this type on one node: a step asking for more runs on several nodes.",
    )


def _gpu(product: str) -> Placement:
    return Placement(node_selector={"nvidia.com/gpu.product": product}, tolerations=[GPU_TOLERATION])


DEFAULT_PLACEMENTS: dict[str, Placement] = {
    "NVIDIA_A100_80GB": _gpu("NVIDIA-A100-SXM4-80GB"),
    "NVIDIA_H100_80GB": _gpu("NVIDIA-H100-80GB-HBM3"),
    "NVIDIA_H200_141GB": _gpu("NVIDIA-H200"),
    "NVIDIA_A10G_24GB": _gpu("NVIDIA-A10G"),
    "NVIDIA_L4_24GB": _gpu("NVIDIA-L4"),
    "NVIDIA_B200_180GB": _gpu("NVIDIA-B200"),
    "AMD_MI300X_192GB": Placement(
        resource="amd.com/gpu",
        node_selector={"amd.com/gpu.product-name": "AMD_Instinct_MI300X_OAM"},
        tolerations=[{"key": "amd.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    ),
    "CPU": Placement(resource=None, cpu_per_accelerator="2", memory_per_accelerator="8Gi"),
}


class UnknownAcceleratorError(ValueError):
    """The accelerator type has no placement in the operator's mapping."""


class AcceleratorMap:
    """The accelerator types this operator can place, and how."""

    def __init__(self, placements: dict[str, Placement]) -> None:
        self._placements = placements

    @classmethod
    def load(cls, path: str | Path | None) -> AcceleratorMap:
        """Defaults, overridden entry by entry by a YAML mapping `{TYPE: Placement}` when given
        (`TYPE: null` removes a type the cluster cannot place)."""
        placements = dict(DEFAULT_PLACEMENTS)
        if path:
            raw = yaml.safe_load(Path(path).read_text()) or {}
            for name, entry in raw.items():
                if name not in ACCELERATOR_TYPES:
                    raise ValueError(f"accelerator map {path}: unknown accelerator type {name!r}")
                if entry is None:  # this cluster cannot place it
                    placements.pop(name, None)
                else:
                    placements[name] = Placement.model_validate(entry)
        return cls(placements)

    def known(self) -> list[str]:
        return sorted(self._placements)

    def placement(self, accelerator_type: str) -> Placement:
        try:
            return self._placements[accelerator_type]
        except KeyError:
            raise UnknownAcceleratorError(
                f"accelerator type {accelerator_type} is not in the operator's accelerator map "
                f"(known: {', '.join(self.known())})"
            ) from None

    def nodes(self, accelerator_type: str, count: int) -> tuple[int, int]:
        """(nodes, accelerators per node) for a step asking for `count` accelerators: one node
        while they fit on one (CPU steps always), else the fewest nodes that split them evenly."""
        p = self.placement(accelerator_type)
        if p.resource is None or count <= p.gpus_per_node:
            return 1, count
        nodes = -(-count // p.gpus_per_node)
        if count % nodes:
            raise UnknownAcceleratorError(
                f"{count} x {accelerator_type} do not split evenly over {nodes} nodes of "
                f"{p.gpus_per_node}: ask for a multiple of the GPUs used per node"
            )
        return nodes, count // nodes

    def pod_resources(self, accelerator_type: str, count: int) -> dict[str, dict[str, str]]:
        """Requests and limits for a pod with `count` accelerators."""
        p = self.placement(accelerator_type)
        n = max(count, 1)
        cpu = _scale(p.cpu_per_accelerator, n)
        memory = _scale(p.memory_per_accelerator, n)
        requests = {"cpu": cpu, "memory": memory}
        limits = {"memory": memory}
        if p.resource is not None and count > 0:
            limits[p.resource] = str(count)
            requests[p.resource] = str(count)
        return {"requests": requests, "limits": limits}


def _scale(quantity: str, n: int) -> str:
    """Multiply a simple quantity ('8', '64Gi', '500m') by n."""
    digits = "".join(ch for ch in quantity if ch.isdigit())
    unit = quantity[len(digits) :]
    return f"{int(digits) * n}{unit}"
