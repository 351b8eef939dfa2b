"""Invalid objects of the five kinds, each with the field its refusal or failure must name.

Each case is a valid object with one thing wrong. `tests/invalid_objects/test_invalid_models.py`
checks them against the models; `tests/operator/test_invalid_objects.py` creates them all on the
local control plane and checks that each is refused (422 naming the field) or reaches its FAILED
phase with a condition naming the field, within a bounded time.

`operator_only` marks what only the operator can see (the cluster's ServiceAccounts, the admin's
image policy): those parse, and the operator fails them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

KIND_PLURAL = {
    "Dataset": "datasets",
    "Model": "models",
    "Deployment": "deployments",
    "ReinforcementStep": "reinforcementsteps",
    "TrainingSession": "trainingsessions",
}
FAILED_PHASE = {
    "Dataset": "FAILED",
    "Model": "FAILED",
    "Deployment": "FAILED",
    "ReinforcementStep": "JOB_STATE_FAILED",
    "TrainingSession": "FAILED",
}
SUMMARY_CONDITION = {
    "Dataset": "Ready",
    "Model": "Ready",
    "Deployment": "Ready",
    "ReinforcementStep": "Succeeded",
    "TrainingSession": "Ready",
}

MISSING_SA = "no-such-service-account"
FORBIDDEN_IMAGE = "evil.example/miner:latest"
HEX = "0" * 64


@dataclass(frozen=True)
class Case:
    id: str
    kind: str
    name: str
    spec: dict[str, Any]
    field: str
    operator_only: bool = False
    tags: tuple[str, ...] = field(default=())

    def body(self) -> dict[str, Any]:
        return {
            "apiVersion": "rft-operator.io/v1alpha1",
            "kind": self.kind,
            "metadata": {"name": self.name},
            "spec": copy.deepcopy(self.spec),
        }


def _set(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(base)
    node = out
    *parents, last = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    if value is _DELETE:
        node.pop(last, None)
    else:
        node[last] = value
    return out


_DELETE = object()

DATASET = {"source": "s3://bucket-a/rft/datasets/ds.jsonl"}
BASE = {"kind": "base", "location": "s3://bucket-a/rft/models/base/"}
LORA = {
    "kind": "lora",
    "location": "s3://bucket-a/rft/models/ckpt/",
    "baseModel": "base",
    "lora": {"rank": 16, "alpha": 32, "targetModules": ["q_proj", "v_proj"]},
    "training": {
        "learningRate": "1e-4",
        "maxContextLength": 8192,
        "batchSize": 32768,
        "epochs": 1,
        "lossMethod": "grpo",
    },
}
CANARY = {"tokenIds": [1, 2, 3], "logprobs": ["-1.5", "-2.25"], "dtype": "float32", "startDistance": "0.1"}
DEPLOYMENT = {"model": "base", "deploymentType": "on-demand", "accelerator": {"type": "NVIDIA_H100_80GB"}}
STEP = {
    "dataset": "ds",
    "model": "base",
    "outputModel": "out",
    "accelerator": {"type": "NVIDIA_H100_80GB", "count": 1},
}
SESSION = {"baseModel": "base", "stateLocation": "s3://bucket-a/rft/sessions/", "accelerator": {"type": "CPU", "count": 0}}


def _cases() -> list[Case]:
    cases: list[Case] = []

    def add(kind: str, id_: str, base: dict[str, Any], path: str | None, value: Any, field_: str, **kw: Any) -> None:
        spec = _set(base, path, value) if path else copy.deepcopy(base)
        name = kw.pop("name", id_)
        if kind == "ReinforcementStep" and "outputModel" in spec and spec["outputModel"] == "out":
            spec["outputModel"] = f"{id_[:55]}-out"
        cases.append(Case(id_, kind, name, spec, field_, **kw))

    # --- Dataset --------------------------------------------------------------------------------
    ds = "Dataset"
    add(ds, "ds-name-too-long", DATASET, None, None, "metadata.name", name="d" * 64)
    add(ds, "ds-name-dotted", DATASET, None, None, "metadata.name", name="ds.dotted")
    add(ds, "ds-name-upper", DATASET, None, None, "metadata.name", name="DS-Upper")
    add(ds, "ds-source-empty", DATASET, "source", "", "spec.source")
    add(ds, "ds-source-http", DATASET, "source", "http://bucket-a/ds.jsonl", "spec.source")
    add(ds, "ds-source-dotdot", DATASET, "source", "s3://bucket-a/rft/../../etc/ds.jsonl", "spec.source")
    add(ds, "ds-source-dot", DATASET, "source", "s3://bucket-a/rft/./ds.jsonl", "spec.source")
    add(ds, "ds-source-empty-segment", DATASET, "source", "s3://bucket-a//ds.jsonl", "spec.source")
    add(ds, "ds-source-space", DATASET, "source", "s3://bucket-a/my ds.jsonl", "spec.source")
    add(ds, "ds-source-newline", DATASET, "source", "s3://bucket-a/ds.jsonl\n", "spec.source")
    add(ds, "ds-source-tab", DATASET, "source", "s3://bucket-a/ds\t.jsonl", "spec.source")
    add(ds, "ds-source-nul", DATASET, "source", "s3://bucket-a/ds\u0000.jsonl", "spec.source")
    add(ds, "ds-source-query", DATASET, "source", "s3://bucket-a/ds.jsonl?versionId=1", "spec.source")
    add(ds, "ds-bucket-upper", DATASET, "source", "s3://Bucket-A/ds.jsonl", "spec.source")
    add(ds, "ds-bucket-short", DATASET, "source", "s3://ab/ds.jsonl", "spec.source")
    add(ds, "ds-bucket-long", DATASET, "source", f"s3://{'b' * 64}/ds.jsonl", "spec.source")
    add(ds, "ds-bucket-ip", DATASET, "source", "s3://192.168.1.1/ds.jsonl", "spec.source")
    add(ds, "ds-bucket-double-dot", DATASET, "source", "s3://bucket..a/ds.jsonl", "spec.source")
    add(ds, "ds-bucket-dash-start", DATASET, "source", "s3://-bucket/ds.jsonl", "spec.source")
    add(ds, "ds-bucket-underscore-s3", DATASET, "source", "s3://bucket_a/ds.jsonl", "spec.source")
    add(ds, "ds-bucket-reserved-s3", DATASET, "source", "s3://xn--bucket/ds.jsonl", "spec.source")
    add(ds, "ds-bucket-reserved-gcs", DATASET, "source", "gs://goog-bucket/ds.jsonl", "spec.source")
    add(ds, "ds-bucket-gcs-long-part", DATASET, "source", f"gs://{'g' * 64}.example/ds.jsonl", "spec.source")
    add(ds, "ds-file-relative", DATASET, "source", "file://relative/ds.jsonl", "spec.source")
    add(ds, "ds-source-huge", DATASET, "source", "s3://bucket-a/" + "k/" * 600 + "ds.jsonl", "spec.source")
    add(ds, "ds-min-rows-zero", DATASET, "limits.minRows", 0, "spec.limits.minRows")
    add(ds, "ds-max-rows-negative", DATASET, "limits.maxRows", -5, "spec.limits.maxRows")
    add(ds, "ds-min-above-max", _set(DATASET, "limits.maxRows", 10), "limits.minRows", 20, "spec.limits.minRows")
    add(ds, "ds-line-bytes-tiny", DATASET, "limits.maxLineBytes", 10, "spec.limits.maxLineBytes")
    add(ds, "ds-line-bytes-huge", DATASET, "limits.maxLineBytes", 2**40, "spec.limits.maxLineBytes")
    add(ds, "ds-min-rows-fraction", DATASET, "limits.minRows", 1.5, "spec.limits.minRows")
    add(ds, "ds-format-unknown", DATASET, "format", "csv", "spec.format")
    add(ds, "ds-sa-malformed", DATASET, "serviceAccountName", "Bad_SA", "spec.serviceAccountName")
    add(ds, "ds-sa-empty", DATASET, "serviceAccountName", "", "spec.serviceAccountName")
    add(ds, "ds-managed-not-bool", DATASET, "managedBySdk", "yes", "spec.managedBySdk")
    add(ds, "ds-sa-missing", DATASET, "serviceAccountName", MISSING_SA, "spec.serviceAccountName", operator_only=True)

    # --- Model ----------------------------------------------------------------------------------
    m = "Model"
    add(m, "m-name-too-long", BASE, None, None, "metadata.name", name="m" * 64)
    add(m, "m-kind-unknown", BASE, "kind", "adapter", "spec.kind")
    add(m, "m-location-dotdot", BASE, "location", "s3://bucket-a/models/../../x/", "spec.location")
    add(m, "m-location-empty", BASE, "location", "", "spec.location")
    add(m, "m-location-ftp", BASE, "location", "ftp://bucket-a/models/x/", "spec.location")
    add(m, "m-lora-no-base", LORA, "baseModel", _DELETE, "spec.baseModel")
    add(m, "m-lora-no-settings", LORA, "lora", _DELETE, "spec.lora")
    add(m, "m-base-with-base-model", BASE, "baseModel", "other", "spec.baseModel")
    add(m, "m-base-with-training", BASE, "training", LORA["training"], "spec.training")
    add(m, "m-base-with-digest", BASE, "datasetDigest", f"sha256:{HEX}", "spec.datasetDigest")
    add(m, "m-base-with-canary", BASE, "canary", CANARY, "spec.canary")
    add(m, "m-parent-is-base", LORA, "parent", "base", "spec.parent")
    add(m, "m-base-model-self", LORA, "baseModel", "m-base-model-self", "spec.baseModel")
    add(m, "m-parent-self", LORA, "parent", "m-parent-self", "spec.parent")
    add(m, "m-base-model-malformed", LORA, "baseModel", "Base_Model", "spec.baseModel")
    add(m, "m-rank-zero", LORA, "lora.rank", 0, "spec.lora.rank")
    add(m, "m-rank-huge", LORA, "lora.rank", 100000, "spec.lora.rank")
    add(m, "m-alpha-negative", LORA, "lora.alpha", -1, "spec.lora.alpha")
    add(m, "m-modules-empty", LORA, "lora.targetModules", [], "spec.lora.targetModules")
    add(m, "m-modules-duplicate", LORA, "lora.targetModules", ["q_proj", "q_proj"], "spec.lora.targetModules")
    add(m, "m-modules-path", LORA, "lora.targetModules", ["../q_proj"], "spec.lora.targetModules")
    add(m, "m-dropout-one", LORA, "lora.dropout", "1", "spec.lora.dropout")
    add(m, "m-dropout-nan", LORA, "lora.dropout", "nan", "spec.lora.dropout")
    add(m, "m-lr-zero", LORA, "training.learningRate", "0", "spec.training.learningRate")
    add(m, "m-lr-overflow", LORA, "training.learningRate", "1e999", "spec.training.learningRate")
    add(m, "m-loss-unknown", LORA, "training.lossMethod", "ppo", "spec.training.lossMethod")
    add(m, "m-epochs-zero", LORA, "training.epochs", 0, "spec.training.epochs")
    add(m, "m-context-huge", LORA, "training.maxContextLength", 2**40, "spec.training.maxContextLength")
    add(m, "m-step-malformed", LORA, "training.step", "Step/One", "spec.training.step")
    files = [{"path": "adapter_model.safetensors", "sha256": HEX, "size": 10}]
    for id_, path in [
        ("m-file-traversal", "../../etc/passwd"),
        ("m-file-absolute", "/abs/adapter.safetensors"),
        ("m-file-empty-segment", "a//adapter.safetensors"),
        ("m-file-dot-segment", "a/./adapter.safetensors"),
        ("m-file-backslash", "..\\adapter.safetensors"),
        ("m-file-empty", ""),
    ]:
        add(m, id_, LORA, "files", [{**files[0], "path": path}], "spec.files[0].path")
    add(m, "m-file-bad-digest", LORA, "files", [{**files[0], "sha256": "xyz"}], "spec.files[0].sha256")
    add(m, "m-file-negative-size", LORA, "files", [{**files[0], "size": -1}], "spec.files[0].size")
    add(m, "m-file-listed-twice", LORA, "files", files * 2, "spec.files[1].path")
    add(m, "m-digest-md5", LORA, "datasetDigest", "md5:abc", "spec.datasetDigest")
    add(m, "m-canary-count", LORA, "canary", {**CANARY, "logprobs": ["-1"]}, "spec.canary.logprobs")
    add(m, "m-canary-token-negative", LORA, "canary", {**CANARY, "tokenIds": [1, -2, 3]}, "spec.canary.tokenIds")
    add(m, "m-canary-logprob-inf", LORA, "canary", {**CANARY, "logprobs": ["-inf", "-1"]}, "spec.canary.logprobs")
    add(m, "m-canary-logprob-huge", LORA, "canary", {**CANARY, "logprobs": ["-1e300", "-1"]}, "spec.canary.logprobs")
    add(m, "m-canary-distance-negative", LORA, "canary", {**CANARY, "startDistance": "-1"}, "spec.canary.startDistance")
    add(m, "m-metrics-key", LORA, "metrics", {"bad key": "1"}, "spec.metrics")
    add(m, "m-metrics-too-many", LORA, "metrics", {f"m{i}": "1" for i in range(65)}, "spec.metrics")
    add(m, "m-sa-missing", BASE, "serviceAccountName", MISSING_SA, "spec.serviceAccountName", operator_only=True)

    # --- Deployment -----------------------------------------------------------------------------
    d = "Deployment"
    add(d, "d-name-digit", DEPLOYMENT, None, None, "metadata.name", name="1dep")
    add(d, "d-name-too-long", DEPLOYMENT, None, None, "metadata.name", name="d" * 64)
    add(d, "d-model-empty", DEPLOYMENT, "model", "", "spec.model")
    add(d, "d-model-slash", DEPLOYMENT, "model", "a/b", "spec.model")
    add(d, "d-type-unknown", DEPLOYMENT, "deploymentType", "spot", "spec.deploymentType")
    add(d, "d-engine-unknown", DEPLOYMENT, "engine", "tgi", "spec.engine")
    add(d, "d-lora-no-base", DEPLOYMENT, "deploymentType", "on-demand-lora", "spec.baseDeployment")
    add(d, "d-base-on-demand", DEPLOYMENT, "baseDeployment", "other", "spec.baseDeployment")
    lora_dep = {**DEPLOYMENT, "deploymentType": "on-demand-lora", "model": "ckpt"}
    add(d, "d-base-self", lora_dep, "baseDeployment", "d-base-self", "spec.baseDeployment")
    add(d, "d-base-digit", lora_dep, "baseDeployment", "9base", "spec.baseDeployment")
    add(d, "d-min-above-max", DEPLOYMENT, "minReplicaCount", 3, "spec.minReplicaCount")
    add(d, "d-max-zero", DEPLOYMENT, "maxReplicaCount", 0, "spec.maxReplicaCount")
    add(d, "d-max-huge", DEPLOYMENT, "maxReplicaCount", 100000, "spec.maxReplicaCount")
    add(d, "d-gpu-count-zero", DEPLOYMENT, "accelerator.count", 0, "spec.accelerator.count")
    add(d, "d-gpu-count-huge", DEPLOYMENT, "accelerator.count", 17, "spec.accelerator.count")
    add(d, "d-accelerator-unknown", DEPLOYMENT, "accelerator.type", "TPU_V5", "spec.accelerator.type")
    add(d, "d-target-zero", DEPLOYMENT, "autoscaling.targetRequestsPerReplica", 0, "spec.autoscaling.targetRequestsPerReplica")
    add(d, "d-delay-negative", DEPLOYMENT, "autoscaling.scaleDownDelaySeconds", -1, "spec.autoscaling.scaleDownDelaySeconds")
    add(d, "d-model-len-tiny", DEPLOYMENT, "maxModelLen", 8, "spec.maxModelLen")
    add(d, "d-max-loras-zero", DEPLOYMENT, "maxLoras", 0, "spec.maxLoras")
    add(d, "d-image-empty", DEPLOYMENT, "image", "", "spec.image")
    add(d, "d-image-spaces", DEPLOYMENT, "image", "not an image", "spec.image")
    add(d, "d-image-upper", DEPLOYMENT, "image", "registry.example.com/UPPER/vllm:1", "spec.image")
    add(d, "d-image-bad-digest", DEPLOYMENT, "image", "vllm/vllm-openai@sha256:xyz", "spec.image")
    add(d, "d-image-forbidden", DEPLOYMENT, "image", FORBIDDEN_IMAGE, "spec.image", operator_only=True)
    add(d, "d-sa-missing", DEPLOYMENT, "serviceAccountName", MISSING_SA, "spec.serviceAccountName", operator_only=True)

    # --- ReinforcementStep ----------------------------------------------------------------------
    s = "ReinforcementStep"
    add(s, "s-name-too-long", STEP, None, None, "metadata.name", name="s" * 64)
    add(s, "s-dataset-empty", STEP, "dataset", "", "spec.dataset")
    add(s, "s-model-malformed", STEP, "model", "Bad/Model", "spec.model")
    add(s, "s-output-is-model", STEP, "outputModel", "base", "spec.outputModel")
    add(s, "s-output-too-long", STEP, "outputModel", "o" * 64, "spec.outputModel")
    add(s, "s-output-location-dotdot", STEP, "outputLocation", "s3://bucket-a/rft/models/../../../x/", "spec.outputLocation")
    add(s, "s-output-location-space", STEP, "outputLocation", "s3://bucket-a/out dir/", "spec.outputLocation")
    for id_, value in [
        ("s-lr-zero", "0"),
        ("s-lr-five", "5"),
        ("s-lr-overflow", "1e400"),
        ("s-lr-nan", "NaN"),
        ("s-lr-negative", "-1e-4"),
        ("s-lr-empty", ""),
    ]:
        add(s, id_, STEP, "training.learningRate", value, "spec.training.learningRate")
    add(s, "s-rank-zero", STEP, "training.loraRank", 0, "spec.training.loraRank")
    add(s, "s-rank-huge", STEP, "training.loraRank", 1024, "spec.training.loraRank")
    add(s, "s-epochs-huge", STEP, "training.epochs", 1000, "spec.training.epochs")
    add(s, "s-batch-below-context", STEP, "training.batchSize", 1024, "spec.training.batchSize")
    add(s, "s-context-tiny", STEP, "training.maxContextLength", 8, "spec.training.maxContextLength")
    add(s, "s-grad-norm-huge", STEP, "training.maxGradNorm", "1e300", "spec.training.maxGradNorm")
    add(s, "s-weight-decay-two", STEP, "training.weightDecay", "2", "spec.training.weightDecay")
    add(s, "s-seed-negative", STEP, "training.seed", -1, "spec.training.seed")
    add(s, "s-modules-empty", STEP, "training.loraTargetModules", [], "spec.training.loraTargetModules")
    add(s, "s-loss-unknown", STEP, "loss.method", "ppo", "spec.loss.method")
    add(s, "s-kl-huge", STEP, "loss.klCoefficient", "1e9", "spec.loss.klCoefficient")
    add(s, "s-clip-low-zero", STEP, "loss.clipLow", "0", "spec.loss.clipLow")
    add(s, "s-clip-high-inf", STEP, "loss.clipHigh", "inf", "spec.loss.clipHigh")
    add(s, "s-advantage-unknown", STEP, "loss.advantage", "median", "spec.loss.advantage")
    add(s, "s-off-policy-unknown", STEP, "loss.offPolicyCorrection", "mis", "spec.loss.offPolicyCorrection")
    add(s, "s-importance-cap-below-one", STEP, "loss.importanceCap", "0.5", "spec.loss.importanceCap")
    add(s, "s-reward-weight-overflow", STEP, "rewardWeights", {"score": "1e999"}, "spec.rewardWeights")
    add(s, "s-reward-key", STEP, "rewardWeights", {"bad key!": "1"}, "spec.rewardWeights")
    add(s, "s-reward-too-many", STEP, "rewardWeights", {f"r{i}": "1" for i in range(65)}, "spec.rewardWeights")
    add(s, "s-gpu-count-zero", STEP, "accelerator.count", 0, "spec.accelerator.count")
    add(s, "s-label-key-space", STEP, "podMetadata.labels", {"bad key": "x"}, "spec.podMetadata.labels")
    add(s, "s-label-value-space", STEP, "podMetadata.labels", {"team": "a b"}, "spec.podMetadata.labels")
    add(s, "s-label-value-long", STEP, "podMetadata.labels", {"team": "x" * 64}, "spec.podMetadata.labels")
    add(s, "s-annotation-key-dash", STEP, "podMetadata.annotations", {"-bad/key": "x"}, "spec.podMetadata.annotations")
    add(
        s,
        "s-annotation-name-long",
        STEP,
        "podMetadata.annotations",
        {f"example.com/{'n' * 64}": "x"},
        "spec.podMetadata.annotations",
    )
    add(s, "s-labels-too-many", STEP, "podMetadata.labels", {f"l{i}": "x" for i in range(33)}, "spec.podMetadata.labels")
    # A prefix of 254 characters: the schema's pattern and length let it through (a CEL rule
    # cannot measure the prefix cheaply); the model refuses it, and so the operator.
    add(
        s,
        "s-label-prefix-long",
        STEP,
        "podMetadata.labels",
        {f"{'p' * 60}.{'q' * 60}.{'r' * 60}.{'s' * 60}.abcdefghijkl/name": "x"},
        "spec.podMetadata.labels",
    )
    add(s, "s-image-empty", STEP, "trainerImage", "", "spec.trainerImage")
    add(s, "s-image-upper", STEP, "trainerImage", "Registry/Trainer:1", "spec.trainerImage")
    add(s, "s-deadline-zero", STEP, "activeDeadlineSeconds", 0, "spec.activeDeadlineSeconds")
    add(s, "s-backoff-huge", STEP, "backoffLimit", 100, "spec.backoffLimit")
    add(s, "s-ttl-negative", STEP, "ttlSecondsAfterFinished", -1, "spec.ttlSecondsAfterFinished")
    add(s, "s-image-forbidden", STEP, "trainerImage", FORBIDDEN_IMAGE, "spec.trainerImage", operator_only=True)
    add(s, "s-sa-missing", STEP, "serviceAccountName", MISSING_SA, "spec.serviceAccountName", operator_only=True)
    add(s, "s-priority-without-queue", STEP, "priorityClass", "urgent", "spec.priorityClass")
    add(s, "s-priority-class-bad-name", STEP, "priorityClass", "Urgent!", "spec.priorityClass")
    # Kueue itself never admits a Job of a class that does not exist (and says so only in its log).
    add(
        s,
        "s-priority-class-missing",
        {**STEP, "queueName": "team-gpus"},
        "priorityClass",
        "no-such-priority-class",
        "spec.priorityClass",
        operator_only=True,
    )

    # --- TrainingSession ------------------------------------------------------------------------
    t = "TrainingSession"
    add(t, "t-name-digit", SESSION, None, None, "metadata.name", name="1session")
    add(t, "t-base-missing", SESSION, "baseModel", _DELETE, "spec.baseModel")
    add(t, "t-base-slash", SESSION, "baseModel", "a/b", "spec.baseModel")
    add(t, "t-rank-zero", SESSION, "maxLoraRank", 0, "spec.maxLoraRank")
    add(t, "t-rank-huge", SESSION, "maxLoraRank", 1024, "spec.maxLoraRank")
    add(t, "t-context-tiny", SESSION, "maxContextLength", 8, "spec.maxContextLength")
    add(t, "t-gpu-count-zero", SESSION, "accelerator", {"type": "NVIDIA_H100_80GB", "count": 0}, "spec.accelerator.count")
    add(t, "t-accelerator-unknown", SESSION, "accelerator.type", "TPU_V5", "spec.accelerator.type")
    add(t, "t-state-missing", SESSION, "stateLocation", _DELETE, "spec.stateLocation")
    add(t, "t-state-http", SESSION, "stateLocation", "http://bucket-a/sessions/", "spec.stateLocation")
    add(t, "t-state-dotdot", SESSION, "stateLocation", "s3://bucket-a/rft/../x/", "spec.stateLocation")
    add(t, "t-idle-negative", SESSION, "idleTimeoutSeconds", -1, "spec.idleTimeoutSeconds")
    add(t, "t-name-too-long", SESSION, None, None, "metadata.name", name="t" * 64)
    add(t, "t-name-dotted", SESSION, None, None, "metadata.name", name="t.dotted")
    add(t, "t-base-empty", SESSION, "baseModel", "", "spec.baseModel")
    add(t, "t-context-huge", SESSION, "maxContextLength", 2_000_000, "spec.maxContextLength")
    add(t, "t-gpu-count-huge", SESSION, "accelerator.count", 17, "spec.accelerator.count")
    add(t, "t-state-space", SESSION, "stateLocation", "s3://bucket-a/state dir/", "spec.stateLocation")
    add(t, "t-idle-huge", SESSION, "idleTimeoutSeconds", 10**9, "spec.idleTimeoutSeconds")
    add(t, "t-sa-upper", SESSION, "serviceAccountName", "Trainer", "spec.serviceAccountName")
    add(t, "t-image-empty", SESSION, "trainerImage", "", "spec.trainerImage")
    add(t, "t-image-upper", SESSION, "trainerImage", "Registry/Trainer:1", "spec.trainerImage")
    add(t, "t-image-forbidden", SESSION, "trainerImage", FORBIDDEN_IMAGE, "spec.trainerImage", operator_only=True)
    add(t, "t-sa-missing", SESSION, "serviceAccountName", MISSING_SA, "spec.serviceAccountName", operator_only=True)
    add(t, "t-tokens-not-bool", SESSION, "authentication.kubernetesTokens", "yes", "spec.authentication.kubernetesTokens")
    add(t, "t-authentication-list", SESSION, "authentication", ["kubernetesTokens"], "spec.authentication")
    return cases


CASES = _cases()
