"""Running the operator against the local cluster, and making the objects steps need."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from rft.api import GROUP, VERSION
from rft.api.common import WORKLOAD_SERVICE_ACCOUNT_LABEL
from rft_devcluster.fake_trainer import DATASET_DIGEST
from rft_devcluster.handle import ClusterHandle
from rft_devcluster.localnode.images import FAKE_VLLM_IMAGE
from rft_devcluster.localnode.network import OPERATOR_POLL_SCOPE
from rft_devcluster.operator_process import OperatorProcess

REPO = Path(__file__).resolve().parents[2]

WORKLOAD = {WORKLOAD_SERVICE_ACCOUNT_LABEL: "true"}
"""The label the cluster admin puts on the ServiceAccounts workloads may run as (the operator's
default policy); the `default` ServiceAccount of every test namespace carries it
(ClusterHandle.create_namespace)."""

TEST_IMAGES = (FAKE_VLLM_IMAGE, "registry.invalid/")
"""Images the test operators allow besides their own: the local node's fake vLLM, and a registry
that cannot be reached (pods that never pull)."""


MULTINODE_GPU_PRODUCT = "NVIDIA-L4"
MULTINODE_TAINT = ("rft-operator.io/multinode-test", "true", "NoSchedule")
"""The product and extra taint of the local node that test_step_multinode.py adds for its steps:
`NVIDIA_L4_24GB` pods land there and nowhere else, and no other test's GPU pod lands there."""


