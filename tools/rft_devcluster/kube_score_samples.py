"""Sample resources, and the children the operator's pure builders make of them, for the manifest
lint (rft_devcluster.kube_score): every kind of pod the operator creates, each serving engine image."""

from __future__ import annotations

from typing import Any

from rft.api import Dataset, Deployment, Model, ReinforcementStep, TrainingSession
from rft.pods.admin_guard import token_sha256
from rft_operator.accelerators import AcceleratorMap
from rft_operator.builders.jobs import (
    build_model_check_job,
    build_training_job,
    build_validation_job,
    default_output_location,
    trainer_config,
)
from rft_operator.builders.serving import build_server_deployment, build_server_service
from rft_operator.builders.session import (
    build_api_key_secret,
    build_session_deployment,
    build_session_service,
)
from rft_operator.config import OperatorConfig

Manifest = dict[str, Any]
NAMESPACE = "team-a"
DIGEST = "sha256:" + "ab" * 32
# The chart's default images (a tag, not latest).
CONFIG = OperatorConfig()
ACCELERATORS = AcceleratorMap.load(None)


def _model(name: str, total_bytes: int | None) -> Model:
    status: dict[str, Any] = {"phase": "READY", "filesDigest": DIGEST}
    if total_bytes is not None:
        status["totalBytes"] = total_bytes
    return Model.model_validate(
        {
            "metadata": {"name": name, "namespace": NAMESPACE, "uid": f"uid-{name}", "generation": 1},
            "spec": {
                "kind": "base",
                "location": f"s3://bkt/rft/models/{name}/",
                "serviceAccountName": "rft-server",
            },
            "status": status,
        }
    )


def _dataset() -> Dataset:
    return Dataset.model_validate(
        {
            "metadata": {"name": "ds", "namespace": NAMESPACE, "uid": "uid-ds", "generation": 1},
            "spec": {"source": "s3://bkt/rft/datasets/ds.jsonl", "serviceAccountName": "rft-trainer"},
            "status": {
                "phase": "READY",
                "digest": DIGEST,
                "resolvedSource": "s3://bkt/rft/datasets/ds.jsonl",
            },
        }
    )


def _step(accelerator: dict[str, Any]) -> ReinforcementStep:
    return ReinforcementStep.model_validate(
        {
            "metadata": {"name": "step-1", "namespace": NAMESPACE, "uid": "uid-step", "generation": 1},
            "spec": {
                "dataset": "ds",
                "model": "llama-8b",
                "outputModel": "ckpt-1",
                "serviceAccountName": "rft-trainer",
                "accelerator": accelerator,
            },
        }
    )


def _deployment(accelerator: dict[str, Any], *, enable_lora: bool) -> Deployment:
    return Deployment.model_validate(
        {
            "metadata": {"name": "served", "namespace": NAMESPACE, "uid": "uid-served", "generation": 1},
            "spec": {
                "model": "llama-8b",
                "deploymentType": "on-demand",
                "engine": "vllm",
                "accelerator": accelerator,
                "serviceAccountName": "rft-server",
                "enableLora": enable_lora,
                "minReplicaCount": 2,
                "maxReplicaCount": 4,
            },
        }
    )


def _session(accelerator: dict[str, Any]) -> TrainingSession:
    return TrainingSession.model_validate(
        {
            "metadata": {"name": "warm", "namespace": NAMESPACE, "uid": "uid-warm", "generation": 1},
            "spec": {
                "baseModel": "llama-8b",
                "accelerator": accelerator,
                "serviceAccountName": "rft-trainer",
                "stateLocation": "s3://bkt/rft/sessions/",
            },
        }
    )


def builder_manifests() -> dict[str, list[Manifest]]:
    """`builders/<name>` -> the objects the operator would create for it."""
    gpu_model = _model("llama-8b", 16 * 10**9)  # an 8B model in bf16
    cpu_model = _model("qwen-0-5b", 10**9)
    out: dict[str, list[Manifest]] = {}
    for name, accelerator in {
        "training-job-gpu": {"type": "NVIDIA_H100_80GB", "count": 2},
        "training-job-cpu": {"type": "CPU", "count": 0},
    }.items():
        step = _step(accelerator)
        trainer = trainer_config(
            step, _dataset(), gpu_model, gpu_model, default_output_location(gpu_model, "ckpt-1"), CONFIG
        )
        out[f"builders/{name}"] = [build_training_job(step, trainer, ACCELERATORS, CONFIG)]
    out["builders/validation-job"] = [build_validation_job(_dataset(), CONFIG)]
    out["builders/model-check-job"] = [build_model_check_job(_model("llama-8b", None), CONFIG)]
    for name, accelerator, model, lora in [
        ("server-vllm-gpu", {"type": "NVIDIA_H100_80GB", "count": 1}, gpu_model, True),
        (
            "server-vllm-gpu-unsized-model",
            {"type": "NVIDIA_A100_80GB", "count": 2},
            _model("big", None),
            True,
        ),
        ("server-vllm-cpu", {"type": "CPU", "count": 1}, cpu_model, False),
    ]:
        dep = _deployment(accelerator, enable_lora=lora)
        out[f"builders/{name}"] = [
            build_server_deployment(
                dep, model, ACCELERATORS, CONFIG, replicas=2, admin_token_sha256=token_sha256("token")
            ),
            build_server_service(dep),
        ]
    for name, accelerator, model in [
        ("training-session-gpu", {"type": "NVIDIA_H100_80GB", "count": 1}, gpu_model),
        ("training-session-cpu", {"type": "CPU", "count": 0}, cpu_model),
    ]:
        session = _session(accelerator)
        out[f"builders/{name}"] = [
            build_session_deployment(session, model, ACCELERATORS, CONFIG, replicas=1),
            build_session_service(session),
            build_api_key_secret(session, "tml-" + "k" * 32),
        ]
    return out
