"""Pure builders: the objects the SDK sends, patches, and the continuation check."""

from __future__ import annotations

from typing import Any

import pytest
from rft.api import Deployment, Model, ReinforcementStep
from rft.api.reinforcement_step import TrainingParameters
from rft.sdk.errors import ImmutableFieldError
from rft.sdk.manifests import (
    continuation_mismatches,
    dataset_body,
    deployment_body,
    deployment_patch,
    deployment_spec,
    reinforcement_step_body,
)
from rft.sdk.step_arguments import reward_weights_spec, step_spec_fields

STEP_DEFAULTS: dict[str, Any] = {
    "dataset": "dataset-abc",
    "model": "qwen3-0-6b",
    "output_model": "step-1",
    "lora_rank": 16,
    "learning_rate": 1e-4,
    "max_context_length": 8192,
    "epochs": 1,
    "batch_size": 32768,
    "accelerator_count": 1,
    "accelerator_type": None,
    "loss_method": "grpo",
    "kl_coefficient": 0.001,
    "reward_weights": None,
    "service_account": "default",
    "checkpoint_every_steps": 10,
}


def _existing_deployment(**spec: Any) -> Deployment:
    return Deployment.model_validate(
        {
            "metadata": {"name": "base", "namespace": "ns", "generation": 1},
            "spec": {"model": "qwen3-0-6b", "deploymentType": "on-demand", **spec},
        }
    )


def test_deployment_body_is_a_creatable_object() -> None:
    spec = deployment_spec({"model": "m", "deployment_type": "on-demand", "accelerator": {"type": "CPU"}})
    body = deployment_body("ns", "d", spec)
    assert body == {
        "apiVersion": "rft-operator.io/v1alpha1",
        "kind": "Deployment",
        "metadata": {"name": "d", "namespace": "ns", "labels": {"app.kubernetes.io/managed-by": "rft-sdk"}},
        "spec": {"model": "m", "deploymentType": "on-demand", "accelerator": {"type": "CPU"}},
    }
    assert Deployment.model_validate(body).spec.accelerator.count == 1


def test_deployment_spec_errors_name_the_sdk_argument() -> None:
    with pytest.raises(ValueError, match=r"image: String should have at most 512 characters"):
        deployment_spec({"model": "m", "deployment_type": "on-demand", "image": "x" * 600})


def test_patch_is_none_when_nothing_differs() -> None:
    existing = _existing_deployment(accelerator={"type": "CPU", "count": 1}, maxReplicaCount=2)
    desired = deployment_spec(
        {
            "model": "qwen3-0-6b",
            "deployment_type": "on-demand",
            "accelerator": {"type": "CPU"},
            "max_replica_count": 2,
        }
    )
    assert deployment_patch(existing, desired) is None


def test_patch_carries_only_changed_fields() -> None:
    existing = _existing_deployment(
        accelerator={"type": "CPU", "count": 1}, maxReplicaCount=2, engine="vllm"
    )
    desired = deployment_spec(
        {
            "model": "qwen3-0-6b",
            "deployment_type": "on-demand",
            "accelerator": {"type": "CPU", "count": 2},
            "max_replica_count": 4,
            "engine": "vllm",
        }
    )
    assert deployment_patch(existing, desired) == {
        "spec": {"accelerator": {"count": 2}, "maxReplicaCount": 4}
    }


def test_patch_refuses_an_accelerator_type_change() -> None:
    existing = _existing_deployment(accelerator={"type": "NVIDIA_A100_80GB", "count": 1})
    desired = deployment_spec(
        {"model": "qwen3-0-6b", "deployment_type": "on-demand", "accelerator": {"type": "NVIDIA_H100_80GB"}}
    )
    with pytest.raises(
        ImmutableFieldError, match=r"accelerator_type: deployment 'base' runs on NVIDIA_A100_80GB"
    ):
        deployment_patch(existing, desired)


