"""The local control plane: scheduler, controller-manager and kwok play out Jobs on fake GPU nodes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest
from kubernetes import client
from rft_devcluster.fake_nodes import GPU_RESOURCE, GPU_TAINT, KWOK_NODE_ANNOTATION
from rft_devcluster.handle import ClusterHandle, as_dict
from rft_devcluster.kwok_stages import FAKE_DELAY, FAKE_EXIT_CODE, FAKE_TERMINATION_MESSAGE
from rft_devcluster.waiting import wait_for

pytestmark = pytest.mark.cluster

GPU_TOLERATION = {"key": GPU_TAINT["key"], "operator": "Exists", "effect": "NoSchedule"}


def _container(**extra: Any) -> dict[str, Any]:
    return {
        "name": "main",
        "image": "registry.invalid/rft-trainer:test",
        "resources": {"limits": {GPU_RESOURCE: "1"}},
        **extra,
    }


def _gpu_pod(name: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": {"restartPolicy": "Never", "tolerations": [GPU_TOLERATION], "containers": [_container()]},
    }


def _wait_pod_phase(core: client.CoreV1Api, name: str, namespace: str, phases: set[str]) -> dict[str, Any]:
    def pod_in_phase() -> dict[str, Any] | None:
        pod = as_dict(core.read_namespaced_pod(name, namespace))
        return pod if pod["status"].get("phase") in phases else None

    return wait_for(pod_in_phase, timeout=60, what=f"pod {namespace}/{name} to reach {sorted(phases)}")


def _terminated(pod: dict[str, Any]) -> dict[str, Any]:
    terminated: dict[str, Any] = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    return terminated


def test_kwok_nodes_advertise_gpus_products_and_taint(cluster: ClusterHandle) -> None:
    with cluster.api_client() as api:
        nodes = as_dict(client.CoreV1Api(api).list_node())["items"]
    fake = [n for n in nodes if n["metadata"].get("annotations", {}).get(KWOK_NODE_ANNOTATION) == "fake"]

    assert sorted(n["metadata"]["name"] for n in fake) == sorted(cluster.gpu_nodes)
    assert len(fake) >= 2
    for node in fake:
        assert node["status"]["capacity"][GPU_RESOURCE] == "8"
        assert node["status"]["allocatable"][GPU_RESOURCE] == "8"
        assert node["metadata"]["labels"]["node.kubernetes.io/instance-type"]
        assert {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"} in node["spec"]["taints"]
        assert {"type": "Ready", "status": "True"}.items() <= next(
            c for c in node["status"]["conditions"] if c["type"] == "Ready"
        ).items()
    products = {n["metadata"]["labels"]["nvidia.com/gpu.product"] for n in fake}
    assert products == {"NVIDIA-A100-SXM4-80GB", "NVIDIA-H100-80GB-HBM3"}


def test_gpu_job_runs_to_complete_on_a_kwok_node(cluster: ClusterHandle, namespace: str) -> None:
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "train"},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "tolerations": [GPU_TOLERATION],
                    "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
                    "containers": [_container(command=["python", "-m", "rft_trainer"])],
                }
            },
        },
    }
    cluster.apply(job, namespace=namespace)

    with cluster.api_client() as api:
        batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
        def finished_job() -> dict[str, Any] | None:
            job = as_dict(batch.read_namespaced_job("train", namespace))
            conditions = job["status"].get("conditions", [])
            return job if any(c["type"] in ("Complete", "Failed") for c in conditions) else None

        done = wait_for(finished_job, timeout=60, what="Job train to finish")
        pods = as_dict(core.list_namespaced_pod(namespace, label_selector="job-name=train"))["items"]
        node = as_dict(core.read_node(pods[0]["spec"]["nodeName"]))

    assert [c["type"] for c in done["status"]["conditions"] if c["status"] == "True"] == [
        "SuccessCriteriaMet",
        "Complete",
    ]
    assert done["status"]["succeeded"] == 1
    assert len(pods) == 1
    assert node["metadata"]["name"] in cluster.gpu_nodes
    assert node["metadata"]["labels"]["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"


def test_pod_without_toleration_stays_pending(cluster: ClusterHandle, namespace: str) -> None:
    pod = _gpu_pod("untolerated")
    pod["spec"]["tolerations"] = []
    cluster.apply(pod, namespace=namespace)

    with cluster.api_client() as api:
        core = client.CoreV1Api(api)
        def unschedulable() -> dict[str, Any] | None:
            conditions = as_dict(core.read_namespaced_pod("untolerated", namespace))["status"].get("conditions", [])
            return next((c for c in conditions if c["type"] == "PodScheduled" and c["status"] == "False"), None)

        condition = wait_for(unschedulable, timeout=30, what="the scheduler to give up on the pod")
    assert condition["reason"] == "Unschedulable"
    assert "untolerated taint {nvidia.com/gpu: present}" in condition["message"]


def test_pod_annotated_to_fail_ends_failed_with_exit_code_and_message(
    cluster: ClusterHandle, namespace: str
) -> None:
    annotations = {FAKE_EXIT_CODE: "3", FAKE_TERMINATION_MESSAGE: "CUDA out of memory"}
    cluster.apply(_gpu_pod("doomed", annotations), namespace=namespace)

    with cluster.api_client() as api:
        pod = _wait_pod_phase(client.CoreV1Api(api), "doomed", namespace, {"Failed", "Succeeded"})

    assert pod["status"]["phase"] == "Failed"
    terminated = _terminated(pod)
    assert terminated["exitCode"] == 3
    assert terminated["reason"] == "Error"
    assert terminated["message"] == "CUDA out of memory"


def test_pod_completes_after_delay_with_json_termination_message(
    cluster: ClusterHandle, namespace: str
) -> None:
    summary = {"model": "accounts/x/models/m-1", "metrics": {"reward": 0.75}, "note": "<quoted> & \"escaped\""}
    annotations = {FAKE_TERMINATION_MESSAGE: json.dumps(summary), FAKE_DELAY: "2s"}
    cluster.apply(_gpu_pod("trainer", annotations), namespace=namespace)

    with cluster.api_client() as api:
        core = client.CoreV1Api(api)
        running = _wait_pod_phase(core, "trainer", namespace, {"Running", "Succeeded", "Failed"})
        done = _wait_pod_phase(core, "trainer", namespace, {"Succeeded", "Failed"})

    # The delay keeps the pod Running first, so a watcher sees it run before it completes.
    assert running["status"]["phase"] == "Running"
    assert done["status"]["phase"] == "Succeeded"
    terminated = _terminated(done)
    assert terminated["exitCode"] == 0
    assert json.loads(terminated["message"]) == summary


def test_sa_kubeconfig_authenticates_as_the_service_account(cluster: ClusterHandle, namespace: str) -> None:
    cluster.apply({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "robot"}}, namespace=namespace)
    kubeconfig = cluster.sa_kubeconfig(namespace, "robot")

    whoami = json.loads(cluster.kubectl("auth", "whoami", "-o", "json", kubeconfig=kubeconfig).stdout)
    assert whoami["status"]["userInfo"]["username"] == f"system:serviceaccount:{namespace}:robot"
    denied = cluster.kubectl("get", "pods", kubeconfig=kubeconfig, check=False)
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr

    cluster.kubectl("create", "role", "pod-reader", "--verb=list", "--resource=pods", "-n", namespace)
    cluster.kubectl(
        "create", "rolebinding", "robot-reads-pods", "--role=pod-reader",
        f"--serviceaccount={namespace}:robot", "-n", namespace,
    )
    # RBAC caches refresh quickly but not atomically with the create; poll briefly.
    allowed = wait_for(
        lambda: cluster.kubectl("get", "pods", kubeconfig=kubeconfig, check=False).returncode == 0,
        timeout=10,
        what="the RoleBinding to take effect",
    )
    assert allowed is True


def _descendants_alive(records: list[dict[str, Any]]) -> list[int]:
    alive = []
    for record in records:
        try:
            proc = psutil.Process(record["pid"])
            if abs(proc.create_time() - record["create_time"]) < 0.05 and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(record["pid"])
        except psutil.Error:
            continue
    return alive


@pytest.mark.slow  # starts and stops a second cluster through the CLI
def test_cli_up_and_down_leave_no_process(cluster: ClusterHandle, tmp_path: Path) -> None:
    state_dir = tmp_path / "cli-cluster"
    env_bin = {"RFT_BIN_DIR": str(cluster.bin_dir)}
    cmd = [sys.executable, "-m", "rft_devcluster"]
    up = subprocess.run(
        [*cmd, "up", f"--state-dir={state_dir}", "--gpu-nodes=1", "--no-local-node"],
        capture_output=True, text=True, timeout=180, env={**_env(), **env_bin}, check=False,
    )
    try:
        assert up.returncode == 0, up.stderr + up.stdout
        last_line = up.stdout.strip().splitlines()[-1]
        assert last_line == f"export KUBECONFIG={state_dir.resolve() / 'kubeconfig'}"
        state = json.loads((state_dir / "state.json").read_text())
        assert state["status"] == "ready"
        records = [*state["processes"], state["supervisor"]]
        assert len(_descendants_alive(records)) == len(records)

        status = subprocess.run([*cmd, "status", f"--state-dir={state_dir}"], capture_output=True, text=True,
                                timeout=30, env=_env(), check=False)
        assert status.returncode == 0
        assert "ready" in status.stdout
    finally:
        down = subprocess.run([*cmd, "down", f"--state-dir={state_dir}"], capture_output=True, text=True,
                              timeout=60, env=_env(), check=False)
    assert down.returncode == 0, down.stderr
    assert _descendants_alive(records) == []
    assert json.loads((state_dir / "state.json").read_text())["status"] == "stopped"
    assert not Path(state["etcd_data_dir"]).exists()


def _env() -> dict[str, str]:
    return dict(os.environ)
