"""Deleting pods on the local node stops their processes; nothing is left behind."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
from kubernetes import client
from rft_devcluster.handle import ClusterHandle

from tests.localnode.support import (
    bare_pod,
    container_pid,
    log_text,
    pod_spec,
    processes_in,
    python_container,
    wait_pod,
    wait_pod_gone,
)

pytestmark = [pytest.mark.cluster, pytest.mark.localnode]


def _running_with_output(text: str) -> Callable[[dict[str, Any]], bool]:
    def check(pod: dict[str, Any]) -> bool:
        return pod["status"].get("phase") == "Running" and text in log_text(pod)

    return check


def _pod_dir(cluster: ClusterHandle, pod: dict[str, Any]) -> Path:
    assert cluster.local_node is not None
    meta = pod["metadata"]
    return cluster.local_node.root_dir / "pods" / f"{meta['namespace']}_{meta['name']}_{meta['uid'][:8]}"


def test_deleting_a_running_pod_sends_sigterm_and_ends_its_process(cluster: ClusterHandle, namespace: str) -> None:
    code = """
        import signal, sys, time
        def leave(*_):
            print("got SIGTERM", flush=True)
            sys.exit(0)
        signal.signal(signal.SIGTERM, leave)
        print("serving", flush=True)
        time.sleep(3600)
    """
    # A grace period far longer than the wait below: the pod can only go in time through SIGTERM.
    spec = pod_spec(python_container("main", code), restart_policy="Always", terminationGracePeriodSeconds=600)
    cluster.apply(bare_pod("sleeper", spec), namespace=namespace)
    pod = wait_pod(cluster, namespace, "sleeper", _running_with_output("serving"), "run")
    pid = container_pid(pod)
    process = psutil.Process(pid)

    with cluster.api_client() as api:
        client.CoreV1Api(api).delete_namespaced_pod("sleeper", namespace)
    wait_pod_gone(cluster, namespace, "sleeper", timeout=30)

    assert not process.is_running()
    assert "got SIGTERM" in log_text(pod)
    assert processes_in(_pod_dir(cluster, pod)) == []


def test_a_pod_ignoring_sigterm_is_killed_after_the_grace_period_with_its_children(
    cluster: ClusterHandle, namespace: str
) -> None:
    # The shell ignores SIGTERM, and so do the children it starts (ignored signals are inherited).
    container = {
        "name": "main",
        "image": "busybox:1.36",
        "command": ["sh", "-c", "trap '' TERM; sleep 3600 & sleep 3600 & echo started; wait"],
    }
    spec = pod_spec(container, restart_policy="Always", terminationGracePeriodSeconds=1)
    cluster.apply(bare_pod("stubborn", spec), namespace=namespace)
    pod = wait_pod(cluster, namespace, "stubborn", _running_with_output("started"), "run")
    shell = psutil.Process(container_pid(pod))
    family = [shell, *shell.children(recursive=True)]
    assert len(family) == 3

    with cluster.api_client() as api:
        client.CoreV1Api(api).delete_namespaced_pod("stubborn", namespace)
    wait_pod_gone(cluster, namespace, "stubborn", timeout=30)

    assert [p.pid for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []
    assert processes_in(_pod_dir(cluster, pod)) == []


def test_containers_that_crash_are_restarted_under_restart_policy_always(
    cluster: ClusterHandle, namespace: str
) -> None:
    spec = pod_spec(python_container("main", "import sys; print('boom'); sys.exit(4)"), restart_policy="Always",
                    terminationGracePeriodSeconds=1)
    cluster.apply(bare_pod("crasher", spec), namespace=namespace)

    def restarted_twice(pod: dict[str, Any]) -> bool:
        statuses = pod["status"].get("containerStatuses") or [{}]
        return int(statuses[0].get("restartCount", 0)) >= 2

    pod = wait_pod(cluster, namespace, "crasher", restarted_twice, "restart twice", timeout=60)

    status = pod["status"]["containerStatuses"][0]
    assert status["lastState"]["terminated"]["exitCode"] == 4
    assert pod["status"]["phase"] == "Running"
    assert log_text(pod).count("boom") >= 2
