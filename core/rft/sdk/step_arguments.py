"""Checking `reinforcement_step(...)` arguments and turning them into a ReinforcementStep spec."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, get_args

from pydantic import BaseModel, TypeAdapter, ValidationError

from rft.api.common import ACCELERATOR_TYPES
from rft.api.deployment import Accelerator
from rft.api.model import LossMethod
from rft.api.reinforcement_step import LossSettings, ReinforcementStepSpec, RewardKey, TrainingParameters
from rft.sdk.decimals import decimal_string
from rft.sdk.names import check_object_name
from rft.sdk.validation import (
    check_choice,
    check_field_int,
    check_optional_field_int,
    field_default,
    max_items,
)

LOSS_METHODS = get_args(LossMethod)
MAX_REWARD_KEYS = max_items(ReinforcementStepSpec, "reward_weights")
_REWARD_KEY = TypeAdapter(RewardKey)


def _is_reward_key(key: object) -> bool:
    try:
        _REWARD_KEY.validate_python(key, strict=True)
    except ValidationError:
        return False
    return True


def reward_weights_spec(value: object) -> dict[str, str]:
    """Reward weights as the spec stores them: `{key: decimal string}`.

    Accepts a mapping of reward key to weight, a sequence of keys (each weighted 1), or None.
    """
    if value is None:
        return {}
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, Sequence) and not isinstance(value, str | bytes):
        items = [(key, 1) for key in value]
    else:
        raise TypeError(
            "reward_weights: expected a mapping of reward key to weight or a list of reward keys, "
            f"got {type(value).__name__}"
        )
    if len(items) > MAX_REWARD_KEYS:
        raise ValueError(f"reward_weights: at most {MAX_REWARD_KEYS} reward keys, got {len(items)}")
    weights: dict[str, str] = {}
    for key, weight in items:
        if not _is_reward_key(key):
            raise ValueError(
                f"reward_weights: key {key!r} is not a reward key name "
                "(letters, digits, '_', '.', '-'; at most 64 characters)"
            )
        weights[key] = decimal_string(weight, f"reward_weights[{key!r}]", signed=True)
    return weights


def _or_default(value: object, model: type[BaseModel], field: str) -> object:
    """`value`, or when it is None the API model's own default for `field`."""
    return field_default(model, field) if value is None else value


def _optional_name(value: object, argument: str) -> str | None:
    """None, or a valid object name (a Kueue LocalQueue's or WorkloadPriorityClass's)."""
    return None if value is None else check_object_name(value, argument)


