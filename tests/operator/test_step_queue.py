"""A step with spec.queueName: its Job is created suspended with Kueue's queue label, the operator
never unsuspends it, and the step's Admitted condition follows the Job (Queued, Admitted,
Preempted). Kueue itself does not run here: the test unsuspends and suspends the Job as Kueue's
admission and preemption do (test_step_kueue.py runs the same against a running Kueue)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from rft_devcluster.fake_trainer import fake_pod, success_message

from tests.operator.conftest import Objects, OperatorProcess

pytestmark = pytest.mark.cluster

SELECTOR = "rft-operator.io/step=q"


def admitted(obj: dict[str, Any]) -> dict[str, Any] | None:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == "Admitted"), None)


def test_queued_step_waits_suspended_until_admitted_and_says_when_preempted(
    operator: OperatorProcess, objects: Objects
) -> None:
    objects.base_model()
    objects.ready_dataset()
    objects.step("q", pod=fake_pod(0, success_message(), delay="6s"), queueName="team-gpus")
    queued = objects.wait_step("q", lambda o: (admitted(o) or {}).get("reason") == "Queued")
    assert queued["status"]["phase"] == "JOB_STATE_PENDING"
    assert admitted(queued)["status"] == "False"  # type: ignore[index]
    [job] = objects.jobs(SELECTOR)
    assert job.metadata.labels["kueue.x-k8s.io/queue-name"] == "team-gpus"
    assert job.spec.suspend is True
    time.sleep(3)  # several reconciles later the operator has still not started it itself
    assert objects.jobs(SELECTOR)[0].spec.suspend is True

    # Admission (Kueue unsuspends the Job)
    objects.batch.patch_namespaced_job("q-train", objects.namespace, {"spec": {"suspend": False}})
    running = objects.wait_phase("q", "JOB_STATE_RUNNING")
    assert admitted(running)["reason"] == "Admitted"  # type: ignore[index]

    # Preemption (Kueue suspends the admitted Job again): pending, and it says why
    objects.batch.patch_namespaced_job("q-train", objects.namespace, {"spec": {"suspend": True}})
    preempted = objects.wait_step("q", lambda o: (admitted(o) or {}).get("reason") == "Preempted")
    assert preempted["status"]["phase"] == "JOB_STATE_PENDING"
    assert "in-step checkpoint" in preempted["status"]["message"]

    # Admitted again: it runs to the end
    objects.batch.patch_namespaced_job("q-train", objects.namespace, {"spec": {"suspend": False}})
    done = objects.wait_phase("q", "JOB_STATE_COMPLETED", timeout=90)
    assert admitted(done)["status"] == "True"  # type: ignore[index]
