"""Pure builders of the Jobs the operator runs: training (one per step), dataset validation and
the base model check."""

from __future__ import annotations

from typing import Any

from rft.api import Dataset, Model, ReinforcementStep
from rft.api.reinforcement_step import MlflowTracking
from rft.contracts import entrypoints
from rft.contracts.model_check import CHECK_CONTAINER
from rft.contracts.model_check import EXIT_INVALID as CHECK_EXIT_INVALID
from rft.contracts.trainer_config import CONFIG_ENV_VAR, EXIT_BAD_INPUT, TrainerConfig
from rft.contracts.validation_summary import EXIT_INVALID as VALIDATE_EXIT_INVALID

from rft_operator import naming
from rft_operator.accelerators import AcceleratorMap
from rft_operator.builders.pods import (
    GIB,
    MIB,
    SCRATCH,
    TERMINATION_LOG,
    Manifest,
    container_security_context,
    offline_env,
    owner_reference,
    pod_security_context,
    quantity_bytes,
    scratch_volumes,
    with_storage,
)
from rft_operator.config import OperatorConfig
from rft_operator.jobstate import COMPLETION_INDEX_ANNOTATION

TRAINER_CONTAINER = "trainer"
VALIDATOR_CONTAINER = "validate"
# The reader Jobs' scratch: small files only (they stream the dataset or the model's files).
READER_SCRATCH = "1Gi"
# What a trainer writes when the base model's size is unknown (no per-file sizes in its status).
TRAINER_STORAGE_UNKNOWN_MODEL = 20 * GIB
# Between SIGTERM (suspend, preemption, drain) and SIGKILL the trainer finishes its optimizer step
# and uploads its in-step checkpoint (rft_trainer.resume): more than Kubernetes' default 30 s.
TRAINER_GRACE_SECONDS = 180


def trainer_resources(
    trainer: TrainerConfig, accelerators: AcceleratorMap, accelerator_type: str, count: int, scratch_size: str
) -> Manifest:
    """CPU, memory and accelerators from the accelerator map; ephemeral storage from the work: the
    base model's files copied into scratch, a merged or saved copy and the checkpoints (about twice
    the model, plus 4Gi for the dataset, adapters and caches), up to the scratch volume's limit."""
    model = sum(f.size for f in trainer.base_model_files)
    expected = 2 * model + 4 * GIB if model else TRAINER_STORAGE_UNKNOWN_MODEL
    return with_storage(accelerators.pod_resources(accelerator_type, count), expected, quantity_bytes(scratch_size))


def reader_resources() -> Manifest:
    """The dataset validation and model check: one Python process streaming from the bucket."""
    return with_storage(
        {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}},
        256 * MIB,
        quantity_bytes(READER_SCRATCH),
    )


# The Secret keys MLflow's client reads from the environment (each optional in the Secret).
MLFLOW_CREDENTIAL_KEYS = ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


def mlflow_tracking(step: ReinforcementStep, config: OperatorConfig) -> MlflowTracking | None:
    """The step's own MLflow settings, else the operator's default server, else none."""
    if step.spec.tracking is not None:
        return step.spec.tracking.mlflow
    if config.mlflow_tracking_uri is None:
        return None
    return MlflowTracking(tracking_uri=config.mlflow_tracking_uri, experiment=config.mlflow_experiment)


def mlflow_credentials_env(trainer: TrainerConfig, config: OperatorConfig) -> list[Manifest]:
    """The admin's credentials Secret as environment variables, only for the admin's own server: a
    step that names another server gets nothing (it must not carry the Secret elsewhere)."""
    secret = config.mlflow_credentials_secret
    if secret is None or trainer.mlflow is None or trainer.mlflow.tracking_uri != config.mlflow_tracking_uri:
        return []
    return [
        {"name": key, "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": True}}}
        for key in MLFLOW_CREDENTIAL_KEYS
    ]


