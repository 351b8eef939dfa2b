"""ReinforcementStep: one policy-gradient training run from (model, dataset) to a new Model."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from rft.api.common import (
    AGE_COLUMN,
    ApiModel,
    Condition,
    CrdInfo,
    DecimalRange,
    ImageRef,
    LabelValue,
    ObjectName,
    PrinterColumn,
    QualifiedName,
    Resource,
    StorageURL,
    condition_columns,
)
from rft.api.deployment import Accelerator
from rft.api.model import DEFAULT_TARGET_MODULES, LearningRate, LossMethod, ModuleName


class StepPhase(StrEnum):
    """The managed service's job states, as far as they mean something here."""

    CREATING = "JOB_STATE_CREATING"
    VALIDATING = "JOB_STATE_VALIDATING"
    PENDING = "JOB_STATE_PENDING"
    RUNNING = "JOB_STATE_RUNNING"
    WRITING_RESULTS = "JOB_STATE_WRITING_RESULTS"
    COMPLETED = "JOB_STATE_COMPLETED"
    FAILED = "JOB_STATE_FAILED"
    CANCELLED = "JOB_STATE_CANCELLED"
    EXPIRED = "JOB_STATE_EXPIRED"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_PHASES


TERMINAL_PHASES = frozenset({StepPhase.COMPLETED, StepPhase.FAILED, StepPhase.CANCELLED, StepPhase.EXPIRED})

RewardWeight = Annotated[str, DecimalRange(-1e6, 1e6, signed=True)]
RewardKey = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
AdvantageMode = Literal["group", "batch", "none"]
Aggregation = Literal["token-mean", "sequence-mean", "constant"]
OffPolicyCorrection = Literal["token", "sequence", "none"]


class TrainingParameters(ApiModel):
    """Optimiser and LoRA settings. Continuing from a LoRA checkpoint requires loraRank,
    learningRate, maxContextLength and batchSize to equal the parent's."""

    lora_rank: int = Field(default=16, ge=1, le=512, description="LoRA rank of the new adapter.")
    lora_alpha: int | None = Field(
        default=None, ge=1, le=4096, description="LoRA alpha; defaults to twice the rank."
    )
    lora_target_modules: list[ModuleName] = Field(
        default_factory=lambda: list(DEFAULT_TARGET_MODULES),
        min_length=1,
        max_length=64,
        description="Linear modules the adapter wraps (block linears only, so vLLM can serve it).",
    )
    learning_rate: LearningRate = Field(
        default="1e-4", description="Peak learning rate in (0, 1], e.g. '1e-4'."
    )
    max_context_length: int = Field(
        default=8192,
        ge=16,
        le=1_048_576,
        description="Longest prompt + completion, in tokens; longer rows are truncated.",
    )
    epochs: int = Field(default=1, ge=1, le=100, description="Passes over the dataset.")
    batch_size: int = Field(
        default=32768,
        ge=16,
        le=16_777_216,
        description="Token budget of one packed batch (not a number of samples).",
    )
    gradient_accumulation_steps: int = Field(
        default=1, ge=1, le=1024, description="Packed batches per optimizer step."
    )
    warmup_steps: int = Field(default=0, ge=0, le=100_000, description="Linear warm-up steps.")
    max_grad_norm: Annotated[str, DecimalRange(0, 1e6)] = Field(
        default="1.0", description="Gradient clipping norm ('0' disables)."
    )
    weight_decay: Annotated[str, DecimalRange(0, 1)] = Field(
        default="0", description="AdamW weight decay, in [0, 1]."
    )
    seed: int = Field(default=0, ge=0, le=2**31 - 1, description="Seed for shuffling and dropout.")
    checkpoint_every_steps: int = Field(
        default=10,
        ge=0,
        le=100_000,
        description="Save an in-step checkpoint (adapter, optimizer, scheduler, RNG, position in the "
        "data) to <outputLocation>/_resume/ every this many optimizer steps, and at SIGTERM; a "
        "retried or resumed pod continues from it. '0': only at SIGTERM. Removed before publishing.",
    )


