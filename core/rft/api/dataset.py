"""Dataset: one JSONL object in the user's bucket, validated once and pinned by its digest."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from rft.api.common import (
    AGE_COLUMN,
    ApiModel,
    Condition,
    CrdInfo,
    ObjectName,
    PrinterColumn,
    Resource,
    StorageURL,
    condition_columns,
)

DatasetPhase = Literal["VALIDATING", "READY", "FAILED"]
DatasetFormat = Literal["auto", "samples", "prompt-completions"]

DEFAULT_MIN_ROWS = 3
DEFAULT_MAX_ROWS = 3_000_000


class DatasetLimits(ApiModel):
    """Bounds the validation enforces."""

    min_rows: int = Field(
        default=DEFAULT_MIN_ROWS, ge=1, le=100_000_000, description="Fewest rows (prompt groups) accepted."
    )
    max_rows: int = Field(
        default=DEFAULT_MAX_ROWS, ge=1, le=100_000_000, description="Most rows (prompt groups) accepted."
    )
    max_line_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=1024,
        le=1024 * 1024 * 1024,
        description="Longest JSONL line accepted, in bytes.",
    )


class DatasetSpec(ApiModel):
    """Where the rows live and who may read them."""

    source: StorageURL = Field(
        description="The JSONL object (or a prefix holding exactly one .jsonl object) in the "
        "user's bucket. Read in place: never copied elsewhere."
    )
    service_account_name: ObjectName = Field(
        default="default",
        description="The ServiceAccount whose workload identity (EKS IRSA, GKE Workload Identity) "
        "reads the source. The validation Job runs as it; the operator never reads the bucket.",
    )
    format: DatasetFormat = Field(
        default="auto",
        description="Row format: 'samples' (the managed service's {samples: [{messages, evals}]}), "
        "'prompt-completions' ({prompt, completions, rewards}), or 'auto' to detect from row 1.",
    )
    limits: DatasetLimits = Field(default_factory=DatasetLimits, description="Validation bounds.")
    managed_by_sdk: bool = Field(
        default=False,
        description="True when the SDK uploaded the object; only then may the SDK delete the "
        "object together with the Dataset. The operator never deletes user objects.",
    )


    @model_validator(mode="after")
    def _rows_in_order(self) -> DatasetSpec:
        if self.limits.min_rows > self.limits.max_rows:
            raise ValueError("spec.limits.minRows must not exceed spec.limits.maxRows")
        return self


class RowError(ApiModel):
    """One bad row found by validation."""

    line: int = Field(ge=0, description="1-based line number in the JSONL object (0: the whole object).")
    message: str = Field(max_length=2048, description="What is wrong with the line.")


class DatasetStatus(ApiModel):
    """What validation found."""

    phase: DatasetPhase | None = Field(default=None, description="VALIDATING, READY or FAILED.")
    observed_generation: int | None = Field(default=None, description="The generation last acted on.")
    conditions: list[Condition] = Field(default_factory=list, description="Validated and Ready.")
    resolved_source: str | None = Field(
        default=None, description="The exact object validated (a prefix resolves to its one object)."
    )
    rows: int | None = Field(default=None, ge=0, description="Rows (prompt groups) in the object.")
    format: str | None = Field(default=None, description="The row format detected.")
    min_samples_per_row: int | None = Field(default=None, description="Fewest samples in a row.")
    max_samples_per_row: int | None = Field(default=None, description="Most samples in a row.")
    reward_keys: list[str] = Field(default_factory=list, description="Reward keys seen in evals.")
    bytes: int | None = Field(default=None, ge=0, description="Size of the object in bytes.")
    digest: str | None = Field(
        default=None,
        description="sha256:<hex> of the object's bytes. The trainer re-checks it before training.",
    )
    errors: list[RowError] = Field(
        default_factory=list, description="The first bad rows, with their line numbers."
    )
    validation_job: str | None = Field(default=None, description="Name of the validation Job.")


class Dataset(Resource):
    """A JSONL dataset of prompt groups with rewards, in the user's bucket."""

    crd: ClassVar[CrdInfo] = CrdInfo(
        kind="Dataset",
        plural="datasets",
        singular="dataset",
        short_names=["rftds"],
        description="A JSONL dataset of prompt groups with rewards in the user's own bucket, "
        "validated once by a Job running under the dataset's ServiceAccount and pinned by digest.",
        printer_columns=[
            PrinterColumn(name="Phase", type="string", json_path=".status.phase"),
            PrinterColumn(name="Rows", type="integer", json_path=".status.rows"),
            PrinterColumn(name="Format", type="string", json_path=".status.format"),
            PrinterColumn(name="Source", type="string", json_path=".spec.source"),
            PrinterColumn(name="Digest", type="string", json_path=".status.digest", priority=1),
            AGE_COLUMN,
            *condition_columns("Ready"),
        ],
        spec_validations=[
            {
                "rule": "self.limits.minRows <= self.limits.maxRows",
                "message": "spec.limits.minRows must not exceed spec.limits.maxRows",
                "fieldPath": ".limits.minRows",
            },
            {
                "rule": "self.source == oldSelf.source",
                "message": "spec.source is immutable: create a new Dataset for new data",
                "fieldPath": ".source",
            },
        ],
    )

    kind: str = "Dataset"
    spec: DatasetSpec
    status: DatasetStatus = Field(default_factory=DatasetStatus)
