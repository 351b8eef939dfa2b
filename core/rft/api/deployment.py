"""Deployment: a served model behind an OpenAI-compatible endpoint."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from rft.api.common import (
    AGE_COLUMN,
    DNS1035_PATTERN,
    AcceleratorType,
    ApiModel,
    Condition,
    CrdInfo,
    ImageRef,
    ObjectName,
    PrinterColumn,
    Resource,
    condition_columns,
)

DeploymentPhase = Literal["CREATING", "READY", "UPDATING", "FAILED", "DELETING"]
DeploymentType = Literal["on-demand", "on-demand-lora", "serverless", "auto"]
Engine = Literal["vllm"]


class Accelerator(ApiModel):
    """Which accelerators each replica (or each training pod) gets."""

    type: AcceleratorType = Field(
        default="NVIDIA_A100_80GB",
        description="Accelerator type; the operator maps it to node labels and tolerations. "
        "CPU runs without GPUs (small models, local clusters).",
    )
    count: int = Field(default=1, ge=0, le=16, description="Accelerators per pod (0 only for CPU).")


class Autoscaling(ApiModel):
    """How the operator sizes a base Deployment between minReplicaCount and maxReplicaCount, from
    vLLM's own load gauges (requests running plus waiting, summed over the replicas)."""

    target_requests_per_replica: int = Field(
        default=16,
        ge=1,
        le=10_000,
        description="Requests in flight (vllm:num_requests_running + vllm:num_requests_waiting) one "
        "replica should carry: desired replicas = ceil(in flight / this), within the bounds. Lower it "
        "for long generations or small accelerators, raise it for short requests on large GPUs.",
    )
    scale_down_delay_seconds: int = Field(
        default=300,
        ge=0,
        le=86_400,
        description="Stabilization window: the load must call for fewer replicas for this long before "
        "the operator removes any (scale-up is immediate), as an HPA's scaleDown window.",
    )


class DeploymentSpec(ApiModel):
    """What to serve and how."""

    model: ObjectName = Field(
        description="The Model to serve: a base Model for on-demand, a LoRA Model for on-demand-lora."
    )
    deployment_type: DeploymentType = Field(
        description="on-demand: a base model on its own replicas. on-demand-lora: a LoRA checkpoint "
        "loaded onto the base Deployment named in baseDeployment (no new pods). serverless and auto "
        "are accepted for SDK compatibility and served as on-demand."
    )
    base_deployment: Annotated[str, Field(min_length=1, max_length=63, pattern=DNS1035_PATTERN)] | None = (
        Field(default=None, description="For on-demand-lora: the base Deployment to load the adapter onto.")
    )
    engine: Engine = Field(
        default="vllm",
        description="The serving engine: vllm (its GPU image, or its CPU image for accelerator type CPU).",
    )
    accelerator: Accelerator = Field(default_factory=Accelerator, description="Per replica.")
    min_replica_count: int = Field(default=1, ge=0, le=1000, description="Fewest replicas.")
    max_replica_count: int = Field(
        default=1,
        ge=1,
        le=1000,
        description="Most replicas. Above minReplicaCount, the operator scales between the two on "
        "vLLM's load (see autoscaling).",
    )
    autoscaling: Autoscaling = Field(
        default_factory=Autoscaling,
        description="How load decides the replica count when maxReplicaCount > minReplicaCount. "
        "Not used by on-demand-lora.",
    )
    service_account_name: ObjectName = Field(
        default="default",
        description="The ServiceAccount whose workload identity fetches model and adapter files.",
    )
    enable_lora: bool = Field(default=True, description="Serve LoRA adapters on this (base) deployment.")
    max_loras: int = Field(default=8, ge=1, le=256, description="Adapters resident at once.")
    max_lora_rank: int = Field(default=64, ge=1, le=512, description="Largest adapter rank served.")
    max_model_len: int | None = Field(
        default=None, ge=16, le=1_048_576, description="Longest context the server accepts."
    )
    image: ImageRef | None = Field(
        default=None,
        description="Overrides the operator's server image ([registry/]path[:tag][@sha256:...]).",
    )


    @model_validator(mode="after")
    def _consistent(self) -> DeploymentSpec:
        """The CRD's cross-field rules (spec_validations below), for objects the schema missed."""
        lora = self.deployment_type == "on-demand-lora"
        if lora != (self.base_deployment is not None):
            raise ValueError(
                "spec.baseDeployment is required when spec.deploymentType is on-demand-lora, and only then"
            )
        if self.min_replica_count > self.max_replica_count:
            raise ValueError("spec.minReplicaCount must not exceed spec.maxReplicaCount")
        if self.accelerator.type != "CPU" and self.accelerator.count < 1:
            raise ValueError("spec.accelerator.count must be at least 1 for a GPU accelerator type")
        return self


class LoadedAdapters(ApiModel):
    """Adapters resident on one replica."""

    pod: str = Field(description="Pod name.")
    adapters: list[str] = Field(default_factory=list, description="Adapter names loaded.")