class LossSettings(ApiModel):
    """The policy-gradient objective."""

    method: LossMethod = Field(
        default="grpo",
        description="grpo (PPO clip), dapo (asymmetric clip), gspo (sequence-level ratio), "
        "gspo-token, cispo (clipped IS weight), reinforce (importance-sampled REINFORCE).",
    )
    kl_coefficient: Annotated[str, DecimalRange(0, 1000)] = Field(
        default="0.001",
        description="Weight of the k3 KL estimate to the base model (adapter disabled); '0' disables.",
    )
    clip_low: Annotated[str, DecimalRange(0, 1, low_open=True)] | None = Field(
        default=None,
        description="Lower clip epsilon of the importance ratio, in (0, 1]; default 0.2 (3e-4 for gspo and "
        "gspo-token).",
    )
    clip_high: Annotated[str, DecimalRange(0, 1000, low_open=True)] | None = Field(
        default=None,
        description="Upper clip epsilon, in (0, 1000]; default 0.2 (0.28 for dapo, 4e-4 for gspo and gspo-token). "
        "For cispo: the largest importance weight, default 5.",
    )
    advantage: AdvantageMode = Field(
        default="group",
        description="group: (r - group mean) / group std; batch: divide by the batch std; none: r - group mean.",
    )
    aggregation: Aggregation = Field(
        default="token-mean",
        description="token-mean over the optimizer batch, sequence-mean (mean per sequence, then "
        "mean), or constant (sum divided by maxContextLength, as Dr. GRPO).",
    )
    off_policy_correction: OffPolicyCorrection = Field(
        default="token",
        description="Truncated importance sampling for rows with sampling logprobs: each token's loss is "
        "weighted by min(pi_old / pi_sampler, importanceCap), pi_old the policy at the start of the step "
        "(the clip ratio is then taken against pi_old); sequence: one weight per sequence, from the "
        "product of its tokens' ratios; none: the sampling logprobs are the clip ratio's reference.",
    )
    importance_cap: Annotated[str, DecimalRange(1, 1000)] = Field(
        default="2",
        description="The largest truncated importance weight, in [1, 1000] (TIS's C; default 2).",
    )


class PodMetadata(ApiModel):
    """Extra metadata for the training pod (cost allocation, mesh opt-outs, scheduling hints)."""

    labels: dict[QualifiedName, LabelValue] = Field(
        default_factory=dict,
        max_length=32,
        description="Labels added to the training pod (keys and values as Kubernetes takes them).",
    )
    annotations: dict[QualifiedName, Annotated[str, Field(max_length=4096)]] = Field(
        default_factory=dict, max_length=32, description="Annotations added to the training pod."
    )


TrackingURI = Annotated[
    str, Field(min_length=8, max_length=1024, pattern=r"^https?://[^\s/?#@]+(/[^\s?#]*)?$")
]
ExperimentName = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$")]


class MlflowTracking(ApiModel):
    """Where the step logs its per-optimizer-step metrics in MLflow."""

    tracking_uri: TrackingURI = Field(
        description="The MLflow tracking server (http or https). The pod reaches it with the step's "
        "workload identity only; the credentials Secret of the operator's settings goes only to "
        "the operator's own tracking server."
    )
    experiment: ExperimentName = Field(
        default="rft", description="The experiment the run is logged under (created when missing)."
    )


class Tracking(ApiModel):
    """Experiment trackers the step logs to, besides the metrics files beside its checkpoint."""

    mlflow: MlflowTracking | None = Field(
        default=None, description="An MLflow run keyed by the step's uid: a retried pod continues it."
    )


