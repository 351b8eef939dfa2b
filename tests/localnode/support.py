"""Builders and waits shared by the local node tests."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
from kubernetes import client
from rft_devcluster.handle import ClusterHandle, as_dict
from rft_devcluster.localnode.netns import NETNS_DIR, names_for
from rft_devcluster.waiting import wait_for

ON_LOCAL_NODE = {"rft-operator.io/local-node": "true"}
LOG_PATH_ANNOTATION = "rft-operator.io/log-path"


def python_container(name: str, code: str, **extra: Any) -> dict[str, Any]:
    """A container of the ``python`` image running ``code`` (dedented)."""
    return {
        "name": name,
        "image": "python:3.11-slim",
        "command": ["python", "-c", textwrap.dedent(code)],
        **extra,
    }


def pod_name_server(address: str, port: int) -> str:
    """Code for ``python_container``: an HTTP server on ``(address, port)`` answering every GET
    with the pod's name (``POD_NAME``). ``address`` is a Python expression."""
    return f"""
    import http.server, os

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = os.environ["POD_NAME"].encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    http.server.ThreadingHTTPServer(({address}, {port}), Handler).serve_forever()
"""


def pod_spec(*containers: dict[str, Any], restart_policy: str = "Never", **extra: Any) -> dict[str, Any]:
    """A pod spec pinned to the local node."""
    return {
        "restartPolicy": restart_policy,
        "nodeSelector": ON_LOCAL_NODE,
        "containers": list(containers),
        **extra,
    }


def job(name: str, spec: dict[str, Any], *, backoff_limit: int = 0) -> dict[str, Any]:
    """A batch/v1 Job around ``spec``."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {"backoffLimit": backoff_limit, "template": {"spec": spec}},
    }


def bare_pod(name: str, spec: dict[str, Any], **metadata: Any) -> dict[str, Any]:
    """A Pod with ``spec``."""
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, **metadata}, "spec": spec}


def read_pod(cluster: ClusterHandle, namespace: str, name: str) -> dict[str, Any]:
    """The pod as a JSON dict."""
    with cluster.api_client() as api:
        return as_dict(client.CoreV1Api(api).read_namespaced_pod(name, namespace))


def wait_pod(
    cluster: ClusterHandle,
    namespace: str,
    name: str,
    predicate: Callable[[dict[str, Any]], bool],
    what: str,
    timeout: float = 60,
) -> dict[str, Any]:
    """Poll the pod until ``predicate`` holds; return it."""

    def probe() -> dict[str, Any] | None:
        pod = read_pod(cluster, namespace, name)
        return pod if predicate(pod) else None

    return wait_for(probe, timeout=timeout, what=f"pod {namespace}/{name}: {what}")


def phase_in(*phases: str) -> Callable[[dict[str, Any]], bool]:
    """A predicate: the pod's phase is one of ``phases``."""
    return lambda pod: pod["status"].get("phase") in phases


def wait_pod_gone(cluster: ClusterHandle, namespace: str, name: str, timeout: float = 60) -> None:
    """Wait until the pod no longer exists in the API."""
    with cluster.api_client() as api:
        core = client.CoreV1Api(api)

        def removed() -> bool:
            pods = as_dict(core.list_namespaced_pod(namespace))["items"]
            return name not in {p["metadata"]["name"] for p in pods}

        wait_for(removed, timeout=timeout, what=f"pod {namespace}/{name} to be removed")


def wait_job_finished(
    cluster: ClusterHandle, namespace: str, name: str, timeout: float = 90
) -> dict[str, Any]:
    """Wait until the Job has a Complete or Failed condition; return it."""
    with cluster.api_client() as api:
        batch = client.BatchV1Api(api)

        def finished() -> dict[str, Any] | None:
            found = as_dict(batch.read_namespaced_job(name, namespace))
            conditions = found["status"].get("conditions", [])
            done = any(c["type"] in ("Complete", "Failed") and c["status"] == "True" for c in conditions)
            return found if done else None

        return wait_for(finished, timeout=timeout, what=f"Job {namespace}/{name} to finish")


def job_pods(cluster: ClusterHandle, namespace: str, job_name: str) -> list[dict[str, Any]]:
    """The Job's pods, oldest first."""
    with cluster.api_client() as api:
        pods = as_dict(
            client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=f"job-name={job_name}")
        )
    return sorted(pods["items"], key=lambda p: p["metadata"]["creationTimestamp"])


def terminated(pod: dict[str, Any], index: int = 0) -> dict[str, Any]:
    """The terminated state of the pod's ``index``-th container."""
    state: dict[str, Any] = pod["status"]["containerStatuses"][index]["state"]["terminated"]
    return state


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    """The condition of ``type_`` in an object's status, if any."""
    return next((c for c in obj["status"].get("conditions", []) if c["type"] == type_), None)


def container_pid(pod: dict[str, Any], index: int = 0) -> int:
    """The host pid of a container's process (the local node reports ``localnode://<pid>``)."""
    container_id: str = pod["status"]["containerStatuses"][index]["containerID"]
    return int(container_id.removeprefix("localnode://"))


def processes_in(directory: Path) -> list[psutil.Process]:
    """Live processes whose working directory lies under ``directory``."""
    found = []
    for proc in psutil.process_iter(["cwd", "status"]):
        cwd = proc.info.get("cwd")
        if cwd and cwd.startswith(str(directory)) and proc.info.get("status") != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


def log_text(pod: dict[str, Any]) -> str:
    """The container log the local node wrote (found through the pod's log-path annotation)."""
    return Path(pod["metadata"]["annotations"][LOG_PATH_ANNOTATION]).read_text()


def pod_netns_path(pod: dict[str, Any]) -> Path:
    """Where the node keeps the pod's network namespace (netns mode): ``/run/netns/rft-<hex>-<uid>``."""
    subnet = ipaddress.IPv4Network(f"{pod['status']['podIP']}/24", strict=False)
    return NETNS_DIR / f"{names_for(subnet)}-{pod['metadata']['uid']}"


def pod_host_veth(pod: dict[str, Any]) -> str:
    """The host end of the pod's veth pair (netns mode)."""
    return "rfv" + pod["metadata"]["uid"].replace("-", "")[:12]


def link_exists(name: str) -> bool:
    """Whether the host has a network interface ``name``."""
    return subprocess.run(["ip", "link", "show", name], capture_output=True, check=False).returncode == 0


def netns_unsupported() -> str | None:
    """Why this host cannot give pods network namespaces (None: it can), found with plain `ip`
    commands, not the local node's code: a test skips only for the host's reason, never because
    the code under test fell back to the shared namespace."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"rftprobe{os.getpid()}"
    steps = [
        ["ip", "netns", "add", probe],
        ["ip", "link", "add", f"{probe}b", "type", "bridge"],
        ["ip", "link", "add", f"{probe}v", "type", "veth", "peer", "name", f"{probe}p", "netns", probe],
    ]
    try:
        for step in steps:
            result = subprocess.run(step, capture_output=True, text=True, check=False, timeout=30)
            if result.returncode != 0:
                return f"{' '.join(step)}: {result.stderr.strip()}"
        return None
    finally:
        for cleanup in (
            ["ip", "link", "del", f"{probe}v"],
            ["ip", "link", "del", f"{probe}b"],
            ["ip", "netns", "del", probe],
        ):
            subprocess.run(cleanup, capture_output=True, check=False, timeout=30)
