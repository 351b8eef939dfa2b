"""EndpointSlices for pods with loopback addresses.

The EndpointSlice API rejects loopback IPs, so with the loopback pod network the
controller-manager cannot publish this node's pods for their Services (it logs
``FailedToUpdateEndpointSlices`` and retries). This mirror publishes them instead, in
EndpointSlices of ``addressType: FQDN`` whose addresses are the pods' dotted IPs (valid DNS
names that every resolver maps to themselves), labelled with the Service's name like the
controller-manager's slices, so a client that reads a Service's EndpointSlices finds its
ready pods either way. With a routable pod network the controller-manager publishes them
and the mirror stays idle.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import threading
from collections.abc import Mapping
from typing import Any

from rft_devcluster.localnode.kubeapi import ApiError, KubeApi

log = logging.getLogger(__name__)

MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
MANAGED_BY = "localnode.rft-devcluster"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
NODE_LABEL = "rft-operator.io/local-node-name"
SLICES = "/apis/discovery.k8s.io/v1"
RESYNC_SECONDS = 2.0


def _condition_true(pod: Mapping[str, Any], type_: str) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == type_ and c.get("status") == "True" for c in conditions)


def _resolve_port(target: Any, port: int, pod: Mapping[str, Any]) -> int | None:
    """A Service port's targetPort for one pod (a named port looks in the pod's containers)."""
    if target is None:
        return port
    if isinstance(target, int) or str(target).isdigit():
        return int(target)
    for container in pod["spec"]["containers"]:
        for container_port in container.get("ports") or []:
            if container_port.get("name") == target:
                return int(container_port["containerPort"])
    return None


def desired_slices(
    services: list[dict[str, Any]], pods: list[dict[str, Any]], node_name: str
) -> dict[tuple[str, str], dict[str, Any]]:
    """The EndpointSlices this node should publish, keyed by (namespace, name)."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for service in services:
        meta, spec = service["metadata"], service.get("spec") or {}
        selector = spec.get("selector") or {}
        if not selector:
            continue
        groups: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}
        for pod in pods:
            pod_meta = pod["metadata"]
            labels = pod_meta.get("labels") or {}
            ip = (pod.get("status") or {}).get("podIP")
            if (
                pod_meta["namespace"] != meta["namespace"]
                or not ip
                or not ipaddress.ip_address(ip).is_loopback
            ):
                continue
            if any(labels.get(k) != v for k, v in selector.items()):
                continue
            if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                continue
            ports = []
            for service_port in spec.get("ports") or []:
                resolved = _resolve_port(service_port.get("targetPort"), int(service_port["port"]), pod)
                if resolved is not None:
                    entry: dict[str, Any] = {
                        "port": resolved,
                        "protocol": service_port.get("protocol", "TCP"),
                    }
                    if service_port.get("name"):
                        entry["name"] = service_port["name"]
                    ports.append(entry)
            terminating = bool(pod_meta.get("deletionTimestamp"))
            # As the EndpointSlice controller: publishNotReadyAddresses makes every endpoint ready.
            ready = (_condition_true(pod, "Ready") or bool(spec.get("publishNotReadyAddresses"))) and not terminating
            endpoint = {
                "addresses": [ip],
                "conditions": {
                    "ready": ready,
                    "serving": _condition_true(pod, "Ready"),
                    "terminating": terminating,
                },
                "nodeName": node_name,
                "targetRef": {
                    "kind": "Pod",
                    "namespace": pod_meta["namespace"],
                    "name": pod_meta["name"],
                    "uid": pod_meta["uid"],
                },
            }
            pod_spec = pod.get("spec") or {}
            if pod_spec.get("hostname") and pod_spec.get("subdomain") == meta["name"]:
                # The pod's DNS name <hostname>.<service>.<ns>.svc (cluster DNS serves it from here).
                endpoint["hostname"] = pod_spec["hostname"]
            key = json.dumps(ports, sort_keys=True)
            groups.setdefault(key, (ports, []))[1].append(endpoint)
        for key, (ports, endpoints) in groups.items():
            digest = hashlib.sha256(f"{node_name}/{key}".encode()).hexdigest()[:8]
            name = f"{meta['name']}-{node_name}-{digest}"[:253]
            out[(meta["namespace"], name)] = {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": name,
                    "namespace": meta["namespace"],
                    "labels": {
                        SERVICE_NAME_LABEL: meta["name"],
                        MANAGED_BY_LABEL: MANAGED_BY,
                        NODE_LABEL: node_name,
                    },
                    "ownerReferences": [
                        {
                            "apiVersion": "v1",
                            "kind": "Service",
                            "name": meta["name"],
                            "uid": meta["uid"],
                            "controller": True,
                        }
                    ],
                },
                "addressType": "FQDN",
                "endpoints": sorted(endpoints, key=lambda e: e["targetRef"]["name"]),
                "ports": ports,
            }
    return out


class EndpointMirror:
    """Keeps this node's FQDN EndpointSlices in line with its pods and the Services selecting them."""

    def __init__(self, helper: KubeApi, node_api: KubeApi, node_name: str) -> None:
        self._helper = helper
        self._node_api = node_api
        self._node_name = node_name
        self._wake = threading.Event()

    def trigger(self) -> None:
        """A pod's address or readiness changed: resync soon."""
        self._wake.set()

    def run(self, stop: threading.Event) -> None:
        """Resync on triggers and every few seconds until ``stop`` is set (run in a thread)."""
        while not stop.is_set():
            try:
                self.sync()
            except Exception:  # the next round retries
                log.exception("endpoint mirror: sync failed")
            self._wake.wait(RESYNC_SECONDS)
            self._wake.clear()

    def sync(self) -> None:
        """One round: list Services, this node's pods and our slices; create, update, delete."""
        services = self._helper.get("/api/v1/services")["items"]
        pods = self._node_api.get("/api/v1/pods", fieldSelector=f"spec.nodeName={self._node_name}")["items"]
        selector = f"{MANAGED_BY_LABEL}={MANAGED_BY},{NODE_LABEL}={self._node_name}"
        existing = {
            (s["metadata"]["namespace"], s["metadata"]["name"]): s
            for s in self._helper.get(f"{SLICES}/endpointslices", labelSelector=selector)["items"]
        }
        desired = desired_slices(services, pods, self._node_name)
        for (namespace, name), body in desired.items():
            current = existing.get((namespace, name))
            path = f"{SLICES}/namespaces/{namespace}/endpointslices"
            try:
                if current is None:
                    self._helper.create(path, body)
                elif (current.get("endpoints") or []) != body["endpoints"] or current.get("ports") != body[
                    "ports"
                ]:
                    body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
                    self._helper.replace(f"{path}/{name}", body)
            except ApiError as exc:
                if exc.status not in (404, 409):
                    raise
        for namespace, name in existing.keys() - desired.keys():
            try:
                self._helper.delete(f"{SLICES}/namespaces/{namespace}/endpointslices/{name}")
            except ApiError as exc:
                if exc.status != 404:
                    raise
