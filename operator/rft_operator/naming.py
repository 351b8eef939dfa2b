"""Deterministic names and labels of the objects the operator creates."""

from __future__ import annotations

import hashlib

from rft.api import GROUP

MAX_NAME = 63

LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_STEP = f"{GROUP}/step"
LABEL_DATASET = f"{GROUP}/dataset"
LABEL_MODEL = f"{GROUP}/model"
LABEL_DEPLOYMENT = f"{GROUP}/deployment"
LABEL_SESSION = f"{GROUP}/training-session"
ANNOTATION_STEP_UID = f"{GROUP}/step-uid"
ANNOTATION_LINEAGE = f"{GROUP}/lineage-digest"
MANAGER = "rft-operator"


def child_name(parent: str, suffix: str) -> str:
    """`<parent>-<suffix>`, shortened with a stable hash when it would exceed 63 characters.

    Deterministic, so a retried reconcile finds the child it created before instead of making a
    second one.
    """
    name = f"{parent}-{suffix}"
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    keep = MAX_NAME - len(suffix) - len(digest) - 2
    return f"{parent[:keep].rstrip('-')}-{digest}-{suffix}"


def training_job_name(step: str) -> str:
    return child_name(step, "train")


def validation_job_name(dataset: str, generation: int) -> str:
    return child_name(dataset, f"validate-g{generation}")


def model_check_job_name(model: str, generation: int) -> str:
    return child_name(model, f"check-g{generation}")


def labels(component: str, **extra: str) -> dict[str, str]:
    """The labels every child carries (selectable by the operator's watches)."""
    return {
        LABEL_MANAGED_BY: MANAGER,
        LABEL_PART_OF: MANAGER,
        LABEL_COMPONENT: component,
        **extra,
    }


def full_model_name(namespace: str, name: str) -> str:
    """The managed service's resource name: accounts/<namespace>/models/<name>."""
    return f"accounts/{namespace}/models/{name}"
