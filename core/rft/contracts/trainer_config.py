"""The contract between the operator and the trainer: what one training run is told and what it reports.

The operator builds a `TrainerConfig`, serialises it with `to_json()` and hands it to the trainer
pod (a mounted file: `python -m rft_trainer --config PATH`, or the environment variable
`RFT_TRAINER_CONFIG` holding the JSON). The trainer reports back through three channels that need
no Kubernetes API access:

- `ProgressReport` JSON lines on stdout (`{"event": "progress", ...}`) and, when `progress_port`
  is set, the latest one at `GET /progress`;
- a `TrainerResult` (success) or `TrainerFailure` (failure) JSON document of less than 4096 bytes
  in the termination log, which Kubernetes copies into the pod status;
- its exit code: `EXIT_OK`, `EXIT_BAD_INPUT` (bad config, data or checkpoint: retrying will not
  help) or `EXIT_INFRASTRUCTURE` (storage or hardware trouble: a retry may help).

This module imports neither torch nor kopf: both sides use it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Final, Literal

from pydantic import Field, TypeAdapter, ValidationError, model_validator

from rft.api.common import ApiModel
from rft.api.dataset import DatasetFormat
from rft.api.model import AdapterCanary, FileDigest, LoraSettings, TrainingRecord
from rft.api.reinforcement_step import LossSettings, MlflowTracking, TrainingParameters
from rft.contracts import exit_codes

CONFIG_ENV_VAR = "RFT_TRAINER_CONFIG"
"""Environment variable that may hold the whole `TrainerConfig` JSON."""

TERMINATION_MESSAGE_LIMIT: Final = exit_codes.TERMINATION_MESSAGE_LIMIT

EXIT_OK: Final = exit_codes.EXIT_OK
EXIT_BAD_INPUT: Final = exit_codes.EXIT_BAD_INPUT
EXIT_INFRASTRUCTURE: Final = exit_codes.EXIT_RETRYABLE

DIGEST_PATTERN = r"^sha256:[0-9a-f]{64}$"

Location = Annotated[
    str,
    Field(
        min_length=1,
        max_length=1024,
        description="s3://bucket/key, gs://bucket/key, file:///path or a local path.",
    ),
]

Phase = Literal["loading", "training", "writing_results", "done", "failed"]


class TrainerConfig(ApiModel):
    """Everything one reinforcement step's trainer needs. camelCase on the wire, unknown keys refused."""

    step_name: str = Field(
        min_length=1, max_length=253, description="The ReinforcementStep this run belongs to (lineage)."
    )
    namespace: str = Field(
        min_length=1, max_length=63, description="The step's namespace (the managed service's account)."
    )

    dataset_url: Location = Field(description="The JSONL dataset: a storage URL or a local path.")
    dataset_digest: str = Field(
        pattern=DIGEST_PATTERN,
        description="sha256:<hex> of the dataset's bytes, recorded when the Dataset was validated. "
        "The trainer recomputes it while streaming and refuses a dataset that changed since.",
    )
    dataset_format: DatasetFormat = Field(
        default="auto", description="Row format: 'samples', 'prompt-completions' or 'auto' (detect)."
    )
    reward_weights: dict[str, str] = Field(
        default_factory=dict,
        max_length=64,
        description="Reward keys to combine with their weights as decimal strings, e.g. "
        "{'score': '1', 'format': '0.2'}. Empty: each row must carry exactly one reward key.",
    )

    base_model_url: Location = Field(
        description="The Hugging Face base model directory: a storage URL (fetched to scratch_dir "
        "with digest checks) or a local path (used in place)."
    )
    base_model_name: str = Field(
        min_length=1, max_length=253, description="Name of the base Model (lineage and continuation checks)."
    )
    base_model_files_digest: str | None = Field(
        default=None,
        pattern=DIGEST_PATTERN,
        description="The pins of the base Model's check (status.filesDigest): the files fetched from "
        "base_model_url must hash to it. None: the URL must hold a committed checkpoint.",
    )
    base_model_files: list[FileDigest] = Field(
        default_factory=list,
        max_length=4096,
        description="The base Model's per-file pins (status.files), when its check listed them.",
    )
    parent_adapter_url: Location | None = Field(
        default=None,
        description="A LoRA checkpoint to warm-start from (its lineage must match: base model, "
        "rank, alpha, target modules). None: a new adapter.",
    )
    parent_model_name: str | None = Field(
        default=None,
        max_length=253,
        description="Name of the parent Model; required with parent_adapter_url.",
    )

    output_url: Location = Field(
        description="Where the new adapter and its metadata are published. Must not exist: the "
        "trainer checks before training and publishes create-only."
    )
    output_model_name: str = Field(
        min_length=1, max_length=253, description="Name of the Model the operator will register."
    )

    training: TrainingParameters = Field(
        default_factory=TrainingParameters, description="Optimiser and LoRA settings (as in the CRD)."
    )
    loss: LossSettings = Field(default_factory=LossSettings, description="The objective (as in the CRD).")

    scratch_dir: str = Field(
        default="/tmp/rft",  # noqa: S108 - an emptyDir mounted there in the pod
        min_length=1,
        description="Local working directory for downloads and the adapter before publishing.",
    )
    termination_log: str = Field(
        default="/dev/termination-log",
        min_length=1,
        description="File receiving the JSON result summary (the pod's terminationMessagePath).",
    )
    progress_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Serve the latest progress JSON at GET /progress on this port (0.0.0.0). None: off.",
    )
    allow_hub_download: bool = Field(
        default=False,
        description="Allow base_model_url to name a Hugging Face Hub repository. Off: the model "
        "must come from the user's storage or a local path.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="auto: CUDA when available, else CPU."
    )
    gradient_checkpointing: bool = Field(
        default=False,
        description="Recompute activations in the backward pass (less memory, about a third more compute).",
    )
    step_uid: str | None = Field(
        default=None,
        max_length=64,
        description="The ReinforcementStep's uid: the key of its tracker runs (a retried pod continues them).",
    )
    mlflow: MlflowTracking | None = Field(
        default=None,
        description="Log each optimizer step's metrics to this MLflow server (credentials, if any, "
        "come from the pod's environment: MLFLOW_TRACKING_TOKEN or _USERNAME/_PASSWORD).",
    )

    @model_validator(mode="after")
    def _check_consistency(self) -> TrainerConfig:
        if (self.parent_adapter_url is None) != (self.parent_model_name is None):
            raise ValueError("parentAdapterUrl and parentModelName must be given together")
        for key, weight in self.reward_weights.items():
            try:
                float(weight)
            except ValueError:
                raise ValueError(f"rewardWeights[{key!r}]: {weight!r} is not a decimal number") from None
        return self

    @property
    def lora_alpha(self) -> int:
        """The effective LoRA alpha: as configured, else twice the rank."""
        return self.training.lora_alpha or 2 * self.training.lora_rank

    def lora_settings(self) -> LoraSettings:
        """The adapter's shape as recorded in lineage."""
        return LoraSettings(
            rank=self.training.lora_rank,
            alpha=self.lora_alpha,
            target_modules=list(self.training.lora_target_modules),
        )

    def training_record(self) -> TrainingRecord:
        """The parameters recorded with the checkpoint (the ones a continuation must repeat)."""
        return TrainingRecord(
            learning_rate=self.training.learning_rate,
            max_context_length=self.training.max_context_length,
            batch_size=self.training.batch_size,
            epochs=self.training.epochs,
            loss_method=self.loss.method,
            step=self.step_name,
        )

    def to_json(self) -> str:
        """The JSON the trainer reads (camelCase, unset optionals left out)."""
        return json.dumps(self.to_wire(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrainerConfig:
        """Parse the JSON the operator wrote; a `ValueError` names each bad field."""
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            raise ValueError(describe_validation_error(exc)) from None

    @classmethod
    def load(cls, path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> TrainerConfig:
        """Read the config from `path`, else from the `RFT_TRAINER_CONFIG` environment variable."""
        env = os.environ if environ is None else environ
        if path is not None:
            try:
                text = Path(path).read_text(encoding="utf-8")
            except OSError as exc:
                raise ValueError(f"cannot read trainer config {path}: {exc.strerror}") from None
        elif env.get(CONFIG_ENV_VAR):
            text = env[CONFIG_ENV_VAR]
        else:
            raise ValueError(f"no trainer config: pass --config PATH or set {CONFIG_ENV_VAR}")
        return cls.from_json(text)


def describe_validation_error(exc: ValidationError, what: str = "trainer config") -> str:
    """All errors on one line: 'invalid <what>: field.path: reason; ...'."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{where}: {err['msg']}")
    return f"invalid {what}: " + "; ".join(parts)


class ProgressReport(ApiModel):
    """One progress snapshot: a stdout JSON line (with event='progress') and the GET /progress body."""

    phase: Phase = Field(description="loading, training, writing_results, done or failed.")
    epoch: int | None = Field(default=None, description="Current epoch, 1-based.")
    step: int = Field(default=0, ge=0, description="Optimizer steps done.")
    total_steps: int | None = Field(default=None, ge=0, description="Optimizer steps planned.")
    loss: float | None = Field(default=None, description="Loss of the last optimizer step.")
    mean_reward: float | None = Field(default=None, description="Mean combined reward of the dataset.")
    metrics: dict[str, float] = Field(
        default_factory=dict, description="Everything else measured at the last optimizer step."
    )
    message: str | None = Field(default=None, max_length=2048, description="Human-readable note.")


class TrainerResult(ApiModel):
    """The termination message of a successful run."""

    ok: Literal[True] = True
    output_location: str = Field(description="Where the adapter was published.")
    files: list[FileDigest] = Field(description="The published files with their digests.")
    metrics: dict[str, str] = Field(
        description="Final metrics as decimal strings; always 'loss' and 'mean_reward'."
    )
    dataset_digest: str = Field(pattern=DIGEST_PATTERN, description="Digest of the dataset trained on.")
    lora: LoraSettings = Field(description="The adapter's shape.")
    training: TrainingRecord = Field(description="The parameters that trained it.")
    canary: AdapterCanary | None = Field(
        default=None, description="The adapter's canary logprobs, for the operator to check replicas."
    )


FailureReason = Literal[
    "InvalidConfig",
    "InvalidDataset",
    "DatasetChanged",
    "IncompatibleCheckpoint",
    "OutputExists",
    "ModelLoadFailed",
    "StorageError",
    "TrainingFailed",
    "InternalError",
    "Interrupted",
]


class TrainerFailure(ApiModel):
    """The termination message of a failed run."""

    ok: Literal[False] = False
    reason: FailureReason = Field(description="CamelCase cause, usable as a condition reason.")
    message: str = Field(max_length=3072, description="What went wrong, for humans.")


_RESULT_ADAPTER: TypeAdapter[TrainerResult | TrainerFailure] = TypeAdapter(
    Annotated[TrainerResult | TrainerFailure, Field(discriminator="ok")]
)


def parse_termination_message(text: str) -> TrainerResult | TrainerFailure:
    """Parse the trainer's termination message; `ValueError` when it is not a valid summary."""
    try:
        return _RESULT_ADAPTER.validate_json(text)
    except ValidationError as exc:
        raise ValueError(describe_validation_error(exc, "trainer result")) from None