def default_output_location(source: Model, output_model: str) -> str:
    """Next to the source model: `<...>/models/<source>/` -> `<...>/models/<output_model>/`."""
    location = source.spec.location.rstrip("/")
    parent = location.rsplit("/", 1)[0]
    return f"{parent}/{output_model}/"


def trainer_config(
    step: ReinforcementStep,
    dataset: Dataset,
    source: Model,
    base: Model,
    output_location: str,
    config: OperatorConfig,
) -> TrainerConfig:
    """What the trainer is told: everything it needs and nothing more (no credentials)."""
    warm_start = source.spec.kind == "lora"
    assert dataset.status.digest is not None, "the dataset must be validated first"
    return TrainerConfig(
        step_name=step.metadata.name,
        namespace=step.metadata.namespace,
        dataset_url=dataset.status.resolved_source or dataset.spec.source,
        dataset_digest=dataset.status.digest,
        dataset_format=dataset.spec.format,
        reward_weights=dict(step.spec.reward_weights),
        base_model_url=base.spec.location,
        base_model_name=base.metadata.name,
        base_model_files_digest=base.status.files_digest,
        base_model_files=list(base.status.files),
        parent_adapter_url=source.spec.location if warm_start else None,
        parent_model_name=source.metadata.name if warm_start else None,
        output_url=output_location,
        output_model_name=step.spec.output_model,
        training=step.spec.training,
        loss=step.spec.loss,
        scratch_dir=SCRATCH,
        termination_log=TERMINATION_LOG,
        progress_port=config.progress_port,
        step_uid=step.metadata.uid or None,
        mlflow=mlflow_tracking(step, config),
    )


# The c10d rendezvous store, hosted by the torchrun agent of completion index 0.
RENDEZVOUS_PORT = 29400
# How long agents wait for each other, the store's host (index 0) included: pods of one step start
# minutes apart (image pulls, node scale-up), and index 0 may be the last.
RENDEZVOUS_TIMEOUT_SECONDS = 1800
NODE_RANK_ENV = "RFT_NODE_RANK"
# Kueue's label: the Job belongs to this LocalQueue; Kueue unsuspends it when admitted.
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
# ... and this WorkloadPriorityClass orders it in the queue and against other workloads when Kueue
# preempts (Kueue's WorkloadPriorityClassLabel, pkg/controller/constants).
KUEUE_PRIORITY_CLASS_LABEL = "kueue.x-k8s.io/priority-class"


def trainer_command(per_node: int, nodes: int = 1, service: str = "", run_id: str = "") -> list[str]:
    if nodes > 1:
        # One agent per node; the agents meet at index 0's c10d store through the headless
        # Service. The other agents retry connecting until the timeout, so index 0 may start last.
        return [
            "torchrun",
            f"--nnodes={nodes}",
            f"--nproc-per-node={per_node}",
            f"--node-rank=$({NODE_RANK_ENV})",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={service}-0.{service}:{RENDEZVOUS_PORT}",
            f"--rdzv-id={run_id}",
            f"--rdzv-conf=join_timeout={RENDEZVOUS_TIMEOUT_SECONDS},read_timeout={RENDEZVOUS_TIMEOUT_SECONDS}",
            "-m",
            entrypoints.TRAINER,
        ]
    if per_node > 1:
        # One process per GPU; the frozen base is sharded over them (FSDP2, rft_trainer.sharding).
        return ["torchrun", "--standalone", f"--nproc-per-node={per_node}", "-m", entrypoints.TRAINER]
    return entrypoints.python_command(entrypoints.TRAINER)


def build_rendezvous_service(step: ReinforcementStep) -> Manifest:
    """The headless Service that gives a multi-node step's pods DNS names (`<job>-<index>.<job>`)."""
    name = naming.training_job_name(step.metadata.name)
    labels = naming.labels("trainer", **{naming.LABEL_STEP: step.metadata.name})
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": step.metadata.namespace,
            "labels": labels,
            "ownerReferences": [owner_reference(step)],
        },
        "spec": {
            "clusterIP": "None",
            "selector": labels,
            # The agents resolve each other before any of them is ready.
            "publishNotReadyAddresses": True,
            "ports": [{"name": "rendezvous", "port": RENDEZVOUS_PORT, "protocol": "TCP"}],
        },
    }


