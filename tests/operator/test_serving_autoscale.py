"""Autoscaling on vLLM's own gauges: a base Deployment with minReplicaCount 1 and maxReplicaCount 2
scales to 2 under concurrent load on its own (Event Scaled), and back to 1 once the load has
stopped for scaleDownDelaySeconds.

The operator's own server pods on the local node, with the tests' fake vLLM (`FAKE_VLLM_IMAGE`),
which serves vLLM's `vllm:num_requests_running` and `vllm:num_requests_waiting` on /metrics; the
operator reads them through each pod's adapter sidecar, as it reads real vLLM's.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from rft_devcluster.handle import ClusterHandle
from rft_devcluster.localnode.images import FAKE_VLLM_IMAGE
from rft_devcluster.pytest_fixtures_storage import S3Bucket
from rft_devcluster.tiny import build_tiny_model

from tests.operator.conftest import Objects, OperatorProcess
from tests.operator.serving_support import AdapterLoad, publish_base_and_adapter, wait_deployment

pytestmark = [pytest.mark.cluster, pytest.mark.localnode, pytest.mark.slow]

ROLE = "arn:aws:iam::123456789012:role/rft-autoscale"
WINDOW = 10  # scaleDownDelaySeconds


def wait_for(
    objects: Objects, what: str, until: Callable[[dict[str, Any]], bool], timeout: float
) -> dict[str, Any]:
    """The Deployment once `until` holds of it."""
    deadline = time.monotonic() + timeout
    obj: dict[str, Any] = {}
    while time.monotonic() < deadline:
        obj = objects.get("deployments", "base") or {}
        if until(obj):
            return obj
        time.sleep(0.25)
    raise AssertionError(f"{what} not reached in {timeout}s; status: {obj.get('status')}")


def desired(obj: dict[str, Any]) -> int | None:
    return obj.get("status", {}).get("desiredReplicas")  # type: ignore[no-any-return]


def scaled_events(objects: Objects) -> list[Any]:
    items = objects.core.list_namespaced_event(
        objects.namespace, field_selector="involvedObject.name=base"
    ).items
    return sorted((e for e in items if e.reason == "Scaled"), key=lambda e: e.first_timestamp)


def test_load_scales_a_deployment_up_and_its_end_scales_it_down(
    cluster: ClusterHandle, operator: OperatorProcess, objects: Objects, s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    publish_base_and_adapter(
        objects,
        s3_bucket,
        build_tiny_model(tmp_path / "base"),
        tmp_path,
        name="tiny",
        service_account="rft-autoscale",
        role_arn=ROLE,
        rank=4,
    )
    objects.create(
        "deployments",
        "Deployment",
        "base",
        {
            "model": "tiny",
            "deploymentType": "on-demand",
            "accelerator": {"type": "CPU", "count": 0},
            "serviceAccountName": "rft-autoscale",
            "image": FAKE_VLLM_IMAGE,
            "minReplicaCount": 1,
            "maxReplicaCount": 2,
            "autoscaling": {"targetRequestsPerReplica": 1, "scaleDownDelaySeconds": WINDOW},
        },
    )
    ready = wait_deployment(objects, "base", "READY", timeout=300)
    assert desired(ready) == 1
    # Idle for a few polls (1 s each): nothing in flight, no scaling.
    time.sleep(3)
    assert desired(objects.get("deployments", "base") or {}) == 1
    assert scaled_events(objects) == []

    # Four clients, one long request each at a time: the fake serves one and queues the rest, so
    # running + waiting is up to 4 on the replica (2 and more nearly always), above the target of 1
    # per replica.
    with AdapterLoad(
        cluster, objects.namespace, "base-server", "tiny", interval=0.05, clients=4, max_tokens=64
    ) as load:
        wait_for(objects, "desiredReplicas 2", lambda o: desired(o) == 2, timeout=60)
        assert server_replicas(objects) == 2
        two = wait_for(
            objects,
            "2 replicas ready",
            lambda o: o.get("status", {}).get("readyReplicas") == 2,
            timeout=300,
        )
        assert two["status"]["phase"] == "READY", two["status"]
        time.sleep(5)  # both replicas under load: still 2 (the load calls for 2 or more)
        assert desired(objects.get("deployments", "base") or {}) == 2
    stopped = time.monotonic()
    assert load.failures == [], load.failures[:5]

    up = scaled_events(objects)
    assert [e.message.split(":")[0] for e in up] == ["scaled from 1 to 2"], [e.message for e in up]
    assert re.fullmatch(r"scaled from 1 to 2: \d+ requests in flight, target 1 per replica", up[0].message)
    assert up[0].type == "Normal"

    down = wait_for(objects, "desiredReplicas 1", lambda o: desired(o) == 1, timeout=WINDOW + 60)
    waited = time.monotonic() - stopped
    # The load called for 2 until it stopped: the window ran from then.
    assert waited >= WINDOW - 1, f"scaled down {waited:.1f} s after the load stopped"
    # Events are sent in batches after the status write: wait for the second one (bounded).
    deadline = time.monotonic() + 30
    events = scaled_events(objects)
    while len(events) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
        events = scaled_events(objects)
    assert [e.message.split(":")[0] for e in events] == ["scaled from 1 to 2", "scaled from 2 to 1"]
    since = re.search(r"called for since (\S+)$", events[1].message)
    assert since is not None, events[1].message
    window_start = datetime.strptime(since.group(1), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert (events[1].first_timestamp - window_start).total_seconds() >= WINDOW - 1, events[1].message
    assert "scaleDownPendingSince" not in down["status"]
    one = wait_for(
        objects,
        "1 replica",
        lambda o: o.get("status", {}).get("readyReplicas") == 1 and o["status"].get("phase") == "READY",
        timeout=120,
    )
    assert server_replicas(objects) == 1
    print(
        f"autoscaling (fake vLLM): up under {load.summary()}; down {waited:.0f} s after the load "
        f"stopped (window {WINDOW} s); {one['status']['message']}"
    )


def server_replicas(objects: Objects) -> int:
    """spec.replicas of the apps/v1 Deployment the operator renders."""
    apps = client.AppsV1Api(objects.api).read_namespaced_deployment("base-server", objects.namespace)
    return int(apps.spec.replicas)
