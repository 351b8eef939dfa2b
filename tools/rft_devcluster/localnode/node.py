"""The local node's Node object and its heartbeats (Lease renewals and status updates)."""

from __future__ import annotations

import datetime
import logging
import platform
import threading
import uuid
from typing import Any

from rft_devcluster.localnode.config import GPU_PRODUCT_LABEL, LOCAL_NODE_LABEL, AgentConfig
from rft_devcluster.localnode.container import now_rfc3339
from rft_devcluster.localnode.kubeapi import ApiError, KubeApi

log = logging.getLogger(__name__)

LEASE_NAMESPACE = "kube-node-lease"
VERSION = "localnode-0.1"


def _micro_time() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _conditions(ready: bool, reason: str, message: str) -> list[dict[str, Any]]:
    now = now_rfc3339()
    pressure = [
        ("MemoryPressure", "KubeletHasSufficientMemory"),
        ("DiskPressure", "KubeletHasNoDiskPressure"),
        ("PIDPressure", "KubeletHasSufficientPID"),
    ]
    conditions = [
        {
            "type": t,
            "status": "False",
            "reason": r,
            "message": r,
            "lastHeartbeatTime": now,
            "lastTransitionTime": now,
        }
        for t, r in pressure
    ]
    conditions.append(
        {
            "type": "Ready",
            "status": "True" if ready else "False",
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": now,
            "lastTransitionTime": now,
        }
    )
    return conditions


class NodeRegistration:
    """Registers the Node, keeps its Lease renewed and its Ready condition fresh."""

    def __init__(self, api: KubeApi, config: AgentConfig, node_ip: str) -> None:
        self._api = api
        self._config = config
        self._node_ip = node_ip
        self._path = f"/api/v1/nodes/{config.node_name}"
        self._lease_path = (
            f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases/{config.node_name}"
        )
        self._node_uid = ""

    def labels(self) -> dict[str, str]:
        """The node's labels: hostname, os/arch, the local-node marker, and the GPU product if any."""
        cap = self._config.capacity
        labels = {
            "kubernetes.io/hostname": self._config.node_name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "node.kubernetes.io/instance-type": "local",
            LOCAL_NODE_LABEL: "true",
        }
        if cap.gpus:
            labels[GPU_PRODUCT_LABEL] = cap.gpu_product
        return labels

    def _status(self, ready: bool, reason: str, message: str) -> dict[str, Any]:
        resources = self._config.capacity.resources()
        return {
            "capacity": resources,
            "allocatable": resources,
            "conditions": _conditions(ready, reason, message),
            "addresses": [
                {"type": "InternalIP", "address": self._node_ip},
                {"type": "Hostname", "address": self._config.node_name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {
                "machineID": uuid.uuid5(uuid.NAMESPACE_DNS, self._config.node_name).hex,
                "systemUUID": str(uuid.uuid5(uuid.NAMESPACE_DNS, self._config.node_name)),
                "bootID": str(uuid.uuid4()),
                "kernelVersion": platform.release(),
                "osImage": "rft-devcluster local node (processes on the host)",
                "containerRuntimeVersion": f"localnode://{VERSION}",
                "kubeletVersion": VERSION,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }

    def register(self) -> None:
        """Create the Node, or bring an existing one (an earlier run's) up to date."""
        status = self._status(True, "KubeletReady", "local node agent is posting ready status")
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self._config.node_name, "labels": self.labels()},
            "spec": {"taints": [{"key": k, "value": v, "effect": e} for k, v, e in self._config.taints]},
            "status": status,
        }
        try:
            created = self._api.create("/api/v1/nodes", node)
        except ApiError as exc:
            if exc.status != 409:
                raise
            existing = self._api.merge_patch(self._path, {"metadata": {"labels": self.labels()}})
            existing["status"] = status
            created = self._api.replace(f"{self._path}/status", existing)
        self._node_uid = created["metadata"]["uid"]
        self.renew_lease()

    def renew_lease(self) -> None:
        """Create or renew the node's Lease in kube-node-lease."""
        spec = {
            "holderIdentity": self._config.node_name,
            "leaseDurationSeconds": self._config.lease_duration_seconds,
            "renewTime": _micro_time(),
        }
        try:
            lease = self._api.get(self._lease_path)
        except ApiError as exc:
            if exc.status != 404:
                raise
            owner = {
                "apiVersion": "v1",
                "kind": "Node",
                "name": self._config.node_name,
                "uid": self._node_uid,
            }
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {
                    "name": self._config.node_name,
                    "namespace": LEASE_NAMESPACE,
                    "ownerReferences": [owner],
                },
                "spec": spec,
            }
            self._api.create(f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases", body)
            return
        lease["spec"] = {**lease.get("spec", {}), **spec}
        self._api.replace(self._lease_path, lease)

    def post_status(self, *, ready: bool, reason: str, message: str) -> None:
        """Refresh the node's conditions (heartbeat times; Ready or not)."""
        conditions = _conditions(ready, reason, message)
        if ready:
            # Conditions merge by type; without a transition time the recorded one stays.
            for condition in conditions:
                condition.pop("lastTransitionTime")
        self._api.strategic_patch(f"{self._path}/status", {"status": {"conditions": conditions}})

    def heartbeat(self, stop: threading.Event) -> None:
        """Renew the Lease and the status until ``stop`` is set (run in a thread)."""
        cfg = self._config
        ticks_per_status = max(1, round(cfg.node_status_seconds / cfg.lease_renew_seconds))
        tick = 0
        while not stop.wait(cfg.lease_renew_seconds):
            tick += 1
            try:
                self.renew_lease()
                if tick % ticks_per_status == 0:
                    self.post_status(
                        ready=True, reason="KubeletReady", message="local node agent is posting ready status"
                    )
            except Exception:  # the next tick retries; a dead heartbeat shows as NotReady
                log.exception("node heartbeat failed")
