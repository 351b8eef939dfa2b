"""Deployments on the local cluster: the reference server really serves, adapters really load.

A base Deployment becomes READY with real server pods; an on-demand-lora Deployment loads a
committed adapter from the bucket onto the base replicas (no new pods); a greedy request under
the adapter's name answers differently from the base; deleting it unloads the adapter. vLLM
manifests are checked by the real apiserver (server-side dry run): nothing here runs vLLM.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from rft.api import Deployment, Model
from rft_devcluster.handle import ClusterHandle
from rft_devcluster.pytest_fixtures_storage import S3Bucket
from rft_operator.accelerators import AcceleratorMap
from rft_operator.builders.serving import build_server_deployment, build_server_service
from rft_operator.config import OperatorConfig
from rft_trainer.tiny import build_tiny_model

from tests.operator.conftest import Objects, OperatorProcess
from tests.operator.serving_support import (
    greedy,
    models_served,
    publish_base_and_adapter,
    server_address,
    wait_deployment,
)

pytestmark = [pytest.mark.cluster]

ROLE = "arn:aws:iam::123456789012:role/rft-server"


@pytest.mark.localnode
@pytest.mark.slow
def test_base_serves_and_an_adapter_loads_onto_it(
    operator: OperatorProcess, objects: Objects, s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    publish_base_and_adapter(
        objects,
        s3_bucket,
        build_tiny_model(tmp_path / "base"),
        tmp_path,
        name="tiny",
        service_account="rft-server",
        role_arn=ROLE,
        rank=4,
    )
    cpu = {"type": "CPU", "count": 0}
    objects.create(
        "deployments",
        "Deployment",
        "base",
        {
            "model": "tiny",
            "deploymentType": "on-demand",
            "engine": "reference",
            "accelerator": cpu,
            "serviceAccountName": "rft-server",
        },
    )
    ready = wait_deployment(objects, "base", "READY")
    assert ready["status"]["servedModelName"] == "tiny"
    assert ready["status"]["endpoint"] == f"http://base-server.{objects.namespace}.svc.cluster.local:8000/v1"
    assert ready["status"]["readyReplicas"] == 1
    address = server_address(objects, "base")
    base_answer = greedy(address, "tiny")

    objects.create(
        "deployments",
        "Deployment",
        "tuned",
        {
            "model": "tiny-lora",
            "deploymentType": "on-demand-lora",
            "baseDeployment": "base",
            "accelerator": cpu,
        },
    )
    tuned = wait_deployment(objects, "tuned", "READY")
    assert tuned["status"]["servedModelName"] == "tiny-lora"
    assert tuned["status"]["endpoint"] == ready["status"]["endpoint"], "adapters ride on the base endpoint"
    assert [r["adapters"] for r in tuned["status"]["replicas"]] == [["tiny-lora"]]
    assert "rft-operator.io/unload-adapter" in tuned["metadata"]["finalizers"]
    pods = objects.core.list_namespaced_pod(
        objects.namespace, label_selector="rft-operator.io/deployment=tuned"
    ).items
    assert pods == [], "on-demand-lora creates no pods"
    assert "tiny-lora" in models_served(address)
    assert greedy(address, "tiny-lora") != base_answer, "the adapter changes the answers"
    assert greedy(address, "tiny") == base_answer

    objects.custom.delete_namespaced_custom_object(
        "rft-operator.io", "v1alpha1", objects.namespace, "deployments", "tuned"
    )
    deadline = time.monotonic() + 60
    while objects.get("deployments", "tuned") is not None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert objects.get("deployments", "tuned") is None
    assert "tiny-lora" not in models_served(address), "deleting the Deployment unloads the adapter"


def test_a_checkpoint_served_as_a_base_is_refused(operator: OperatorProcess, objects: Objects) -> None:
    objects.create("models", "Model", "tiny", {"kind": "base", "location": "s3://bucket-a/rft/models/tiny/"})
    objects.create(
        "models",
        "Model",
        "ckpt",
        {
            "kind": "lora",
            "location": "s3://bucket-a/rft/models/ckpt/",
            "baseModel": "tiny",
            "lora": {"rank": 4, "alpha": 8, "targetModules": ["q_proj"]},
        },
    )
    objects.create("deployments", "Deployment", "wrong", {"model": "ckpt", "deploymentType": "on-demand"})
    failed = wait_deployment(objects, "wrong", "FAILED", timeout=60)
    assert "is a LoRA checkpoint: serve it with deploymentType on-demand-lora" in failed["status"]["message"]


def test_vllm_manifests_are_accepted_by_the_apiserver(
    cluster: ClusterHandle, crds: None, namespace: str
) -> None:
    dep = Deployment.model_validate(
        {
            "metadata": {
                "name": "qwen",
                "namespace": namespace,
                "uid": "00000000-0000-0000-0000-000000000001",
            },
            "spec": {
                "model": "qwen",
                "deploymentType": "on-demand",
                "engine": "vllm",
                "accelerator": {"type": "NVIDIA_H100_80GB", "count": 2},
                "maxModelLen": 8192,
            },
        }
    )
    model = Model.model_validate(
        {
            "metadata": {"name": "qwen", "namespace": namespace},
            "spec": {"kind": "base", "location": "s3://bkt/rft/models/qwen/"},
        }
    )
    config = OperatorConfig()
    manifests = [
        build_server_deployment(dep, model, AcceleratorMap.load(None), config),
        build_server_service(dep),
    ]
    accepted = []
    for manifest in manifests:
        manifest["metadata"].pop("ownerReferences")  # the owner does not exist in this dry run
        out = cluster.kubectl(
            "apply", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(manifest)
        )
        accepted.append(json.loads(out.stdout))
    pod = accepted[0]["spec"]["template"]["spec"]
    assert pod["initContainers"][0]["command"][:3] == ["python", "-m", "rft.fetch"]
    server = pod["containers"][0]
    assert server["command"][:3] == ["vllm", "serve", "/models/base"]
    assert server["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert {e["name"]: e.get("value") for e in server["env"]}["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert server["securityContext"]["readOnlyRootFilesystem"] is True
    assert accepted[1]["spec"]["type"] == "ClusterIP"


@pytest.mark.localnode
def test_a_server_pod_that_cannot_start_is_named_in_the_status(
    operator: OperatorProcess, objects: Objects
) -> None:
    """The status says why a Deployment waits, instead of only '0/1 replicas ready': an image the
    node cannot pull, or a pod no node fits."""
    objects.create(
        "models", "Model", "tiny-stuck", {"kind": "base", "location": "s3://bucket-a/rft/models/tiny/"}
    )
    objects.create(
        "deployments",
        "Deployment",
        "no-image",
        {
            "model": "tiny-stuck",
            "deploymentType": "on-demand",
            "accelerator": {"type": "CPU", "count": 0},
            "image": "registry.invalid/no-such-vllm:1",
        },
    )
    objects.create(
        "deployments",
        "Deployment",
        "no-node",
        {"model": "tiny-stuck", "deploymentType": "on-demand", "accelerator": {"type": "NVIDIA_H200_141GB"}},
    )
    deadline = time.monotonic() + 120
    reasons: dict[str, Any] = {}
    while time.monotonic() < deadline:
        for name in ("no-image", "no-node"):
            obj = objects.get("deployments", name) or {}
            ready = [c for c in obj.get("status", {}).get("conditions", []) if c["type"] == "Ready"]
            reasons[name] = (ready[0]["reason"], ready[0]["message"]) if ready else None
        if (
            reasons["no-image"]
            and reasons["no-image"][0] in ("ErrImagePull", "ImagePullBackOff")
            and (reasons["no-node"] and reasons["no-node"][0] == "Unschedulable")
        ):
            break
        time.sleep(1)
    assert reasons["no-image"][0] in ("ErrImagePull", "ImagePullBackOff"), reasons
    assert "registry.invalid/no-such-vllm:1" in reasons["no-image"][1]
    assert reasons["no-node"][0] == "Unschedulable", reasons
    assert "0/1 replicas ready; pod no-node-server-" in reasons["no-node"][1]
