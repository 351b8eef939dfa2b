"""The cluster's state file: how another process (``down``, ``status``, tests) finds a cluster."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rft_devcluster.processes import ProcessRecord

STATE_FILE_NAME = "state.json"


class Status:
    """Values of :attr:`ClusterState.status`."""

    STARTING = "starting"
    READY = "ready"
    FAILED = "failed"
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass
class ClusterState:
    """Everything recorded about one cluster in ``<state dir>/state.json``."""

    status: str
    server: str = ""
    kubeconfig: str = ""
    bin_dir: str = ""
    etcd_data_dir: str = ""
    supervisor: ProcessRecord | None = None
    processes: list[ProcessRecord] = field(default_factory=list)
    gpu_nodes: list[str] = field(default_factory=list)
    local_node: dict[str, Any] | None = None
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        """Serialise for the state file."""
        return {
            "status": self.status,
            "server": self.server,
            "kubeconfig": self.kubeconfig,
            "bin_dir": self.bin_dir,
            "etcd_data_dir": self.etcd_data_dir,
            "supervisor": self.supervisor.to_json() if self.supervisor else None,
            "processes": [p.to_json() for p in self.processes],
            "gpu_nodes": self.gpu_nodes,
            "local_node": self.local_node,
            "error": self.error,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClusterState:
        """Read back what :meth:`to_json` wrote."""
        supervisor = data.get("supervisor")
        return cls(
            status=str(data["status"]),
            server=str(data.get("server", "")),
            kubeconfig=str(data.get("kubeconfig", "")),
            bin_dir=str(data.get("bin_dir", "")),
            etcd_data_dir=str(data.get("etcd_data_dir", "")),
            supervisor=ProcessRecord.from_json(supervisor) if supervisor else None,
            processes=[ProcessRecord.from_json(p) for p in data.get("processes", [])],
            gpu_nodes=[str(n) for n in data.get("gpu_nodes", [])],
            local_node=data.get("local_node"),
            error=str(data.get("error", "")),
        )


def state_path(state_dir: Path) -> Path:
    """Where the state file of the cluster in ``state_dir`` lives."""
    return state_dir / STATE_FILE_NAME


def write_state(state_dir: Path, state: ClusterState) -> None:
    """Write the state file atomically (readers never see half a file)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    target = state_path(state_dir)
    tmp = target.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(state.to_json(), indent=2))
    tmp.replace(target)


def read_state(state_dir: Path) -> ClusterState | None:
    """The recorded state, or None if no cluster was ever started in ``state_dir``."""
    try:
        return ClusterState.from_json(json.loads(state_path(state_dir).read_text()))
    except FileNotFoundError:
        return None
