"""The local cluster's CoreDNS settings (rft_devcluster.clusterdns), without starting it."""

from __future__ import annotations

from pathlib import Path

import pytest
from rft_devcluster import clusterdns


def test_corefile_is_kubeadms_listening_on_the_node_ip() -> None:
    text = clusterdns.corefile(
        listen_ip="198.18.1.1",
        kubeconfig=Path("/s/coredns.kubeconfig"),
        context="system:coredns",
        health_port=1,
        ready_port=2,
    )
    assert text.startswith(".:53 {\n    bind 198.18.1.1\n")
    for line in (
        "kubernetes cluster.local in-addr.arpa ip6.arpa {",
        "kubeconfig /s/coredns.kubeconfig system:coredns",
        "pods insecure",
        "fallthrough in-addr.arpa ip6.arpa",
        "forward . /etc/resolv.conf {",
        "disable success cluster.local",
        "health 127.0.0.1:1 {",
        "ready 127.0.0.1:2",
        "loop",
        "loadbalance",
    ):
        assert line in text
    assert "prometheus" not in text  # a fixed :9153 would collide between clusters on one host


def test_without_root_the_cluster_has_no_dns_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clusterdns.os, "geteuid", lambda: 1000)
    assert clusterdns.unavailable().startswith("not root: CoreDNS cannot listen on port 53")
