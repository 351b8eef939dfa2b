"""A step checks its references before it creates a Job; each refusal names the problem."""

from __future__ import annotations

import time
from typing import Any

import pytest
from rft_devcluster.fake_trainer import fake_pod, success_message

from tests.operator.conftest import Objects, OperatorProcess

pytestmark = pytest.mark.cluster

STEP_JOBS = "rft-operator.io/step=s"


def succeeded(obj: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in obj["status"]["conditions"] if c["type"] == "Succeeded")


def validated(obj: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in obj["status"]["conditions"] if c["type"] == "Validated")


def assert_refused(objects: Objects, reason: str, *fragments: str) -> None:
    failed = objects.wait_phase("s", "JOB_STATE_FAILED")
    assert succeeded(failed)["reason"] == reason
    assert validated(failed)["status"] == "False"
    for fragment in fragments:
        assert fragment in failed["status"]["message"]
    assert objects.jobs(STEP_JOBS) == [], "no Job for a refused step"


def lora_parent(objects: Objects, name: str = "parent") -> None:
    objects.create(
        "models",
        "Model",
        name,
        {
            "kind": "lora",
            "location": f"s3://bucket-a/rft/models/{name}/",
            "baseModel": "base",
            "lora": {"rank": 16, "alpha": 32, "targetModules": ["q_proj"]},
            "training": {
                "learningRate": "0.0001",
                "maxContextLength": 8192,
                "batchSize": 32768,
                "epochs": 1,
                "lossMethod": "grpo",
            },
        },
    )


def test_missing_dataset_waits_then_proceeds_when_it_appears(
    operator: OperatorProcess, objects: Objects
) -> None:
    objects.base_model()
    objects.step("s", pod=fake_pod(0, success_message()))
    waiting = objects.wait_step("s", lambda o: o.get("status", {}).get("phase") == "JOB_STATE_CREATING")
    assert validated(waiting)["reason"] == "DatasetNotFound"
    assert validated(waiting)["status"] == "Unknown"
    assert "waiting for Dataset ds to exist" in waiting["status"]["message"]
    objects.ready_dataset()
    objects.wait_phase("s", "JOB_STATE_COMPLETED")


def test_dataset_that_failed_validation_fails_the_step(operator: OperatorProcess, objects: Objects) -> None:
    objects.base_model()
    obj = objects.create("datasets", "Dataset", "ds", {"source": "s3://bucket-a/ds.jsonl"})
    objects.custom.patch_namespaced_custom_object_status(
        "rft-operator.io",
        "v1alpha1",
        objects.namespace,
        "datasets",
        "ds",
        {
            "status": {
                "phase": "FAILED",
                "observedGeneration": obj["metadata"]["generation"],
                "errors": [{"line": 4, "message": "line 4: evals.score: NaN is not a reward"}],
            }
        },
    )
    objects.step("s")
    assert_refused(objects, "DatasetInvalid", "Dataset ds failed validation", "line 4: evals.score: NaN")


def test_missing_source_model_waits(operator: OperatorProcess, objects: Objects) -> None:
    objects.ready_dataset()
    objects.step("s", model="not-yet")
    waiting = objects.wait_step("s", lambda o: o.get("status", {}).get("phase") == "JOB_STATE_CREATING")
    assert validated(waiting)["reason"] == "ModelNotFound"
    assert objects.jobs(STEP_JOBS) == []


def test_existing_output_model_is_refused(operator: OperatorProcess, objects: Objects) -> None:
    objects.base_model()
    objects.base_model("taken")
    objects.ready_dataset()
    objects.step("s", outputModel="taken")
    assert_refused(objects, "OutputModelExists", "Model taken already exists", "spec.outputModel")


def test_warm_start_with_other_parameters_lists_each_mismatch(
    operator: OperatorProcess, objects: Objects
) -> None:
    objects.base_model()
    lora_parent(objects)
    objects.ready_dataset()
    objects.step(
        "s",
        model="parent",
        training={"loraRank": 8, "learningRate": "3e-4", "maxContextLength": 4096, "batchSize": 32768},
    )
    assert_refused(
        objects,
        "IncompatibleCheckpoint",
        "cannot warm-start from parent",
        "spec.training.loraRank is 8 but parent was trained with 16",
        "spec.training.learningRate is 3e-4 but parent was trained with 0.0001",
        "spec.training.maxContextLength is 4096 but parent was trained with 8192",
    )


def test_warm_start_with_equal_parameters_continues_and_records_lineage(
    operator: OperatorProcess, objects: Objects
) -> None:
    objects.base_model()
    lora_parent(objects)
    objects.ready_dataset()
    objects.step("s", model="parent", training={"learningRate": "1e-4"}, pod=fake_pod(0, success_message()))
    done = objects.wait_phase("s", "JOB_STATE_COMPLETED")
    assert done["status"]["warmStartFrom"] == f"accounts/{objects.namespace}/models/parent"
    model = objects.get("models", "s-out")
    assert model is not None
    assert model["spec"]["parent"] == "parent"
    assert model["spec"]["baseModel"] == "base"
    (job,) = objects.jobs(STEP_JOBS)
    env = {e.name: e.value for e in job.spec.template.spec.containers[0].env}
    assert '"parentAdapterUrl":"s3://bucket-a/rft/models/parent/"' in env["RFT_TRAINER_CONFIG"].replace(
        " ", ""
    )


def test_accelerator_the_operator_cannot_place_is_refused(
    operator: OperatorProcess, objects: Objects
) -> None:
    objects.base_model()
    objects.ready_dataset()
    objects.step("s", accelerator={"type": "AMD_MI300X_192GB", "count": 1})
    assert_refused(objects, "UnknownAccelerator", "AMD_MI300X_192GB is not in the operator's accelerator map")


def test_gitops_recreated_step_does_not_train_again(operator: OperatorProcess, objects: Objects) -> None:
    """Argo CD re-applies a step its TTL removed: same spec, output exists with that lineage."""
    objects.base_model()
    objects.ready_dataset()
    objects.step("s", pod=fake_pod(0, success_message()))
    objects.wait_phase("s", "JOB_STATE_COMPLETED")
    objects.custom.delete_namespaced_custom_object(
        "rft-operator.io", "v1alpha1", objects.namespace, "reinforcementsteps", "s"
    )
    deadline = time.monotonic() + 30
    while objects.get("reinforcementsteps", "s") is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    while objects.jobs(STEP_JOBS) and time.monotonic() < deadline:
        time.sleep(0.2)
    objects.step("s", pod=fake_pod(0, success_message()))
    again = objects.wait_phase("s", "JOB_STATE_COMPLETED")
    assert succeeded(again)["reason"] == "AlreadyTrained"
    assert "not training again" in again["status"]["message"]
    assert objects.jobs(STEP_JOBS) == []
    # A different spec with the same output name is still an error.
    objects.step("s2", outputModel="s-out", training={"epochs": 2})
    failed = objects.wait_step("s2", lambda o: o.get("status", {}).get("phase") == "JOB_STATE_FAILED")
    assert "Model s-out already exists" in failed["status"]["message"]
