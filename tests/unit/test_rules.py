"""The rules shared by the SDK, the operator and the trainer (`rft.api.rules`), tested once here;
each caller's own test checks that it says no in its own words."""

from __future__ import annotations

from typing import Any

import pytest
from rft.api import Deployment, Model
from rft.api.model import TrainingRecord
from rft.api.rules import (
    WARM_START_FIELDS,
    WarmStartMismatch,
    adapter_on_base_problems,
    check_warm_start,
    check_warm_start_from_model,
)

RECORD = TrainingRecord(
    learning_rate="0.0001", max_context_length=8192, batch_size=32768, epochs=1, loss_method="grpo"
)
SAME: dict[str, Any] = {
    "lora_rank": 16,
    "learning_rate": "1e-4",
    "max_context_length": 8192,
    "batch_size": 32768,
}


def lora_model(rank: int = 16, training: dict[str, Any] | None = None, base: str = "qwen") -> Model:
    spec: dict[str, Any] = {
        "kind": "lora",
        "location": "s3://bkt/models/p/",
        "baseModel": base,
        "lora": {"rank": rank, "alpha": 2 * rank, "targetModules": ["q_proj"]},
    }
    if training is not None:
        spec["training"] = training
    return Model.model_validate({"metadata": {"name": "p"}, "spec": spec})


def base_deployment(**spec: Any) -> Deployment:
    return Deployment.model_validate(
        {
            "metadata": {"name": "base"},
            "spec": {"model": "qwen", "deploymentType": "on-demand", "enableLora": True, **spec},
        }
    )


# --- warm start ----------------------------------------------------------------------------------


def test_equal_parameters_in_other_spellings_are_allowed() -> None:
    check = check_warm_start(16, RECORD, **SAME)
    assert check.allowed
    assert check.mismatches == ()
    assert not check.unrecorded


def test_every_mismatch_is_listed_in_order_with_both_values() -> None:
    check = check_warm_start(
        16, RECORD, lora_rank=8, learning_rate="2e-4", max_context_length=4096, batch_size=65536
    )
    assert not check.allowed
    assert check.mismatches == (
        WarmStartMismatch("lora_rank", 16, 8),
        WarmStartMismatch("learning_rate", "0.0001", "2e-4"),
        WarmStartMismatch("max_context_length", 8192, 4096),
        WarmStartMismatch("batch_size", 32768, 65536),
    )
    assert tuple(m.field for m in check.mismatches) == WARM_START_FIELDS


@pytest.mark.parametrize(
    ("field", "value"),
    [("lora_rank", 32), ("learning_rate", "0.00010001"), ("max_context_length", 8193), ("batch_size", 32767)],
)
def test_each_field_alone_is_a_mismatch(field: str, value: Any) -> None:
    check = check_warm_start(16, RECORD, **{**SAME, field: value})
    assert [m.field for m in check.mismatches] == [field]
    assert not check.allowed


def test_learning_rates_are_compared_exactly_as_decimals() -> None:
    # Equal as floats, different as the decimal strings the API stores.
    close = "0.00010000000000000000001"
    assert float(close) == float(RECORD.learning_rate)
    assert not check_warm_start(16, RECORD, **{**SAME, "learning_rate": close}).allowed


def test_a_parent_that_records_no_training_parameters_is_refused() -> None:
    """The case the three copies disagreed on: refused (equality cannot be shown)."""
    check = check_warm_start(16, None, **SAME)
    assert check.unrecorded
    assert check.mismatches == ()
    assert not check.allowed


def test_without_a_record_the_rank_is_still_compared() -> None:
    check = check_warm_start(16, None, **{**SAME, "lora_rank": 8})
    assert check.mismatches == (WarmStartMismatch("lora_rank", 16, 8),)
    assert check.unrecorded


def test_an_unknown_parent_rank_never_matches() -> None:
    check = check_warm_start(None, RECORD, **SAME)
    assert check.mismatches == (WarmStartMismatch("lora_rank", None, 16),)


def test_from_a_model_reads_its_lora_rank_and_training_record() -> None:
    assert check_warm_start_from_model(lora_model(training=RECORD.to_wire()), **SAME).allowed
    unrecorded = check_warm_start_from_model(lora_model(rank=8), **SAME)
    assert unrecorded.unrecorded
    assert unrecorded.mismatches == (WarmStartMismatch("lora_rank", 8, 16),)


# --- a LoRA checkpoint on a base deployment ------------------------------------------------------


def test_a_compatible_base_has_no_problem() -> None:
    assert adapter_on_base_problems(base_deployment(maxLoraRank=16), lora_model(rank=16)) == []


@pytest.mark.parametrize(
    ("spec", "model", "problems"),
    [
        ({"deploymentType": "on-demand-lora", "baseDeployment": "b"}, lora_model(), ["base-is-adapter-deployment"]),
        ({"enableLora": False}, lora_model(), ["lora-disabled"]),
        ({}, lora_model(base="llama"), ["other-base-model"]),
        ({"maxLoraRank": 8}, lora_model(rank=16), ["rank-too-high"]),
        (
            {"enableLora": False, "maxLoraRank": 8},
            lora_model(rank=16, base="llama"),
            ["lora-disabled", "other-base-model", "rank-too-high"],
        ),
    ],
    ids=["adapter-deployment", "lora-disabled", "other-base", "rank", "several-in-order"],
)
def test_each_problem_is_named_in_a_fixed_order(
    spec: dict[str, Any], model: Model, problems: list[str]
) -> None:
    assert adapter_on_base_problems(base_deployment(**spec), model) == problems
