"""Deployments on the local cluster: what is refused, what the apiserver accepts, why pods wait.

Serving itself (a base on real vLLM, an adapter loaded, served and unloaded through the sidecar)
is tests/operator/test_serving_vllm.py.
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import pytest
from kubernetes import client
from rft.api import Deployment, Model
from rft_devcluster.handle import ClusterHandle
from rft_operator.accelerators import AcceleratorMap
from rft_operator.builders.serving import build_server_deployment, build_server_service
from rft_operator.config import OperatorConfig

from tests.operator.conftest import Objects, OperatorProcess
from tests.operator.serving_support import (
    wait_deployment,
)

pytestmark = [pytest.mark.cluster]

ROLE = "arn:aws:iam::123456789012:role/rft-server"


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
        build_server_deployment(
            dep, model, AcceleratorMap.load(None), config, replicas=1, admin_token_sha256="0" * 64
        ),
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
    assert pod["initContainers"][0]["command"][:3] == ["python", "-m", "rft.pods.fetch"]
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
    objects.base_model("tiny-stuck")
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


def test_an_object_of_the_childs_name_that_is_not_its_own_is_never_taken_over(
    operator: OperatorProcess, objects: Objects
) -> None:
    """Server-side apply with force would take over someone else's Service of the same name: the
    operator refuses instead, says which object, changes nothing, and serves once it is gone."""
    objects.base_model("tiny-taken")
    foreign = {
        "metadata": {"name": "taken-server", "labels": {"team": "someone-else"}},
        "spec": {"selector": {"app": "theirs"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    objects.core.create_namespaced_service(objects.namespace, foreign)
    objects.create(
        "deployments",
        "Deployment",
        "taken",
        {"model": "tiny-taken", "deploymentType": "on-demand", "accelerator": {"type": "NVIDIA_H100_80GB"}},
    )
    failed = wait_deployment(objects, "taken", "FAILED", timeout=60)
    ready = next(c for c in failed["status"]["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "ChildExists"
    assert "Service taken-server already exists and does not belong to Deployment taken" in ready["message"]
    service = objects.core.read_namespaced_service("taken-server", objects.namespace)
    assert service.spec.selector == {"app": "theirs"}
    assert service.metadata.labels == {"team": "someone-else"}
    assert not service.metadata.owner_references
    apps = client.AppsV1Api(objects.api).list_namespaced_deployment(objects.namespace).items
    assert [d.metadata.name for d in apps] == [], "nothing runs for a Deployment that was refused"

    objects.core.delete_namespaced_service("taken-server", objects.namespace)
    objects.patch("deployments", "taken", {"maxLoras": 7})  # a change: the operator looks again
    deadline = time.monotonic() + 60
    owners: list[Any] = []
    while time.monotonic() < deadline and not owners:
        with contextlib.suppress(client.ApiException):
            owners = (
                objects.core.read_namespaced_service(
                    "taken-server", objects.namespace
                ).metadata.owner_references
                or []
            )
        time.sleep(0.5)
    assert [(o.kind, o.name) for o in owners] == [("Deployment", "taken")]
