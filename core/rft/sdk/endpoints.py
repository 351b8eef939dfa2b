"""Reaching a Deployment's OpenAI-compatible endpoint from wherever the SDK runs.

`status.endpoint` names a Service (`http://<service>.<namespace>.svc:<port>/v1`). Inside the cluster
that name resolves; outside it does not, so the SDK picks a target the way `kubectl port-forward`
does: a ready address of the Service's EndpointSlices, or else a Running and Ready pod chosen by
the Service's selector (pods of the local development node listen on loopback addresses, which
EndpointSlices refuse), with the Service's target port. The environment variable
`RFT_ENDPOINT_OVERRIDE` replaces all of this with a fixed base URL, e.g. a port-forward or an
ingress.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from kubernetes.client.exceptions import ApiException

from rft.sdk.errors import RftError
from rft.sdk.kube import HTTP_NOT_FOUND, KubeClient, translate_api_error

ENDPOINT_OVERRIDE_ENV = "RFT_ENDPOINT_OVERRIDE"
IN_CLUSTER_ENV = "KUBERNETES_SERVICE_HOST"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


@dataclass(frozen=True)
class ServiceUrl:
    """An in-cluster Service URL taken apart."""

    scheme: str
    service: str
    namespace: str
    port: int
    path: str


def parse_service_url(url: str) -> ServiceUrl | None:
    """Split `http://<service>.<namespace>.svc[.cluster.local][:port]/path`; None for other URLs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    labels = host.split(".")
    if len(labels) < 3 or labels[2] != "svc":
        return None
    default_port = 443 if parts.scheme == "https" else 80
    return ServiceUrl(
        scheme=parts.scheme or "http",
        service=labels[0],
        namespace=labels[1],
        port=parts.port or default_port,
        path=parts.path,
    )


def pick_ready_target(slices: Sequence[Any], port_name: str | None) -> tuple[str, int] | None:
    """The first ready endpoint's address and the port named `port_name` in its slice.

    An endpoint whose `ready` condition is unset counts as ready (the EndpointSlice API's rule).
    """
    wanted = port_name or ""
    for endpoint_slice in slices:
        ports = [p for p in endpoint_slice.ports or [] if (p.name or "") == wanted and p.port]
        if not ports:
            continue
        for endpoint in endpoint_slice.endpoints or []:
            ready = endpoint.conditions.ready if endpoint.conditions is not None else None
            if ready is False or not endpoint.addresses:
                continue
            return endpoint.addresses[0], int(ports[0].port)
    return None


def format_host(address: str, port: int) -> str:
    """`address:port`, with brackets around an IPv6 address."""
    try:
        is_v6 = ipaddress.ip_address(address).version == 6
    except ValueError:
        is_v6 = False
    return f"[{address}]:{port}" if is_v6 else f"{address}:{port}"


def pick_ready_pod(
    pods: Sequence[Any], target_port: int | str | None, service_port: int
) -> tuple[str, int] | None:
    """The first Running and Ready pod's IP and the Service's target port on it (by name or number).

    Pods are tried in name order so that the choice is stable.
    """
    for pod in sorted(pods, key=lambda p: p.metadata.name):
        status = pod.status
        if (
            status is None
            or status.phase != "Running"
            or not status.pod_ip
            or pod.metadata.deletion_timestamp
        ):
            continue
        ready = any(c.type == "Ready" and c.status == "True" for c in status.conditions or [])
        if not ready:
            continue
        port = _container_port(pod, target_port, service_port)
        if port is not None:
            return str(status.pod_ip), port
    return None


def _container_port(pod: Any, target_port: int | str | None, service_port: int) -> int | None:
    if target_port is None:
        return service_port
    if isinstance(target_port, int) or str(target_port).isdigit():
        return int(target_port)
    for container in pod.spec.containers or []:
        for port in container.ports or []:
            if port.name == target_port:
                return int(port.container_port)
    return None


def resolve_base_url(endpoint: str, client: KubeClient, environ: Mapping[str, str] | None = None) -> str:
    """The base URL to send OpenAI requests to for a Deployment whose status.endpoint is `endpoint`.

    Order: `RFT_ENDPOINT_OVERRIDE`; the endpoint itself inside a cluster or when it is not a Service
    URL; a ready address of the Service's EndpointSlices; else, as `kubectl port-forward svc/...`
    does, a Running and Ready pod picked by the Service's selector (EndpointSlices refuse loopback
    addresses, which the local development node gives its pods).
    """
    env = os.environ if environ is None else environ
    override = env.get(ENDPOINT_OVERRIDE_ENV)
    if override:
        return override.rstrip("/")
    target = parse_service_url(endpoint)
    if target is None or env.get(IN_CLUSTER_ENV):
        return endpoint.rstrip("/")
    service = _read_service(client, target)
    service_port = _service_port(service, target)
    picked = pick_ready_target(_endpoint_slices(client, target), service_port.name)
    if picked is None:
        selector = (service.spec.selector if service.spec is not None else None) or {}
        if selector:
            picked = pick_ready_pod(
                _selected_pods(client, target, selector), service_port.target_port, target.port
            )
    if picked is None:
        raise RftError(
            f"Service {target.service!r} in namespace {target.namespace!r} has no ready endpoint yet; "
            f"wait for the deployment to be READY, or set {ENDPOINT_OVERRIDE_ENV} to a reachable base URL"
        )
    address, port = picked
    return urlunsplit((target.scheme, format_host(address, port), target.path, "", "")).rstrip("/")


def _read_service(client: KubeClient, target: ServiceUrl) -> Any:
    try:
        return client.core.read_namespaced_service(
            target.service, target.namespace, _request_timeout=client.request_timeout
        )
    except ApiException as error:
        if error.status == HTTP_NOT_FOUND:
            raise RftError(
                f"Service {target.service!r} of the deployment's endpoint does not exist in namespace "
                f"{target.namespace!r} (yet)"
            ) from error
        raise translate_api_error(error, f"read Service {target.service!r}") from error


def _service_port(service: Any, target: ServiceUrl) -> Any:
    ports = (service.spec.ports if service.spec is not None else None) or []
    for port in ports:
        if port.port == target.port:
            return port
    raise RftError(
        f"Service {target.service!r} has no port {target.port} "
        f"(ports: {', '.join(str(p.port) for p in ports) or 'none'})"
    )


def _endpoint_slices(client: KubeClient, target: ServiceUrl) -> list[Any]:
    try:
        return list(
            client.discovery.list_namespaced_endpoint_slice(
                target.namespace,
                label_selector=f"{SERVICE_NAME_LABEL}={target.service}",
                _request_timeout=client.request_timeout,
            ).items
        )
    except ApiException as error:
        raise translate_api_error(error, f"list EndpointSlices of Service {target.service!r}") from error


def _selected_pods(client: KubeClient, target: ServiceUrl, selector: Mapping[str, str]) -> list[Any]:
    label_selector = ",".join(f"{key}={value}" for key, value in sorted(selector.items()))
    try:
        return list(
            client.core.list_namespaced_pod(
                target.namespace, label_selector=label_selector, _request_timeout=client.request_timeout
            ).items
        )
    except ApiException as error:
        raise translate_api_error(error, f"list pods of Service {target.service!r}") from error
