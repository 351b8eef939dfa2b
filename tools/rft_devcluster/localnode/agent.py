"""The node agent: registers the node, watches the pods bound to it, and runs a worker per pod."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from rft_devcluster.localnode.config import AgentConfig
from rft_devcluster.localnode.endpoints import EndpointMirror
from rft_devcluster.localnode.kubeapi import ApiError, KubeApi
from rft_devcluster.localnode.network import PodNetwork
from rft_devcluster.localnode.node import NodeRegistration
from rft_devcluster.localnode.poddns import ClusterDNS, node_pod_dns
from rft_devcluster.localnode.podworker import AgentContext, PodWorker

log = logging.getLogger(__name__)

WATCH_TIMEOUT_SECONDS = 300


def _needs_worker(pod: dict[str, Any]) -> bool:
    # A terminal pod needs nothing from the node unless it is being deleted (then the
    # agent confirms the deletion, as the kubelet does).
    terminal = (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")
    return not terminal or bool(pod["metadata"].get("deletionTimestamp"))


class Agent:
    """Runs the pods that the scheduler binds to this node as local processes."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self._api = KubeApi(config.kubeconfig)
        helper = KubeApi(config.helper_kubeconfig) if config.helper_kubeconfig else None
        self.network = PodNetwork(config.pod_network, config.root_dir / "pod-network", config.pod_netns)
        server = urlsplit(self._api.server)
        # Loopback pod IPs cannot appear in the controller-manager's EndpointSlices: mirror them.
        self._mirror = (
            EndpointMirror(helper, self._api, config.node_name) if helper and self.network.loopback else None
        )
        self._ctx = AgentContext(
            api=self._api,
            helper=helper,
            config=config,
            network=self.network,
            apiserver_host=server.hostname or "127.0.0.1",
            apiserver_port=server.port or 443,
            pods_changed=self._mirror.trigger if self._mirror else (lambda: None),
            dns=node_pod_dns(self._cluster_dns(config)),
        )
        self._node = NodeRegistration(self._api, config, self.network.node_ip)
        self._workers: dict[str, PodWorker] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def _cluster_dns(self, config: AgentConfig) -> ClusterDNS | None:
        if not config.cluster_dns:
            return None
        server = self.network.node_ip if config.cluster_dns == "node" else config.cluster_dns
        return ClusterDNS(nameserver=server, domain=config.cluster_domain)

    def run(self, stop: threading.Event) -> None:
        """Register, then run pods until ``stop`` is set; then stop every pod's processes."""
        self._stop = stop
        self._node.register()
        log.info(
            "node %s registered; pod network %s (%s)",
            self.config.node_name,
            self.network.subnet,
            self.network.mode,
        )
        heartbeat = threading.Thread(target=self._node.heartbeat, args=(stop,), name="heartbeat", daemon=True)
        heartbeat.start()
        watcher = threading.Thread(target=self._watch_forever, name="watch", daemon=True)
        watcher.start()
        if self._mirror is not None:
            threading.Thread(target=self._mirror.run, args=(stop,), name="endpoints", daemon=True).start()
        stop.wait()
        self._shutdown()

    def _shutdown(self) -> None:
        log.info("stopping: ending every pod's processes")
        with self._lock:
            workers = list(self._workers.values())
        for worker in workers:
            worker.shutdown()
        for worker in workers:
            worker.join(timeout=30)
        # The bridge (and any pod namespace a stuck worker left) first: the rest may be cut short.
        self.network.close()
        try:
            self._node.post_status(ready=False, reason="KubeletNotReady", message="local node agent stopped")
        except Exception:
            log.info("could not mark the node NotReady")
        self._api.close()
        log.info("stopped")

    # ------------------------------------------------------------------ pods

    def _pods_path(self) -> tuple[str, dict[str, str]]:
        return "/api/v1/pods", {"fieldSelector": f"spec.nodeName={self.config.node_name}"}

    def _watch_forever(self) -> None:
        path, params = self._pods_path()
        resource_version = ""
        while not self._stop.is_set():
            try:
                if not resource_version:
                    resource_version = self._relist()
                for event in self._api.watch(
                    path, timeout_seconds=WATCH_TIMEOUT_SECONDS, resourceVersion=resource_version, **params
                ):
                    if self._stop.is_set():
                        return
                    obj = event["object"]
                    if event["type"] == "ERROR":
                        # 410 Gone: our resourceVersion is too old; list again.
                        resource_version = ""
                        break
                    resource_version = obj["metadata"].get("resourceVersion", resource_version)
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self._on_pod(obj)
                    elif event["type"] == "DELETED":
                        self._on_deleted(obj["metadata"]["uid"])
            except ApiError as exc:
                if exc.status == 410:
                    resource_version = ""
                log.warning("pod watch: %s", exc)
                time.sleep(1.0)
            except Exception:  # the watch restarts after any failure (network, decoding)
                log.exception("pod watch failed; restarting it")
                resource_version = ""
                time.sleep(1.0)

    def _relist(self) -> str:
        path, params = self._pods_path()
        listed = self._api.get(path, **params)
        present = {p["metadata"]["uid"] for p in listed["items"]}
        with self._lock:
            missing = [uid for uid in self._workers if uid not in present]
        for uid in missing:
            self._on_deleted(uid)
        for pod in listed["items"]:
            self._on_pod(pod)
        return str(listed["metadata"]["resourceVersion"])

    def _on_pod(self, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        with self._lock:
            worker = self._workers.get(uid)
            if worker is None:
                if not _needs_worker(pod):
                    return
                worker = PodWorker(self._ctx, pod)
                self._workers[uid] = worker
                worker.start()
                log.info("pod %s: accepted", worker.key)
                return
        worker.update(pod)

    def _on_deleted(self, uid: str) -> None:
        with self._lock:
            worker = self._workers.pop(uid, None)
        if worker is not None:
            worker.gone()
            log.info("pod %s: deleted", worker.key)
