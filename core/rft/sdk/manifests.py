"""Pure builders of the objects the SDK sends: no I/O, unit-tested without a cluster."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from rft.api.common import API_VERSION
from rft.api.dataset import Dataset as DatasetResource
from rft.api.deployment import Deployment as DeploymentResource
from rft.api.deployment import DeploymentSpec
from rft.api.model import Model
from rft.api.reinforcement_step import ReinforcementStep as StepResource
from rft.api.reinforcement_step import ReinforcementStepSpec, TrainingParameters
from rft.api.rules import check_warm_start_from_model
from rft.sdk.errors import ImmutableFieldError
from rft.sdk.validation import explain_validation_error

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_SDK = "rft-sdk"

# Wire paths of spec fields and the SDK arguments that set them, for error messages.
DEPLOYMENT_ARGUMENTS = {
    "model": "model",
    "deploymentType": "deployment_type",
    "baseDeployment": "base_id",
    "engine": "engine",
    "accelerator.type": "accelerator_type",
    "accelerator.count": "accelerator_count",
    "minReplicaCount": "min_replica_count",
    "maxReplicaCount": "max_replica_count",
    "serviceAccountName": "service_account",
    "enableLora": "enable_addons",
    "maxLoras": "max_loras",
    "maxLoraRank": "max_lora_rank",
    "maxModelLen": "max_context_length",
    "image": "image",
}
STEP_ARGUMENTS = {
    "dataset": "dataset",
    "model": "model",
    "outputModel": "output_model",
    "outputLocation": "output_location",
    "training.loraRank": "lora_rank",
    "training.loraAlpha": "lora_alpha",
    "training.learningRate": "learning_rate",
    "training.maxContextLength": "max_context_length",
    "training.epochs": "epochs",
    "training.batchSize": "batch_size",
    "loss.method": "loss_method",
    "loss.klCoefficient": "kl_coefficient",
    "accelerator.type": "accelerator_type",
    "accelerator.count": "accelerator_count",
    "serviceAccountName": "service_account",
    "training.checkpointEverySteps": "checkpoint_every_steps",
    "queueName": "queue_name",
    "priorityClass": "priority_class",
}


def _metadata(namespace: str, name: str) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": {MANAGED_BY_LABEL: MANAGED_BY_SDK}}


def deployment_spec(fields: dict[str, Any]) -> dict[str, Any]:
    """The wire spec holding only the fields given (unset ones keep the server's defaults).

    `fields` uses the API's snake_case names (`deployment_type`, `accelerator={"type": ...}`);
    None values are left out. Raises ValueError naming the SDK argument of a bad field.
    """
    given = {key: value for key, value in fields.items() if value is not None}
    if isinstance(given.get("accelerator"), dict):
        given["accelerator"] = {k: v for k, v in given["accelerator"].items() if v is not None}
        if not given["accelerator"]:
            del given["accelerator"]
    try:
        spec = DeploymentSpec.model_validate(given)
    except ValidationError as error:
        raise explain_validation_error(error, DEPLOYMENT_ARGUMENTS, "deployment") from error
    return spec.model_dump(mode="json", by_alias=True, exclude_unset=True)


def deployment_body(namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """A Deployment object to create."""
    return {
        "apiVersion": API_VERSION,
        "kind": DeploymentResource.crd.kind,
        "metadata": _metadata(namespace, name),
        "spec": spec,
    }


def deployment_patch(existing: DeploymentResource, desired_spec: dict[str, Any]) -> dict[str, Any] | None:
    """The merge patch that makes `existing` carry `desired_spec`, or None when nothing differs.

    Only fields in `desired_spec` are compared: what the caller left unset keeps its current value.
    Raises ImmutableFieldError when the accelerator type would change.
    """
    current = existing.spec.model_dump(mode="json", by_alias=True)
    wanted_type = desired_spec.get("accelerator", {}).get("type")
    if wanted_type is not None and wanted_type != current["accelerator"]["type"]:
        raise ImmutableFieldError(
            f"accelerator_type: deployment {existing.metadata.name!r} runs on "
            f"{current['accelerator']['type']}, and the accelerator type cannot change; delete it first "
            f"(llm.delete_deployment()) or choose another id for a new deployment on {wanted_type}"
        )
    changes = _changed_fields(current, desired_spec)
    return {"spec": changes} if changes else None


def _changed_fields(current: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for key, value in desired.items():
        if isinstance(value, dict) and isinstance(current.get(key), dict):
            nested = _changed_fields(current[key], value)
            if nested:
                changes[key] = nested
        elif current.get(key) != value:
            changes[key] = value
    return changes


def reinforcement_step_body(namespace: str, name: str, spec_fields: dict[str, Any]) -> dict[str, Any]:
    """A ReinforcementStep object to create, with every spec field spelled out.

    `spec_fields` uses the API's snake_case names; raises ValueError naming the SDK argument of a
    bad field.
    """
    try:
        spec = ReinforcementStepSpec.model_validate(spec_fields)
        resource = StepResource.model_validate(
            {"metadata": _metadata(namespace, name), "spec": spec.model_dump()}
        )
    except ValidationError as error:
        raise explain_validation_error(error, STEP_ARGUMENTS, "reinforcement step") from error
    body = resource.to_wire()
    body["metadata"] = _metadata(namespace, name)
    body.pop("status", None)
    return body


def dataset_body(
    namespace: str, name: str, *, source: str, service_account: str, managed_by_sdk: bool
) -> dict[str, Any]:
    """A Dataset object to create for the object at `source`."""
    try:
        resource = DatasetResource.model_validate(
            {
                "metadata": _metadata(namespace, name),
                "spec": {
                    "source": source,
                    "service_account_name": service_account,
                    "managed_by_sdk": managed_by_sdk,
                },
            }
        )
    except ValidationError as error:
        raise explain_validation_error(
            error, {"spec.source": "url", "spec.serviceAccountName": "service_account"}, "dataset"
        ) from error
    body = resource.to_wire()
    body["metadata"] = _metadata(namespace, name)
    body.pop("status", None)
    return body


def continuation_mismatches(parent: Model, training: TrainingParameters) -> list[str]:
    """What stops a continuation with `training` from warm-starting from LoRA checkpoint `parent`.

    The rule is `rft.api.rules.check_warm_start`: the same LoRA rank, learning rate, context
    length and batch size, recorded by the checkpoint; each mismatch is reported with both values,
    in the SDK's argument names.
    """
    check = check_warm_start_from_model(
        parent,
        lora_rank=training.lora_rank,
        learning_rate=training.learning_rate,
        max_context_length=training.max_context_length,
        batch_size=training.batch_size,
    )
    name = parent.metadata.name
    mismatches = [f"{m.field}: {m.child} here, {m.parent} in checkpoint {name!r}" for m in check.mismatches]
    if check.unrecorded:
        mismatches.append(
            f"checkpoint {name!r} records no training parameters (its Model has no spec.training), "
            "so they cannot be shown equal"
        )
    return mismatches