def build_training_job(
    step: ReinforcementStep,
    trainer: TrainerConfig,
    accelerators: AcceleratorMap,
    config: OperatorConfig,
) -> Manifest:
    """The batch/v1 Job of one reinforcement step."""
    name = naming.training_job_name(step.metadata.name)
    acc = step.spec.accelerator
    placement = accelerators.placement(acc.type)
    nodes, per_node = accelerators.nodes(acc.type, acc.count)
    labels = naming.labels("trainer", **{naming.LABEL_STEP: step.metadata.name})
    volumes, mounts = scratch_volumes(config.scratch_size, shm_size="16Gi" if acc.type != "CPU" else None)
    container: Manifest = {
        "name": TRAINER_CONTAINER,
        "image": step.spec.trainer_image or config.trainer_image,
        "imagePullPolicy": config.image_pull_policy,
        "command": trainer_command(per_node if acc.type != "CPU" else 1, nodes, name, step.metadata.uid),
        "env": [
            {"name": CONFIG_ENV_VAR, "value": trainer.to_json()},
            *offline_env(),
            *mlflow_credentials_env(trainer, config),
        ],
        "ports": [{"name": "progress", "containerPort": config.progress_port, "protocol": "TCP"}],
        "resources": trainer_resources(trainer, accelerators, acc.type, per_node, config.scratch_size),
        "securityContext": container_security_context(),
        "volumeMounts": mounts,
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pod_spec: Manifest = {
        "serviceAccountName": step.spec.service_account_name,
        # The trainer never talks to the Kubernetes API. Workload identity still works: EKS's
        # webhook projects its own web-identity token; GKE uses the metadata server.
        "automountServiceAccountToken": False,
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": TRAINER_GRACE_SECONDS,
        "securityContext": pod_security_context(),
        "containers": [container],
        "volumes": volumes,
    }
    if placement.node_selector:
        pod_spec["nodeSelector"] = dict(placement.node_selector)
    if placement.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in placement.tolerations]
    job_spec: Manifest = {
        "backoffLimit": step.spec.backoff_limit,
        # Queued Jobs start suspended, as Kueue expects: admission unsuspends them.
        "suspend": step.spec.suspend or step.spec.queue_name is not None,
        # Bad input (exit 1) fails at once: retrying cannot fix a bad dataset or checkpoint.
        "podFailurePolicy": {
            "rules": [
                {
                    "action": "FailJob",
                    "onExitCodes": {
                        "containerName": TRAINER_CONTAINER,
                        "operator": "In",
                        "values": [EXIT_BAD_INPUT],
                    },
                },
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            ]
        },
        "template": {"metadata": _pod_metadata(step, labels), "spec": pod_spec},
    }
    if nodes > 1:
        # One Job of `nodes` pods: pod i is <job>-i.<job> (headless Service of the same name).
        job_spec.update({"completionMode": "Indexed", "completions": nodes, "parallelism": nodes})
        pod_spec["subdomain"] = name
        container["env"].append(
            {
                "name": NODE_RANK_ENV,
                "valueFrom": {
                    "fieldRef": {
                        "fieldPath": f"metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']"
                    }
                },
            }
        )
        container["ports"].append({"name": "rendezvous", "containerPort": RENDEZVOUS_PORT, "protocol": "TCP"})
    if step.spec.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = step.spec.active_deadline_seconds
    job_labels = dict(labels)
    if step.spec.queue_name is not None:
        job_labels[KUEUE_QUEUE_LABEL] = step.spec.queue_name
    if step.spec.priority_class is not None:
        job_labels[KUEUE_PRIORITY_CLASS_LABEL] = step.spec.priority_class
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": step.metadata.namespace,
            "labels": job_labels,
            "annotations": {naming.ANNOTATION_STEP_UID: step.metadata.uid},
            "ownerReferences": [owner_reference(step)],
        },
        "spec": job_spec,
    }


