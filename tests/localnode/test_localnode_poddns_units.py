"""What the local node writes for a pod's name resolution, as the kubelet does (localnode/poddns.py)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from rft_devcluster.localnode.poddns import (
    ClusterDNS,
    PodDNS,
    PodIdentity,
    ResolvConf,
    kernel_hostname,
    parse_resolv_conf,
    pod_hostname,
    pod_hosts_file,
    pod_resolv_conf,
    probe,
)

from tests.host_capability import require_host

HOST = parse_resolv_conf(
    "# the host's\nsearch corp.example lab.example\nnameserver 10.9.9.9\noptions edns0\n"
)
CLUSTER = ClusterDNS("198.18.1.1")


def _pod(name: str = "trainer-0-abcde", namespace: str = "team-a", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace}, "spec": {"containers": [], **spec}}


def test_cluster_first_names_the_cluster_dns_and_the_namespace_search_path() -> None:
    conf = pod_resolv_conf(_pod(), CLUSTER, HOST)
    assert conf.render() == (
        "search team-a.svc.cluster.local svc.cluster.local cluster.local corp.example lab.example\n"
        "nameserver 198.18.1.1\n"
        "options ndots:5\n"
    )


def test_cluster_first_without_cluster_dns_falls_back_to_the_hosts_resolvers() -> None:
    assert pod_resolv_conf(_pod(), None, HOST) == HOST
    assert pod_resolv_conf(_pod(dnsPolicy="Default"), CLUSTER, HOST) == HOST


def test_dns_policy_none_takes_only_dns_config_and_options_merge_by_name() -> None:
    config = {
        "nameservers": ["1.1.1.1", "1.1.1.1", "8.8.8.8", "9.9.9.9", "4.4.4.4"],
        "searches": ["a.example"],
        "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}],
    }
    conf = pod_resolv_conf(_pod(dnsPolicy="None", dnsConfig=config), CLUSTER, HOST)
    # At most 3 nameservers, duplicates dropped, as the kubelet does.
    assert conf == ResolvConf(("1.1.1.1", "8.8.8.8", "9.9.9.9"), ("a.example",), ("ndots:2", "edns0"))
    merged = pod_resolv_conf(_pod(dnsConfig={"options": [{"name": "ndots", "value": "1"}]}), CLUSTER, HOST)
    assert merged.options == ("ndots:1",)


def test_hostname_subdomain_and_hosts_file() -> None:
    pod = _pod(hostname="step-train-0", subdomain="step-train")
    assert pod_hostname(pod, "cluster.local") == (
        "step-train-0",
        "step-train-0.step-train.team-a.svc.cluster.local",
    )
    assert kernel_hostname(pod, "cluster.local") == "step-train-0"
    assert kernel_hostname({**pod, "spec": {**pod["spec"], "setHostnameAsFQDN": True}}, "cluster.local") == (
        "step-train-0.step-train.team-a.svc.cluster.local"
    )
    hosts = pod_hosts_file(
        {**pod, "spec": {**pod["spec"], "hostAliases": [{"ip": "10.1.2.3", "hostnames": ["a", "b"]}]}},
        "198.18.1.7",
        "cluster.local",
    )
    lines = hosts.splitlines()
    assert lines[0] == "# Kubernetes-managed hosts file."
    assert "127.0.0.1\tlocalhost" in lines
    assert "198.18.1.7\tstep-train-0.step-train.team-a.svc.cluster.local\tstep-train-0" in lines
    assert lines[-2:] == ["# Entries added by HostAliases.", "10.1.2.3\ta\tb"]
    # Without hostname and subdomain: the pod's name, cut to 63 characters without a trailing '-'.
    long_name = "x" * 62 + "-yz"
    assert pod_hostname(_pod(name=long_name), "cluster.local") == ("x" * 62, None)
    assert "198.18.1.7\t" + "x" * 62 in pod_hosts_file(_pod(name=long_name), "198.18.1.7", "cluster.local")


def test_host_network_pods_and_nodes_without_namespaces_keep_the_hosts_files(tmp_path: Path) -> None:
    assert PodDNS(CLUSTER, None, "not root").identity(_pod(), "198.18.1.7", tmp_path) is None
    assert PodDNS(CLUSTER, ("unshare", "sh")).identity(_pod(hostNetwork=True), "198.18.1.7", tmp_path) is None


def test_the_prefix_puts_the_files_and_hostname_in_place_for_the_process_only(tmp_path: Path) -> None:
    require_host(None if os.geteuid() == 0 else "mount and UTS namespaces need root (CAP_SYS_ADMIN)")
    tools, why_not = probe()
    assert tools is not None, why_not  # root can: a failing probe is a failure, not a skip
    pod = _pod(hostname="step-train-1", subdomain="step-train")
    identity = PodDNS(CLUSTER, tools).identity(pod, "198.18.1.8", tmp_path)
    assert isinstance(identity, PodIdentity)
    out = subprocess.run(
        [*identity.prefix(), "sh", "-c", "hostname; cat /etc/resolv.conf /etc/hosts"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    assert out.splitlines()[0] == "step-train-1"
    assert "nameserver 198.18.1.1" in out
    assert "198.18.1.8\tstep-train-1.step-train.team-a.svc.cluster.local\tstep-train-1" in out
    # The host is untouched.
    assert "198.18.1.8" not in Path("/etc/hosts").read_text()
    assert (
        subprocess.run(["hostname"], capture_output=True, text=True, check=True).stdout.strip()
        != "step-train-1"
    )
