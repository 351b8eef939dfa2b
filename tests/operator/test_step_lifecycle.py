"""ReinforcementSteps through real Jobs, Pods, scheduler and kwok GPU nodes."""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest
from rft_devcluster.fake_trainer import DATASET_DIGEST, failure_message, fake_pod, success_message

from tests.operator.conftest import Objects, OperatorProcess

pytestmark = pytest.mark.cluster

SUCCEEDED = "rft-operator.io/step=s"


def conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in obj["status"].get("conditions", [])}


def test_step_completes_and_registers_its_model(operator: OperatorProcess, objects: Objects) -> None:
    objects.base_model()
    objects.ready_dataset()
    objects.step("s", pod=fake_pod(0, success_message("s3://bucket-a/rft/models/s-out/"), delay="1s"))
    running = objects.wait_phase("s", "JOB_STATE_RUNNING")
    assert running["status"]["jobName"] == "s-train"
    done = objects.wait_phase("s", "JOB_STATE_COMPLETED")
    status = done["status"]
    assert status["outputModel"] == f"accounts/{objects.namespace}/models/s-out"
    assert status["metrics"] == {"loss": "0.25", "mean_reward": "0.5"}
    assert status["progress"]["meanReward"] == "0.5"
    assert status["completionTime"]
    assert conditions(done)["Succeeded"]["status"] == "True"
    assert conditions(done)["Validated"]["status"] == "True"
    assert status["observedGeneration"] == done["metadata"]["generation"]

    model = objects.get("models", "s-out")
    assert model is not None
    spec = model["spec"]
    assert spec["kind"] == "lora"
    assert spec["location"] == "s3://bucket-a/rft/models/s-out/"
    assert spec["baseModel"] == "base"
    assert "parent" not in spec
    assert spec["datasetDigest"] == DATASET_DIGEST
    assert spec["lora"]["rank"] == 16
    assert spec["training"]["step"] == "s"
    assert spec["training"]["lossMethod"] == "grpo"
    assert spec["files"][0]["sha256"] == "e" * 64
    assert model["status"]["phase"] == "READY"

    jobs = objects.jobs("rft-operator.io/step=s")
    assert len(jobs) == 1
    pod_spec = jobs[0].spec.template.spec
    assert pod_spec.node_selector == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert pod_spec.containers[0].resources.limits["nvidia.com/gpu"] == "1"
    wanted = {"Normal/Pending", "Normal/Running", "Normal/Completed"}
    objects.wait_events("s", lambda seen: wanted <= {e.split(":")[0] for e in seen}, what=str(wanted))


def test_failing_pods_exhaust_retries_and_report_the_trainers_last_words(
    operator: OperatorProcess, objects: Objects
) -> None:
    objects.base_model()
    objects.ready_dataset()
    last_words = failure_message("StorageError", "s3://bucket-a/rft/datasets/ds.jsonl: connection reset")
    objects.step("s", pod=fake_pod(2, last_words), backoffLimit=1)
    failed = objects.wait_phase("s", "JOB_STATE_FAILED", timeout=90)
    cond = conditions(failed)["Succeeded"]
    assert cond["status"] == "False"
    assert cond["reason"] == "StorageError"
    assert "after 2 attempt(s)" in failed["status"]["message"]
    assert "exit code 2" in failed["status"]["message"]
    assert "connection reset" in failed["status"]["message"]
    objects.wait_events(
        "s", lambda seen: any(e.startswith("Warning/Failed") for e in seen), what="Warning/Failed"
    )


def test_bad_input_fails_at_once_without_retries(operator: OperatorProcess, objects: Objects) -> None:
    objects.base_model()
    objects.ready_dataset()
    objects.step(
        "s",
        pod=fake_pod(1, failure_message("InvalidDataset", "line 7: samples: fewer than 2")),
        backoffLimit=5,
    )
    failed = objects.wait_phase("s", "JOB_STATE_FAILED")
    assert conditions(failed)["Succeeded"]["reason"] == "InvalidDataset"
    assert "line 7: samples: fewer than 2" in failed["status"]["message"]
    assert "after 1 attempt(s)" in failed["status"]["message"]


def test_step_past_its_deadline_expires(operator: OperatorProcess, objects: Objects) -> None:
    objects.base_model()
    objects.ready_dataset()
    objects.step("s", pod=fake_pod(0, success_message(), delay="120s"), activeDeadlineSeconds=3)
    expired = objects.wait_phase("s", "JOB_STATE_EXPIRED", timeout=60)
    assert conditions(expired)["Succeeded"]["reason"] == "DeadlineExceeded"
    assert "activeDeadlineSeconds (3s)" in expired["status"]["message"]
    assert objects.get("models", "s-out") is None


def test_cancelled_step_ends_cancelled_and_its_job_is_gone(
    operator: OperatorProcess, objects: Objects
) -> None:
    objects.base_model()
    objects.ready_dataset()
    objects.step("s", pod=fake_pod(0, success_message(), delay="120s"))
    objects.wait_phase("s", "JOB_STATE_RUNNING")
    objects.patch("reinforcementsteps", "s", {"cancel": True})
    cancelled = objects.wait_phase("s", "JOB_STATE_CANCELLED")
    assert conditions(cancelled)["Succeeded"]["reason"] == "Cancelled"
    objects.wait_step("s", lambda _: not objects.jobs(SUCCEEDED), what="Job deleted")


def test_suspended_step_creates_no_job_until_resumed(operator: OperatorProcess, objects: Objects) -> None:
    objects.base_model()
    objects.ready_dataset()
    objects.step("s", pod=fake_pod(0, success_message()), suspend=True)
    pending = objects.wait_step("s", lambda o: "Suspended" in conditions(o) if o.get("status") else False)
    assert pending["status"]["phase"] == "JOB_STATE_PENDING"
    assert objects.jobs(SUCCEEDED) == []
    objects.patch("reinforcementsteps", "s", {"suspend": False})
    done = objects.wait_phase("s", "JOB_STATE_COMPLETED")
    assert conditions(done)["Suspended"]["status"] == "False"


def test_finished_step_and_its_job_are_removed_after_the_ttl(
    operator: OperatorProcess, objects: Objects
) -> None:
    objects.base_model()
    objects.ready_dataset()
    objects.step("s", pod=fake_pod(0, success_message()), ttlSecondsAfterFinished=2)
    objects.wait_phase("s", "JOB_STATE_COMPLETED")
    objects.wait_step("s", lambda _: True)  # exists right after completion
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (objects.get("reinforcementsteps", "s") or objects.jobs(SUCCEEDED)):
        time.sleep(0.5)
    assert objects.get("reinforcementsteps", "s") is None
    assert objects.jobs(SUCCEEDED) == []
    assert objects.get("models", "s-out") is not None, "the checkpoint outlives its step"


def test_operator_killed_mid_step_resumes_with_exactly_one_job(
    operator: OperatorProcess, objects: Objects
) -> None:
    objects.base_model()
    objects.ready_dataset()
    objects.step("s", pod=fake_pod(0, success_message(), delay="6s"))
    objects.wait_phase("s", "JOB_STATE_RUNNING")
    (job,) = objects.jobs(SUCCEEDED)
    operator.stop(signal.SIGKILL)
    try:
        time.sleep(1)
    finally:
        operator.start()
    objects.wait_phase("s", "JOB_STATE_COMPLETED", timeout=90)
    jobs = objects.jobs(SUCCEEDED)
    assert [j.metadata.uid for j in jobs] == [job.metadata.uid]