def _pod_metadata(step: ReinforcementStep, labels: dict[str, str]) -> Manifest:
    extra = step.spec.pod_metadata
    meta: Manifest = {"labels": {**(extra.labels if extra else {}), **labels}}
    if extra and extra.annotations:
        meta["annotations"] = dict(extra.annotations)
    return meta


def build_validation_job(dataset: Dataset, config: OperatorConfig) -> Manifest:
    """A short Job that streams the dataset once under the Dataset's ServiceAccount."""
    limits = dataset.spec.limits
    args: list[str] = [
        "--source",
        dataset.spec.source,
        "--format",
        dataset.spec.format,
        "--min-rows",
        str(limits.min_rows),
        "--max-rows",
        str(limits.max_rows),
        "--max-line-bytes",
        str(limits.max_line_bytes),
        "--termination-log",
        TERMINATION_LOG,
    ]
    return _reader_job(
        owner=dataset,
        name=naming.validation_job_name(dataset.metadata.name, dataset.metadata.generation),
        labels=naming.labels("dataset-validation", **{naming.LABEL_DATASET: dataset.metadata.name}),
        service_account=dataset.spec.service_account_name,
        container=VALIDATOR_CONTAINER,
        command=entrypoints.python_command(entrypoints.DATASET_VALIDATOR, *args),
        invalid_exit_code=VALIDATE_EXIT_INVALID,
        image=config.trainer_image,
        config=config,
    )


def build_model_check_job(model: Model, config: OperatorConfig) -> Manifest:
    """A short Job that reads a base model's folder once under the Model's ServiceAccount, checks
    that a server could load it and reports every file's digest (rft.pods.check_model)."""
    return _reader_job(
        owner=model,
        name=naming.model_check_job_name(model.metadata.name, model.metadata.generation),
        labels=naming.labels("model-check", **{naming.LABEL_MODEL: model.metadata.name}),
        service_account=model.spec.service_account_name,
        container=CHECK_CONTAINER,
        command=entrypoints.python_command(
            entrypoints.MODEL_CHECK,
            "--location",
            model.spec.location,
            "--termination-log",
            TERMINATION_LOG,
        ),
        invalid_exit_code=CHECK_EXIT_INVALID,
        # The check needs only the storage clients: the small image, not the trainer's.
        image=config.serving_helpers_image,
        config=config,
    )


def _reader_job(
    *,
    owner: Dataset | Model,
    name: str,
    labels: dict[str, str],
    service_account: str,
    container: str,
    command: list[str],
    invalid_exit_code: int,
    image: str,
    config: OperatorConfig,
) -> Manifest:
    """A Job of one container that reads the bucket under `service_account` and reports through its
    termination message: bad input (`invalid_exit_code`) fails it at once, storage trouble retries."""
    volumes, mounts = scratch_volumes(READER_SCRATCH)
    spec: dict[str, Any] = {
        "name": container,
        "image": image,
        "imagePullPolicy": config.image_pull_policy,
        "command": command[:3],
        "args": command[3:],
        "env": offline_env(),
        "resources": reader_resources(),
        "securityContext": container_security_context(),
        "volumeMounts": mounts,
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": owner.metadata.namespace,
            "labels": labels,
            "ownerReferences": [owner_reference(owner)],
        },
        "spec": {
            "backoffLimit": 2,
            "ttlSecondsAfterFinished": config.validation_job_ttl_seconds,
            "activeDeadlineSeconds": 6 * 3600,
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailJob",
                        "onExitCodes": {
                            "containerName": container,
                            "operator": "In",
                            "values": [invalid_exit_code],
                        },
                    }
                ]
            },
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": service_account,
                    "automountServiceAccountToken": False,
                    "restartPolicy": "Never",
                    "securityContext": pod_security_context(),
                    "containers": [spec],
                    "volumes": volumes,
                },
            },
        },
    }
