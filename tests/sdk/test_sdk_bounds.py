"""The SDK checks arguments against the API models' own bounds (their `Field` metadata) and takes
their defaults, never a copy: a bound or default changed in `rft.api` changes the SDK's with it."""

from __future__ import annotations

import inspect
from typing import Any

import annotated_types
import pytest
from pydantic import BaseModel
from rft.api.deployment import Accelerator, DeploymentSpec
from rft.api.reinforcement_step import LossSettings, ReinforcementStepSpec, TrainingParameters
from rft.sdk.llm import LLM
from rft.sdk.step_arguments import MAX_REWARD_KEYS, reward_weights_spec, step_spec_fields
from rft.sdk.validation import field_bounds, field_default, max_items

from tests.sdk.test_sdk_manifests import STEP_DEFAULTS

# (SDK argument of reinforcement_step(...), the model and field whose bounds it must have)
STEP_ARGUMENTS: list[tuple[str, type[BaseModel], str]] = [
    ("lora_rank", TrainingParameters, "lora_rank"),
    ("lora_alpha", TrainingParameters, "lora_alpha"),
    ("max_context_length", TrainingParameters, "max_context_length"),
    ("epochs", TrainingParameters, "epochs"),
    ("accelerator_count", Accelerator, "count"),
    ("active_deadline_seconds", ReinforcementStepSpec, "active_deadline_seconds"),
    ("backoff_limit", ReinforcementStepSpec, "backoff_limit"),
    ("checkpoint_every_steps", TrainingParameters, "checkpoint_every_steps"),
]


@pytest.mark.parametrize(("argument", "model", "field"), STEP_ARGUMENTS)
def test_step_arguments_have_the_models_bounds(argument: str, model: type[BaseModel], field: str) -> None:
    low, high = field_bounds(model, field)
    for outside in (low - 1, high + 1):
        with pytest.raises(ValueError, match=f"{argument}: must be between {low} and {high}, got {outside}"):
            step_spec_fields(**{**STEP_DEFAULTS, argument: outside, "accelerator_type": "CPU"})


def test_a_bound_changed_in_the_model_changes_the_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    field = TrainingParameters.model_fields["epochs"]
    narrowed: list[Any] = [c for c in field.metadata if not isinstance(c, annotated_types.Le)]
    monkeypatch.setattr(field, "metadata", [*narrowed, annotated_types.Le(3)])
    assert field_bounds(TrainingParameters, "epochs") == (1, 3)
    with pytest.raises(ValueError, match="epochs: must be between 1 and 3, got 4"):
        step_spec_fields(**{**STEP_DEFAULTS, "epochs": 4})


def test_deployment_bounds_and_reward_keys_come_from_the_models() -> None:
    assert field_bounds(DeploymentSpec, "max_loras") == (1, 256)
    assert field_bounds(DeploymentSpec, "max_model_len") == field_bounds(TrainingParameters, "max_context_length")
    assert max_items(ReinforcementStepSpec, "reward_weights") == MAX_REWARD_KEYS
    too_many = {f"k{i}": 1 for i in range(MAX_REWARD_KEYS + 1)}
    with pytest.raises(ValueError, match=f"at most {MAX_REWARD_KEYS} reward keys"):
        reward_weights_spec(too_many)
    # The key rule is the API's RewardKey: its length and characters.
    assert reward_weights_spec({"a" * 64: 1}) == {"a" * 64: "1"}
    for bad in ("a" * 65, "", "bad key", "é"):
        with pytest.raises(ValueError, match="is not a reward key name"):
            reward_weights_spec({bad: 1})


def test_a_field_without_bounds_is_an_error_not_a_guess() -> None:
    with pytest.raises(LookupError, match=r"TrainingParameters\.learning_rate has no lower and upper bound"):
        field_bounds(TrainingParameters, "learning_rate")


# (SDK argument of reinforcement_step(...), the model and field whose default it takes, a value
# other than the default that the field accepts)
STEP_DEFAULTED: list[tuple[str, type[BaseModel], str, object]] = [
    ("lora_rank", TrainingParameters, "lora_rank", 8),
    ("learning_rate", TrainingParameters, "learning_rate", "2e-5"),
    ("max_context_length", TrainingParameters, "max_context_length", 1024),
    ("epochs", TrainingParameters, "epochs", 3),
    ("batch_size", TrainingParameters, "batch_size", 65536),
    ("accelerator_count", Accelerator, "count", 2),
    ("loss_method", LossSettings, "method", "dapo"),
    ("kl_coefficient", LossSettings, "kl_coefficient", "0.5"),
    ("checkpoint_every_steps", TrainingParameters, "checkpoint_every_steps", 1),
]
REQUIRED = {
    "dataset": "dataset-abc",
    "model": "qwen3-0-6b",
    "output_model": "step-1",
    "service_account": "sa",
}


def _step_value(fields: dict[str, Any], model: type[BaseModel], field: str) -> object:
    section = {TrainingParameters: "training", LossSettings: "loss", Accelerator: "accelerator"}[model]
    return fields[section][field]


def test_reinforcement_step_leaves_every_training_default_to_the_api() -> None:
    """`LLM.reinforcement_step` copies no default: each training argument is None, and the spec
    then carries the API model's own default."""
    signature = inspect.signature(LLM.reinforcement_step)
    fields = step_spec_fields(**REQUIRED)
    for argument, model, field, _ in STEP_DEFAULTED:
        assert signature.parameters[argument].default is None, argument
        assert _step_value(fields, model, field) == model.model_fields[field].default, argument


@pytest.mark.parametrize(("argument", "model", "field", "other"), STEP_DEFAULTED)
def test_a_default_changed_in_the_model_changes_the_sdk(
    monkeypatch: pytest.MonkeyPatch, argument: str, model: type[BaseModel], field: str, other: object
) -> None:
    assert model.model_fields[field].default != other
    monkeypatch.setattr(model.model_fields[field], "default", other)
    assert field_default(model, field) == other
    fields = step_spec_fields(**{**REQUIRED, "accelerator_type": "CPU"})
    assert _step_value(fields, model, field) == other
    # An argument given explicitly still wins over the default.
    given = step_spec_fields(**{**STEP_DEFAULTS, "accelerator_type": "CPU"})
    assert _step_value(given, model, field) != other


def test_the_kueue_arguments_default_to_the_specs_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """queue_name and priority_class are None in the signature and take the spec's default (none:
    the Job starts at once, with Kueue's default priority)."""
    signature = inspect.signature(LLM.reinforcement_step)
    fields = step_spec_fields(**REQUIRED)
    for argument in ("queue_name", "priority_class"):
        assert signature.parameters[argument].default is None, argument
        assert ReinforcementStepSpec.model_fields[argument].default is None
        assert argument not in fields
    monkeypatch.setattr(ReinforcementStepSpec.model_fields["queue_name"], "default", "team-gpus")
    assert step_spec_fields(**REQUIRED)["queue_name"] == "team-gpus"


def test_a_field_without_a_default_is_an_error_not_a_guess() -> None:
    with pytest.raises(LookupError, match=r"ReinforcementStepSpec\.dataset has no default value"):
        field_default(ReinforcementStepSpec, "dataset")
