"""The production engine, really run: the operator's own vLLM pod on the local node.

The pod the operator builds for `engine: vllm` on accelerator type CPU (vLLM's CPU image; the
local node runs it with tools/vllm-cpu, real vLLM): the init container fetches the base model
from the bucket under the pod's workload identity, vLLM serves it, and the adapter sidecar loads
a committed adapter from the bucket onto it, which then serves under its own name. The
adapter's canary matches; other weights put under its name are found and replaced; a Model whose
files are not its canary's is refused; the autoscaler, reading vLLM's gauges, adds a second replica
under load, which joins with the adapter loaded before it is Ready; the adapter unloads when its
Deployment is deleted.
"""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path
from typing import Any

import pytest
from rft.storage.checkpoints import upload_tree
from rft_devcluster.fake_vllm.testing import make_lora_adapter
from rft_devcluster.handle import ClusterHandle
from rft_devcluster.pytest_fixtures_storage import S3Bucket
from rft_devcluster.tiny import VLLM_CPU_SHAPE, build_tiny_model
from rft_operator.adapters import AdapterAdminError, server_metrics
from rft_operator.autoscale import requests_in_flight
from rft_operator.builders.serving import ADAPTER_ADMIN_PORT, ADAPTERS_GATE

from tests.operator.conftest import Objects, OperatorProcess
from tests.operator.serving_support import (
    AdapterLoad,
    admin_headers,
    calls_from_a_pod,
    condition,
    first_token_seconds,
    greedy,
    models_served,
    post,
    publish_base_and_adapter,
    server_address,
    wait_deployment,
)

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.localnode,
    pytest.mark.slow,
    pytest.mark.vllm,
    pytest.mark.timeout(1200),
]

ROLE = "arn:aws:iam::123456789012:role/rft-vllm"
# vLLM's engine start on 2 shared cores: 70-90 s idle, several minutes under the suite's load.
VLLM_READY_SECONDS = 600


