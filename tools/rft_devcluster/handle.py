"""The client side of a running local cluster: what tests and tools use to talk to it."""

from __future__ import annotations

import contextlib
import json
import subprocess
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from rft.api.common import WORKLOAD_SERVICE_ACCOUNT_LABEL

from rft_devcluster import pki
from rft_devcluster.kubeconfig import write_kubeconfig
from rft_devcluster.state import Status, read_state
from rft_devcluster.waiting import wait_for


def as_dict(obj: object) -> dict[str, Any]:
    """A Kubernetes client model as the plain JSON dict the API speaks (camelCase keys)."""
    data = client.ApiClient().sanitize_for_serialization(obj)  # type: ignore[no-untyped-call]
    if not isinstance(data, dict):
        raise TypeError(f"not an API object: {type(obj).__name__}")
    return data


class KubectlError(subprocess.CalledProcessError):
    """kubectl exited non-zero; unlike its base class, the message shows kubectl's stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}\n{self.stderr}"


Manifest = Mapping[str, Any] | Sequence[Mapping[str, Any]] | str


@dataclass(frozen=True)
class LocalNodeInfo:
    """The local node agent's node, as the cluster started it."""

    name: str
    root_dir: Path
    pod_network: str
    gpus: int
    log_path: Path
    # "netns" (a network namespace per pod) or "shared" (pods in the host's); see localnode/network.py.
    pod_network_mode: str = "shared"
    # The pods' nameserver (CoreDNS on the node's IP, port 53; clusterdns.py), or "" with the
    # reason in no_cluster_dns.
    cluster_dns: str = ""
    no_cluster_dns: str = ""

    def to_json(self) -> dict[str, Any]:
        """Serialise for the state file."""
        return {
            "name": self.name,
            "root_dir": str(self.root_dir),
            "pod_network": self.pod_network,
            "gpus": self.gpus,
            "log_path": str(self.log_path),
            "pod_network_mode": self.pod_network_mode,
            "cluster_dns": self.cluster_dns,
            "no_cluster_dns": self.no_cluster_dns,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LocalNodeInfo:
        """Read back what :meth:`to_json` wrote."""
        return cls(
            name=str(data["name"]),
            root_dir=Path(data["root_dir"]),
            pod_network=str(data["pod_network"]),
            gpus=int(data["gpus"]),
            log_path=Path(data["log_path"]),
            pod_network_mode=str(data.get("pod_network_mode", "shared")),
            cluster_dns=str(data.get("cluster_dns", "")),
            no_cluster_dns=str(data.get("no_cluster_dns", "")),
        )


@dataclass(frozen=True)
class ClusterHandle:
    """A running local cluster: its admin kubeconfig and helpers built on it."""

    state_dir: Path
    kubeconfig: Path
    server: str
    bin_dir: Path
    ca_path: Path
    gpu_nodes: tuple[str, ...] = ()
    local_node: LocalNodeInfo | None = None
    _sa_kubeconfig_dir: Path = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_sa_kubeconfig_dir", self.state_dir / "kubeconfigs" / "serviceaccounts")

    @classmethod
    def from_state_dir(cls, state_dir: Path) -> ClusterHandle:
        """Attach to the cluster recorded in ``state_dir`` (e.g. one started by ``make cluster``)."""
        state = read_state(state_dir)
        if state is None or state.status != Status.READY:
            status = state.status if state else "absent"
            raise RuntimeError(f"no ready cluster in {state_dir} (status: {status})")
        local_node = LocalNodeInfo.from_json(state.local_node) if state.local_node else None
        return cls(
            state_dir=state_dir,
            kubeconfig=Path(state.kubeconfig),
            server=state.server,
            bin_dir=Path(state.bin_dir),
            ca_path=state_dir / "pki" / "ca.crt",
            gpu_nodes=tuple(state.gpu_nodes),
            local_node=local_node,
        )

    @property
    def kubectl_path(self) -> Path:
        """The kubectl binary matching the cluster's version."""
        return self.bin_dir / "kubectl"

    def api_client(self) -> client.ApiClient:
        """A new Kubernetes API client authenticated as cluster admin."""
        api: client.ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(self.kubeconfig)
        )
        return api

    def create_namespace(self, prefix: str = "test", *, workloads: bool = True) -> str:
        """A fresh namespace named `prefix-<random>`, returned once its ``default`` ServiceAccount
        exists (pods cannot be created before).

        ``workloads``: the ``default`` ServiceAccount gets the label the operator's workload policy
        asks for (``rft-operator.io/workload: "true"``), as a cluster admin would give it to let
        the project's resources run under it; False leaves it unlabelled (refused).
        """
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        with self.api_client() as api:
            core = client.CoreV1Api(api)
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
            wait_for(
                lambda: core.read_namespaced_service_account("default", name),
                timeout=30,
                what=f"ServiceAccount {name}/default",
            )
            if workloads:
                core.patch_namespaced_service_account(
                    "default", name, {"metadata": {"labels": {WORKLOAD_SERVICE_ACCOUNT_LABEL: "true"}}}
                )
        return name

    def delete_namespace(self, name: str) -> None:
        """Delete a namespace in the background; a namespace already gone is fine."""
        with self.api_client() as api, contextlib.suppress(ApiException):
            client.CoreV1Api(api).delete_namespace(name, propagation_policy="Background")

    def kubectl(
        self,
        *args: str,
        check: bool = True,
        input: str | None = None,  # noqa: A002 - mirrors subprocess.run
        timeout: float = 120,
        kubeconfig: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against the cluster (as admin unless ``kubeconfig`` is given).

        With ``check`` a non-zero exit raises :class:`KubectlError`.
        """
        argv = [str(self.kubectl_path), f"--kubeconfig={kubeconfig or self.kubeconfig}", *args]
        result = subprocess.run(
            argv, input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise KubectlError(result.returncode, argv, output=result.stdout, stderr=result.stderr)
        return result

    def apply(self, manifest: Manifest, *, namespace: str | None = None) -> list[dict[str, Any]]:
        """``kubectl apply`` one or more objects (dicts or YAML text); return the applied objects."""
        if isinstance(manifest, str):
            text = manifest
        elif isinstance(manifest, Mapping):
            text = yaml.safe_dump(dict(manifest))
        else:
            text = yaml.safe_dump_all([dict(m) for m in manifest])
        args = ["apply", "-f", "-", "-o", "json"]
        if namespace:
            args += ["-n", namespace]
        out = json.loads(self.kubectl(*args, input=text).stdout)
        items: list[dict[str, Any]] = out["items"] if out.get("kind") == "List" else [out]
        return items

    def ready_endpoint(self, namespace: str, service: str, port: str | int | None = None) -> tuple[str, int]:
        """A ready endpoint ``(address, port)`` of a Service, from its EndpointSlices.

        There is no kube-proxy: clients on the host reach a Service through one of its ready
        endpoints (as ``kubectl port-forward`` would). ``port`` selects a port by name or
        number (default: the first). Raises LookupError if no endpoint is ready.
        """
        endpoints = self.ready_endpoints(namespace, service, port)
        if not endpoints:
            raise LookupError(f"service {namespace}/{service} has no ready endpoint (port {port!r})")
        return endpoints[0]

    def ready_endpoints(
        self, namespace: str, service: str, port: str | int | None = None
    ) -> list[tuple[str, int]]:
        """Every ready endpoint ``(address, port)`` of a Service, as kube-proxy would spread
        connections over them (see ``ready_endpoint``)."""
        with self.api_client() as api:
            slices = as_dict(
                client.DiscoveryV1Api(api).list_namespaced_endpoint_slice(
                    namespace, label_selector=f"kubernetes.io/service-name={service}"
                )
            )["items"]
        out = []
        for endpoint_slice in slices:
            ports = endpoint_slice.get("ports") or []
            chosen = next(
                (p for p in ports if port is None or p.get("name") == port or p.get("port") == port), None
            )
            if chosen is None:
                continue
            for endpoint in endpoint_slice.get("endpoints") or []:
                if (endpoint.get("conditions") or {}).get("ready"):
                    out.append((str(endpoint["addresses"][0]), int(chosen["port"])))
        return out

    def node_kubeconfig(self, node_name: str) -> Path:
        """Credentials for another node agent (user ``system:node:<node_name>``) on this cluster."""
        ca = pki.KeyPair(self.ca_path.read_bytes(), (self.ca_path.parent / "ca.key").read_bytes())
        cert = pki.issue_certificate(ca, f"system:node:{node_name}", organizations=["system:nodes"])
        return write_kubeconfig(
            self.state_dir / "kubeconfigs" / f"node-{node_name}.kubeconfig",
            server=self.server,
            ca_pem=ca.cert_pem,
            user=f"system:node:{node_name}",
            client_cert_pem=cert.cert_pem,
            client_key_pem=cert.key_pem,
        )

    def sa_kubeconfig(
        self, namespace: str, sa_name: str, *, expiration_seconds: int = 3600, path: Path | None = None
    ) -> Path:
        """Write a kubeconfig that authenticates as ServiceAccount ``namespace/sa_name``.

        The token comes from the TokenRequest API, so the ServiceAccount must exist; the
        kubeconfig's default namespace is ``namespace``.
        """
        with self.api_client() as api:
            request = client.AuthenticationV1TokenRequest(
                spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=expiration_seconds)
            )
            response = client.CoreV1Api(api).create_namespaced_service_account_token(
                sa_name, namespace, request
            )
        if response.status is None:
            raise RuntimeError(f"TokenRequest for {namespace}/{sa_name} returned no token")
        target = path or self._sa_kubeconfig_dir / f"{namespace}.{sa_name}.kubeconfig"
        return write_kubeconfig(
            target,
            server=self.server,
            ca_pem=self.ca_path.read_bytes(),
            user=f"system:serviceaccount:{namespace}:{sa_name}",
            token=response.status.token,
            namespace=namespace,
        )
