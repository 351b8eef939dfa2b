"""Base Models are checked before anything serves or trains them: the check Job reads the folder
under the Model's ServiceAccount, a loadable one is READY with its files' digests pinned, a broken
one FAILED with the reason, and a file changed after the check is refused by the pod that fetches
it. On the local node (the check and the fetch run for real) with the tests' fake vLLM as server.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import pytest
from rft.storage import delete, write_bytes
from rft.storage.checkpoints import FileRecord
from rft.storage.model_folder import files_digest
from rft_devcluster.localnode.images import FAKE_VLLM_IMAGE
from rft_devcluster.pytest_fixtures_storage import S3Bucket
from rft_devcluster.tiny import build_tiny_model

from tests.operator.conftest import WORKLOAD, Objects, OperatorProcess
from tests.operator.serving_support import condition, upload_plain, wait_deployment

pytestmark = [pytest.mark.cluster, pytest.mark.localnode]

ROLE = "arn:aws:iam::123456789012:role/rft-models"
SERVICE_ACCOUNT = "rft-models"
CPU = {"type": "CPU", "count": 0}


def _service_account(objects: Objects) -> None:
    objects.core.create_namespaced_service_account(
        objects.namespace,
        {"metadata": {"name": SERVICE_ACCOUNT, "labels": WORKLOAD, "annotations": {"eks.amazonaws.com/role-arn": ROLE}}},
    )


def _model(objects: Objects, name: str, location: str) -> None:
    objects.create(
        "models", "Model", name, {"kind": "base", "location": location, "serviceAccountName": SERVICE_ACCOUNT}
    )


def _wait_model(objects: Objects, name: str, phases: tuple[str, ...], timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    obj: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        obj = objects.get("models", name)
        if obj and obj.get("status", {}).get("phase") in phases:
            return obj
        time.sleep(0.5)
    raise AssertionError(f"Model {name} not {phases} in {timeout}s: {(obj or {}).get('status')}")


def _deployment(objects: Objects, name: str, model: str) -> None:
    objects.create(
        "deployments",
        "Deployment",
        name,
        {
            "model": model,
            "deploymentType": "on-demand",
            "accelerator": CPU,
            "serviceAccountName": SERVICE_ACCOUNT,
            "image": FAKE_VLLM_IMAGE,
        },
    )


def test_a_plain_folder_is_pinned_and_a_file_changed_later_is_refused_by_the_pod(
    operator: OperatorProcess, objects: Objects, s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    _service_account(objects)
    local = build_tiny_model(tmp_path / "tiny")
    url = f"s3://{s3_bucket.name}/hf/tiny/"
    upload_plain(local, url)
    _model(objects, "tiny", url)
    # Served while it is checked? No: the Deployment waits for the check.
    _deployment(objects, "before", "tiny")
    early = objects.get("deployments", "before") or {}
    assert early.get("status", {}).get("phase") in (None, "CREATING")

    model = _wait_model(objects, "tiny", ("READY", "FAILED"))
    status = model["status"]
    assert status["phase"] == "READY", status
    assert condition(model, "Ready")["reason"] == "Checked"
    expected = [
        FileRecord(p.name, hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_size)
        for p in sorted(local.iterdir())
    ]
    assert status["format"] == "huggingface"
    assert status["architecture"] == "Qwen2ForCausalLM"
    assert status["fileCount"] == len(expected)
    assert [(f["path"], f["sha256"], f["size"]) for f in status["files"]] == [
        (r.path, r.sha256, r.size) for r in expected
    ]
    assert status["filesDigest"] == files_digest(expected)
    assert status["checkJob"] == "tiny-check-g1"
    job = objects.batch.read_namespaced_job("tiny-check-g1", objects.namespace)
    assert job.spec.template.spec.service_account_name == SERVICE_ACCOUNT

    served = wait_deployment(objects, "before", "READY", timeout=240)
    assert served["status"]["servedModelName"] == "tiny"

    # After READY someone rewrites a file in the bucket: a pod fetching the model now refuses it.
    delete(f"{url}tokenizer_config.json")
    write_bytes(f"{url}tokenizer_config.json", b'{"chat_template": "{{ evil }}"}')
    _deployment(objects, "after", "tiny")
    deadline = time.monotonic() + 180
    ready: dict[str, Any] = {}
    while time.monotonic() < deadline:
        ready = condition(objects.get("deployments", "after") or {}, "Ready")
        if "tokenizer_config.json" in ready.get("message", ""):
            break
        time.sleep(1)
    assert "tokenizer_config.json" in ready.get("message", ""), ready
    assert "changed since its Model was checked" in ready["message"]
    assert ready["status"] == "False"
    after = objects.get("deployments", "after") or {}
    assert after["status"].get("readyReplicas", 0) == 0


def test_broken_folders_fail_with_the_reason_and_nothing_serves_them(
    operator: OperatorProcess, objects: Objects, s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    _service_account(objects)
    local = build_tiny_model(tmp_path / "tiny")
    truncated = f"s3://{s3_bucket.name}/hf/truncated/"
    upload_plain(local, truncated)
    weights = (local / "model.safetensors").read_bytes()
    delete(f"{truncated}model.safetensors")
    write_bytes(f"{truncated}model.safetensors", weights[: len(weights) // 2])
    incomplete = f"s3://{s3_bucket.name}/hf/incomplete/"
    upload_plain(local, incomplete)
    delete(f"{incomplete}config.json")
    _model(objects, "truncated", truncated)
    _model(objects, "incomplete", incomplete)
    _model(objects, "absent", f"s3://{s3_bucket.name}/hf/nothing-uploaded/")
    _deployment(objects, "on-truncated", "truncated")

    failed = {
        name: _wait_model(objects, name, ("READY", "FAILED"), timeout=240)
        for name in ("truncated", "incomplete")
    }
    for name, (reason, words) in {
        "truncated": ("CorruptWeights", "model.safetensors: its tensors need"),
        "incomplete": ("NotAModel", "has no config.json"),
    }.items():
        ready = condition(failed[name], "Ready")
        assert failed[name]["status"]["phase"] == "FAILED", failed[name]["status"]
        assert (ready["status"], ready["reason"]) == ("False", reason), ready
        assert words in ready["message"]
        assert "filesDigest" not in failed[name]["status"]

    dep = wait_deployment(objects, "on-truncated", "FAILED", timeout=60)
    ready = condition(dep, "Ready")
    assert ready["reason"] == "ModelFailed"
    assert "base Model truncated failed its check: model.safetensors" in ready["message"]
    pods = objects.core.list_namespaced_pod(
        objects.namespace, label_selector="rft-operator.io/deployment=on-truncated"
    )
    assert pods.items == [], "no server pod for a model that failed its check"

    # Storage errors are retried by the Job (the bucket may be fixed meanwhile), then reported.
    absent = _wait_model(objects, "absent", ("READY", "FAILED"), timeout=300)
    ready = condition(absent, "Ready")
    assert (ready["reason"], absent["status"]["phase"]) == ("ModelNotFound", "FAILED"), absent["status"]
    assert "no objects under this prefix" in ready["message"]