class ReinforcementStepSpec(ApiModel):
    """One training run. Immutable after creation, except suspend and cancel."""

    dataset: ObjectName = Field(description="The Dataset to train on; it must be READY.")
    model: ObjectName = Field(
        description="The source Model: a base model (a new adapter) or a LoRA checkpoint to warm-start from."
    )
    output_model: ObjectName = Field(
        description="Name of the Model this step creates. It must not exist yet."
    )
    output_location: StorageURL | None = Field(
        default=None,
        description="Where the new adapter is written. Defaults to <models prefix>/<outputModel>/ "
        "next to the source model's location. Never overwritten.",
    )
    training: TrainingParameters = Field(
        default_factory=TrainingParameters, description="Optimiser and LoRA settings."
    )
    loss: LossSettings = Field(default_factory=LossSettings, description="The objective.")
    reward_weights: dict[RewardKey, RewardWeight] = Field(
        default_factory=dict,
        max_length=64,
        description="Reward keys to combine, with their weights as decimal strings, e.g. "
        "{score: '1', format: '0.2'}. Empty: the single reward key of the dataset.",
    )
    accelerator: Accelerator = Field(
        default_factory=Accelerator,
        description="Of the step: a count above the type's gpusPerNode (operator accelerator map, "
        "default 8) runs on several nodes, one pod per node (an Indexed Job).",
    )
    service_account_name: ObjectName = Field(
        default="default",
        description="The ServiceAccount whose workload identity reads the dataset and base model "
        "and writes the new checkpoint. The trainer gets no Kubernetes API token.",
    )
    trainer_image: ImageRef | None = Field(
        default=None,
        description="Overrides the operator's trainer image ([registry/]path[:tag][@sha256:...]).",
    )
    pod_metadata: PodMetadata | None = Field(
        default=None, description="Labels and annotations for the training pod."
    )
    tracking: Tracking | None = Field(
        default=None,
        description="Experiment trackers. Unset: the operator's default MLflow server (the chart's "
        "tracking.mlflow.trackingUri), if any; {} opts out of it.",
    )
    queue_name: ObjectName | None = Field(
        default=None,
        description="A Kueue LocalQueue in the step's namespace: the Job is created suspended with the "
        "kueue.x-k8s.io/queue-name label and starts when Kueue admits it (condition Admitted: Queued, "
        "Admitted, Preempted). Unset: the Job starts at once.",
    )
    priority_class: ObjectName | None = Field(
        default=None,
        description="A Kueue WorkloadPriorityClass (cluster-scoped; needs queueName): the Job carries "
        "the kueue.x-k8s.io/priority-class label, so Kueue orders and preempts it by that class's "
        "value. A class that does not exist fails the step (condition Validated, reason "
        "PriorityClassNotFound). Unset: Kueue's default priority.",
    )
    suspend: bool = Field(
        default=False,
        description="Hold the step before its Job starts (or pause it: running pods are stopped, "
        "they save an in-step checkpoint at SIGTERM, and the step continues from it when resumed).",
    )
    cancel: bool = Field(
        default=False, description="Cancel the step for good: its Job is deleted, phase CANCELLED."
    )
    active_deadline_seconds: int | None = Field(
        default=None, ge=1, le=30 * 86400, description="Deadline from Job start; past it: EXPIRED."
    )
    backoff_limit: int = Field(
        default=2, ge=0, le=20, description="Retries of a failed training pod before FAILED."
    )
    ttl_seconds_after_finished: int | None = Field(
        default=None, ge=0, le=365 * 86400, description="Delete the step and its Job this long after it ends."
    )

    @model_validator(mode="after")
    def _consistent(self) -> ReinforcementStepSpec:
        """The CRD's cross-field rules (spec_validations below), for objects the schema missed."""
        if self.model == self.output_model:
            raise ValueError("spec.outputModel must differ from spec.model")
        if self.accelerator.type != "CPU" and self.accelerator.count < 1:
            raise ValueError("spec.accelerator.count must be at least 1 for a GPU accelerator type")
        if self.training.batch_size < self.training.max_context_length:
            raise ValueError(
                "spec.training.batchSize (a token budget) must be at least spec.training.maxContextLength"
            )
        if self.priority_class is not None and self.queue_name is None:
            raise ValueError("spec.priorityClass needs spec.queueName (Kueue orders only queued Jobs)")
        return self


# What the step's status keeps of the trainer's live progress (the full series is in the bucket,
# beside the checkpoint): these metrics' latest values and the last HISTORY_LENGTH points seen.
STATUS_METRICS = (
    "mean_reward",
    "mean_advantage",
    "kl",
    "clip_fraction",
    "entropy",
    "grad_norm",
    "lr",
    "tokens_per_second",
    "mfu",
)
HISTORY_LENGTH = 20


class StepPoint(ApiModel):
    """One optimizer step as the operator saw it."""

    step: int = Field(ge=0, description="The optimizer step.")
    loss: str | None = Field(default=None, max_length=32, description="Its loss.")
    mean_reward: str | None = Field(default=None, max_length=32, description="Its samples' mean reward.")


class StepProgress(ApiModel):
    """Live training progress, from the trainer's structured log."""

    epoch: int | None = Field(default=None, description="Current epoch (1-based).")
    step: int | None = Field(default=None, description="Optimizer steps done.")
    total_steps: int | None = Field(default=None, description="Optimizer steps planned.")
    loss: str | None = Field(default=None, description="Last loss.")
    mean_reward: str | None = Field(default=None, description="Mean reward of the dataset.")
    metrics: dict[str, str] = Field(
        default_factory=dict,
        max_length=len(STATUS_METRICS),
        description="The last optimizer step's metrics (KL, clip fraction, entropy, gradient norm, "
        "learning rate, tokens/s, ...); every step's are in <outputLocation>/metrics/.",
    )
    history: list[StepPoint] = Field(
        default_factory=list,
        max_length=HISTORY_LENGTH,
        description=f"The last {HISTORY_LENGTH} optimizer steps the operator saw (it polls, so not every one).",
    )


