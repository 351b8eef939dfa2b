"""Reaching a Deployment's endpoint from outside the cluster: Service URL parsing and target choice."""

from __future__ import annotations

import pytest
from kubernetes import client as k8s
from rft.sdk.endpoints import (
    format_host,
    parse_service_url,
    pick_ready_pod,
    pick_ready_target,
    resolve_base_url,
)


def test_parse_service_urls() -> None:
    parsed = parse_service_url("http://base-server.team-a.svc:8000/v1")
    assert parsed is not None
    assert (parsed.service, parsed.namespace, parsed.port, parsed.path) == (
        "base-server",
        "team-a",
        8000,
        "/v1",
    )
    long_form = parse_service_url("https://srv.ns.svc.cluster.local/v1")
    assert long_form is not None
    assert (long_form.service, long_form.namespace, long_form.port, long_form.scheme) == (
        "srv",
        "ns",
        443,
        "https",
    )


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8000/v1", "http://api.example.com/v1", "http://srv.ns:80/v1"]
)
def test_other_urls_are_not_service_urls(url: str) -> None:
    assert parse_service_url(url) is None


def _slice(
    endpoints: list[k8s.V1Endpoint], port_name: str | None = "http", port: int = 9000
) -> k8s.V1EndpointSlice:
    return k8s.V1EndpointSlice(
        address_type="IPv4",
        endpoints=endpoints,
        ports=[k8s.DiscoveryV1EndpointPort(name=port_name, port=port)],
    )


def _endpoint(address: str, ready: bool | None) -> k8s.V1Endpoint:
    return k8s.V1Endpoint(addresses=[address], conditions=k8s.V1EndpointConditions(ready=ready))


def test_pick_skips_unready_endpoints_and_uses_the_named_port() -> None:
    slices = [
        _slice([_endpoint("127.0.0.2", False)]),
        _slice([_endpoint("127.0.0.3", False), _endpoint("127.0.0.4", True)]),
    ]
    assert pick_ready_target(slices, "http") == ("127.0.0.4", 9000)


def test_unset_ready_counts_as_ready() -> None:
    assert pick_ready_target([_slice([_endpoint("127.0.0.5", None)])], "http") == ("127.0.0.5", 9000)


def test_unnamed_port_matches_a_single_port_service() -> None:
    assert pick_ready_target([_slice([_endpoint("10.0.0.1", True)], port_name=None)], None) == (
        "10.0.0.1",
        9000,
    )


def test_no_ready_endpoint_or_port_gives_none() -> None:
    assert pick_ready_target([_slice([_endpoint("127.0.0.2", False)])], "http") is None
    assert pick_ready_target([_slice([_endpoint("127.0.0.2", True)], port_name="metrics")], "http") is None
    assert pick_ready_target([], "http") is None


def test_format_host_brackets_ipv6() -> None:
    assert format_host("127.0.0.1", 80) == "127.0.0.1:80"
    assert format_host("fd00::1", 8000) == "[fd00::1]:8000"


def test_override_wins_without_touching_the_cluster() -> None:
    # The override short-circuits before any API call, so no client is needed.
    url = resolve_base_url(
        "http://srv.ns.svc:8000/v1",
        None,  # type: ignore[arg-type]
        {"RFT_ENDPOINT_OVERRIDE": "http://127.0.0.1:1234/v1/"},
    )
    assert url == "http://127.0.0.1:1234/v1"


def test_in_cluster_uses_the_service_url_as_is() -> None:
    url = resolve_base_url("http://srv.ns.svc:8000/v1", None, {"KUBERNETES_SERVICE_HOST": "10.0.0.1"})  # type: ignore[arg-type]
    assert url == "http://srv.ns.svc:8000/v1"


def test_non_service_endpoint_is_used_as_is() -> None:
    assert resolve_base_url("http://127.0.0.1:8000/v1/", None, {}) == "http://127.0.0.1:8000/v1"  # type: ignore[arg-type]


def _pod(name: str, ip: str | None, phase: str = "Running", ready: str = "True") -> k8s.V1Pod:
    return k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(name=name),
        spec=k8s.V1PodSpec(
            containers=[
                k8s.V1Container(name="server", ports=[k8s.V1ContainerPort(name="http", container_port=8123)])
            ]
        ),
        status=k8s.V1PodStatus(
            phase=phase, pod_ip=ip, conditions=[k8s.V1PodCondition(type="Ready", status=ready)]
        ),
    )


def test_pick_ready_pod_resolves_named_and_numbered_target_ports() -> None:
    pods = [_pod("b", "127.0.0.3"), _pod("a", "127.0.0.2", ready="False"), _pod("c", None)]
    assert pick_ready_pod(pods, "http", 8000) == ("127.0.0.3", 8123)
    assert pick_ready_pod(pods, 9000, 8000) == ("127.0.0.3", 9000)
    assert pick_ready_pod(pods, "9001", 8000) == ("127.0.0.3", 9001)
    assert pick_ready_pod(pods, None, 8000) == ("127.0.0.3", 8000)


def test_pick_ready_pod_skips_pods_that_cannot_serve() -> None:
    assert pick_ready_pod([_pod("a", "127.0.0.2", phase="Pending")], "http", 80) is None
    assert pick_ready_pod([_pod("a", "127.0.0.2", ready="False")], "http", 80) is None
    assert pick_ready_pod([_pod("a", "127.0.0.2")], "metrics", 80) is None
    assert pick_ready_pod([], "http", 80) is None
