"""The local cluster's DNS: CoreDNS (built by tools/build-coredns.sh) with its ``kubernetes``
plugin against the local apiserver, as kubeadm installs it.

What a kubeadm cluster has, done for a process on the host:

- the ClusterRole ``system:coredns`` (kubeadm's rules: list and watch endpoints, services, pods,
  namespaces and EndpointSlices), bound here to the user ``system:coredns`` whose client
  certificate is in CoreDNS's kubeconfig (in a cluster: the ServiceAccount ``kube-system/coredns``);
- kubeadm's Corefile: ``kubernetes cluster.local in-addr.arpa ip6.arpa`` (``pods insecure``,
  ``ttl 30``), ``forward . /etc/resolv.conf`` (the host's resolvers) for other names, ``cache 30``
  with cluster.local left out, ``loop``, ``loadbalance``, ``errors``; ``health`` and ``ready`` on
  loopback ports, no ``prometheus`` (a fixed :9153 would collide between clusters on one host).

Where it listens: the kubelet names one DNS server in every pod's resolv.conf (``--cluster-dns``),
on port 53 (resolv.conf has no port). In a cluster that is the ``kube-dns`` Service's ClusterIP,
which kube-proxy forwards to CoreDNS pods; here there is no kube-proxy, so CoreDNS listens on the
local node's own IP, port 53, and the node agent runs with ``--cluster-dns=node``, as nodes running
NodeLocal DNSCache point pods at a DNS server on the node. The node's IP is unique on the host
(each node claims its /24), so several clusters on one host never share it, and pods reach it over
their bridge (a namespace per pod) or directly (pods in the host's namespace). Port 53 and the pods'
mount and UTS namespaces take root: without it the cluster has no DNS (see ``unavailable``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from rft_devcluster.binaries import REPO_ROOT, script_output_dir
from rft_devcluster.handle import ClusterHandle
from rft_devcluster.localnode.poddns import DEFAULT_CLUSTER_DOMAIN, probe
from rft_devcluster.rbac import grant_cluster_role

BUILD_SCRIPT = REPO_ROOT / "tools" / "build-coredns.sh"
USER = "system:coredns"
CLUSTER_ROLE = "system:coredns"
DNS_PORT = 53


class ClusterDNSUnavailableError(RuntimeError):
    """CoreDNS could not be built or started; the message carries its output."""


@dataclass(frozen=True)
class ClusterDNSInfo:
    """Where the cluster's DNS answers."""

    server: str  # the IP pods have as their nameserver (port 53)
    domain: str = DEFAULT_CLUSTER_DOMAIN


def ensure_coredns() -> Path:
    """The ``coredns`` binary, built if missing."""
    out = script_output_dir(BUILD_SCRIPT, ClusterDNSUnavailableError)
    binary = out / "coredns"
    if not os.access(binary, os.X_OK):
        raise ClusterDNSUnavailableError(f"{out} lacks the coredns binary")
    return binary


def unavailable() -> str:
    """Why pods here cannot have cluster DNS ("" when they can): port 53 and per-pod mount and UTS
    namespaces (their resolv.conf and /etc/hosts) need root (CAP_NET_BIND_SERVICE, CAP_SYS_ADMIN)."""
    if os.geteuid() != 0:
        return "not root: CoreDNS cannot listen on port 53 and pods cannot have their own resolv.conf"
    tools, why_not = probe()
    return "" if tools is not None else f"no mount and UTS namespace per pod: {why_not}"


def corefile(*, listen_ip: str, kubeconfig: Path, context: str, health_port: int, ready_port: int) -> str:
    """kubeadm's Corefile, listening on ``listen_ip``:53, with the apiserver from ``kubeconfig``."""
    domain = DEFAULT_CLUSTER_DOMAIN
    return f""".:{DNS_PORT} {{
    bind {listen_ip}
    errors
    health 127.0.0.1:{health_port} {{
       lameduck 5s
    }}
    ready 127.0.0.1:{ready_port}
    kubernetes {domain} in-addr.arpa ip6.arpa {{
       kubeconfig {kubeconfig} {context}
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }}
    forward . /etc/resolv.conf {{
       max_concurrent 1000
    }}
    cache 30 {{
       disable success {domain}
       disable denial {domain}
    }}
    loop
    loadbalance
}}
"""


def grant_coredns(admin: ClusterHandle) -> None:
    """kubeadm's ClusterRole ``system:coredns``, bound to the user of CoreDNS's certificate."""
    grant_cluster_role(
        admin,
        CLUSTER_ROLE,
        USER,
        [
            {
                "apiGroups": [""],
                "resources": ["endpoints", "services", "pods", "namespaces"],
                "verbs": ["list", "watch"],
            },
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
        ],
    )
