"""The generated CRDs on a real kube-apiserver: accepted, validated, explained, listed."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from rft.api import GROUP, VERSION

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
PLURALS = {
    "Dataset": "datasets",
    "Model": "models",
    "Deployment": "deployments",
    "ReinforcementStep": "reinforcementsteps",
}

STEP: dict[str, Any] = {
    "kind": "ReinforcementStep",
    "spec": {"dataset": "ds", "model": "base", "outputModel": "out"},
}
DATASET: dict[str, Any] = {"kind": "Dataset", "spec": {"source": "s3://my-bucket/data.jsonl"}}
MODEL: dict[str, Any] = {"kind": "Model", "spec": {"kind": "base", "location": "s3://my-bucket/models/base/"}}
LORA_MODEL: dict[str, Any] = {
    "kind": "Model",
    "spec": {
        "kind": "lora",
        "location": "s3://my-bucket/models/ckpt/",
        "baseModel": "base",
        "lora": {"rank": 16, "alpha": 32, "targetModules": ["q_proj"]},
    },
}
CANARY: dict[str, Any] = {
    "tokenIds": [5, 9, 2],
    "logprobs": ["-1.5", "-0.25"],
    "dtype": "float32",
    "startDistance": "0.5",
}
DEPLOYMENT: dict[str, Any] = {"kind": "Deployment", "spec": {"model": "base", "deploymentType": "on-demand"}}


def _with(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of `base` with the dotted `path` set to `value` (None deletes it)."""
    obj = copy.deepcopy(base)
    *parents, leaf = path.split(".")
    node = obj
    for key in parents:
        node = node.setdefault(key, {})
    if value is None:
        node.pop(leaf, None)
    else:
        node[leaf] = value
    return obj


INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("step-no-dataset", _with(STEP, "spec.dataset", None), "spec.dataset: Required value"),
    (
        "step-output-is-source",
        _with(STEP, "spec.outputModel", "base"),
        "spec.outputModel must differ from spec.model",
    ),
    (
        "step-bad-learning-rate",
        _with(STEP, "spec.training", {"learningRate": "fast"}),
        "spec.training.learningRate",
    ),
    ("step-zero-rank", _with(STEP, "spec.training", {"loraRank": 0}), "spec.training.loraRank"),
    (
        "step-unknown-loss",
        _with(STEP, "spec.loss", {"method": "ppo2"}),
        "spec.loss.method: Unsupported value",
    ),
    (
        "step-unknown-accelerator",
        _with(STEP, "spec.accelerator", {"type": "TPU_V5"}),
        "spec.accelerator.type: Unsupported value",
    ),
    (
        "step-gpu-count-zero",
        _with(STEP, "spec.accelerator", {"type": "NVIDIA_H100_80GB", "count": 0}),
        "spec.accelerator.count must be at least 1",
    ),
    (
        "step-batch-below-context",
        _with(STEP, "spec.training", {"batchSize": 1024, "maxContextLength": 4096}),
        "spec.training.batchSize (a token budget) must be at least",
    ),
    (
        "step-bad-reward-key",
        _with(STEP, "spec.rewardWeights", {"bad key!": "1"}),
        "every key must match ^[A-Za-z0-9_.-]+$",
    ),
    (
        "step-bad-reward-weight",
        _with(STEP, "spec.rewardWeights", {"score": "heavy"}),
        "spec.rewardWeights.score",
    ),
    ("step-bad-output-name", _with(STEP, "spec.outputModel", "Bad_Name"), "spec.outputModel"),
    ("step-backoff-too-high", _with(STEP, "spec.backoffLimit", 50), "spec.backoffLimit"),
    ("step-negative-kl", _with(STEP, "spec.loss", {"klCoefficient": "-1"}), "spec.loss.klCoefficient"),
    (
        "step-unknown-aggregation",
        _with(STEP, "spec.loss", {"aggregation": "sum"}),
        "spec.loss.aggregation: Unsupported value",
    ),
    ("dataset-http-source", _with(DATASET, "spec.source", "http://example.com/d.jsonl"), "spec.source"),
    (
        "dataset-min-above-max",
        _with(DATASET, "spec.limits", {"minRows": 10, "maxRows": 5}),
        "spec.limits.minRows must not exceed spec.limits.maxRows",
    ),
    ("dataset-unknown-format", _with(DATASET, "spec.format", "csv"), "spec.format: Unsupported value"),
    (
        "model-lora-without-base",
        _with(LORA_MODEL, "spec.baseModel", None),
        "a lora Model needs spec.baseModel and spec.lora",
    ),
    (
        "model-base-with-parent",
        _with(MODEL, "spec.parent", "other"),
        "a base Model takes no spec.baseModel, spec.lora or spec.parent",
    ),
    ("model-no-location", _with(MODEL, "spec.location", None), "spec.location: Required value"),
    (
        "model-zero-rank",
        _with(LORA_MODEL, "spec.lora", {"rank": 0, "alpha": 1, "targetModules": ["q_proj"]}),
        "spec.lora.rank",
    ),
    (
        "model-bad-file-digest",
        _with(MODEL, "spec.files", [{"path": "a", "sha256": "xyz", "size": 1}]),
        "spec.files[0].sha256",
    ),
    (
        "model-canary-count",
        _with(LORA_MODEL, "spec.canary", {**CANARY, "logprobs": ["-1.5"]}),
        "spec.canary.logprobs needs one value per token of spec.canary.tokenIds after the first",
    ),
    (
        "model-canary-bad-logprob",
        _with(LORA_MODEL, "spec.canary", {**CANARY, "logprobs": ["-1.5", "-inf"]}),
        "spec.canary.logprobs[1]",
    ),
    ("model-canary-on-base", _with(MODEL, "spec.canary", CANARY), "a base Model takes no spec.canary"),
    (
        "deployment-lora-without-base",
        _with(DEPLOYMENT, "spec.deploymentType", "on-demand-lora"),
        "spec.baseDeployment is required when spec.deploymentType is on-demand-lora",
    ),
    (
        "deployment-base-on-demand",
        _with(DEPLOYMENT, "spec.baseDeployment", "other"),
        "spec.baseDeployment is only allowed when spec.deploymentType is on-demand-lora",
    ),
    (
        "deployment-min-above-max",
        _with(DEPLOYMENT, "spec.minReplicaCount", 3),
        "spec.minReplicaCount must not exceed spec.maxReplicaCount",
    ),
    (
        "deployment-unknown-type",
        _with(DEPLOYMENT, "spec.deploymentType", "spot"),
        "spec.deploymentType: Unsupported value",
    ),
    ("deployment-unknown-engine", _with(DEPLOYMENT, "spec.engine", "tgi"), "spec.engine: Unsupported value"),
]


