"""Another local node joining a running local cluster, as a node joins a real one.

A test that needs a node of its own shape (say, four fake GPUs of a product no other node has,
behind a taint of its own) starts one with :class:`ExtraLocalNode` instead of changing the
session's nodes: it gets a node certificate from the cluster's CA (``system:node:<name>``), the
cluster's helper identity, its own /24 and bridge, and the cluster's DNS server (CoreDNS on the
first local node's IP, which is an address of this host and so reachable from every node's pods).
On :meth:`stop` the agent stops its pods and the Node object is deleted.

Pods of different local nodes reach each other only if the host forwards between the nodes'
bridges (``net.ipv4.ip_forward=1``), which the agent does not turn on: pods that must talk to each
other belong on one node.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from types import TracebackType

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from rft_devcluster.controlplane import (
    HELPER_USER,
    LocalNodeOptions,
    local_node_argv,
    read_local_node_mode,
    read_local_node_network,
)
from rft_devcluster.handle import ClusterHandle, LocalNodeInfo, as_dict
from rft_devcluster.processes import ProcessRecord, spawn, stop_group, tail
from rft_devcluster.waiting import wait_for


class ExtraLocalNode:
    """A second local node agent for ``cluster``, its files under ``work_dir``."""

    def __init__(self, cluster: ClusterHandle, options: LocalNodeOptions, work_dir: Path) -> None:
        self.cluster = cluster
        self.options = options
        self.work_dir = work_dir
        self.log_path = work_dir / "local-node.log"
        self._popen: subprocess.Popen[bytes] | None = None
        self._record: ProcessRecord | None = None
        self.info: LocalNodeInfo | None = None

    def start(self, timeout: float = 120.0) -> LocalNodeInfo:
        """Start the agent and wait until the Node is Ready and schedulable."""
        kubeconfig = self.cluster.node_kubeconfig(self.options.name)
        helper = self.cluster.state_dir / "kubeconfigs" / "local-node-helper.kubeconfig"
        if not helper.exists():
            raise RuntimeError(f"{helper} is missing: the cluster has no {HELPER_USER} identity to share")
        first = self.cluster.local_node
        cluster_dns = first.cluster_dns if first is not None and first.cluster_dns else None
        root_dir = self.work_dir / "root"
        argv = local_node_argv(
            self.options, kubeconfig=kubeconfig, helper=helper, root_dir=root_dir, cluster_dns=cluster_dns
        )
        self._popen, self._record = spawn(f"local-node-{self.options.name}", argv, log_path=self.log_path)

        def alive() -> None:
            assert self._popen is not None
            if self._popen.poll() is not None:
                raise RuntimeError(f"the agent exited; last lines of {self.log_path}:\n{tail(self.log_path)}")

        def network() -> str | None:
            alive()
            return read_local_node_network(root_dir)

        subnet = wait_for(
            network, timeout=timeout, what="the extra node's pod network", fatal=(RuntimeError,)
        )
        with self.cluster.api_client() as api:
            core = client.CoreV1Api(api)

            def ready() -> bool:
                alive()
                node = as_dict(core.read_node(self.options.name))
                conditions = node.get("status", {}).get("conditions", [])
                taints = node.get("spec", {}).get("taints") or []
                return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions) and not any(
                    t["key"] == "node.kubernetes.io/not-ready" for t in taints
                )

            wait_for(ready, timeout=timeout, what=f"node {self.options.name} Ready", fatal=(RuntimeError,))
        self.info = LocalNodeInfo(
            name=self.options.name,
            root_dir=root_dir,
            pod_network=subnet,
            gpus=self.options.gpus,
            log_path=self.log_path,
            pod_network_mode=read_local_node_mode(root_dir),
            cluster_dns=cluster_dns or "",
            no_cluster_dns="" if cluster_dns else (first.no_cluster_dns if first else "no local node"),
        )
        return self.info

    def stop(self) -> None:
        """Stop the agent (it stops its pods) and delete the Node."""
        if self._record is not None:
            stop_group(self._record, grace_seconds=30.0, popen=self._popen)
            self._record = None
        with self.cluster.api_client() as api:
            try:
                client.CoreV1Api(api).delete_node(self.options.name)
            except ApiException as exc:
                if exc.status != 404:
                    raise

    def __enter__(self) -> LocalNodeInfo:
        return self.start()

    def __exit__(
        self, _type: type[BaseException] | None, _exc: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.stop()
