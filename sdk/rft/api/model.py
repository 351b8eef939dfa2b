"""Model: one checkpoint (a base model or a LoRA adapter) in the user's bucket, with lineage."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from rft.api.common import (
    AGE_COLUMN,
    DECIMAL_PATTERN,
    ApiModel,
    Condition,
    CrdInfo,
    ObjectName,
    PrinterColumn,
    Resource,
    StorageURL,
    condition_columns,
)

ModuleName = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.]+$")]
ModelPhase = Literal["READY", "FAILED"]
ModelKind = Literal["base", "lora"]

# Linear layers of the blocks of common architectures (Llama, Qwen2, Mistral): what vLLM serves.
DEFAULT_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class LoraSettings(ApiModel):
    """The adapter's shape. Continuing from a checkpoint requires the same settings."""

    rank: int = Field(ge=1, le=512, description="LoRA rank r.")
    alpha: int = Field(ge=1, le=4096, description="LoRA alpha (scaling is alpha / rank).")
    target_modules: list[ModuleName] = Field(
        min_length=1,
        max_length=64,
        description="Names of the linear modules the adapter wraps.",
    )
    dropout: str = Field(default="0", pattern=DECIMAL_PATTERN, description="LoRA dropout, e.g. '0.05'.")


class TrainingRecord(ApiModel):
    """The parameters that trained a LoRA checkpoint: the ones a continuation must repeat."""

    learning_rate: str = Field(pattern=DECIMAL_PATTERN, description="Peak learning rate, e.g. '1e-4'.")
    max_context_length: int = Field(ge=1, description="Longest prompt + completion in tokens.")
    batch_size: int = Field(ge=1, description="Token budget per packed batch.")
    epochs: int = Field(ge=1, description="Passes over the dataset.")
    loss_method: str = Field(description="The policy-gradient loss used.")
    step: str | None = Field(default=None, description="The ReinforcementStep that produced it.")


class FileDigest(ApiModel):
    """One file of the checkpoint."""

    path: str = Field(description="Path relative to the model's location.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="Hex sha256 of the file.")
    size: int = Field(ge=0, description="Size in bytes.")


class ModelSpec(ApiModel):
    """Where the checkpoint is and how it came to be."""

    kind: ModelKind = Field(description="'base' for a full model, 'lora' for an adapter on a base.")
    location: StorageURL = Field(
        description="Prefix holding the model files (Hugging Face layout for a base model, a PEFT "
        "adapter for a LoRA checkpoint)."
    )
    service_account_name: ObjectName = Field(
        default="default",
        description="The ServiceAccount whose workload identity reads the files.",
    )
    base_model: ObjectName | None = Field(
        default=None, description="For a LoRA checkpoint: the base Model it adapts."
    )
    parent: ObjectName | None = Field(
        default=None, description="For a LoRA checkpoint: the checkpoint it continued from, if any."
    )
    lora: LoraSettings | None = Field(default=None, description="For a LoRA checkpoint: its shape.")
    training: TrainingRecord | None = Field(
        default=None, description="For a LoRA checkpoint: the parameters that trained it."
    )
    dataset_digest: str | None = Field(
        default=None,
        pattern=r"^sha256:[0-9a-f]{64}$",
        description="For a LoRA checkpoint: digest of the dataset it was trained on.",
    )
    files: list[FileDigest] = Field(
        default_factory=list, max_length=4096, description="The files and their digests."
    )
    metrics: dict[str, str] = Field(
        default_factory=dict, description="Final training metrics (decimal strings)."
    )


class ModelStatus(ApiModel):
    """Whether the checkpoint can be used."""

    phase: ModelPhase | None = Field(default=None, description="READY or FAILED.")
    observed_generation: int | None = Field(default=None, description="The generation last acted on.")
    conditions: list[Condition] = Field(default_factory=list, description="Ready.")


class Model(Resource):
    """A checkpoint: a base model or a LoRA adapter with its lineage."""

    crd: ClassVar[CrdInfo] = CrdInfo(
        kind="Model",
        plural="models",
        singular="model",
        short_names=["rftmodel"],
        description="One checkpoint in the user's bucket (a base model or a LoRA adapter) with its "
        "lineage: base model, parent checkpoint, LoRA settings, training parameters, dataset digest "
        "and file digests. ReinforcementSteps read and register them.",
        printer_columns=[
            PrinterColumn(name="Kind", type="string", json_path=".spec.kind"),
            PrinterColumn(name="Phase", type="string", json_path=".status.phase"),
            PrinterColumn(name="Base", type="string", json_path=".spec.baseModel"),
            PrinterColumn(name="Parent", type="string", json_path=".spec.parent"),
            PrinterColumn(name="Rank", type="integer", json_path=".spec.lora.rank"),
            PrinterColumn(name="Location", type="string", json_path=".spec.location", priority=1),
            AGE_COLUMN,
            *condition_columns("Ready"),
        ],
        spec_validations=[
            {
                "rule": "self.kind == 'base' || (has(self.baseModel) && has(self.lora))",
                "message": "a lora Model needs spec.baseModel and spec.lora",
                "fieldPath": ".baseModel",
            },
            {
                "rule": "self.kind == 'lora' || (!has(self.baseModel) && !has(self.lora) && !has(self.parent))",
                "message": "a base Model takes no spec.baseModel, spec.lora or spec.parent",
                "fieldPath": ".kind",
            },
            {
                "rule": "self.kind == oldSelf.kind && self.location == oldSelf.location",
                "message": "spec.kind and spec.location are immutable",
                "fieldPath": ".location",
            },
        ],
    )

    kind: str = "Model"
    spec: ModelSpec
    status: ModelStatus = Field(default_factory=ModelStatus)