def test_vllm_serves_the_base_and_an_adapter_through_the_sidecar(
    cluster: ClusterHandle, operator: OperatorProcess, objects: Objects, s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    base_dir = build_tiny_model(tmp_path / "base", words_only=True, **VLLM_CPU_SHAPE)
    publish_base_and_adapter(
        objects,
        s3_bucket,
        base_dir,
        tmp_path,
        name="tiny-vllm",
        service_account="rft-vllm",
        role_arn=ROLE,
        rank=8,
        with_canary=True,
        plain_base=True,
    )
    # A plain Hugging Face folder (no commit marker): READY once its check pinned every file.
    base_model = objects.get("models", "tiny-vllm") or {}
    deadline = time.monotonic() + 180
    while (
        base_model.get("status", {}).get("phase") not in ("READY", "FAILED") and time.monotonic() < deadline
    ):
        time.sleep(0.5)
        base_model = objects.get("models", "tiny-vllm") or {}
    assert base_model["status"]["phase"] == "READY", base_model.get("status")
    assert base_model["status"]["format"] == "huggingface"
    pinned = {f["path"]: f["sha256"] for f in base_model["status"]["files"]}
    assert pinned == {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in base_dir.iterdir()}
    cpu = {"type": "CPU", "count": 0}
    objects.create(
        "deployments",
        "Deployment",
        "vllm-base",
        {
            "model": "tiny-vllm",
            "deploymentType": "on-demand",
            "engine": "vllm",
            "accelerator": cpu,
            "serviceAccountName": "rft-vllm",
            "maxLoraRank": 8,
            "maxLoras": 2,
            "maxModelLen": 512,
        },
    )
    ready = wait_deployment(objects, "vllm-base", "READY", timeout=VLLM_READY_SECONDS)
    assert ready["status"]["servedModelName"] == "tiny-vllm"
    (pod,) = objects.core.list_namespaced_pod(
        objects.namespace, label_selector="rft-operator.io/deployment=vllm-base"
    ).items
    server = next(c for c in pod.spec.containers if c.name == "server")
    assert server.image.endswith("vllm-cpu-release-repo:v0.32.0")
    assert server.command[:2] == ["vllm", "serve"]
    address = server_address(objects, "vllm-base")
    first_token = first_token_seconds(address, "tiny-vllm")
    assert models_served(address) == {"tiny-vllm"}
    cold = (objects.get("deployments", "vllm-base") or {})["status"]["lastColdStart"]
    assert cold["pod"] == pod.metadata.name
    assert cold["totalSeconds"] >= cold["scheduleSeconds"] + cold["fetchSeconds"] + cold["startSeconds"] - 2
    # The figures docs/serving.md quotes (the demo's model shape, real vLLM on 2 shared cores).
    print(f"cold start: {cold}; first token {first_token:.3f}s")
    base_answer = greedy(address, "tiny-vllm")
    assert base_answer.strip(), "vLLM answered the base model"

    objects.create(
        "deployments",
        "Deployment",
        "vllm-tuned",
        {
            "model": "tiny-vllm-lora",
            "deploymentType": "on-demand-lora",
            "baseDeployment": "vllm-base",
            "accelerator": cpu,
        },
    )
    tuned = wait_deployment(objects, "vllm-tuned", "READY", timeout=120)
    assert [r["adapters"] for r in tuned["status"]["replicas"]] == [["tiny-vllm-lora"]]
    assert models_served(address) == {"tiny-vllm", "tiny-vllm-lora"}
    adapter_answer = greedy(address, "tiny-vllm-lora")
    assert adapter_answer != base_answer, "the adapter changes vLLM's answers"
    assert greedy(address, "tiny-vllm") == base_answer
    verified = condition(tuned, "AdapterVerified")
    assert (verified["status"], verified["reason"]) == ("True", "CanaryMatched"), verified
    print(f"canary, right adapter: {verified['message']}")  # the figure docs/serving.md quotes

    # Only the operator changes what a server serves: a plain pod of the namespace reaches the
    # server and its sidecar, and uses the inference API, but cannot unload the adapter or put
    # other weights under a name, on vLLM's port or the sidecar's.
    ip = pod.status.pod_ip
    adapter_url = f"s3://{s3_bucket.name}/rft/models/tiny-vllm-lora/"
    answers = calls_from_a_pod(
        objects,
        "intruder",
        pod,
        [
            ("GET", f"http://{ip}:8000/v1/models", None),
            (
                "POST",
                f"http://{ip}:8000/v1/completions",
                {"model": "tiny-vllm-lora", "prompt": "hi", "max_tokens": 2},
            ),
            ("POST", f"http://{ip}:8000/v1/unload_lora_adapter", {"lora_name": "tiny-vllm-lora"}),
            (
                "POST",
                f"http://{ip}:8000/v1/load_lora_adapter",
                {"lora_name": "evil", "lora_path": "/adapters"},
            ),
            ("POST", f"http://{ip}:8000/adapters", {"name": "evil", "src": "/adapters"}),
            ("POST", f"http://{ip}:8001/v1/unload_lora_adapter", {"lora_name": "tiny-vllm-lora"}),
            (
                "POST",
                f"http://{ip}:8001/v1/load_lora_adapter",
                {"lora_name": "evil", "lora_path": adapter_url},
            ),
            ("GET", f"http://{ip}:8001/v1/models", None),
        ],
    )
    assert answers == [200, 200, 401, 401, 401, 401, 401, 401], answers
    assert models_served(address) == {"tiny-vllm", "tiny-vllm-lora"}
    assert greedy(address, "tiny-vllm-lora") == adapter_answer
    operator_rights = admin_headers(objects, "vllm-base")

    # Other weights under the adapter's name, behind the operator's back (a stale or failed sync):
    # the canary check finds them, and the operator loads the checkpoint again.
    other_dir = make_lora_adapter(base_dir, tmp_path / "other", rank=8, seed=4)
    post(
        f"{address}/v1/unload_lora_adapter",
        {"lora_name": "tiny-vllm-lora"},
        text=True,
        headers=operator_rights,
    )
    post(
        f"{address}/v1/load_lora_adapter",
        {"lora_name": "tiny-vllm-lora", "lora_path": str(other_dir)},
        text=True,
        headers=operator_rights,
    )
    swapped_answer = greedy(address, "tiny-vllm-lora")
    events = objects.wait_events(
        "vllm-tuned",
        lambda es: any("AdapterMismatch" in e for e in es),
        timeout=120,
        what="an AdapterMismatch Event",
    )
    assert any("canary logprobs off by" in e and "reloading" in e for e in events), events
    print(f"canary, other weights under the name: {events}")
    # The reload is in place (vLLM's load_inplace): the name is served throughout, never a 404.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if greedy(address, "tiny-vllm-lora") == adapter_answer:
            break
        time.sleep(0.2)
    assert greedy(address, "tiny-vllm-lora") == adapter_answer != swapped_answer, "the right weights are back"
    tuned = wait_deployment(objects, "vllm-tuned", "READY", timeout=60)
    assert condition(tuned, "AdapterVerified")["reason"] == "CanaryMatched"

    # A Model whose files are not the checkpoint its canary describes: refused on every replica.
    other_url = f"s3://{s3_bucket.name}/rft/models/tiny-vllm-swapped/"
    upload_tree(other_dir, other_url)
    lora_model = objects.get("models", "tiny-vllm-lora")
    assert lora_model is not None
    objects.create(
        "models",
        "Model",
        "tiny-vllm-swapped",
        {**lora_model["spec"], "location": other_url},
    )
    objects.create(
        "deployments",
        "Deployment",
        "vllm-swapped",
        {
            "model": "tiny-vllm-swapped",
            "deploymentType": "on-demand-lora",
            "baseDeployment": "vllm-base",
            "accelerator": cpu,
        },
    )
    deadline = time.monotonic() + 120
    swapped: dict[str, Any] = {}
    while time.monotonic() < deadline:
        swapped = objects.get("deployments", "vllm-swapped") or {}
        if condition(swapped, "Ready").get("reason") == "AdapterMismatch":
            break
        time.sleep(1)
    ready_condition = condition(swapped, "Ready")
    assert (ready_condition.get("status"), ready_condition.get("reason")) == ("False", "AdapterMismatch"), (
        swapped.get("status")
    )
    assert pod.metadata.name in ready_condition["message"]
    assert "after reloading from " + other_url in ready_condition["message"]
    assert condition(swapped, "AdapterVerified")["reason"] == "AdapterMismatch"
    assert swapped["status"]["readyReplicas"] == 0
    objects.custom.delete_namespaced_custom_object(
        "rft-operator.io", "v1alpha1", objects.namespace, "deployments", "vllm-swapped"
    )
    while objects.get("deployments", "vllm-swapped") is not None:
        time.sleep(0.5)

    # A second replica joins under load, called for by the autoscaler from vLLM's own gauges: two
    # clients keep up to 2 requests in flight, above a target of 1 per replica. It enters the
    # Service only once it serves the adapter (its readiness gate), so no request for the adapter
    # fails while it starts.
    with AdapterLoad(
        cluster, objects.namespace, "vllm-base-server", "tiny-vllm-lora", clients=2, max_tokens=32
    ) as load:
        load.wait_for_requests(5)
        # Real vLLM's gauges, through the sidecar, as the operator reads them.
        # Read as the autoscaler reads (it counts a failed read as an unread replica and reads
        # again at its next poll): up to three tries, each failure printed with the sidecar's state.
        token = operator_rights["Authorization"].removeprefix("Bearer ")
        gauges_read = None
        for _ in range(3):
            try:
                gauges_read = requests_in_flight(
                    server_metrics(pod.status.pod_ip, ADAPTER_ADMIN_PORT, token=token)
                )
                break
            except AdapterAdminError as exc:
                now = objects.core.read_namespaced_pod(pod.metadata.name, objects.namespace)
                print(f"reading /metrics through the sidecar failed: {exc}; {now.status.container_statuses}")
                time.sleep(2)
        assert gauges_read is not None, "three reads of /metrics through the sidecar failed"
        assert gauges_read >= 0
        objects.patch(
            "deployments",
            "vllm-base",
            # A long window: the second replica stays for the rest of the test.
            {
                "maxReplicaCount": 2,
                "autoscaling": {"targetRequestsPerReplica": 1, "scaleDownDelaySeconds": 3600},
            },
        )
        scaled = objects.wait_events(
            "vllm-base", lambda seen: any("/Scaled:" in e for e in seen), timeout=120, what="Scaled"
        )
        deadline = time.monotonic() + VLLM_READY_SECONDS
        new_pods: list[Any] = []
        while time.monotonic() < deadline:
            pods = objects.core.list_namespaced_pod(
                objects.namespace, label_selector="rft-operator.io/deployment=vllm-base"
            ).items
            new_pods = [p for p in pods if p.metadata.name != pod.metadata.name]
            if new_pods and new_pods[0].status.pod_ip and load.requests_to(new_pods[0].status.pod_ip) >= 5:
                break
            time.sleep(1)
        assert new_pods, "the base Deployment made a second replica"
        (new_pod,) = new_pods
        assert load.requests_to(new_pod.status.pod_ip) >= 5, (new_pod.status.conditions, load.summary())
    assert load.failures == [], load.failures[:5]
    gate = next(c for c in new_pod.status.conditions if c.type == ADAPTERS_GATE)
    assert (gate.status, gate.reason) == ("True", "AdaptersLoaded")
    assert [g.condition_type for g in new_pod.spec.readiness_gates] == [ADAPTERS_GATE]
    tuned = wait_deployment(objects, "vllm-tuned", "READY", timeout=60)
    assert sorted(r["pod"] for r in tuned["status"]["replicas"]) == sorted(
        [pod.metadata.name, new_pod.metadata.name]
    )
    (up,) = [e for e in scaled if "/Scaled:" in e]
    assert re.fullmatch(
        r"Normal/Scaled: scaled from 1 to 2: \d+ requests in flight, target 1 per replica", up
    )
    print(f"scale-up under load: {load.summary()}; {up}")

    objects.custom.delete_namespaced_custom_object(
        "rft-operator.io", "v1alpha1", objects.namespace, "deployments", "vllm-tuned"
    )
    deadline = time.monotonic() + 60
    while objects.get("deployments", "vllm-tuned") is not None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert objects.get("deployments", "vllm-tuned") is None
    assert models_served(address) == {"tiny-vllm"}, "deleting the Deployment unloads the adapter from vLLM"

    # Adapter load latency through the sidecar, as the operator loads: fetch the committed
    # checkpoint from the bucket (digests checked), then vLLM's load (docs/serving.md quotes it).
    sidecar = address.replace(":8000", ":8001")
    seconds = []
    for _ in range(20):
        started = time.monotonic()
        post(
            f"{sidecar}/v1/load_lora_adapter",
            {"lora_name": "latency-probe", "lora_path": adapter_url},
            text=True,
            headers=operator_rights,
        )
        seconds.append(time.monotonic() - started)
        assert "latency-probe" in models_served(address)
        post(
            f"{sidecar}/v1/unload_lora_adapter",
            {"lora_name": "latency-probe"},
            text=True,
            headers=operator_rights,
        )
    assert models_served(address) == {"tiny-vllm"}
    seconds.sort()
    print(
        f"adapter load through the sidecar: p50 {seconds[9]:.3f} s, p95 {seconds[18]:.3f} s, max {seconds[-1]:.3f} s"
    )
