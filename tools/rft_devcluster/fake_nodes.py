"""Fake GPU nodes: Node objects that kwok keeps Ready and whose pods it plays out.

kwok manages only nodes annotated ``kwok.x-k8s.io/node: fake``; the local node agent's
node lacks that annotation, so the two never fight over a node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
KWOK_NODE_ANNOTATION_VALUE = "fake"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
GPU_TAINT = {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}


@dataclass(frozen=True)
class GpuNodeProfile:
    """The hardware one fake node pretends to have."""

    gpu_product: str
    instance_type: str
    gpus: int = 8
    cpu: str = "96"
    memory: str = "1152Gi"
    pods: int = 110
    # Local NVMe for emptyDirs (models, scratch): pods request ephemeral storage.
    ephemeral_storage: str = "3500Gi"


# Alternated across the fake nodes so that tests can select a product by label.
A100_NODE = GpuNodeProfile(gpu_product="NVIDIA-A100-SXM4-80GB", instance_type="p4d.24xlarge")
H100_NODE = GpuNodeProfile(
    gpu_product="NVIDIA-H100-80GB-HBM3", instance_type="p5.48xlarge", cpu="192", memory="2048Gi"
)
DEFAULT_PROFILES = (A100_NODE, H100_NODE)


def gpu_node_name(index: int) -> str:
    """The name of the ``index``-th fake GPU node."""
    return f"kwok-gpu-{index}"


def gpu_node_manifest(name: str, profile: GpuNodeProfile) -> dict[str, Any]:
    """A Node object for kwok with GPUs in its capacity, product labels and the GPU taint."""
    resources = {
        "cpu": profile.cpu,
        "memory": profile.memory,
        "pods": str(profile.pods),
        "ephemeral-storage": profile.ephemeral_storage,
        GPU_RESOURCE: str(profile.gpus),
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {
                KWOK_NODE_ANNOTATION: KWOK_NODE_ANNOTATION_VALUE,
                "node.alpha.kubernetes.io/ttl": "0",
            },
            "labels": {
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/os": "linux",
                "kubernetes.io/hostname": name,
                "type": "kwok",
                GPU_PRODUCT_LABEL: profile.gpu_product,
                "nvidia.com/gpu.count": str(profile.gpus),
                INSTANCE_TYPE_LABEL: profile.instance_type,
            },
        },
        "spec": {"taints": [GPU_TAINT]},
        "status": {
            "capacity": resources,
            "allocatable": resources,
        },
    }


def gpu_node_manifests(
    count: int, profiles: tuple[GpuNodeProfile, ...] = DEFAULT_PROFILES
) -> list[dict[str, Any]]:
    """``count`` fake GPU nodes, alternating through ``profiles``."""
    return [gpu_node_manifest(gpu_node_name(i), profiles[i % len(profiles)]) for i in range(count)]
