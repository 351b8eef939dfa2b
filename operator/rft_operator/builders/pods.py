"""Pieces every pod the operator builds shares: security context, scratch volumes, owner refs."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

from kubernetes.utils.quantity import parse_quantity
from rft.api import Model
from rft.api.common import Resource

Manifest = dict[str, Any]

RUN_AS = 1000
TERMINATION_LOG = "/dev/termination-log"
SCRATCH = "/tmp/rft"  # noqa: S108 - an emptyDir mounted there, not the node's /tmp
GIB = 2**30
MIB = 2**20
# What a container writes outside its volumes: its log (the kubelet rotates it at 10 MiB x 5 by
# default) and nothing else, as every root filesystem is read-only. Added to every container's
# ephemeral-storage request and limit.
CONTAINER_OWN_STORAGE = 256 * MIB


def owner_reference(owner: Resource) -> Manifest:
    """The child is garbage-collected with its owner; only one controller owns it."""
    return {
        "apiVersion": owner.api_version,
        "kind": owner.kind,
        "name": owner.metadata.name,
        "uid": owner.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def pod_security_context() -> Manifest:
    """The Pod Security Standards' "restricted" profile."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        "fsGroup": RUN_AS,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> Manifest:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def quantity_bytes(quantity: str) -> int:
    """A Kubernetes quantity ('20Gi', '1T', '500M') in bytes, rounded up."""
    value: Decimal = parse_quantity(quantity)  # type: ignore[no-untyped-call]
    return math.ceil(value)


def storage_quantity(nbytes: int) -> str:
    """Bytes as a quantity: whole GiB from 1 GiB up, else whole MiB (rounded up)."""
    if nbytes >= GIB:
        return f"{math.ceil(nbytes / GIB)}Gi"
    return f"{max(1, math.ceil(nbytes / MIB))}Mi"


def model_bytes(model: Model) -> int | None:
    """A base model's size as its check measured it, or None before it was checked."""
    if model.status.total_bytes is not None:
        return model.status.total_bytes
    if model.status.files:
        return sum(f.size for f in model.status.files)
    return None


def with_storage(resources: Manifest, request_bytes: int, limit_bytes: int) -> Manifest:
    """`resources` plus an ephemeral-storage request and limit: what the container writes to the
    emptyDirs it owns (their share of the pod's local storage, which the kubelet sums over the
    pod's containers) plus CONTAINER_OWN_STORAGE. The request is what it is expected to write
    (the scheduler reserves it on the node's disk; under disk pressure the kubelet evicts pods
    above their requests first), the limit the volumes' size limits."""
    limit = limit_bytes + CONTAINER_OWN_STORAGE
    request = min(request_bytes + CONTAINER_OWN_STORAGE, limit)
    return {
        **resources,
        "requests": {**resources.get("requests", {}), "ephemeral-storage": storage_quantity(request)},
        "limits": {**resources.get("limits", {}), "ephemeral-storage": storage_quantity(limit)},
    }


def scratch_volumes(scratch_size: str, shm_size: str | None = None) -> tuple[list[Manifest], list[Manifest]]:
    """Writable emptyDirs (the root filesystem is read-only): scratch, and /dev/shm for GPUs."""
    volumes: list[Manifest] = [{"name": "scratch", "emptyDir": {"sizeLimit": scratch_size}}]
    mounts: list[Manifest] = [{"name": "scratch", "mountPath": SCRATCH}]
    if shm_size:
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": shm_size}})
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})  # noqa: S108 - a memory emptyDir
    return volumes, mounts


def offline_env() -> list[Manifest]:
    """Pods never reach a model hub, and Python output is not buffered (logs stay live)."""
    return [
        {"name": "HF_HUB_OFFLINE", "value": "1"},
        {"name": "TRANSFORMERS_OFFLINE", "value": "1"},
        {"name": "HF_HOME", "value": f"{SCRATCH}/hf"},
        {"name": "HOME", "value": f"{SCRATCH}/home"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