def test_step_body_spells_every_field_with_decimal_strings() -> None:
    fields = step_spec_fields(**{**STEP_DEFAULTS, "reward_weights": {"score": 1, "format": 0.2}})
    body = reinforcement_step_body("team-a", "step-1", fields)
    assert body["apiVersion"] == "rft-operator.io/v1alpha1"
    assert body["kind"] == "ReinforcementStep"
    assert body["metadata"] == {
        "name": "step-1",
        "namespace": "team-a",
        "labels": {"app.kubernetes.io/managed-by": "rft-sdk"},
    }
    assert "status" not in body
    spec = body["spec"]
    assert (spec["dataset"], spec["model"], spec["outputModel"]) == ("dataset-abc", "qwen3-0-6b", "step-1")
    assert spec["training"]["learningRate"] == "0.0001"
    assert spec["training"]["loraRank"] == 16
    assert spec["training"]["maxContextLength"] == 8192
    assert spec["training"]["batchSize"] == 32768
    assert spec["loss"]["method"] == "grpo"
    assert spec["loss"]["klCoefficient"] == "0.001"
    assert spec["rewardWeights"] == {"score": "1", "format": "0.2"}
    assert spec["accelerator"]["count"] == 1
    assert spec["serviceAccountName"] == "default"
    assert ReinforcementStep.model_validate(body).spec.training.learning_rate == "0.0001"


def test_step_fields_pass_optional_settings() -> None:
    fields = step_spec_fields(
        **{**STEP_DEFAULTS, "accelerator_type": "CPU", "accelerator_count": 0, "loss_method": "DAPO"},
        lora_alpha=64,
        output_location="s3://my-bucket/models/step-1/",
        active_deadline_seconds=3600,
        backoff_limit=0,
    )
    spec = reinforcement_step_body("ns", "s", fields)["spec"]
    assert spec["accelerator"] == {"type": "CPU", "count": 0}
    assert spec["loss"]["method"] == "dapo"
    assert spec["training"]["loraAlpha"] == 64
    assert spec["outputLocation"] == "s3://my-bucket/models/step-1/"
    assert spec["activeDeadlineSeconds"] == 3600
    assert spec["backoffLimit"] == 0



def test_step_fields_pass_the_queueing_and_resume_settings() -> None:
    fields = step_spec_fields(
        **{**STEP_DEFAULTS, "checkpoint_every_steps": 0},
        queue_name="team-gpus",
        priority_class="urgent",
    )
    spec = reinforcement_step_body("ns", "s", fields)["spec"]
    assert spec["training"]["checkpointEverySteps"] == 0
    assert spec["queueName"] == "team-gpus"
    assert spec["priorityClass"] == "urgent"
    plain = reinforcement_step_body("ns", "s", step_spec_fields(**STEP_DEFAULTS))["spec"]
    assert "queueName" not in plain
    assert "priorityClass" not in plain


