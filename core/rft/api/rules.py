"""Rules between API objects that the SDK, the operator and the trainer all apply: each written
once here, as a pure function returning what is wrong, so that the callers cannot disagree.

Each caller keeps its own way of saying no (the SDK raises, the operator sets a condition, the
trainer fails with `IncompatibleCheckpoint`) and its own names for the fields; the decision is
made here.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from rft.api.deployment import Deployment
from rft.api.model import Model, TrainingRecord

# --- warm start ----------------------------------------------------------------------------------

WarmStartField = Literal["lora_rank", "learning_rate", "max_context_length", "batch_size"]
# What a continuation must repeat from the checkpoint it warm-starts from (the managed service's
# rule), in the order mismatches are reported.
WARM_START_FIELDS: tuple[WarmStartField, ...] = (
    "lora_rank",
    "learning_rate",
    "max_context_length",
    "batch_size",
)


@dataclass(frozen=True)
class WarmStartMismatch:
    """One parameter of the continuation that differs from its parent checkpoint's."""

    field: WarmStartField
    parent: int | str | None
    child: int | str


@dataclass(frozen=True)
class WarmStartCheck:
    """The verdict on a warm start: allowed only with no mismatch and a recorded parent.

    `unrecorded` means the parent records no training parameters (a checkpoint registered by
    hand, or one whose lineage lost its record): equality cannot be shown, so the warm start is
    refused. The remedy is to record them (a Model's `spec.training`).
    """

    mismatches: tuple[WarmStartMismatch, ...]
    unrecorded: bool

    @property
    def allowed(self) -> bool:
        return not self.mismatches and not self.unrecorded


def check_warm_start(
    parent_rank: int | None,
    parent_training: TrainingRecord | None,
    *,
    lora_rank: int,
    learning_rate: str,
    max_context_length: int,
    batch_size: int,
) -> WarmStartCheck:
    """Whether a continuation with these parameters may warm-start from a parent checkpoint of
    LoRA rank `parent_rank` trained with `parent_training`.

    Learning rates are decimal strings compared by value (`"1e-4"` equals `"0.0001"`). A parent
    rank of None (unknown) never matches. The rank is compared even when the parent records no
    training parameters, so that every difference that can be shown is reported.
    """
    mismatches = []
    if parent_rank != lora_rank:
        mismatches.append(WarmStartMismatch("lora_rank", parent_rank, lora_rank))
    if parent_training is not None:
        if Decimal(parent_training.learning_rate) != Decimal(learning_rate):
            mismatches.append(WarmStartMismatch("learning_rate", parent_training.learning_rate, learning_rate))
        if parent_training.max_context_length != max_context_length:
            mismatches.append(
                WarmStartMismatch("max_context_length", parent_training.max_context_length, max_context_length)
            )
        if parent_training.batch_size != batch_size:
            mismatches.append(WarmStartMismatch("batch_size", parent_training.batch_size, batch_size))
    return WarmStartCheck(tuple(mismatches), unrecorded=parent_training is None)


def check_warm_start_from_model(
    parent: Model, *, lora_rank: int, learning_rate: str, max_context_length: int, batch_size: int
) -> WarmStartCheck:
    """`check_warm_start` against a registered LoRA checkpoint (`spec.lora.rank`, `spec.training`)."""
    return check_warm_start(
        parent.spec.lora.rank if parent.spec.lora is not None else None,
        parent.spec.training,
        lora_rank=lora_rank,
        learning_rate=learning_rate,
        max_context_length=max_context_length,
        batch_size=batch_size,
    )


# --- a LoRA checkpoint served on a base deployment -----------------------------------------------

AdapterOnBaseProblem = Literal["base-is-adapter-deployment", "lora-disabled", "other-base-model", "rank-too-high"]


def adapter_on_base_problems(base: Deployment, model: Model) -> list[AdapterOnBaseProblem]:
    """Why LoRA checkpoint `model` cannot be served on the base Deployment `base`, in this order:
    the base is itself an on-demand-lora deployment, it does not enable LoRA, it serves another
    base model than the one the checkpoint adapts, or the checkpoint's rank exceeds its
    maxLoraRank. Empty when it can.

    `lora-disabled` is the one problem a client can fix by patching the base (the SDK does).
    """
    problems: list[AdapterOnBaseProblem] = []
    if base.spec.deployment_type == "on-demand-lora":
        problems.append("base-is-adapter-deployment")
    if not base.spec.enable_lora:
        problems.append("lora-disabled")
    if model.spec.base_model != base.spec.model:
        problems.append("other-base-model")
    rank = model.spec.lora.rank if model.spec.lora is not None else 0
    if rank > base.spec.max_lora_rank:
        problems.append("rank-too-high")
    return problems
