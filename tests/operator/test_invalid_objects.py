"""Every invalid object ends, within bounded time, refused by the API server (422 naming the field)
or FAILED with a condition naming the field: never accepted silently, never retried forever.

All cases (tests/invalid_objects/cases.py) are created at once and polled together, under the
package's one operator.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from rft.api import GROUP, VERSION

from tests.invalid_objects.cases import CASES, FAILED_PHASE, KIND_PLURAL, SUMMARY_CONDITION, Case
from tests.operator.conftest import Objects, OperatorProcess

pytestmark = pytest.mark.cluster

DEADLINE_SECONDS = 60  # the test operator waits 5 s for a ServiceAccount; the rest is immediate


def _failure(obj: dict[str, Any], case: Case) -> str | None:
    status = obj.get("status") or {}
    if status.get("phase") != FAILED_PHASE[case.kind]:
        return None
    summary = next((c for c in status.get("conditions", []) if c["type"] == SUMMARY_CONDITION[case.kind]), None)
    return summary["message"] if summary and summary["status"] == "False" else None


def test_every_invalid_object_is_refused_or_failed_naming_the_field(
    operator: OperatorProcess, objects: Objects
) -> None:
    refused: dict[str, str] = {}
    accepted: list[Case] = []
    problems: list[str] = []
    for case in CASES:
        try:
            objects.custom.create_namespaced_custom_object(
                GROUP, VERSION, objects.namespace, KIND_PLURAL[case.kind], case.body()
            )
        except ApiException as exc:
            if exc.status != 422:
                problems.append(f"{case.id}: {exc.status} {exc.body}")
                continue
            message = json.loads(exc.body)["message"]
            refused[case.id] = message
            if case.field not in message:
                problems.append(f"{case.id}: refused without naming {case.field}: {message}")
        else:
            accepted.append(case)
    failed: dict[str, str] = {}
    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline and len(failed) < len(accepted):
        for case in accepted:
            if case.id not in failed:
                obj = objects.get(KIND_PLURAL[case.kind], case.name) or {}
                if (message := _failure(obj, case)) is not None:
                    failed[case.id] = message
        time.sleep(0.5)
    for case in accepted:
        if case.id not in failed:
            obj = objects.get(KIND_PLURAL[case.kind], case.name) or {}
            problems.append(f"{case.id}: accepted and not FAILED in {DEADLINE_SECONDS}s: {obj.get('status')}")
        elif case.field not in failed[case.id]:
            problems.append(f"{case.id}: FAILED without naming {case.field}: {failed[case.id]}")
    by_kind = Counter((c.kind, "refused" if c.id in refused else "failed") for c in CASES)
    print("invalid objects:", dict(sorted(by_kind.items())))
    assert problems == []
    # What only the operator can see is never refused by the schema, and it fails, not waits.
    assert {c.id for c in CASES if c.operator_only} <= set(failed)
    assert len(refused) + len(failed) == len(CASES)


@pytest.mark.localnode
def test_an_image_that_cannot_be_pulled_fails_the_step_and_the_deployment(
    operator: OperatorProcess, objects: Objects
) -> None:
    """Pending forever helps nobody: past the stuck-pod deadline (20 s for the test operator) a
    step and a Deployment whose image cannot be pulled are FAILED with the kubelet's reason, and
    the message names the field."""
    objects.base_model()
    objects.ready_dataset()
    objects.step(
        "pull",
        accelerator={"type": "CPU", "count": 0},
        trainerImage="registry.invalid/no-such-trainer:1",
    )
    objects.create(
        "deployments",
        "Deployment",
        "pull",
        {
            "model": "base",
            "deploymentType": "on-demand",
            "accelerator": {"type": "CPU", "count": 0},
            "image": "registry.invalid/no-such-vllm:1",
        },
    )
    pulls = ("ErrImagePull", "ImagePullBackOff")
    step = objects.wait_phase("pull", "JOB_STATE_FAILED", timeout=150)
    succeeded = next(c for c in step["status"]["conditions"] if c["type"] == "Succeeded")
    assert succeeded["reason"] in pulls, succeeded
    assert "spec.trainerImage registry.invalid/no-such-trainer:1 cannot be pulled" in succeeded["message"]
    assert objects.jobs("rft-operator.io/step=pull") == [], "the stuck Job is deleted"
    deadline = time.monotonic() + 60
    ready: dict[str, Any] = {}
    while time.monotonic() < deadline:
        obj = objects.get("deployments", "pull") or {}
        ready = next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == "Ready"), {})
        if obj.get("status", {}).get("phase") == "FAILED":
            break
        time.sleep(1)
    assert ready.get("reason") in pulls, ready
    assert "spec.image registry.invalid/no-such-vllm:1 cannot be pulled" in ready["message"]