@pytest.mark.parametrize(
    ("override", "error", "message"),
    [
        (
            {"output_model": "qwen3-0-6b"},
            ValueError,
            "output_model: 'qwen3-0-6b' must differ from the source model",
        ),
        ({"lora_rank": 0}, ValueError, "lora_rank: must be between 1 and 512"),
        ({"lora_rank": 8.0}, TypeError, "lora_rank: expected an integer"),
        ({"learning_rate": -1e-4}, ValueError, "learning_rate: -0.0001 is not a non-negative decimal number"),
        ({"learning_rate": 0}, ValueError, "learning_rate: must be greater than 0"),
        ({"learning_rate": "fast"}, ValueError, "learning_rate: 'fast'"),
        ({"max_context_length": 4}, ValueError, "max_context_length: must be between 16"),
        ({"epochs": 0}, ValueError, "epochs: must be between 1 and 100"),
        ({"batch_size": 4096}, ValueError, "batch_size: 4096 tokens is less than max_context_length 8192"),
        ({"batch_size": True}, TypeError, "batch_size: expected an integer, got bool"),
        (
            {"accelerator_count": 0},
            ValueError,
            "accelerator_count: 0 is only allowed with accelerator_type='CPU'",
        ),
        ({"accelerator_type": "TPU"}, ValueError, "accelerator_type: must be one of"),
        ({"loss_method": "ppo"}, ValueError, "loss_method: must be one of grpo, dapo, gspo, gspo-token"),
        ({"kl_coefficient": float("nan")}, ValueError, "kl_coefficient: must be a finite number"),
        (
            {"reward_weights": {"bad key": 1}},
            ValueError,
            "reward_weights: key 'bad key' is not a reward key name",
        ),
        ({"reward_weights": {"score": "heavy"}}, ValueError, "reward_weights['score']: 'heavy'"),
        ({"reward_weights": "score"}, TypeError, "reward_weights: expected a mapping"),
        ({"checkpoint_every_steps": -1}, ValueError, "checkpoint_every_steps: must be between 0 and 100000"),
        ({"checkpoint_every_steps": 2.0}, TypeError, "checkpoint_every_steps: expected an integer"),
        ({"queue_name": "Team_GPUs"}, ValueError, "queue_name: 'Team_GPUs' is not a valid name"),
        ({"queue_name": 7}, TypeError, "queue_name: expected a string"),
        ({"queue_name": "q", "priority_class": "x" * 64}, ValueError, "priority_class: 'xxx"),
        ({"priority_class": "urgent"}, ValueError, "priority_class: needs queue_name"),
    ],
)
def test_step_argument_errors_name_the_argument(
    override: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as raised:
        step_spec_fields(**{**STEP_DEFAULTS, **override})
    assert message in str(raised.value)


def test_reward_weights_forms() -> None:
    assert reward_weights_spec(None) == {}
    assert reward_weights_spec(["score", "format"]) == {"score": "1", "format": "1"}
    assert reward_weights_spec({"score": 1.0, "penalty": -0.25}) == {"score": "1.0", "penalty": "-0.25"}


def _lora_parent(rank: int = 16, **training: Any) -> Model:
    record = {
        "learningRate": "1e-4",
        "maxContextLength": 8192,
        "batchSize": 32768,
        "epochs": 1,
        "lossMethod": "grpo",
    }
    return Model.model_validate(
        {
            "metadata": {"name": "step-1", "namespace": "ns"},
            "spec": {
                "kind": "lora",
                "location": "s3://my-bucket/models/step-1/",
                "baseModel": "qwen3-0-6b",
                "lora": {"rank": rank, "alpha": 2 * rank, "targetModules": ["q_proj"]},
                "training": {**record, **training},
            },
        }
    )


def test_continuation_with_the_same_parameters_has_no_mismatch() -> None:
    training = TrainingParameters(
        lora_rank=16, learning_rate="0.0001", max_context_length=8192, batch_size=32768
    )
    assert continuation_mismatches(_lora_parent(), training) == []


def test_continuation_lists_every_mismatch_with_both_values() -> None:
    training = TrainingParameters(
        lora_rank=8, learning_rate="0.0002", max_context_length=4096, batch_size=16384
    )
    assert continuation_mismatches(_lora_parent(), training) == [
        "lora_rank: 8 here, 16 in checkpoint 'step-1'",
        "learning_rate: 0.0002 here, 1e-4 in checkpoint 'step-1'",
        "max_context_length: 4096 here, 8192 in checkpoint 'step-1'",
        "batch_size: 16384 here, 32768 in checkpoint 'step-1'",
    ]


def test_dataset_body() -> None:
    body = dataset_body(
        "ns",
        "dataset-1",
        source="s3://my-bucket/datasets/dataset-1.jsonl",
        service_account="sa",
        managed_by_sdk=True,
    )
    assert body["kind"] == "Dataset"
    assert body["metadata"]["name"] == "dataset-1"
    assert body["spec"]["source"] == "s3://my-bucket/datasets/dataset-1.jsonl"
    assert body["spec"]["serviceAccountName"] == "sa"
    assert body["spec"]["managedBySdk"] is True
    assert "status" not in body


def test_dataset_body_rejects_a_bad_source() -> None:
    with pytest.raises(ValueError, match=r"url: String should match pattern"):
        dataset_body("ns", "d", source="http://x/y.jsonl", service_account="sa", managed_by_sdk=False)


def test_step_body_schema_errors_name_the_sdk_argument() -> None:
    fields = step_spec_fields(**STEP_DEFAULTS, output_location="http://example.com/out/")
    with pytest.raises(ValueError, match=r"^output_location: String should match pattern"):
        reinforcement_step_body("ns", "s", fields)


def test_continuation_from_a_checkpoint_without_a_training_record_is_refused() -> None:
    """The warm-start rule (rft.api.rules) refuses it, as the operator and the trainer do."""
    parent = _lora_parent()
    parent.spec.training = None
    training = TrainingParameters(
        lora_rank=16, learning_rate="0.0001", max_context_length=8192, batch_size=32768
    )
    assert continuation_mismatches(parent, training) == [
        "checkpoint 'step-1' records no training parameters (its Model has no spec.training), "
        "so they cannot be shown equal"
    ]