def step_spec_fields(
    *,
    dataset: str,
    model: str,
    output_model: str,
    service_account: str,
    lora_rank: int | None = None,
    learning_rate: object = None,
    max_context_length: int | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    accelerator_count: int | None = None,
    accelerator_type: str | None = None,
    loss_method: str | None = None,
    kl_coefficient: object = None,
    reward_weights: object = None,
    lora_alpha: int | None = None,
    output_location: str | None = None,
    trainer_image: str | None = None,
    active_deadline_seconds: int | None = None,
    backoff_limit: int | None = None,
    checkpoint_every_steps: int | None = None,
    queue_name: str | None = None,
    priority_class: str | None = None,
) -> dict[str, Any]:
    """The spec fields (API snake_case names) for one step; errors name the argument at fault.

    Numbers that the API keeps as decimal strings (learning rate, KL coefficient, reward weights)
    are spelled so that they parse back to exactly the value given (`1e-4` -> `"0.0001"`). An
    argument left as None takes the API model's default (`TrainingParameters`, `LossSettings`,
    `Accelerator`), read from the model, never copied; `queue_name` and `priority_class` (Kueue's
    LocalQueue and WorkloadPriorityClass) default to the spec's own default, none.
    """
    if output_model == model:
        raise ValueError(f"output_model: {output_model!r} must differ from the source model")
    lora_rank = check_field_int(
        _or_default(lora_rank, TrainingParameters, "lora_rank"), "lora_rank", TrainingParameters, "lora_rank"
    )
    learning_rate = _or_default(learning_rate, TrainingParameters, "learning_rate")
    check_optional_field_int(lora_alpha, "lora_alpha", TrainingParameters, "lora_alpha")
    max_context_length = check_field_int(
        _or_default(max_context_length, TrainingParameters, "max_context_length"),
        "max_context_length",
        TrainingParameters,
        "max_context_length",
    )
    epochs = check_field_int(
        _or_default(epochs, TrainingParameters, "epochs"), "epochs", TrainingParameters, "epochs"
    )
    batch_size = check_field_int(
        _or_default(batch_size, TrainingParameters, "batch_size"),
        "batch_size",
        TrainingParameters,
        "batch_size",
    )
    if batch_size < max_context_length:
        raise ValueError(
            f"batch_size: {batch_size} tokens is less than max_context_length {max_context_length}; "
            "batch_size is a token budget per packed batch and must hold the longest sequence"
        )
    accelerator_count = check_field_int(
        _or_default(accelerator_count, Accelerator, "count"), "accelerator_count", Accelerator, "count"
    )
    if accelerator_type is not None:
        check_choice(accelerator_type, "accelerator_type", ACCELERATOR_TYPES)
    if accelerator_count == 0 and accelerator_type != "CPU":
        raise ValueError("accelerator_count: 0 is only allowed with accelerator_type='CPU'")
    given_method = _or_default(loss_method, LossSettings, "method")
    if not isinstance(given_method, str):
        raise TypeError(f"loss_method: expected a string, got {type(given_method).__name__}")
    method = check_choice(given_method.lower(), "loss_method", LOSS_METHODS)
    kl_coefficient = _or_default(kl_coefficient, LossSettings, "kl_coefficient")
    check_optional_field_int(
        active_deadline_seconds, "active_deadline_seconds", ReinforcementStepSpec, "active_deadline_seconds"
    )
    check_optional_field_int(backoff_limit, "backoff_limit", ReinforcementStepSpec, "backoff_limit")
    checkpoint_every_steps = check_field_int(
        _or_default(checkpoint_every_steps, TrainingParameters, "checkpoint_every_steps"),
        "checkpoint_every_steps",
        TrainingParameters,
        "checkpoint_every_steps",
    )
    queue_name = _optional_name(_or_default(queue_name, ReinforcementStepSpec, "queue_name"), "queue_name")
    priority_class = _optional_name(
        _or_default(priority_class, ReinforcementStepSpec, "priority_class"), "priority_class"
    )
    if priority_class is not None and queue_name is None:
        raise ValueError("priority_class: needs queue_name (Kueue orders only the Jobs of a LocalQueue)")

    training: dict[str, Any] = {
        "lora_rank": lora_rank,
        "learning_rate": decimal_string(learning_rate, "learning_rate", positive=True),
        "max_context_length": max_context_length,
        "epochs": epochs,
        "batch_size": batch_size,
        "checkpoint_every_steps": checkpoint_every_steps,
    }
    if lora_alpha is not None:
        training["lora_alpha"] = lora_alpha
    accelerator: dict[str, Any] = {"count": accelerator_count}
    if accelerator_type is not None:
        accelerator["type"] = accelerator_type
    fields: dict[str, Any] = {
        "dataset": dataset,
        "model": model,
        "output_model": output_model,
        "training": training,
        "loss": {"method": method, "kl_coefficient": decimal_string(kl_coefficient, "kl_coefficient")},
        "reward_weights": reward_weights_spec(reward_weights),
        "accelerator": accelerator,
        "service_account_name": service_account,
    }
    optional = {
        "output_location": output_location,
        "trainer_image": trainer_image,
        "active_deadline_seconds": active_deadline_seconds,
        "backoff_limit": backoff_limit,
        "queue_name": queue_name,
        "priority_class": priority_class,
    }
    fields.update({key: value for key, value in optional.items() if value is not None})
    return fields
