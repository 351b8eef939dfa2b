"""Deployments on the local cluster: the reference server really serves, adapters really load.

A base Deployment becomes READY with real server pods; an on-demand-lora Deployment loads a
committed adapter from the bucket onto the base replicas (no new pods); a greedy request under
the adapter's name answers differently from the base; deleting it unloads the adapter. vLLM
manifests are checked by the real apiserver (server-side dry run): nothing here runs vLLM.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from rft.api import Deployment, Model
from rft.storage.checkpoints import upload_tree
from rft_devcluster.handle import ClusterHandle
from rft_devcluster.pytest_fixtures_storage import S3Bucket
from rft_operator.accelerators import AcceleratorMap
from rft_operator.builders.serving import build_server_deployment, build_server_service
from rft_operator.config import OperatorConfig
from rft_trainer.server.testing import make_lora_adapter
from rft_trainer.tiny import build_tiny_model

from tests.operator.conftest import Objects, OperatorProcess

pytestmark = [pytest.mark.cluster]

ROLE = "arn:aws:iam::123456789012:role/rft-server"


def wait_deployment(objects: Objects, name: str, phase: str, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    obj: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        obj = objects.get("deployments", name)
        if obj and obj.get("status", {}).get("phase") == phase:
            return obj
        time.sleep(0.5)
    raise AssertionError(f"deployment {name} not {phase} in {timeout}s: {(obj or {}).get('status')}")


def server_address(objects: Objects, deployment: str) -> str:
    """A ready server pod's address (what port-forward to the Service would reach)."""
    pods = objects.core.list_namespaced_pod(
        objects.namespace, label_selector=f"rft-operator.io/deployment={deployment}"
    ).items
    ready = [
        p for p in pods if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
    ]
    assert ready, "no ready server pod"
    return f"http://{ready[0].status.pod_ip}:8000"


def post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    headers = {"Content-Type": "application/json"}
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)  # noqa: S310
    with urllib.request.urlopen(req, timeout=60) as resp:  # noqa: S310 - loopback pod IP
        return json.loads(resp.read())  # type: ignore[no-any-return]


def models_served(address: str) -> set[str]:
    with urllib.request.urlopen(f"{address}/v1/models", timeout=30) as resp:  # noqa: S310
        return {m["id"] for m in json.loads(resp.read())["data"]}


def greedy(address: str, model: str) -> str:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": 8,
        "temperature": 0,
    }
    return str(post(f"{address}/v1/chat/completions", body)["choices"][0]["message"]["content"])


@pytest.mark.localnode
@pytest.mark.slow
def test_base_serves_and_an_adapter_loads_onto_it(
    operator: OperatorProcess, objects: Objects, s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    objects.core.create_namespaced_service_account(
        objects.namespace,
        {"metadata": {"name": "rft-server", "annotations": {"eks.amazonaws.com/role-arn": ROLE}}},
    )
    base_dir = build_tiny_model(tmp_path / "base")
    base_url = f"s3://{s3_bucket.name}/rft/models/tiny/"
    adapter_url = f"s3://{s3_bucket.name}/rft/models/tiny-lora/"
    upload_tree(base_dir, base_url)
    upload_tree(make_lora_adapter(base_dir, tmp_path / "adapter", rank=4, seed=3), adapter_url)
    objects.create(
        "models", "Model", "tiny", {"kind": "base", "location": base_url, "serviceAccountName": "rft-server"}
    )
    objects.create(
        "models",
        "Model",
        "tiny-lora",
        {
            "kind": "lora",
            "location": adapter_url,
            "baseModel": "tiny",
            "lora": {"rank": 4, "alpha": 8, "targetModules": ["q_proj", "k_proj", "v_proj", "o_proj"]},
        },
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
