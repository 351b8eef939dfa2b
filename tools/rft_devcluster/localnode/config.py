"""The node agent's settings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

LOCAL_NODE_LABEL = "rft-operator.io/local-node"
LOG_PATH_ANNOTATION = "rft-operator.io/log-path"
# A pod condition (written with the status, which is all a node may write) that also shows it.
LOG_PATH_CONDITION = "rft-operator.io/LogPath"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"


@dataclass(frozen=True)
class NodeCapacity:
    """What the node advertises; the default is a CPU-only profile."""

    cpu: str = "4"
    memory: str = "16Gi"
    pods: int = 32
    # Advertised for scheduling (pods request ephemeral storage); the agent does not enforce it.
    ephemeral_storage: str = "400Gi"
    gpus: int = 0
    gpu_product: str = "NVIDIA-A100-SXM4-80GB"

    def resources(self) -> dict[str, str]:
        """Capacity (and allocatable) as a Node status map."""
        res = {
            "cpu": self.cpu,
            "memory": self.memory,
            "pods": str(self.pods),
            "ephemeral-storage": self.ephemeral_storage,
        }
        if self.gpus:
            res[GPU_RESOURCE] = str(self.gpus)
        return res


@dataclass(frozen=True)
class AgentConfig:
    """Everything the agent needs to run."""

    kubeconfig: Path
    node_name: str
    root_dir: Path
    capacity: NodeCapacity
    # "auto", "loopback" or an IPv4 CIDR to carve per-node /24s from (see network.py).
    pod_network: str = "auto"
    # "auto": a network namespace per pod where the host allows it, else "shared": every pod in
    # the host's namespace (see network.py, netns.py). "loopback" above implies "shared".
    pod_netns: str = "auto"
    # A second identity allowed to patch pods, to write the log-path annotation (optional).
    helper_kubeconfig: Path | None = None
    lease_duration_seconds: int = 40
    lease_renew_seconds: float = 10.0
    node_status_seconds: float = 60.0
    # Restart back-off of crashed containers; kubelet starts at 10s, tests want less.
    restart_backoff_initial: float = 1.0
    restart_backoff_max: float = 30.0
    # Retries of an image this node cannot "pull" (no stand-in, vLLM not installable; see
    # imagepull.py); kubelet starts at 10s and doubles to 5 min, tests want less.
    image_pull_backoff_initial: float = 1.0
    image_pull_backoff_max: float = 30.0
    # Environment the emulated EKS pod identity webhook adds to IRSA pods (e.g. the local S3/STS
    # emulator's AWS_ENDPOINT_URL and AWS_DEFAULT_REGION); see workload_identity.py.
    workload_identity_env: tuple[tuple[str, str], ...] = ()
    # The kubelet's --cluster-dns: the DNS server pods' resolv.conf names (dnsPolicy ClusterFirst),
    # an IPv4 address or "node" (this node's own IP, where the cluster's CoreDNS listens); None:
    # pods resolve with the host's resolv.conf. See poddns.py.
    cluster_dns: str | None = None
    # The kubelet's --register-with-taints: taints the Node is created with (key=value:Effect).
    taints: tuple[tuple[str, str, str], ...] = ()
    cluster_domain: str = "cluster.local"
