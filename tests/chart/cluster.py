"""Installing the chart into the local cluster and running the operator exactly as the chart's
Deployment would: its command, arguments and environment, under its ServiceAccount's token."""

from __future__ import annotations

import contextlib
import os
import subprocess
import urllib.parse
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from kubernetes import client, config
from rft_devcluster.handle import ClusterHandle
from rft_devcluster.operator_process import OperatorProcess, operator_command
from rft_devcluster.waiting import free_port

from tests.chart.helm import CHART, helm, one, parse, values_file


@dataclass
class Release:
    """A helm release of the chart in the local cluster."""

    cluster: ClusterHandle
    name: str
    namespace: str
    objects: list[dict[str, Any]]

    @property
    def service_account(self) -> str:
        sa: str = one(self.objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"]
        return sa

    @property
    def container(self) -> dict[str, Any]:
        c: dict[str, Any] = one(self.objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
        return c

    def token_kubeconfig(self, directory: Path) -> Path:
        """A kubeconfig holding a fresh token of the chart's ServiceAccount (TokenRequest API)."""
        return self.cluster.sa_kubeconfig(
            self.namespace, self.service_account, path=directory / f"{self.name}.kubeconfig"
        )

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return helm(
            *args, "--namespace", self.namespace, "--kubeconfig", str(self.cluster.kubeconfig), check=check
        )

    def refresh(self) -> None:
        self.objects = parse(self.helm("get", "manifest", self.name).stdout)


@contextlib.contextmanager
def installed(
    cluster: ClusterHandle, namespace: str, values: Mapping[str, Any], tmp: Path, name: str | None = None
) -> Iterator[Release]:
    """`helm install` (CRDs already exist: the `crds` fixture applied them), always uninstalled."""
    release = Release(cluster, name or f"rft-{uuid.uuid4().hex[:6]}", namespace, [])
    release.helm("install", release.name, str(CHART), *values_file(values, tmp))
    try:
        release.refresh()
        yield release
    finally:
        release.helm("uninstall", release.name, "--wait", "--timeout", "60s", check=False)


def running_operators(cluster: ClusterHandle) -> list[int]:
    """rft-operator processes talking to this cluster (e.g. the operator tests' admin one, or
    another release's): they would do the work and void the proof about this release's RBAC."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        with contextlib.suppress(psutil.Error, OSError):
            cmdline = proc.info["cmdline"] or []
            if "rft_operator" not in cmdline:
                continue
            kubeconfig = proc.environ().get("KUBECONFIG")
            if kubeconfig and cluster.server in Path(kubeconfig).read_text():
                found.append(proc.info["pid"])
    return found


class ChartOperator(OperatorProcess):
    """`python -m rft_operator` with the Deployment's arguments and environment.

    What a pod would get from Kubernetes is supplied the same way here: the downward API
    fields, the mounted accelerator map (the ConfigMap's data, read from the cluster), and the
    ServiceAccount token (a kubeconfig instead of the in-cluster files). The liveness endpoint
    binds loopback instead of 0.0.0.0, and metrics get a free port.
    """

    def __init__(self, release: Release, workdir: Path) -> None:
        super().__init__(workdir / f"{release.name}-operator.log")
        self.release = release
        self.workdir = workdir
        self.health_port = free_port()
        self.metrics_port = free_port()

    def _accelerator_map(self) -> Path:
        name = one(self.release.objects, "ConfigMap")["metadata"]["name"]
        with self.release.cluster.api_client() as api:
            data = client.CoreV1Api(api).read_namespaced_config_map(name, self.release.namespace).data or {}
        path = self.workdir / "accelerators.yaml"
        path.write_text(data["accelerators.yaml"])
        return path

    def command(self) -> list[str]:
        container = self.release.container
        assert container["command"] == ["python", "-m", "rft_operator"]
        args = []
        for arg in container["args"]:
            if not arg.startswith("--liveness="):
                args.append(arg)
                continue
            url = urllib.parse.urlsplit(arg.removeprefix("--liveness="))
            # In the pod: every interface, for the kubelet's probes; here: loopback only.
            assert url.hostname == "0.0.0.0", arg  # noqa: S104
            args.append(f"--liveness=http://127.0.0.1:{self.health_port}{url.path}")
        return operator_command(*args)

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RFT_", "KUBERNETES_", "POD_"))}
        downward = {"metadata.namespace": self.release.namespace, "metadata.name": f"{self.release.name}-0"}
        for var in self.release.container["env"]:
            if "value" in var:
                env[var["name"]] = var["value"]
            else:
                env[var["name"]] = downward[var["valueFrom"]["fieldRef"]["fieldPath"]]
        env["RFT_ACCELERATOR_MAP_FILE"] = str(self._accelerator_map())
        env["RFT_METRICS_PORT"] = str(self.metrics_port)
        env["KUBECONFIG"] = str(self.release.token_kubeconfig(self.workdir))
        return env

    def start(self, timeout: float = 60) -> None:
        others = running_operators(self.release.cluster)
        assert not others, f"other operators serve this cluster (pids {others}): stop them first"
        super().start(timeout)


def token_client(kubeconfig: Path) -> client.ApiClient:
    api: client.ApiClient = config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
    return api


def can(
    api: client.ApiClient,
    verb: str,
    resource: str,
    *,
    group: str = "",
    namespace: str | None = None,
    subresource: str | None = None,
    name: str | None = None,
) -> bool:
    """SelfSubjectAccessReview: may the client's identity do this?"""
    review = client.V1SelfSubjectAccessReview(
        spec=client.V1SelfSubjectAccessReviewSpec(
            resource_attributes=client.V1ResourceAttributes(
                verb=verb,
                resource=resource,
                group=group,
                namespace=namespace,
                subresource=subresource,
                name=name,
            )
        )
    )
    result = client.AuthorizationV1Api(api).create_self_subject_access_review(review)
    return bool(result.status is not None and result.status.allowed)