class ColdStart(ApiModel):
    """Where a server replica's time to Ready went, from its pod's status timestamps (seconds)."""

    pod: str = Field(description="The replica.")
    node: str | None = Field(default=None, description="The node it runs on.")
    ready_at: datetime = Field(description="When it became Ready.")
    schedule_seconds: int = Field(ge=0, description="Created to scheduled on a node.")
    fetch_seconds: float = Field(
        ge=0, description="The init container fetching the model from the bucket (as it measured it)."
    )
    fetch_bytes: int | None = Field(default=None, ge=0, description="What it fetched, as it reported it.")
    start_seconds: int = Field(
        ge=0,
        description="The server container's start to Ready: engine start, weights load, and its "
        "adapters loaded (the readiness gate).",
    )
    total_seconds: int = Field(ge=0, description="Created to Ready (image pulls and volumes included).")


class DeploymentStatus(ApiModel):
    """Where to send requests, and what is loaded."""

    phase: DeploymentPhase | None = Field(
        default=None, description="CREATING, READY, UPDATING, FAILED or DELETING."
    )
    observed_generation: int | None = Field(default=None, description="The generation last acted on.")
    conditions: list[Condition] = Field(default_factory=list, description="Ready and friends.")
    endpoint: str | None = Field(
        default=None, description="Base URL of the OpenAI-compatible API (…/v1) inside the cluster."
    )
    served_model_name: str | None = Field(
        default=None, description="The model name clients send in requests."
    )
    ready_replicas: int | None = Field(default=None, ge=0, description="Replicas ready to serve.")
    desired_replicas: int | None = Field(
        default=None,
        ge=0,
        description="Replicas the operator runs (on-demand): minReplicaCount, or what the load calls "
        "for, within minReplicaCount..maxReplicaCount.",
    )
    scale_down_pending_since: datetime | None = Field(
        default=None,
        description="Since when the load has called for fewer than desiredReplicas (the scale-down "
        "window runs from here); unset while it does not.",
    )
    scale_down_pending_to: int | None = Field(
        default=None,
        ge=0,
        description="The most replicas the load called for since scaleDownPendingSince: where a "
        "scale-down goes once the window has passed.",
    )
    replicas: list[LoadedAdapters] = Field(default_factory=list, description="Adapters loaded per replica.")
    message: str | None = Field(default=None, description="Human-readable state.")
    last_cold_start: ColdStart | None = Field(
        default=None, description="The replica that became Ready last, and where its time went."
    )


class Deployment(Resource):
    """A served model (vLLM on GPUs, its CPU build on CPU)."""

    crd: ClassVar[CrdInfo] = CrdInfo(
        kind="Deployment",
        plural="deployments",
        singular="deployment",
        short_names=["rftdeploy", "rftd"],
        description="A served model behind an OpenAI-compatible endpoint. on-demand Deployments "
        "run server pods; on-demand-lora Deployments load an adapter onto a base Deployment. "
        "Shares its plural with apps/v1: use `kubectl get deployments.rft-operator.io` or `rftd`.",
        printer_columns=[
            PrinterColumn(name="Type", type="string", json_path=".spec.deploymentType"),
            PrinterColumn(name="Model", type="string", json_path=".spec.model"),
            PrinterColumn(name="Phase", type="string", json_path=".status.phase"),
            PrinterColumn(name="Desired", type="integer", json_path=".status.desiredReplicas"),
            PrinterColumn(name="Ready", type="integer", json_path=".status.readyReplicas"),
            PrinterColumn(name="Served-As", type="string", json_path=".status.servedModelName"),
            PrinterColumn(name="Endpoint", type="string", json_path=".status.endpoint", priority=1),
            AGE_COLUMN,
            *condition_columns("Ready"),
        ],
        # Its Service is <name>-server: the name must be an RFC 1035 label (it begins with a letter).
        name_pattern=DNS1035_PATTERN,
        validations=[
            {
                "rule": "!has(self.spec.baseDeployment) || self.spec.baseDeployment != self.metadata.name",
                "message": "spec.baseDeployment: a Deployment cannot load its adapter onto itself",
                "fieldPath": ".spec.baseDeployment",
            },
        ],
        spec_validations=[
            {
                "rule": "self.deploymentType != 'on-demand-lora' || has(self.baseDeployment)",
                "message": "spec.baseDeployment is required when spec.deploymentType is on-demand-lora",
                "fieldPath": ".baseDeployment",
            },
            {
                "rule": "self.deploymentType == 'on-demand-lora' || !has(self.baseDeployment)",
                "message": "spec.baseDeployment is only allowed when spec.deploymentType is on-demand-lora",
                "fieldPath": ".baseDeployment",
            },
            {
                "rule": "self.minReplicaCount <= self.maxReplicaCount",
                "message": "spec.minReplicaCount must not exceed spec.maxReplicaCount",
                "fieldPath": ".minReplicaCount",
            },
            {
                "rule": "self.accelerator.type == oldSelf.accelerator.type",
                "message": "spec.accelerator.type is immutable: delete and recreate the Deployment",
                "fieldPath": ".accelerator.type",
            },
            {
                "rule": "self.accelerator.type == 'CPU' || self.accelerator.count >= 1",
                "message": "spec.accelerator.count must be at least 1 for a GPU accelerator type",
                "fieldPath": ".accelerator.count",
            },
        ],
    )

    kind: str = "Deployment"
    spec: DeploymentSpec

    @model_validator(mode="after")
    def _not_its_own_base(self) -> Deployment:
        if self.metadata.name and self.spec.base_deployment == self.metadata.name:
            raise ValueError(f"spec.baseDeployment: a Deployment cannot name itself ({self.metadata.name})")
        return self

    status: DeploymentStatus = Field(default_factory=DeploymentStatus)
