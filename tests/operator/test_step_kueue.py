"""Steps with spec.queueName against a running Kueue (sigs.k8s.io/kueue, the `kueue` fixture of
tools/rft_devcluster/kueue.py), with a ClusterQueue whose GPU quota admits one step at a time:
two steps, the second waits Queued while the first runs, then Kueue admits it and it completes;
a running step preempted by a step of higher spec.priorityClass is Preempted, then admitted again,
and completes; a step naming a missing WorkloadPriorityClass fails naming the field. On kwok
nodes the pods are fakes: that the trainer continues from its in-step checkpoint after its Job is
suspended (what a preemption does) is tested with real trainer pods in test_step_resume.py, and
through the trainer's entry point in tests/trainer (SIGTERM)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from rft_devcluster.fake_trainer import fake_pod, success_message
from rft_devcluster.handle import ClusterHandle
from rft_devcluster.kueue import Kueue
from rft_devcluster.waiting import wait_for

from tests.operator.conftest import Objects, OperatorProcess

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

KUEUE = "kueue.x-k8s.io"
KUEUE_VERSION = "v1beta2"
QUEUE = "team-gpus"
URGENT = "urgent"
STEP_RESOURCES = ("cpu", "memory", "ephemeral-storage", "nvidia.com/gpu")
"""What a step's trainer pod requests (builders/jobs.py: trainer_resources); a ClusterQueue must
cover every resource a workload asks for."""


def admitted(obj: dict[str, Any]) -> dict[str, Any]:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == "Admitted"), {})


@pytest.fixture
def one_gpu_queue(kueue: Kueue, cluster: ClusterHandle, objects: Objects) -> Iterator[str]:
    """A ResourceFlavor, a ClusterQueue with a nominal quota of one GPU (one step with
    `accelerator.count: 1`) and plenty of the rest, where a workload of higher priority preempts
    one of lower priority, the WorkloadPriorityClass `urgent`, and the LocalQueue `team-gpus` in
    the test's namespace. Returns the ClusterQueue's name."""
    name = f"one-gpu-{objects.namespace}"
    quotas = {"cpu": "1000", "memory": "4Ti", "ephemeral-storage": "100Ti", "nvidia.com/gpu": "1"}
    cluster.apply(
        [
            {
                "apiVersion": f"{KUEUE}/{KUEUE_VERSION}",
                "kind": "ResourceFlavor",
                "metadata": {"name": "default-flavor"},
            },
            {
                "apiVersion": f"{KUEUE}/{KUEUE_VERSION}",
                "kind": "ClusterQueue",
                "metadata": {"name": name},
                "spec": {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": objects.namespace}},
                    "preemption": {"withinClusterQueue": "LowerPriority"},
                    "resourceGroups": [
                        {
                            "coveredResources": list(STEP_RESOURCES),
                            "flavors": [
                                {
                                    "name": "default-flavor",
                                    "resources": [
                                        {"name": r, "nominalQuota": quotas[r]} for r in STEP_RESOURCES
                                    ],
                                }
                            ],
                        }
                    ],
                },
            },
            {
                "apiVersion": f"{KUEUE}/{KUEUE_VERSION}",
                "kind": "WorkloadPriorityClass",
                "metadata": {"name": URGENT},
                "value": 1000,
            },
            {
                "apiVersion": f"{KUEUE}/{KUEUE_VERSION}",
                "kind": "LocalQueue",
                "metadata": {"name": QUEUE, "namespace": objects.namespace},
                "spec": {"clusterQueue": name},
            },
        ]
    )
    cluster.kubectl("wait", f"clusterqueue.{KUEUE}/{name}", "--for=condition=Active", "--timeout=60s")
    try:
        yield name
    finally:
        cluster.kubectl(
            "delete", f"clusterqueue.{KUEUE}", name, "--ignore-not-found", "--wait=false", check=False
        )


def workloads(objects: Objects) -> list[dict[str, Any]]:
    listed: dict[str, Any] = objects.custom.list_namespaced_custom_object(
        KUEUE, KUEUE_VERSION, objects.namespace, "workloads"
    )
    items: list[dict[str, Any]] = listed["items"]
    return items


def workload_of(objects: Objects, job: str) -> dict[str, Any] | None:
    return next(
        (
            w
            for w in workloads(objects)
            if any(o["name"] == job for o in w["metadata"].get("ownerReferences", []))
        ),
        None,
    )


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == kind), {})


def test_second_step_waits_queued_until_the_first_frees_the_gpu_quota(
    operator: OperatorProcess, objects: Objects, one_gpu_queue: str
) -> None:
    objects.base_model()
    objects.ready_dataset()
    objects.step(
        "first",
        pod=fake_pod(0, success_message("s3://bucket-a/rft/models/first-out/"), delay="10s"),
        queueName=QUEUE,
    )
    first = objects.wait_step(
        "first", lambda o: admitted(o).get("status") == "True", timeout=90, what="admitted"
    )
    assert admitted(first)["reason"] == "Admitted"
    first_wl = workload_of(objects, "first-train")
    assert first_wl is not None
    assert condition(first_wl, "Admitted")["status"] == "True"
    assert first_wl["status"]["admission"]["clusterQueue"] == one_gpu_queue

    objects.step(
        "second",
        pod=fake_pod(0, success_message("s3://bucket-a/rft/models/second-out/"), delay="1s"),
        queueName=QUEUE,
    )
    second = objects.wait_step("second", lambda o: admitted(o).get("reason") == "Queued", what="queued")
    assert second["status"]["phase"] == "JOB_STATE_PENDING"
    assert admitted(second)["status"] == "False"
    # Kueue holds it for want of GPU quota while the first step's pod runs.
    pending = wait_for(
        lambda: (
            (w := workload_of(objects, "second-train"))
            and condition(w, "QuotaReserved").get("status") == "False"
            and w
        ),
        timeout=30,
        what="the second step's Workload pending",
    )
    assert "nvidia.com/gpu" in condition(pending, "QuotaReserved")["message"]
    [job] = objects.jobs("rft-operator.io/step=second")
    assert job.spec.suspend is True
    first_now = objects.get("reinforcementsteps", "first")
    assert first_now is not None
    assert first_now["status"]["phase"] != "JOB_STATE_COMPLETED"

    done_first = objects.wait_phase("first", "JOB_STATE_COMPLETED", timeout=120)
    assert admitted(done_first)["status"] == "True"
    done_second = objects.wait_phase("second", "JOB_STATE_COMPLETED", timeout=120)
    assert admitted(done_second)["status"] == "True"
    admitted_wl = workload_of(objects, "second-train")
    assert admitted_wl is not None
    assert condition(admitted_wl, "Admitted")["status"] == "True"
    assert condition(admitted_wl, "Finished")["status"] == "True"


def test_a_step_of_higher_priority_class_preempts_a_running_one_which_then_completes(
    operator: OperatorProcess, objects: Objects, one_gpu_queue: str
) -> None:
    """spec.priorityClass: the step `high` (WorkloadPriorityClass `urgent`, value 1000) preempts
    the running step `low` (no class: priority 0) from the one GPU of the quota; `low` shows
    Preempted, `high` is admitted and completes, then `low` is admitted again and completes."""
    objects.base_model()
    objects.ready_dataset()
    objects.step(
        "low",
        pod=fake_pod(0, success_message("s3://bucket-a/rft/models/low-out/"), delay="15s"),
        queueName=QUEUE,
    )
    objects.wait_phase("low", "JOB_STATE_RUNNING", timeout=90)
    [low_job] = objects.jobs("rft-operator.io/step=low")
    assert f"{KUEUE}/priority-class" not in low_job.metadata.labels

    objects.step(
        "high",
        pod=fake_pod(0, success_message("s3://bucket-a/rft/models/high-out/"), delay="1s"),
        queueName=QUEUE,
        priorityClass=URGENT,
    )
    [high_job] = wait_for(
        lambda: objects.jobs("rft-operator.io/step=high") or None, timeout=30, what="high's Job"
    )
    assert high_job.metadata.labels[f"{KUEUE}/priority-class"] == URGENT

    preempted = objects.wait_step(
        "low", lambda o: admitted(o).get("reason") == "Preempted", timeout=60, what="preempted"
    )
    assert preempted["status"]["phase"] == "JOB_STATE_PENDING"
    assert "in-step checkpoint" in preempted["status"]["message"]
    evicted = workload_of(objects, "low-train")
    assert evicted is not None
    assert condition(evicted, "Evicted").get("reason") == "Preempted"
    high_wl = workload_of(objects, "high-train")
    assert high_wl is not None
    assert high_wl["spec"]["priority"] == 1000
    assert high_wl["spec"]["priorityClassRef"]["name"] == URGENT

    done_high = objects.wait_phase("high", "JOB_STATE_COMPLETED", timeout=90)
    assert admitted(done_high)["status"] == "True"
    done = objects.wait_phase("low", "JOB_STATE_COMPLETED", timeout=120)
    assert admitted(done)["status"] == "True"
    readmitted = workload_of(objects, "low-train")
    assert readmitted is not None
    assert condition(readmitted, "Finished")["status"] == "True"


def test_a_step_naming_a_missing_priority_class_fails_naming_the_field(
    operator: OperatorProcess, objects: Objects, one_gpu_queue: str
) -> None:
    """Kueue would leave the Job suspended for ever (it cannot build the Workload); the operator
    refuses the step before creating a Job."""
    objects.base_model()
    objects.ready_dataset()
    objects.step("nopriority", queueName=QUEUE, priorityClass="no-such-class")
    failed = objects.wait_phase("nopriority", "JOB_STATE_FAILED", timeout=30)
    validated = condition(failed, "Validated")
    assert validated["status"] == "False"
    assert validated["reason"] == "PriorityClassNotFound"
    assert "spec.priorityClass" in validated["message"]
    assert objects.jobs("rft-operator.io/step=nopriority") == []
