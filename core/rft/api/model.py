"""Model: one checkpoint (a base model or a LoRA adapter) in the user's bucket, with lineage."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from rft.api.common import (
    AGE_COLUMN,
    ApiModel,
    Condition,
    CrdInfo,
    DecimalRange,
    ObjectName,
    PrinterColumn,
    Resource,
    StorageURL,
    condition_columns,
)

ModuleName = Annotated[
    str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$")
]
ModelPhase = Literal["CHECKING", "READY", "FAILED"]
ModelKind = Literal["base", "lora"]
# The policy-gradient losses (ReinforcementStep spec.loss.method) a checkpoint can record.
LossMethod = Literal["grpo", "dapo", "gspo", "gspo-token", "cispo", "reinforce"]
LearningRate = Annotated[str, DecimalRange(0, 1, low_open=True)]
Dropout = Annotated[str, DecimalRange(0, 1, high_open=True)]

# A file of the model, relative to its location: segments of printable characters without
# whitespace, none of them empty, '.' or '..' (no leading '/', no escaping the location).
_FILE_FIRST = r"[A-Za-z0-9_~+=@,-]"
_FILE_CHAR = r"[A-Za-z0-9._~+=@,-]"
_FILE_SEGMENT = rf"(\.?{_FILE_FIRST}{_FILE_CHAR}*|\.\.{_FILE_CHAR}+)"
FILE_PATH_PATTERN = rf"^{_FILE_SEGMENT}(/{_FILE_SEGMENT})*$"
MetricKey = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:/-]+$")]

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
    dropout: Dropout = Field(default="0", description="LoRA dropout in [0, 1), e.g. '0.05'.")


class TrainingRecord(ApiModel):
    """The parameters that trained a LoRA checkpoint: the ones a continuation must repeat."""

    learning_rate: LearningRate = Field(description="Peak learning rate in (0, 1], e.g. '1e-4'.")
    max_context_length: int = Field(ge=16, le=1_048_576, description="Longest prompt + completion in tokens.")
    batch_size: int = Field(ge=16, le=16_777_216, description="Token budget per packed batch.")
    epochs: int = Field(ge=1, le=100, description="Passes over the dataset.")
    loss_method: LossMethod = Field(description="The policy-gradient loss used.")
    step: ObjectName | None = Field(default=None, description="The ReinforcementStep that produced it.")


class FileDigest(ApiModel):
    """One file of the checkpoint."""

    path: str = Field(
        min_length=1,
        max_length=1024,
        pattern=FILE_PATH_PATTERN,
        description="Path relative to the model's location (no '..', '.' or empty segments, no leading '/').",
    )
    sha256: str = Field(max_length=64, pattern=r"^[0-9a-f]{64}$", description="Hex sha256 of the file.")
    size: int = Field(ge=0, le=2**50, description="Size in bytes.")


CanaryDtype = Literal["float32", "bfloat16", "float16"]
Logprob = Annotated[str, DecimalRange(-1e6, 1e6, signed=True)]
TokenId = Annotated[int, Field(ge=0, le=2**31 - 1)]


class AdapterCanary(ApiModel):
    """Log-probabilities of a fixed token sequence under a LoRA checkpoint, computed by the trainer
    that wrote it. The operator asks each replica for the same tokens' log-probabilities under the
    adapter's name and compares (`rft.canary`): a replica serving other weights under this name
    (stale, swapped, half-loaded) does not match."""

    token_ids: list[TokenId] = Field(
        min_length=2, max_length=64, description="The canary tokens (fixed, data-free)."
    )
    logprobs: list[Logprob] = Field(
        min_length=1,
        max_length=63,
        description="Log-probability of each token after the first given the ones before it.",
    )
    dtype: CanaryDtype = Field(description="The dtype the trainer computed in (it sets the tolerance).")
    start_distance: Annotated[str, DecimalRange(0, 1e6)] = Field(
        description="Mean relative difference (rft.canary) from the same logprobs under the weights training "
        "started from (the parent checkpoint or the base model): how far this checkpoint moved on "
        "the canary. Below the tolerance the canary cannot tell the two apart.",
    )

    @model_validator(mode="after")
    def _one_logprob_per_next_token(self) -> AdapterCanary:
        if len(self.logprobs) != len(self.token_ids) - 1:
            raise ValueError(
                f"logprobs: {len(self.logprobs)} values for {len(self.token_ids)} tokens "
                f"(one per token after the first: {len(self.token_ids) - 1})"
            )
        return self


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
        max_length=71,
        pattern=r"^sha256:[0-9a-f]{64}$",
        description="For a LoRA checkpoint: digest of the dataset it was trained on.",
    )
    files: list[FileDigest] = Field(
        default_factory=list, max_length=4096, description="The files and their digests."
    )
    metrics: dict[MetricKey, Annotated[str, Field(max_length=64)]] = Field(
        default_factory=dict, max_length=64, description="Final training metrics (decimal strings)."
    )
    canary: AdapterCanary | None = Field(
        default=None,
        description="For a LoRA checkpoint: what serving replicas must compute for the canary "
        "tokens; checked after every load.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> ModelSpec:
        if self.kind == "lora" and (self.base_model is None or self.lora is None):
            raise ValueError("spec.baseModel: a lora Model needs spec.baseModel and spec.lora")
        if self.kind == "base":
            extra = [
                wire
                for wire, value in (
                    ("baseModel", self.base_model),
                    ("lora", self.lora),
                    ("parent", self.parent),
                    ("canary", self.canary),
                    ("training", self.training),
                    ("datasetDigest", self.dataset_digest),
                )
                if value is not None
            ]
            if extra:
                raise ValueError(
                    f"spec.{extra[0]}: a base Model takes no " + ", ".join(f"spec.{e}" for e in extra)
                )
        if self.parent is not None and self.parent == self.base_model:
            raise ValueError("spec.parent: the parent checkpoint cannot be the base model")
        if self.lora is not None and len(set(self.lora.target_modules)) != len(self.lora.target_modules):
            raise ValueError("spec.lora.targetModules: a module is listed twice")
        return self

    @model_validator(mode="after")
    def _one_digest_per_file(self) -> ModelSpec:
        seen: set[str] = set()
        for i, f in enumerate(self.files):
            if f.path in seen:
                raise ValueError(f"spec.files[{i}].path: {f.path!r} is listed twice")
            seen.add(f.path)
        return self


class ModelStatus(ApiModel):
    """Whether the checkpoint can be used; for a base model, what its check found and pinned."""

    phase: ModelPhase | None = Field(
        default=None, description="CHECKING (a base model's check Job reads it), READY or FAILED."
    )
    observed_generation: int | None = Field(default=None, description="The generation last acted on.")
    conditions: list[Condition] = Field(default_factory=list, description="Ready.")
    check_job: str | None = Field(default=None, description="The Job that checked a base model's files.")
    format: Literal["huggingface", "committed"] | None = Field(
        default=None,
        description="A plain Hugging Face folder, or a checkpoint committed by the SDK's upload.",
    )
    architecture: str | None = Field(default=None, description="config.json's first architecture.")
    parameters: int | None = Field(default=None, ge=0, description="Parameters in the weight files.")
    dtype: str | None = Field(default=None, description="The weights' most common safetensors dtype.")
    file_count: int | None = Field(default=None, ge=0, description="Files served (and pinned).")
    total_bytes: int | None = Field(default=None, ge=0, description="Their size in bytes.")
    files_digest: str | None = Field(
        default=None,
        pattern=r"^sha256:[0-9a-f]{64}$",
        description="Pins every served file at once (sha256 over their sorted paths, digests and "
        "sizes): pods that fetch the model refuse files that do not hash to it.",
    )
    files: list[FileDigest] = Field(
        default_factory=list,
        max_length=4096,
        description="Each served file's sha256, as the check reported it (a folder of many files "
        "is pinned by filesDigest alone).",
    )


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
            PrinterColumn(name="Architecture", type="string", json_path=".status.architecture", priority=1),
            PrinterColumn(name="Bytes", type="integer", json_path=".status.totalBytes", priority=1),
            PrinterColumn(name="Location", type="string", json_path=".spec.location", priority=1),
            AGE_COLUMN,
            *condition_columns("Ready"),
        ],
        validations=[
            {
                "rule": "!has(self.spec.baseModel) || self.spec.baseModel != self.metadata.name",
                "message": "spec.baseModel: a Model cannot name itself",
                "fieldPath": ".spec.baseModel",
            },
            {
                "rule": "!has(self.spec.parent) || self.spec.parent != self.metadata.name",
                "message": "spec.parent: a Model cannot name itself",
                "fieldPath": ".spec.parent",
            },
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
                "rule": "!has(self.canary) || size(self.canary.logprobs) == size(self.canary.tokenIds) - 1",
                "message": "spec.canary.logprobs needs one value per token of spec.canary.tokenIds after the first",
                "fieldPath": ".canary.logprobs",
            },
            {
                "rule": "self.kind == 'lora' || !has(self.canary)",
                "message": "a base Model takes no spec.canary",
                "fieldPath": ".canary",
            },
            {
                "rule": "self.kind == 'lora' || (!has(self.training) && !has(self.datasetDigest))",
                "message": "a base Model takes no spec.training or spec.datasetDigest (they record how "
                "a LoRA checkpoint was trained)",
                "fieldPath": ".training",
            },
            {
                "rule": "!has(self.parent) || !has(self.baseModel) || self.parent != self.baseModel",
                "message": "spec.parent is a LoRA checkpoint, spec.baseModel a base model: they cannot "
                "be the same Model",
                "fieldPath": ".parent",
            },
            {
                "rule": "!has(self.lora) || self.lora.targetModules.all(m, self.lora.targetModules"
                ".exists_one(n, n == m))",
                "message": "spec.lora.targetModules lists a module twice",
                "fieldPath": ".lora.targetModules",
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

    @model_validator(mode="after")
    def _not_its_own_ancestor(self) -> Model:
        for field in ("base_model", "parent"):
            if self.metadata.name and getattr(self.spec, field) == self.metadata.name:
                wire = "baseModel" if field == "base_model" else field
                raise ValueError(f"spec.{wire}: a Model cannot name itself ({self.metadata.name})")
        return self

    status: ModelStatus = Field(default_factory=ModelStatus)
