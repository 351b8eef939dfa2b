"""Trust boundaries on the local cluster: the admin's workload policy refuses what a namespace user
names beyond it, before any Job or pod exists; results are taken only from the Job's own pods."""

from __future__ import annotations

import hashlib
import json
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from rft.api import GROUP, VERSION
from rft.api.reinforcement_step import TERMINAL_PHASES
from rft_devcluster.emulators import Emulator, put_s3_object
from rft_devcluster.fake_nodes import GPU_PRODUCT_LABEL, GPU_TAINT
from rft_devcluster.fake_trainer import fake_pod, success_message
from rft_devcluster.handle import ClusterHandle
from rft_devcluster.pytest_fixtures_storage import S3Bucket
from rft_operator import naming

from tests.chart.cluster import can, token_client
from tests.operator.conftest import WORKLOAD, Objects, OperatorProcess
from tests.operator.test_dataset_validation import ROLE, good_row

pytestmark = pytest.mark.cluster

FORBIDDEN_IMAGE = "evil.example/miner:latest"
CONTROLLER_UID_LABELS = ("batch.kubernetes.io/controller-uid", "controller-uid")
KINDS = ["datasets", "models", "deployments", "reinforcementsteps"]


def conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in obj["status"].get("conditions", [])}


class NamespaceUser:
    """A ServiceAccount bound to a Role that allows the project's four kinds in one namespace and
    nothing else (no pods, Jobs or apps Deployments): what the policy protects against."""

    def __init__(self, cluster: ClusterHandle, objects: Objects) -> None:
        ns = objects.namespace
        objects.core.create_namespaced_service_account(ns, {"metadata": {"name": "alice"}})
        rbac = client.RbacAuthorizationV1Api(objects.api)
        rbac.create_namespaced_role(
            ns,
            {
                "metadata": {"name": "rft-user"},
                "rules": [
                    {
                        "apiGroups": [GROUP],
                        "resources": KINDS,
                        "verbs": ["get", "list", "watch", "create", "patch", "delete"],
                    }
                ],
            },
        )
        rbac.create_namespaced_role_binding(
            ns,
            {
                "metadata": {"name": "rft-user"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "rft-user"},
                "subjects": [{"kind": "ServiceAccount", "name": "alice", "namespace": ns}],
            },
        )
        self.namespace = ns
        self.api = token_client(cluster.sa_kubeconfig(ns, "alice"))
        self.custom = client.CustomObjectsApi(self.api)

    def create(self, plural: str, kind: str, name: str, spec: dict[str, Any]) -> None:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind, "metadata": {"name": name}, "spec": spec}
        self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, plural, body)


@pytest.fixture
def user(cluster: ClusterHandle, objects: Objects) -> Iterator[NamespaceUser]:
    alice = NamespaceUser(cluster, objects)
    yield alice
    alice.api.close()  # type: ignore[no-untyped-call]