def _create(api: client.ApiClient, namespace: str, name: str, obj: dict[str, Any]) -> dict[str, Any]:
    body = {"apiVersion": f"{GROUP}/{VERSION}", "metadata": {"name": name}, **obj}
    return client.CustomObjectsApi(api).create_namespaced_custom_object(  # type: ignore[no-any-return]
        GROUP, VERSION, namespace, PLURALS[obj["kind"]], body
    )


@pytest.mark.parametrize(("name", "obj", "expected"), INVALID, ids=[case[0] for case in INVALID])
def test_invalid_objects_are_refused_naming_the_field(
    cluster: Any, crds: None, namespace: str, name: str, obj: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ApiException) as refused:
        _create(cluster.api_client(), namespace, name, obj)
    assert refused.value.status == 422
    assert expected in refused.value.body


def test_the_valid_baselines_of_the_table_are_accepted(cluster: Any, crds: None, namespace: str) -> None:
    with_canary = _with(LORA_MODEL, "spec.canary", CANARY)
    for i, obj in enumerate([STEP, DATASET, MODEL, LORA_MODEL, with_canary, DEPLOYMENT]):
        created = _create(cluster.api_client(), namespace, f"ok-{i}", obj)
        assert created["metadata"]["generation"] == 1


def test_step_spec_is_immutable_except_suspend_and_cancel(cluster: Any, crds: None, namespace: str) -> None:
    api = client.CustomObjectsApi(cluster.api_client())
    _create(cluster.api_client(), namespace, "immutable", STEP)

    def patch(spec: dict[str, Any]) -> None:
        api.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, "reinforcementsteps", "immutable", {"spec": spec}
        )

    patch({"suspend": True})
    patch({"cancel": True})
    for spec, message in [
        ({"training": {"loraRank": 8}}, "spec.training is immutable"),
        ({"dataset": "other"}, "spec.dataset is immutable"),
        ({"outputLocation": "s3://my-bucket/elsewhere/"}, "spec.outputLocation is immutable"),
        ({"cancel": False}, "spec.cancel cannot be undone"),
    ]:
        with pytest.raises(ApiException) as refused:
            patch(spec)
        assert message in refused.value.body


def test_deployment_accelerator_type_is_immutable(cluster: Any, crds: None, namespace: str) -> None:
    api = client.CustomObjectsApi(cluster.api_client())
    _create(cluster.api_client(), namespace, "served", DEPLOYMENT)
    api.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "deployments", "served", {"spec": {"maxReplicaCount": 2}}
    )
    with pytest.raises(ApiException) as refused:
        api.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            "deployments",
            "served",
            {"spec": {"accelerator": {"type": "NVIDIA_H200_141GB"}}},
        )
    assert "spec.accelerator.type is immutable" in refused.value.body


def test_every_example_manifest_is_accepted(cluster: Any, crds: None, namespace: str) -> None:
    result = cluster.kubectl(
        "apply", "--server-side", "-n", namespace, "-f", str(REPO / "examples" / "manifests")
    )
    assert result.stdout.count("serverside-applied") == len(
        [
            d
            for p in (REPO / "examples" / "manifests").glob("*.yaml")
            for d in yaml.safe_load_all(p.read_text())
            if d
        ]
    )


def test_category_lists_all_kinds_with_printer_columns(cluster: Any, crds: None, namespace: str) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", str(REPO / "examples" / "manifests"))
    out = cluster.kubectl("get", "rft", "-n", namespace).stdout
    for kind in [
        "dataset.rft-operator.io/",
        "deployment.rft-operator.io/",
        "model.rft-operator.io/",
        "reinforcementstep.rft-operator.io/",
    ]:
        assert kind in out
    for column in ["PHASE", "ROWS", "SOURCE", "DATASET", "OUTPUT", "REWARD", "SERVED-AS", "RANK"]:
        assert column in out
    wide = cluster.kubectl("get", "rstep", "-n", namespace, "-o", "wide").stdout
    assert "ACCELERATOR" in wide
    assert "NVIDIA_H100_80GB" in wide


def test_kubectl_explain_teaches_the_api(cluster: Any, crds: None) -> None:
    out = cluster.kubectl("explain", "reinforcementsteps.spec.training.batchSize").stdout
    assert "Token budget of one packed batch" in out
    out = cluster.kubectl("explain", "datasets.rft-operator.io.spec.serviceAccountName").stdout
    assert "workload identity" in out
    out = cluster.kubectl("explain", "deployments.rft-operator.io.spec.deploymentType").stdout
    assert "on-demand-lora" in out