@pytest.fixture(scope="session")
def accelerator_map(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The defaults minus AMD, to test a type this 'cluster' cannot place; L4 nodes of 2 GPUs
    (the extra local node of test_step_multinode.py), so that 4 x L4 is a step of 2 nodes."""
    path = tmp_path_factory.mktemp("operator") / "accelerators.yaml"
    key, _, effect = MULTINODE_TAINT
    path.write_text(
        "AMD_MI300X_192GB: null\n"
        "NVIDIA_L4_24GB:\n"
        f"  nodeSelector: {{nvidia.com/gpu.product: {MULTINODE_GPU_PRODUCT}}}\n"
        "  tolerations:\n"
        "  - {key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}\n"
        f"  - {{key: {key}, operator: Exists, effect: {effect}}}\n"
        "  gpusPerNode: 2\n"
        "  cpuPerAccelerator: '1'\n"
        "  memoryPerAccelerator: 2Gi\n"
    )
    return path


@pytest.fixture(scope="session")
def operator_env(accelerator_map: Path) -> dict[str, str]:
    return {
        "RFT_POLL_SECONDS": "1",
        "RFT_PROGRESS_POLL": OPERATOR_POLL_SCOPE,
        "RFT_METRICS_PORT": "0",
        "RFT_ACCELERATOR_MAP_FILE": str(accelerator_map),
        "RFT_TRAINER_IMAGE": "ghcr.io/rft-operator/rft-trainer:test",
        "RFT_SERVING_HELPERS_IMAGE": "ghcr.io/rft-operator/rft-serving-helpers:test",
        "RFT_ALLOWED_IMAGES": ",".join(TEST_IMAGES),
        "RFT_SERVICE_ACCOUNT_WAIT_SECONDS": "5",
        "RFT_STUCK_POD_SECONDS": "20",
    }


@pytest.fixture(scope="package")
def operator(
    cluster: ClusterHandle, crds: None, operator_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """One operator for the tests of this package (as cluster admin; the chart tests prove the
    RBAC). It stops when the package's tests end: other packages (the SDK's cluster tests, the
    chart's) write statuses themselves and must not race a running operator."""
    proc = OperatorProcess(
        tmp_path_factory.mktemp("operator") / "operator.log",
        env={**os.environ, **operator_env, "KUBECONFIG": str(cluster.kubeconfig)},
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


class Objects:
    """Create the project's objects in one namespace and read them back."""

    def __init__(self, cluster: ClusterHandle, namespace: str) -> None:
        self.api = cluster.api_client()
        self.custom = client.CustomObjectsApi(self.api)
        self.batch = client.BatchV1Api(self.api)
        self.core = client.CoreV1Api(self.api)
        self.namespace = namespace

    def create(self, plural: str, kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind, "metadata": {"name": name}, "spec": spec}
        return self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, plural, body)  # type: ignore[no-any-return]

    def get(self, plural: str, name: str) -> dict[str, Any] | None:
        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, plural, name)  # type: ignore[no-any-return]
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def patch(self, plural: str, name: str, spec: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, plural, name, {"spec": spec}
        )

    def base_model(self, name: str = "base") -> None:
        """A base Model whose check the test performs itself (no model files behind kwok nodes)."""
        obj = self.create(
            "models", "Model", name, {"kind": "base", "location": f"s3://bucket-a/rft/models/{name}/"}
        )
        self.custom.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            self.namespace,
            "models",
            name,
            {
                "status": {
                    "phase": "READY",
                    "observedGeneration": obj["metadata"]["generation"],
                    "filesDigest": DATASET_DIGEST,
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "True",
                            "reason": "Checked",
                            "message": "pinned by the test",
                            "lastTransitionTime": "2026-01-01T00:00:00Z",
                            "observedGeneration": obj["metadata"]["generation"],
                        }
                    ],
                }
            },
        )

    def ready_dataset(self, name: str = "ds", rows: int = 10) -> None:
        """A Dataset whose validation the test performs itself (no bucket behind kwok nodes)."""
        obj = self.create("datasets", "Dataset", name, {"source": f"s3://bucket-a/rft/datasets/{name}.jsonl"})
        self.custom.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            self.namespace,
            "datasets",
            name,
            {
                "status": {
                    "phase": "READY",
                    "observedGeneration": obj["metadata"]["generation"],
                    "rows": rows,
                    "format": "samples",
                    "digest": DATASET_DIGEST,
                }
            },
        )

    def step(self, name: str, *, pod: dict[str, str] | None = None, **spec: Any) -> None:
        body = {
            "dataset": "ds",
            "model": "base",
            "outputModel": f"{name}-out",
            "accelerator": {"type": "NVIDIA_H100_80GB", "count": 1},
        }
        body.update(spec)
        if pod:
            body["podMetadata"] = {"annotations": pod}
        self.create("reinforcementsteps", "ReinforcementStep", name, body)

    def wait_step(
        self, name: str, until: Callable[[dict[str, Any]], bool], timeout: float = 60, what: str = "condition"
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        obj: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            obj = self.get("reinforcementsteps", name)
            if obj is not None and until(obj):
                return obj
            time.sleep(0.25)
        raise AssertionError(
            f"step {name}: {what} not reached in {timeout}s; last seen: {json.dumps((obj or {}).get('status'), indent=1)}"
        )

    def wait_phase(self, name: str, phase: str, timeout: float = 60) -> dict[str, Any]:
        return self.wait_step(
            name, lambda o: o.get("status", {}).get("phase") == phase, timeout, f"phase {phase}"
        )

    def jobs(self, selector: str) -> list[Any]:
        return list(self.batch.list_namespaced_job(self.namespace, label_selector=selector).items)

    def events(self, name: str) -> list[str]:
        items = self.core.list_namespaced_event(
            self.namespace, field_selector=f"involvedObject.name={name}"
        ).items
        return [f"{e.type}/{e.reason}: {e.message}" for e in items]

    def wait_events(
        self, name: str, until: Callable[[list[str]], bool], timeout: float = 15, what: str = "events"
    ) -> list[str]:
        """The object's events once `until` holds: the operator posts them in the background, so
        they may arrive a moment after the status change they report."""
        deadline = time.monotonic() + timeout
        while True:
            seen = self.events(name)
            if until(seen):
                return seen
            if time.monotonic() > deadline:
                raise AssertionError(f"{name}: {what} not seen in {timeout}s; seen: {seen}")
            time.sleep(0.25)


@pytest.fixture
def objects(cluster: ClusterHandle, namespace: str) -> Iterator[Objects]:
    objs = Objects(cluster, namespace)
    yield objs
    objs.api.close()
