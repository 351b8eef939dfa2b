"""Jobs on the local node: real processes, exit codes, termination messages, retries, env and volumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rft_devcluster.handle import ClusterHandle

from tests.localnode.support import (
    ON_LOCAL_NODE,
    bare_pod,
    condition,
    job,
    job_pods,
    log_text,
    phase_in,
    pod_spec,
    python_container,
    terminated,
    wait_job_finished,
    wait_pod,
)

pytestmark = [pytest.mark.cluster, pytest.mark.localnode]


def test_job_process_runs_to_complete_with_its_output_logged(cluster: ClusterHandle, namespace: str) -> None:
    code = """
        import os, sys
        print("hello from", os.environ["HOSTNAME"], "pid", os.getpid())
        sys.exit(0)
    """
    cluster.apply(job("hello", pod_spec(python_container("main", code))), namespace=namespace)

    done = wait_job_finished(cluster, namespace, "hello")
    [pod] = job_pods(cluster, namespace, "hello")

    assert condition(done, "Complete") is not None
    assert pod["spec"]["nodeName"] == cluster.local_node.name if cluster.local_node else False
    assert pod["status"]["phase"] == "Succeeded"
    assert terminated(pod)["exitCode"] == 0
    assert terminated(pod)["reason"] == "Completed"
    assert f"hello from {pod['metadata']['name']}" in log_text(pod)


def test_failing_job_is_retried_then_fails_with_the_termination_message(
    cluster: ClusterHandle, namespace: str
) -> None:
    code = """
        import json, sys
        with open("/dev/termination-log", "w") as fh:
            json.dump({"error": "bad dataset", "row": 7}, fh)
        print("giving up", file=sys.stderr)
        sys.exit(3)
    """
    cluster.apply(
        job("doomed", pod_spec(python_container("main", code)), backoff_limit=1), namespace=namespace
    )

    done = wait_job_finished(cluster, namespace, "doomed", timeout=120)
    pods = job_pods(cluster, namespace, "doomed")

    failed = condition(done, "Failed")
    assert failed is not None
    assert failed["reason"] == "BackoffLimitExceeded"
    assert len(pods) == 2, "backoffLimit 1 means one retry"
    for pod in pods:
        assert pod["status"]["phase"] == "Failed"
        state = terminated(pod)
        assert state["exitCode"] == 3
        assert state["reason"] == "Error"
        assert json.loads(state["message"]) == {"error": "bad dataset", "row": 7}
    assert "giving up" in log_text(pods[0])


def test_fallback_to_logs_on_error_reports_the_log_tail(cluster: ClusterHandle, namespace: str) -> None:
    code = """
        import sys
        for i in range(200):
            print("line", i)
        sys.exit(2)
    """
    container = python_container("main", code, terminationMessagePolicy="FallbackToLogsOnError")
    cluster.apply(bare_pod("noisy", pod_spec(container)), namespace=namespace)

    pod = wait_pod(cluster, namespace, "noisy", phase_in("Failed", "Succeeded"), "finish")

    message = terminated(pod)["message"]
    assert message.endswith("line 199\n")
    assert "line 119\n" not in message  # at most 80 lines
    assert len(message.encode()) <= 2048


def test_env_valuefrom_configmap_secret_volumes_and_mount_paths(
    cluster: ClusterHandle, namespace: str
) -> None:
    cluster.apply(
        [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "trainer-config"},
                "data": {"config.json": json.dumps({"lr": "1e-4"}), "mode": "fast"},
            },
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "creds"},
                "stringData": {"token": "s3cr3t"},
            },
        ],
        namespace=namespace,
    )
    code = """
        import json, os, sys
        config = json.load(open(sys.argv[1]))
        os.makedirs(os.environ["HOME"], exist_ok=True)
        open(os.path.join(os.environ["SCRATCH"], "out.txt"), "w").write("scratch works")
        report = {
            "config": config,
            "mode": os.environ["MODE"],
            "token": os.environ["TOKEN"],
            "pod_name": os.environ["POD_NAME"],
            "pod_ip": os.environ["POD_IP"],
            "label": open("/etc/podinfo/app").read(),
            "sa_token_file": os.path.getsize("/var/run/secrets/kubernetes.io/serviceaccount/token") > 0,
            "expanded": os.environ["GREETING"],
            "scratch": open("/tmp/rft/out.txt").read(),
        }
        open("/dev/termination-log", "w").write(json.dumps(report))
    """
    container = python_container(
        "main",
        code,
        args=["/etc/rft/config.json"],
        env=[
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "trainer-config", "key": "mode"}}},
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
            {"name": "GREETING", "value": "hi $(POD_NAME)"},
            {"name": "SCRATCH", "value": "/tmp/rft"},
            {"name": "HOME", "value": "/tmp/rft/home"},
        ],
        volumeMounts=[
            {"name": "config", "mountPath": "/etc/rft", "readOnly": True},
            {"name": "scratch", "mountPath": "/tmp/rft"},
            {"name": "podinfo", "mountPath": "/etc/podinfo"},
        ],
    )
    spec = pod_spec(
        container,
        volumes=[
            {
                "name": "config",
                "configMap": {
                    "name": "trainer-config",
                    "items": [{"key": "config.json", "path": "config.json"}],
                },
            },
            {"name": "scratch", "emptyDir": {}},
            {
                "name": "podinfo",
                "downwardAPI": {
                    "items": [{"path": "app", "fieldRef": {"fieldPath": "metadata.labels['app']"}}]
                },
            },
        ],
    )
    cluster.apply(bare_pod("reporter", spec, labels={"app": "reporter"}), namespace=namespace)

    pod = wait_pod(cluster, namespace, "reporter", phase_in("Failed", "Succeeded"), "finish")

    assert pod["status"]["phase"] == "Succeeded", terminated(pod)
    report = json.loads(terminated(pod)["message"])
    assert report == {
        "config": {"lr": "1e-4"},
        "mode": "fast",
        "token": "s3cr3t",
        "pod_name": "reporter",
        "pod_ip": pod["status"]["podIP"],
        "label": "reporter",
        "sa_token_file": True,
        "expanded": "hi reporter",
        "scratch": "scratch works",
    }


def test_init_containers_run_first_and_share_volumes(cluster: ClusterHandle, namespace: str) -> None:
    init = python_container(
        "fetch",
        'open("/work/input.txt", "w").write("from init")',
        volumeMounts=[{"name": "work", "mountPath": "/work"}],
    )
    main = python_container(
        "main",
        'open("/dev/termination-log", "w").write(open("/work/input.txt").read())',
        volumeMounts=[{"name": "work", "mountPath": "/work"}],
    )
    spec = pod_spec(main, initContainers=[init], volumes=[{"name": "work", "emptyDir": {}}])
    cluster.apply(bare_pod("with-init", spec), namespace=namespace)

    pod = wait_pod(cluster, namespace, "with-init", phase_in("Failed", "Succeeded"), "finish")

    assert pod["status"]["phase"] == "Succeeded"
    assert pod["status"]["initContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    assert terminated(pod)["message"] == "from init"


def test_log_path_is_in_the_annotation_and_the_status(cluster: ClusterHandle, namespace: str) -> None:
    cluster.apply(
        bare_pod("logger", pod_spec(python_container("main", 'print("logged line")'))), namespace=namespace
    )

    pod = wait_pod(cluster, namespace, "logger", phase_in("Succeeded", "Failed"), "finish")

    log_condition = condition(pod, "rft-operator.io/LogPath")
    assert log_condition is not None
    assert (
        Path(log_condition["message"])
        == Path(pod["metadata"]["annotations"]["rft-operator.io/log-path"]).parent
    )
    assert log_text(pod) == "logged line\n"
    assert pod["spec"]["nodeSelector"] == ON_LOCAL_NODE
