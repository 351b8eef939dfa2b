"""Adapters on every replica: a new replica of a base Deployment enters the Service only once it
serves the adapters served there (its readiness gate rft-operator.io/AdaptersLoaded).

The operator's own vLLM pods on the local node, with the tests' fake vLLM (`FAKE_VLLM_IMAGE`:
the same pod spec, init container and sidecar; ready in seconds). tests/operator/
test_serving_vllm.py does the same scale-up on real vLLM.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from rft_devcluster.handle import ClusterHandle
from rft_devcluster.localnode.images import FAKE_VLLM_IMAGE
from rft_devcluster.pytest_fixtures_storage import S3Bucket
from rft_devcluster.tiny import build_tiny_model
from rft_operator.builders.serving import ADAPTERS_GATE

from tests.operator.conftest import Objects, OperatorProcess
from tests.operator.serving_support import (
    AdapterLoad,
    condition,
    publish_base_and_adapter,
    scale,
    wait_deployment,
)

pytestmark = [pytest.mark.cluster, pytest.mark.localnode, pytest.mark.slow]

ROLE = "arn:aws:iam::123456789012:role/rft-replicas"
CPU = {"type": "CPU", "count": 0}
# The operator's RFT_SERVING_HELPERS_IMAGE in these tests (tests/operator/conftest.py).
HELPERS_IMAGE = "ghcr.io/rft-operator/rft-serving-helpers:test"


def _server_pods(objects: Objects) -> list[Any]:
    return list(
        objects.core.list_namespaced_pod(
            objects.namespace, label_selector="rft-operator.io/deployment=base"
        ).items
    )


def test_a_new_replica_joins_the_service_with_its_adapters(
    cluster: ClusterHandle, operator: OperatorProcess, objects: Objects, s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    publish_base_and_adapter(
        objects,
        s3_bucket,
        build_tiny_model(tmp_path / "base"),
        tmp_path,
        name="tiny",
        service_account="rft-replicas",
        role_arn=ROLE,
        rank=4,
        with_canary=True,
    )
    objects.create(
        "deployments",
        "Deployment",
        "base",
        {
            "model": "tiny",
            "deploymentType": "on-demand",
            "accelerator": CPU,
            "serviceAccountName": "rft-replicas",
            "image": FAKE_VLLM_IMAGE,
        },
    )
    wait_deployment(objects, "base", "READY", timeout=300)
    (first,) = _server_pods(objects)
    # The model fetch and the adapter sidecar run the serving-helpers image (the local node's
    # stand-in for it is the .venv): the fetch and the admin guard's install completed, the
    # sidecar runs.
    inits = first.status.init_container_statuses
    assert [c.name for c in inits] == ["fetch-model", "admin-guard"]
    for init in inits:
        assert init.image == HELPERS_IMAGE
        assert init.state.terminated is not None
        assert init.state.terminated.exit_code == 0
    sidecar = next(c for c in first.status.container_statuses if c.name == "adapter-loader")
    assert sidecar.image == HELPERS_IMAGE
    assert sidecar.ready
    gate = next(c for c in first.status.conditions if c.type == ADAPTERS_GATE)
    assert (gate.status, gate.reason) == ("True", "AdaptersLoaded"), "no adapter yet: nothing to wait for"

    objects.create(
        "deployments",
        "Deployment",
        "tuned",
        {
            "model": "tiny-lora",
            "deploymentType": "on-demand-lora",
            "baseDeployment": "base",
            "accelerator": CPU,
        },
    )
    wait_deployment(objects, "tuned", "READY", timeout=120)

    with AdapterLoad(cluster, objects.namespace, "base-server", "tiny-lora") as load:
        load.wait_for_requests(5)
        scale(objects, "base", 2)
        seen_waiting = False
        deadline = time.monotonic() + 300
        new: Any = None
        while time.monotonic() < deadline:
            others = [p for p in _server_pods(objects) if p.metadata.name != first.metadata.name]
            new = others[0] if others else None
            gate = (
                next((c for c in (new.status.conditions or []) if c.type == ADAPTERS_GATE), None)
                if new
                else None
            )
            seen_waiting |= gate is not None and gate.status == "False"
            if new is not None and new.status.pod_ip and load.requests_to(new.status.pod_ip) >= 5:
                break
            time.sleep(0.2)
        assert new is not None, "the base Deployment made a second replica"
        assert load.requests_to(new.status.pod_ip) >= 5, (new.status.conditions, load.summary())
    assert load.failures == [], load.failures[:5]
    gate = next(c for c in new.status.conditions if c.type == ADAPTERS_GATE)
    assert (gate.status, gate.reason) == ("True", "AdaptersLoaded")
    tuned = wait_deployment(objects, "tuned", "READY", timeout=60)
    assert sorted(r["pod"] for r in tuned["status"]["replicas"]) == sorted(
        [first.metadata.name, new.metadata.name]
    )
    assert condition(tuned, "AdapterVerified")["reason"] == "CanaryMatched"
    print(f"scale-up under load (fake vLLM): {load.summary()}; gate seen False first: {seen_waiting}")
