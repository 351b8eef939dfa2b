"""``python -m rft_devcluster.localnode``: run the local node agent in the foreground."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path
from types import FrameType

from rft_devcluster.localnode.agent import Agent
from rft_devcluster.localnode.config import AgentConfig, NodeCapacity


def build_parser() -> argparse.ArgumentParser:
    """The agent's command-line options."""
    p = argparse.ArgumentParser(prog="python -m rft_devcluster.localnode", description=__doc__)
    p.add_argument(
        "--kubeconfig", type=Path, required=True, help="the node's credentials (system:node:<name>)"
    )
    p.add_argument(
        "--helper-kubeconfig",
        type=Path,
        help="a second identity (see controlplane._grant_local_node_helper): log-path annotations, ServiceAccounts, endpoint mirroring",
    )
    p.add_argument("--node-name", default="local-node")
    p.add_argument("--root-dir", type=Path, required=True, help="pods' directories, logs and volumes")
    p.add_argument(
        "--pod-network",
        default="auto",
        help="auto (default: 198.18.0.0/16 if usable), loopback (127.77.0.0/16, shared namespace), or an IPv4 CIDR",
    )
    p.add_argument(
        "--pod-netns",
        choices=("auto", "shared"),
        default="auto",
        help="auto (default): a network namespace per pod where possible; shared: every pod in the host's",
    )
    p.add_argument(
        "--workload-identity-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="added to pods whose ServiceAccount has eks.amazonaws.com/role-arn (emulated IRSA webhook)",
    )
    p.add_argument(
        "--cluster-dns",
        help="the kubelet's --cluster-dns: the pods' DNS server (dnsPolicy ClusterFirst), an IPv4 "
        "address or 'node' (the node's own IP); unset: pods use the host's resolv.conf",
    )
    p.add_argument("--cluster-domain", default="cluster.local", help="the kubelet's --cluster-domain")
    p.add_argument(
        "--register-with-taints",
        action="append",
        default=[],
        metavar="KEY=VALUE:EFFECT",
        help="a taint the Node is created with (the kubelet's flag; repeat for several)",
    )
    p.add_argument("--cpu", default="4")
    p.add_argument("--memory", default="16Gi")
    p.add_argument("--pods", type=int, default=32)
    p.add_argument(
        "--gpus", type=int, default=0, help="fake nvidia.com/gpu to advertise (no real GPU is used)"
    )
    p.add_argument("--gpu-product", default="NVIDIA-A100-SXM4-80GB")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the agent until SIGTERM or SIGINT."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    config = AgentConfig(
        kubeconfig=args.kubeconfig,
        helper_kubeconfig=args.helper_kubeconfig,
        node_name=args.node_name,
        root_dir=args.root_dir.resolve(),
        pod_network=args.pod_network,
        pod_netns=args.pod_netns,
        workload_identity_env=tuple(_key_value(item) for item in args.workload_identity_env),
        cluster_dns=args.cluster_dns,
        cluster_domain=args.cluster_domain,
        taints=tuple(_taint(item) for item in args.register_with_taints),
        capacity=NodeCapacity(
            cpu=args.cpu, memory=args.memory, pods=args.pods, gpus=args.gpus, gpu_product=args.gpu_product
        ),
    )
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    config.root_dir.mkdir(parents=True, exist_ok=True)
    Agent(config).run(stop)
    return 0


def _taint(item: str) -> tuple[str, str, str]:
    key_value, sep, effect = item.rpartition(":")
    key, _, value = key_value.partition("=")
    if not sep or not key or effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
        raise SystemExit(f"--register-with-taints wants KEY=VALUE:EFFECT, got {item!r}")
    return key, value, effect


def _key_value(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise SystemExit(f"--workload-identity-env wants KEY=VALUE, got {item!r}")
    return key, value