class ReinforcementStepStatus(ApiModel):
    """Where the step is."""

    phase: StepPhase | None = Field(default=None, description="JOB_STATE_* (the managed service's names).")
    observed_generation: int | None = Field(default=None, description="The generation last acted on.")
    conditions: list[Condition] = Field(
        default_factory=list, description="Validated, Succeeded, Failed, Suspended, Admitted (with queueName)."
    )
    message: str | None = Field(default=None, description="Why the step is where it is.")
    job_name: str | None = Field(default=None, description="The training Job.")
    output_model: str | None = Field(
        default=None, description="Full name of the new checkpoint: accounts/<namespace>/models/<name>."
    )
    output_location: str | None = Field(default=None, description="Where the adapter is written.")
    warm_start_from: str | None = Field(
        default=None, description="The LoRA checkpoint this step continued from, if any."
    )
    start_time: datetime | None = Field(default=None, description="When the Job started.")
    completion_time: datetime | None = Field(default=None, description="When the step ended.")
    progress: StepProgress | None = Field(default=None, description="Live training progress.")
    metrics: dict[str, str] = Field(default_factory=dict, description="Final metrics from the trainer.")
    failed_pods: int | None = Field(default=None, ge=0, description="Training pods that failed so far.")


_IMMUTABLE_FIELDS = (
    "dataset",
    "model",
    "outputModel",
    "outputLocation",
    "training",
    "loss",
    "rewardWeights",
    "accelerator",
    "serviceAccountName",
    "trainerImage",
    "podMetadata",
    "tracking",
    "queueName",
    "priorityClass",
    "activeDeadlineSeconds",
    "backoffLimit",
    "ttlSecondsAfterFinished",
)


def _unchanged(field: str) -> str:
    return f"has(self.{field}) == has(oldSelf.{field}) && (!has(self.{field}) || self.{field} == oldSelf.{field})"


class ReinforcementStep(Resource):
    """One reinforcement step: a training Job that writes a new LoRA checkpoint."""

    crd: ClassVar[CrdInfo] = CrdInfo(
        kind="ReinforcementStep",
        plural="reinforcementsteps",
        singular="reinforcementstep",
        short_names=["rftstep", "rstep"],
        description="One reinforcement step: a GPU Job trains a new LoRA checkpoint from a Dataset "
        "with a policy-gradient loss, reading and writing the user's bucket through workload "
        "identity, and registers the result as a Model. Immutable except suspend and cancel.",
        printer_columns=[
            PrinterColumn(name="Phase", type="string", json_path=".status.phase"),
            PrinterColumn(name="Dataset", type="string", json_path=".spec.dataset"),
            PrinterColumn(name="Model", type="string", json_path=".spec.model"),
            PrinterColumn(name="Output", type="string", json_path=".spec.outputModel"),
            PrinterColumn(name="Reward", type="string", json_path=".status.progress.meanReward"),
            PrinterColumn(name="Accelerator", type="string", json_path=".spec.accelerator.type", priority=1),
            PrinterColumn(name="Job", type="string", json_path=".status.jobName", priority=1),
            AGE_COLUMN,
            *condition_columns("Succeeded"),
        ],
        spec_validations=[
            *(
                {
                    "rule": _unchanged(f),
                    "message": f"spec.{f} is immutable: only spec.suspend and spec.cancel change after creation",
                    "fieldPath": f".{f}",
                }
                for f in _IMMUTABLE_FIELDS
            ),
            {
                "rule": "!has(oldSelf.cancel) || !oldSelf.cancel || (has(self.cancel) && self.cancel)",
                "message": "spec.cancel cannot be undone: create a new ReinforcementStep",
                "fieldPath": ".cancel",
            },
            {
                "rule": "self.model != self.outputModel",
                "message": "spec.outputModel must differ from spec.model",
                "fieldPath": ".outputModel",
            },
            {
                "rule": "self.accelerator.type == 'CPU' || self.accelerator.count >= 1",
                "message": "spec.accelerator.count must be at least 1 for a GPU accelerator type",
                "fieldPath": ".accelerator.count",
            },
            {
                "rule": "self.training.batchSize >= self.training.maxContextLength",
                "message": "spec.training.batchSize (a token budget) must be at least spec.training.maxContextLength",
                "fieldPath": ".training.batchSize",
            },
            {
                "rule": "!has(self.priorityClass) || has(self.queueName)",
                "message": "spec.priorityClass needs spec.queueName (Kueue orders only queued Jobs)",
                "fieldPath": ".priorityClass",
            },
        ],
    )

    kind: str = "ReinforcementStep"
    spec: ReinforcementStepSpec
    status: ReinforcementStepStatus = Field(default_factory=ReinforcementStepStatus)
