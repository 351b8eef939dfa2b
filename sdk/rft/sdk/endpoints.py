"""Reaching a Deployment's OpenAI-compatible endpoint from wherever the SDK runs.

`status.endpoint` names a Service (`http://<service>.<namespace>.svc:<port>/v1`). Inside the cluster
that name resolves; outside it does not, so the SDK does what `kubectl port-forward` does to pick
a target: it reads the Service's EndpointSlices and sends requests to a ready endpoint's address
and target port (pods of the local development node listen on loopback addresses). The
environment variable `RFT_ENDPOINT_OVERRIDE` replaces all of this with a fixed base URL, e.g. a
port-forward or an ingress.
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


def resolve_base_url(endpoint: str, client: KubeClient, environ: Mapping[str, str] | None = None) -> str:
    """The base URL to send OpenAI requests to for a Deployment whose status.endpoint is `endpoint`."""
    env = os.environ if environ is None else environ
    override = env.get(ENDPOINT_OVERRIDE_ENV)
    if override:
        return override.rstrip("/")
    target = parse_service_url(endpoint)
    if target is None or env.get(IN_CLUSTER_ENV):
        return endpoint.rstrip("/")
    port_name = _service_port_name(client, target)
    try:
        slices = client.discovery.list_namespaced_endpoint_slice(
            target.namespace,
            label_selector=f"{SERVICE_NAME_LABEL}={target.service}",
            _request_timeout=client.request_timeout,
        ).items
    except ApiException as error:
        raise translate_api_error(error, f"list EndpointSlices of Service {target.service!r}") from error
    picked = pick_ready_target(slices, port_name)
    if picked is None:
        raise RftError(
            f"Service {target.service!r} in namespace {target.namespace!r} has no ready endpoint yet; "
            f"wait for the deployment to be READY, or set {ENDPOINT_OVERRIDE_ENV} to a reachable base URL"
        )
    address, port = picked
    return urlunsplit((target.scheme, format_host(address, port), target.path, "", "")).rstrip("/")


def _service_port_name(client: KubeClient, target: ServiceUrl) -> str | None:
    try:
        service = client.core.read_namespaced_service(
            target.service, target.namespace, _request_timeout=client.request_timeout
        )
    except ApiException as error:
        if error.status == HTTP_NOT_FOUND:
            raise RftError(
                f"Service {target.service!r} of the deployment's endpoint does not exist in namespace "
                f"{target.namespace!r} (yet)"
            ) from error
        raise translate_api_error(error, f"read Service {target.service!r}") from error
    ports = (service.spec.ports if service.spec is not None else None) or []
    for port in ports:
        if port.port == target.port:
            return str(port.name) if port.name else None
    raise RftError(
        f"Service {target.service!r} has no port {target.port} "
        f"(ports: {', '.join(str(p.port) for p in ports) or 'none'})"
    )
