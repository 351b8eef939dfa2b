"""TrainingSession: a warm trainer serving the Tinker API inside the cluster."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from rft.api.common import (
    AGE_COLUMN,
    DNS1035_PATTERN,
    ApiModel,
    Condition,
    CrdInfo,
    ImageRef,
    ObjectName,
    PrinterColumn,
    Resource,
    StorageURL,
    condition_columns,
)
from rft.api.deployment import Accelerator

SessionPhase = Literal["CREATING", "READY", "IDLE", "FAILED"]

TOKEN_AUDIENCE_PREFIX = "rft-operator.io/trainingsession"  # noqa: S105 - an audience, not a secret


def token_audience(namespace: str, name: str) -> str:
    """The audience a Kubernetes token must be bound to for the session `namespace/name`: one per
    session, so a token for one session is no use at another nor at the API server itself."""
    return f"{TOKEN_AUDIENCE_PREFIX}/{namespace}/{name}"


class SessionAuthentication(ApiModel):
    """How clients prove who they are (the API key in status.apiKeySecret always works)."""

    kubernetes_tokens: bool = Field(
        default=False,
        description="Also accept ServiceAccount tokens of this namespace, bound to the audience in "
        "status.tokenAudience, checked by the session pod with a TokenReview. The session's "
        "ServiceAccount must be allowed to create tokenreviews.authentication.k8s.io (a cluster "
        "admin's grant, e.g. the chart's workloadServiceAccounts.training.tokenReview); until it is, "
        "the session waits with reason TokenReviewNotPermitted.",
    )


class TrainingSessionSpec(ApiModel):
    """What the session pod holds and where it writes."""

    base_model: ObjectName = Field(
        description="The base Model (kind base, READY: its files checked and pinned) the session "
        "loads; clients pass its name as base_model."
    )
    max_lora_rank: int = Field(
        default=32,
        ge=1,
        le=512,
        description="The largest LoRA rank a client may create (create_lora_training_client(rank=...) "
        "above it is refused).",
    )
    max_context_length: int = Field(
        default=4096,
        ge=16,
        le=1_048_576,
        description="Longest datum (model_input plus its target), in tokens; longer ones are refused.",
    )
    accelerator: Accelerator = Field(
        default_factory=Accelerator,
        description="The session pod's accelerators (the accelerator map places it).",
    )
    service_account_name: ObjectName = Field(
        default="default",
        description="The ServiceAccount whose workload identity reads the base model and reads and "
        "writes stateLocation. The session gets no Kubernetes API token.",
    )
    trainer_image: ImageRef | None = Field(
        default=None,
        description="Overrides the operator's trainer image ([registry/]path[:tag][@sha256:...]); "
        "the cluster admin's allow-list applies.",
    )
    state_location: StorageURL = Field(
        description="Bucket prefix under which save_state and save_weights_for_sampler write "
        "(create-only), and from which load_state reads."
    )
    authentication: SessionAuthentication = Field(
        default_factory=SessionAuthentication,
        description="Which client credentials the session accepts besides its API key.",
    )
    sampling_deployment: (
        Annotated[str, Field(min_length=1, max_length=63, pattern=DNS1035_PATTERN)] | None
    ) = Field(
        default=None,
        description="The on-demand Deployment (vLLM, this namespace, serving baseModel with "
        "enableLora) that answers the session's sampling calls: saved sampler weights are "
        "registered as Models and loaded onto it as on-demand-lora Deployments. Unset: sampling "
        "is refused.",
    )
    idle_timeout_seconds: int = Field(
        default=3600,
        ge=0,
        le=30 * 86400,
        description="After this long without a client call, the operator scales the session to no "
        "pod (phase IDLE; its saved states stay in the bucket). 0: never. Any change to the spec "
        "wakes an idle session.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> TrainingSessionSpec:
        if self.accelerator.type != "CPU" and self.accelerator.count < 1:
            raise ValueError("spec.accelerator.count must be at least 1 for a GPU accelerator type")
        return self


class SamplerModel(ApiModel):
    """Sampler weights a client saved, as the operator registered and serves them."""

    path: str = Field(max_length=512, description="The client's tinker:// path of the weights.")
    model: ObjectName = Field(description="The Model (and on-demand-lora Deployment) registered for them.")
    served: bool = Field(default=False, description="Loaded and verified on the sampling Deployment.")


class TrainingSessionStatus(ApiModel):
    """Where clients connect, and whether the pod answers."""

    phase: SessionPhase | None = Field(default=None, description="CREATING, READY, IDLE or FAILED.")
    observed_generation: int | None = Field(default=None, description="The generation last acted on.")
    conditions: list[Condition] = Field(default_factory=list, description="Ready, Sampling.")
    message: str | None = Field(default=None, description="Human-readable state.")
    samplers: list[SamplerModel] = Field(
        default_factory=list,
        max_length=1000,
        description="Sampler weights saved through the session (save_weights_for_sampler), each "
        "registered as a Model and loaded onto spec.samplingDeployment.",
    )
    endpoint: str | None = Field(
        default=None,
        description="The Tinker API's base URL inside the cluster (tinker.ServiceClient(base_url=...)).",
    )
    api_key_secret: str | None = Field(
        default=None,
        description="The Secret in this namespace whose key api-key is the session's API key "
        "(readable by whoever may read Secrets here).",
    )
    token_audience: str | None = Field(
        default=None,
        description="With spec.authentication.kubernetesTokens: the audience a client's "
        "ServiceAccount token must carry (kubectl create token SA --audience ...).",
    )
    idle_since: datetime | None = Field(
        default=None, description="When the operator last saw a client call (as the pod reported it)."
    )
    idle_generation: int | None = Field(
        default=None,
        ge=0,
        description="The generation that went IDLE: it stays scaled to zero until the spec changes.",
    )


class TrainingSession(Resource):
    """A training session: one pod holding a base model and a LoRA adapter, serving the Tinker API."""

    crd: ClassVar[CrdInfo] = CrdInfo(
        kind="TrainingSession",
        plural="trainingsessions",
        singular="trainingsession",
        short_names=["rftsession", "tsession"],
        description="A warm training session: one pod holds the base Model and a LoRA adapter and "
        "serves the Tinker training API (forward_backward, optim_step, save_state, load_state, "
        "save_weights_for_sampler, sampling through a vLLM Deployment) inside the cluster, reading and writing the user's bucket "
        "through workload identity. Clients authenticate with the key in status.apiKeySecret or, with "
        "spec.authentication.kubernetesTokens, a ServiceAccount token of the namespace.",
        printer_columns=[
            PrinterColumn(name="Base", type="string", json_path=".spec.baseModel"),
            PrinterColumn(name="Phase", type="string", json_path=".status.phase"),
            PrinterColumn(name="Accelerator", type="string", json_path=".spec.accelerator.type"),
            PrinterColumn(name="Sampling", type="string", json_path=".spec.samplingDeployment", priority=1),
            PrinterColumn(name="Endpoint", type="string", json_path=".status.endpoint", priority=1),
            PrinterColumn(name="Secret", type="string", json_path=".status.apiKeySecret", priority=1),
            AGE_COLUMN,
            *condition_columns("Ready"),
        ],
        # Its Service is <name>-session: the name must be an RFC 1035 label.
        name_pattern=DNS1035_PATTERN,
        spec_validations=[
            {
                "rule": "self.accelerator.type == 'CPU' || self.accelerator.count >= 1",
                "message": "spec.accelerator.count must be at least 1 for a GPU accelerator type",
                "fieldPath": ".accelerator.count",
            },
            {
                "rule": "self.baseModel == oldSelf.baseModel",
                "message": "spec.baseModel is immutable: create a new TrainingSession",
                "fieldPath": ".baseModel",
            },
            {
                "rule": "self.stateLocation == oldSelf.stateLocation",
                "message": "spec.stateLocation is immutable: its saved states are named by it",
                "fieldPath": ".stateLocation",
            },
        ],
    )

    kind: str = "TrainingSession"
    spec: TrainingSessionSpec
    status: TrainingSessionStatus = Field(default_factory=TrainingSessionStatus)
