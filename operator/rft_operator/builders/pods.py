"""Pieces every pod the operator builds shares: security context, scratch volumes, owner refs."""

from __future__ import annotations

from typing import Any

from rft.api.common import Resource

Manifest = dict[str, Any]

RUN_AS = 1000
TERMINATION_LOG = "/dev/termination-log"
SCRATCH = "/tmp/rft"  # noqa: S108 - an emptyDir mounted there, not the node's /tmp


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
