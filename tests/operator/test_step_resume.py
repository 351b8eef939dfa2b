"""spec.suspend, then resume, with a REAL trainer pod on the local node: the pod stopped by the
Job's suspension saves its in-step checkpoint (SIGTERM), the pod of the resumed Job continues from
it, and the adapter it publishes is the one an uninterrupted run of the same data publishes.

The two steps (the one suspended and the uninterrupted reference) run side by side, created with
the SDK (`checkpoint_every_steps=1`), against moto S3 through the emulated IRSA webhook; the tiny
model and a dataset of a few rows keep each run to seconds of training.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch
from rft import LLM, Dataset
from rft.sdk.session import Session
from rft.storage import list_objects
from rft.storage.checkpoints import fetch_checkpoint, is_committed, upload_tree
from rft_devcluster.handle import ClusterHandle
from rft_devcluster.pytest_fixtures_storage import S3Bucket
from rft_devcluster.tiny import build_tiny_model
from rft_devcluster.waiting import wait_for
from rft_trainer.sources import resume_prefix
from safetensors.torch import load_file

from tests.operator.conftest import WORKLOAD, Objects, OperatorProcess
from tests.trainer.trainer_testlib import samples_row

pytestmark = [pytest.mark.cluster, pytest.mark.localnode, pytest.mark.slow]

ROLE = "arn:aws:iam::123456789012:role/rft-resume"
LOG_PATH_ANNOTATION = "rft-operator.io/log-path"  # where the local node keeps a pod's log
ROWS = [
    samples_row(f"name an animal {i}", [("cat", 1.0), ("dog dog", 0.0), ("cat bird", 0.5), ("fish", 0.2)])
    for i in range(8)
]
STOPPED = re.compile(r"stopped by SIGTERM after optimizer step (\d+) of (\d+)")
RESUMED = re.compile(r"resuming from the in-step checkpoint at optimizer step (\d+)")


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == kind), {})


def _pods(objects: Objects, job: str) -> list[Any]:
    return list(
        objects.core.list_namespaced_pod(
            objects.namespace, label_selector=f"batch.kubernetes.io/job-name={job}"
        ).items
    )


def _log(pod: Any) -> str:
    return Path(pod.metadata.annotations[LOG_PATH_ANNOTATION]).read_text(errors="replace")


def test_a_suspended_step_resumes_its_real_trainer_pod_from_the_in_step_checkpoint(
    operator: OperatorProcess, objects: Objects, cluster: ClusterHandle, s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    ns = objects.namespace
    objects.core.create_namespaced_service_account(
        ns,
        {
            "metadata": {
                "name": "rft-trainer",
                "labels": WORKLOAD,
                "annotations": {"eks.amazonaws.com/role-arn": ROLE},
            }
        },
    )
    base_location = f"s3://{s3_bucket.name}/rft/models/tiny/"
    upload_tree(build_tiny_model(tmp_path / "tiny"), base_location)
    objects.create(
        "models",
        "Model",
        "tiny",
        {"kind": "base", "location": base_location, "serviceAccountName": "rft-trainer"},
    )
    session = Session.create(
        namespace=ns,
        bucket=f"s3://{s3_bucket.name}/rft",
        service_account="rft-trainer",
        kubeconfig=str(cluster.kubeconfig),
    )
    dataset = Dataset.from_list(ROWS, session=session)
    dataset.sync(timeout=180)
    llm = LLM(
        "tiny", "on-demand", id="tiny-base", accelerator_type="CPU", accelerator_count=0, session=session
    )
    wait_for(
        lambda: (objects.get("models", "tiny") or {}).get("status", {}).get("phase") == "READY",
        timeout=180,
        what="the base Model READY",
    )
    arguments: dict[str, Any] = {
        "lora_rank": 4,
        "learning_rate": 1e-3,
        "max_context_length": 64,
        "epochs": 2,
        "batch_size": 64,
        "accelerator_type": "CPU",
        "accelerator_count": 0,
        "checkpoint_every_steps": 1,
    }
    llm.reinforcement_step(dataset, "resumed", **arguments)
    llm.reinforcement_step(dataset, "uninterrupted", **arguments)
    output = f"s3://{s3_bucket.name}/rft/models/resumed/"
    state = resume_prefix(output.rstrip("/")) + "state.pt"

    # Suspend once the first periodic in-step checkpoint is in the bucket.
    wait_for(
        lambda: any(o.url == state for o in list_objects(resume_prefix(output.rstrip("/")))),
        timeout=240,
        interval=0.2,
        what="the first in-step checkpoint",
    )
    [first_pod] = _pods(objects, "resumed-train")
    objects.patch("reinforcementsteps", "resumed", {"suspend": True})
    suspended = objects.wait_step(
        "resumed",
        lambda o: _condition(o, "Suspended").get("status") == "True",
        timeout=30,
        what="Suspended",
    )
    assert suspended["status"]["phase"] == "JOB_STATE_PENDING"
    # The Job's pod gets SIGTERM, finishes its optimizer step, saves and exits; the node removes it.
    wait_for(lambda: not _pods(objects, "resumed-train"), timeout=120, what="the suspended Job's pod gone")
    stopped = STOPPED.search(_log(first_pod))
    assert stopped is not None, _log(first_pod)[-3000:]
    stopped_at, total = int(stopped.group(1)), int(stopped.group(2))
    assert 1 <= stopped_at < total, (stopped_at, total)
    assert [o.url for o in list_objects(output)] == [state]  # only the scratch state, no adapter
    assert not is_committed(output.rstrip("/"))

    objects.patch("reinforcementsteps", "resumed", {"suspend": False})
    done = objects.wait_phase("resumed", "JOB_STATE_COMPLETED", timeout=300)
    assert _condition(done, "Suspended")["status"] == "False"
    [second_pod] = [p for p in _pods(objects, "resumed-train") if p.metadata.name != first_pod.metadata.name]
    second_log = _log(second_pod)
    assert [int(s) for s in RESUMED.findall(second_log)] == [stopped_at], second_log[-3000:]
    print(f"suspended after optimizer step {stopped_at} of {total}; the resumed pod continued from it")
    reference = objects.wait_phase("uninterrupted", "JOB_STATE_COMPLETED", timeout=300)
    assert not RESUMED.search(_log(_pods(objects, "uninterrupted-train")[0]))

    # The scratch prefixes are gone once the adapters are published.
    reference_output = f"s3://{s3_bucket.name}/rft/models/uninterrupted/"
    for location in (output, reference_output):
        assert not list_objects(resume_prefix(location.rstrip("/"))), location
    # The same adapter and metrics as the uninterrupted run, bit for bit (CPU, same thread count,
    # the data order a pure function of the seed).
    assert done["status"]["metrics"]["optimizer_steps"] == reference["status"]["metrics"]["optimizer_steps"]
    assert int(float(done["status"]["metrics"]["optimizer_steps"])) == total
    for key in ("loss", "adv_logp_first_step", "adv_logp_last_step", "grad_norm_last_step"):
        assert done["status"]["metrics"][key] == reference["status"]["metrics"][key], key
    fetch_checkpoint(reference_output.rstrip("/"), tmp_path / "a")
    fetch_checkpoint(output.rstrip("/"), tmp_path / "b")
    want = load_file(tmp_path / "a" / "adapter_model.safetensors")
    got = load_file(tmp_path / "b" / "adapter_model.safetensors")
    assert want.keys() == got.keys()
    assert any(t.abs().sum() > 0 for n, t in want.items() if "lora_B" in n)
    for name, tensor in want.items():
        assert torch.equal(tensor, got[name]), name
