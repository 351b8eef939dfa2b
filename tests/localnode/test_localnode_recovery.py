"""A restarted node agent recovers its pods: restartable ones run again, the others fail clearly."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from kubernetes import client
from rft_devcluster.handle import ClusterHandle, as_dict
from rft_devcluster.localnode.netns import NETNS_DIR
from rft_devcluster.processes import spawn, stop_group, tail
from rft_devcluster.waiting import wait_for

from tests.localnode.support import (
    bare_pod,
    container_pid,
    link_exists,
    phase_in,
    pod_host_veth,
    pod_netns_path,
    python_container,
    wait_pod,
    wait_pod_gone,
)

pytestmark = [pytest.mark.cluster, pytest.mark.localnode]

NODE = "recovery-node"


class _AgentProcess:
    """A second local node agent that the test can kill and restart."""

    def __init__(self, cluster: ClusterHandle, root_dir: Path) -> None:
        self._argv = [
            sys.executable, "-m", "rft_devcluster.localnode",
            f"--kubeconfig={cluster.node_kubeconfig(NODE)}", f"--node-name={NODE}", f"--root-dir={root_dir}",
        ]
        self.log_path = root_dir.parent / "agent.log"
        self._root_dir = root_dir
        self._popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._popen, self._record = spawn(NODE, self._argv, log_path=self.log_path)

    def kill(self) -> None:
        assert self._popen is not None
        self._popen.send_signal(signal.SIGKILL)
        self._popen.wait(timeout=10)

    def stop(self) -> None:
        if self._popen is not None and self._popen.poll() is None:
            stop_group(self._record, grace_seconds=30, popen=self._popen)

    def netns_mode(self) -> bool:
        return (self._root_dir / "pod-network-mode").read_text().strip() == "netns"


def _node_ready(cluster: ClusterHandle) -> None:
    with cluster.api_client() as api:
        core = client.CoreV1Api(api)

        def ready() -> bool:
            node = as_dict(core.read_node(NODE))
            conditions = {c["type"]: c["status"] for c in node["status"].get("conditions", [])}
            tainted = any(t["key"] == "node.kubernetes.io/not-ready" for t in node["spec"].get("taints", []))
            return conditions.get("Ready") == "True" and not tainted

        wait_for(ready, timeout=60, what=f"node {NODE} Ready")


@pytest.fixture
def agent(cluster: ClusterHandle, tmp_path: Path) -> Iterator[_AgentProcess]:
    process = _AgentProcess(cluster, tmp_path / "root")
    process.start()
    try:
        _node_ready(cluster)
        yield process
    finally:
        process.stop()
        with cluster.api_client() as api:
            client.CoreV1Api(api).delete_node(NODE)


def _sleeper(name: str, restart_policy: str) -> dict[str, Any]:
    spec = {
        "restartPolicy": restart_policy,
        "nodeSelector": {"kubernetes.io/hostname": NODE},
        "terminationGracePeriodSeconds": 1,
        "containers": [python_container("main", "import time; print('up', flush=True); time.sleep(3600)")],
    }
    return bare_pod(name, spec)


def _running(pod: dict[str, Any]) -> bool:
    statuses = pod["status"].get("containerStatuses") or [{}]
    return pod["status"].get("phase") == "Running" and "running" in (statuses[0].get("state") or {})


def test_restarted_agent_reruns_always_pods_and_fails_never_pods(
    cluster: ClusterHandle, namespace: str, agent: _AgentProcess
) -> None:
    cluster.apply([_sleeper("keeps-running", "Always"), _sleeper("runs-once", "Never")], namespace=namespace)
    before = {n: wait_pod(cluster, namespace, n, _running, "run") for n in ("keeps-running", "runs-once")}
    processes = [psutil.Process(container_pid(p)) for p in before.values()]

    agent.kill()
    # The containers die with the agent (parent-death signal): no orphans.
    wait_for(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in processes),
             timeout=10, what="the containers to die with the agent")
    agent.start()

    def restarted(pod: dict[str, Any]) -> bool:
        return _running(pod) and pod["status"]["containerStatuses"][0]["restartCount"] == 1

    try:
        again = wait_pod(cluster, namespace, "keeps-running", restarted, "run again", timeout=60)
        failed = wait_pod(cluster, namespace, "runs-once", phase_in("Failed"), "fail", timeout=60)
    except TimeoutError:
        print(tail(agent.log_path, 60))
        raise

    assert again["status"]["podIP"] == before["keeps-running"]["status"]["podIP"]
    assert container_pid(again) != container_pid(before["keeps-running"])
    assert failed["status"]["reason"] == "NodeAgentRestarted"
    if agent.netns_mode():
        # The rerun pod has a namespace again (a fresh one at its old IP); the failed one none.
        assert pod_netns_path(again).exists()
        assert not pod_netns_path(failed).exists()

    with cluster.api_client() as api:
        core = client.CoreV1Api(api)
        for name in ("keeps-running", "runs-once"):
            core.delete_namespaced_pod(name, namespace)
    for name in ("keeps-running", "runs-once"):
        wait_pod_gone(cluster, namespace, name, timeout=30)
    assert not pod_netns_path(again).exists()
    assert not link_exists(pod_host_veth(again))

    netns = agent.netns_mode()
    agent.stop()
    if netns:
        # A clean stop removes the node's bridge and leaves no namespace on it.
        bridge = pod_netns_path(again).name[: -len(again["metadata"]["uid"]) - 1]
        assert not link_exists(bridge)
        assert not list(NETNS_DIR.glob(f"{bridge}-*"))