def wait_phase(objects: Objects, plural: str, name: str, phase: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    obj: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        obj = objects.get(plural, name)
        if obj is not None and obj.get("status", {}).get("phase") == phase:
            return obj
        time.sleep(0.25)
    raise AssertionError(f"{plural}/{name}: phase {phase} not reached in {timeout}s; last: {obj}")


def test_namespace_user_cannot_run_pods_through_the_operator(
    operator: OperatorProcess, objects: Objects, user: NamespaceUser
) -> None:
    ns = objects.namespace
    # Who alice is: the project's kinds, no pods, no Jobs, no server Deployments.
    api = user.api
    assert can(api, "create", "reinforcementsteps", group=GROUP, namespace=ns)
    for resource, group in (("pods", ""), ("jobs", "batch"), ("deployments", "apps")):
        assert not can(api, "create", resource, group=group, namespace=ns), resource
    with pytest.raises(client.ApiException) as denied:
        client.CoreV1Api(api).create_namespaced_pod(
            ns, {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": FORBIDDEN_IMAGE}]}}
        )
    assert denied.value.status == 403
    # The admin's side: a ServiceAccount without the workload label (as a user's workload
    # identity may exist for other purposes), a READY base model and dataset.
    objects.core.create_namespaced_service_account(ns, {"metadata": {"name": "unlabelled"}})
    objects.base_model()
    objects.ready_dataset()

    step = {"dataset": "ds", "model": "base", "accelerator": {"type": "NVIDIA_H100_80GB", "count": 1}}
    user.create(
        "reinforcementsteps",
        "ReinforcementStep",
        "bad-image",
        {**step, "outputModel": "bad-image-out", "trainerImage": FORBIDDEN_IMAGE},
    )
    user.create(
        "reinforcementsteps",
        "ReinforcementStep",
        "bad-sa",
        {**step, "outputModel": "bad-sa-out", "serviceAccountName": "unlabelled"},
    )
    user.create(
        "reinforcementsteps",
        "ReinforcementStep",
        "no-sa",
        {**step, "outputModel": "no-sa-out", "serviceAccountName": "ghost"},
    )
    user.create(
        "deployments",
        "Deployment",
        "bad-image",
        {
            "model": "base",
            "deploymentType": "on-demand",
            "accelerator": {"type": "NVIDIA_H100_80GB", "count": 1},
            "image": FORBIDDEN_IMAGE,
        },
    )
    user.create(
        "deployments",
        "Deployment",
        "bad-sa",
        {
            "model": "base",
            "deploymentType": "on-demand",
            "accelerator": {"type": "NVIDIA_H100_80GB", "count": 1},
            "serviceAccountName": "unlabelled",
        },
    )
    user.create(
        "datasets",
        "Dataset",
        "bad-sa",
        {"source": "s3://bucket-a/rft/datasets/x.jsonl", "serviceAccountName": "unlabelled"},
    )
    user.create(
        "models",
        "Model",
        "bad-sa",
        {"kind": "base", "location": "s3://bucket-a/rft/models/x/", "serviceAccountName": "unlabelled"},
    )

    failed = wait_phase(objects, "reinforcementsteps", "bad-image", "JOB_STATE_FAILED")
    for cond in (conditions(failed)["Succeeded"], conditions(failed)["Validated"]):
        assert (cond["status"], cond["reason"]) == ("False", "ImageNotAllowed")
    message = failed["status"]["message"]
    assert f"spec.trainerImage '{FORBIDDEN_IMAGE}' is not allowed" in message
    assert "ghcr.io/rft-operator/rft-trainer:test" in message  # what the admin allows
    assert "registry.invalid/" in message

    failed = wait_phase(objects, "reinforcementsteps", "bad-sa", "JOB_STATE_FAILED")
    assert conditions(failed)["Succeeded"]["reason"] == "ServiceAccountNotAllowed"
    assert "spec.serviceAccountName 'unlabelled' is not allowed" in failed["status"]["message"]
    assert 'rft-operator.io/workload="true"' in failed["status"]["message"]

    # A ServiceAccount that never appears: waited for (the tests' operator: 5 s), then failed.
    failed = wait_phase(objects, "reinforcementsteps", "no-sa", "JOB_STATE_FAILED", timeout=40)
    assert conditions(failed)["Succeeded"]["reason"] == "ServiceAccountNotFound"
    assert "spec.serviceAccountName 'ghost': no such ServiceAccount" in failed["status"]["message"]

    for plural, name, phase, reason, field in (
        ("deployments", "bad-image", "FAILED", "ImageNotAllowed", "spec.image"),
        ("deployments", "bad-sa", "FAILED", "ServiceAccountNotAllowed", "spec.serviceAccountName"),
        ("datasets", "bad-sa", "FAILED", "ServiceAccountNotAllowed", "spec.serviceAccountName"),
        ("models", "bad-sa", "FAILED", "ServiceAccountNotAllowed", "spec.serviceAccountName"),
    ):
        obj = wait_phase(objects, plural, name, phase)
        ready = conditions(obj)["Ready"]
        assert (ready["status"], ready["reason"]) == ("False", reason), (plural, name, ready)
        assert ready["message"].startswith(field), ready["message"]

    # Nothing ran for them: no Job, no pod, no server Deployment. (The only Jobs are the checks
    # of the admin's base Model and Dataset, which the operator may start before the test pins
    # their status by hand.)
    admins = {naming.model_check_job_name("base", 1), naming.validation_job_name("ds", 1)}
    jobs = {j.metadata.name for j in objects.batch.list_namespaced_job(ns).items}
    assert jobs <= admins, jobs
    for pod in objects.core.list_namespaced_pod(ns).items:
        assert pod.metadata.labels.get("batch.kubernetes.io/job-name") in admins, pod.metadata.name
        assert pod.spec.service_account_name == "default"
        assert all(c.image != FORBIDDEN_IMAGE for c in pod.spec.containers)
    assert client.AppsV1Api(objects.api).list_namespaced_deployment(ns).items == []

    # The same user, within the policy (an allowed image, the labelled `default` identity): runs.
    user.create(
        "reinforcementsteps",
        "ReinforcementStep",
        "good",
        {
            **step,
            "outputModel": "good-out",
            "trainerImage": "registry.invalid/trainer:1",
            "podMetadata": {
                "annotations": fake_pod(0, success_message("s3://bucket-a/rft/models/good-out/"))
            },
        },
    )
    done = wait_phase(objects, "reinforcementsteps", "good", "JOB_STATE_COMPLETED", timeout=60)
    assert conditions(done)["Succeeded"]["status"] == "True"
    [job] = objects.jobs("rft-operator.io/step=good")
    assert job.spec.template.spec.containers[0].image == "registry.invalid/trainer:1"


# --- results bound to their Job -------------------------------------------------------------------
def _job(objects: Objects, name: str, timeout: float = 30) -> client.V1Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = objects.batch.list_namespaced_job(
            objects.namespace, field_selector=f"metadata.name={name}"
        ).items
        if jobs:
            return jobs[0]
        time.sleep(0.2)
    raise AssertionError(f"Job {name} not created in {timeout}s")


def _plant(objects: Objects, job: client.V1Job, annotations: dict[str, str], **spec: Any) -> str:
    """A pod made by whoever may create pods in the namespace: the Job's pod template with all its
    labels (the Job's name, the step's, the operator's) but no owner reference and no
    controller-uid label (the Job controller does not adopt it)."""
    template = objects.api.sanitize_for_serialization(job.spec.template)
    labels = {k: v for k, v in template["metadata"]["labels"].items() if k not in CONTROLLER_UID_LABELS}
    assert labels["batch.kubernetes.io/job-name"] == job.metadata.name
    name = f"{job.metadata.name}-forged"
    objects.core.create_namespaced_pod(
        objects.namespace,
        {
            "metadata": {"name": name, "labels": labels, "annotations": annotations},
            "spec": {**template["spec"], **spec},
        },
    )
    return name


def _wait_job_complete(objects: Objects, name: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not any(
        c.type == "Complete" and c.status == "True"
        for c in objects.batch.read_namespaced_job(name, objects.namespace).status.conditions or []
    ):
        assert time.monotonic() < deadline, f"Job {name} did not complete in {timeout}s"
        time.sleep(0.2)


def _wait_pod(objects: Objects, name: str, phase: str, timeout: float = 30) -> client.V1Pod:
    deadline = time.monotonic() + timeout
    while True:
        pod = objects.core.read_namespaced_pod(name, objects.namespace)
        if pod.status.phase == phase:
            return pod
        assert time.monotonic() < deadline, f"pod {name} not {phase} in {timeout}s: {pod.status.phase}"
        time.sleep(0.2)


def test_a_forged_result_from_a_pod_with_the_jobs_label_is_not_taken(
    operator: OperatorProcess, objects: Objects
) -> None:
    """The Job's own pod exits 0 without a result; a planted pod with the Job's labels succeeds
    after it with a forged one (pointing at someone else's bucket), before the operator looks (it
    is stopped meanwhile). Taken by label, the newest result is the forgery: it would complete the
    step and register its Model. Taken only from pods the Job controls, nothing does."""
    objects.base_model()
    objects.ready_dataset()
    objects.step("s", pod=fake_pod(0, None, delay="1s"))
    job = _job(objects, "s-train")
    operator.stop(signal.SIGKILL)
    try:
        _wait_job_complete(objects, "s-train")
        time.sleep(1.1)  # termination times have seconds: the forgery finishes strictly later
        forged = success_message("s3://attacker-bucket/stolen/")
        pod = _wait_pod(objects, _plant(objects, job, fake_pod(0, forged)), "Succeeded")
        assert pod.status.container_statuses[0].state.terminated.message == forged
    finally:
        operator.start()
    failed = objects.wait_step(
        "s", lambda o: o.get("status", {}).get("phase") in TERMINAL_PHASES, timeout=60, what="the end"
    )
    assert failed["status"]["phase"] == "JOB_STATE_FAILED", failed["status"]
    assert conditions(failed)["Succeeded"]["reason"] == "InvalidResult"
    assert "attacker-bucket" not in str(failed["status"])
    assert objects.get("models", "s-out") is None


def test_a_running_pod_with_the_jobs_label_does_not_make_the_step_run(
    operator: OperatorProcess, objects: Objects, cluster: ClusterHandle
) -> None:
    """The Job's pod waits for an accelerator no node has; a planted pod with its label runs on
    another node. The step stays PENDING: its progress comes from no pod but the Job's."""
    objects.base_model()
    objects.ready_dataset()
    objects.step("s", accelerator={"type": "NVIDIA_H200_141GB", "count": 1})
    job = _job(objects, "s-train")
    name = _plant(
        objects,
        job,
        fake_pod(0, success_message(), delay="120s"),
        nodeSelector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
    )
    _wait_pod(objects, name, "Running")
    time.sleep(4)  # several of the operator's polls (1 s)
    step = objects.get("reinforcementsteps", "s")
    assert step is not None
    assert step["status"]["phase"] == "JOB_STATE_PENDING", step["status"]
    assert "startTime" not in step["status"]


@pytest.mark.localnode
def test_a_forged_validation_summary_does_not_set_a_datasets_digest(
    operator: OperatorProcess, objects: Objects, moto_server: Emulator, s3_bucket: S3Bucket
) -> None:
    """The validation Job really reads the dataset (on the local node); a pod planted with its
    labels on a kwok node reports, after it, a summary with another digest and row count. The
    Dataset gets the Job's numbers."""
    objects.core.create_namespaced_service_account(
        objects.namespace,
        {
            "metadata": {
                "name": "reader",
                "labels": WORKLOAD,
                "annotations": {"eks.amazonaws.com/role-arn": ROLE},
            }
        },
    )
    data = b"".join(json.dumps(good_row(i)).encode() + b"\n" for i in range(4))
    put_s3_object(moto_server.endpoint, s3_bucket.name, "rft/datasets/real.jsonl", data)
    objects.create(
        "datasets",
        "Dataset",
        "real",
        {"source": f"s3://{s3_bucket.name}/rft/datasets/real.jsonl", "serviceAccountName": "reader"},
    )
    job_name = naming.validation_job_name("real", 1)
    job = _job(objects, job_name)
    operator.stop(signal.SIGKILL)
    try:
        _wait_job_complete(objects, job_name, timeout=120)
        time.sleep(1.1)  # termination times have seconds: the forgery finishes strictly later
        forged = json.dumps({"ok": True, "rows": 999, "format": "samples", "digest": "sha256:" + "f" * 64})
        name = _plant(
            objects,
            job,
            fake_pod(0, forged),
            nodeSelector={GPU_PRODUCT_LABEL: "NVIDIA-H100-80GB-HBM3"},
            tolerations=[GPU_TAINT],
        )
        assert (
            _wait_pod(objects, name, "Succeeded").status.container_statuses[0].state.terminated.message
            == forged
        )
    finally:
        operator.start()
    deadline = time.monotonic() + 60
    while (status := (objects.get("datasets", "real") or {}).get("status", {})).get("phase") != "READY":
        assert time.monotonic() < deadline, status
        time.sleep(0.25)
    assert status["rows"] == 4
    assert status["digest"] == "sha256:" + hashlib.sha256(data).hexdigest()
