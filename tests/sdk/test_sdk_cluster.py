"""The SDK against a real kube-apiserver with the project's CRDs (no operator running).

Where a test needs the operator's side (a phase, an endpoint), it writes the status subresource
itself, as the operator would; everything else is the SDK talking to the real API server.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from rft import LLM, Dataset, ReinforcementStep, storage
from rft.api import API_VERSION, GROUP, VERSION, Model
from rft.api import Dataset as DatasetResource
from rft.api import Deployment as DeploymentResource
from rft.api import ReinforcementStep as StepResource
from rft.api.common import Resource
from rft.cli import app
from rft.cli.context import CliContext
from rft.sdk.endpoints import resolve_base_url
from rft.sdk.errors import (
    DatasetValidationError,
    DeploymentFailedError,
    ImmutableFieldError,
    ResourceExistsError,
    ResourceInvalidError,
    ResourceNotFoundError,
    RftError,
)
from rft.sdk.jsonl import canonical_jsonl
from rft.sdk.rollouts import gather_limited
from rft.sdk.session import Session
from rft_devcluster.handle import ClusterHandle
from rft_devcluster.waiting import wait_for
from rich.console import Console
from typer.testing import CliRunner

from tests.sdk.openai_stub import OpenAIStub

pytestmark = pytest.mark.cluster

BUCKET = "s3://my-bucket/rft"
TRAINING_RECORD = {
    "learningRate": "1e-4",
    "maxContextLength": 8192,
    "batchSize": 32768,
    "epochs": 1,
    "lossMethod": "grpo",
}


def _with_bucket(session: Session, bucket: str = BUCKET) -> Session:
    return Session(dataclasses.replace(session.config, bucket=bucket), session.client)


def _create(session: Session, kind: type[Resource], name: str, spec: dict[str, Any]) -> Any:
    body = {
        "apiVersion": API_VERSION,
        "kind": kind.crd.kind,
        "metadata": {"name": name, "namespace": session.namespace},
        "spec": spec,
    }
    return session.client.create(kind, body)


def _set_status(session: Session, kind: type[Resource], name: str, status: dict[str, Any]) -> None:
    """Write the status subresource, as the operator would."""
    session.client.custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, session.namespace, kind.plural(), name, {"status": status}
    )


def _raw(session: Session, kind: type[Resource], name: str) -> dict[str, Any]:
    raw = session.client.custom.get_namespaced_custom_object(
        GROUP, VERSION, session.namespace, kind.plural(), name
    )
    assert isinstance(raw, dict)
    return raw


def _base_model(session: Session, name: str = "qwen3-0-6b") -> None:
    _create(session, Model, name, {"kind": "base", "location": f"{BUCKET}/models/{name}/"})


def _lora_model(session: Session, name: str, parent: str | None = None, rank: int = 16) -> None:
    spec: dict[str, Any] = {
        "kind": "lora",
        "location": f"{BUCKET}/models/{name}/",
        "baseModel": "qwen3-0-6b",
        "lora": {"rank": rank, "alpha": 2 * rank, "targetModules": ["q_proj", "v_proj"]},
        "training": TRAINING_RECORD,
        "metrics": {"mean_reward": "0.5", "loss": "0.7"},
    }
    if parent is not None:
        spec["parent"] = parent
    _create(session, Model, name, spec)


def _dataset(session: Session, name: str = "dataset-1") -> None:
    _create(session, DatasetResource, name, {"source": f"{BUCKET}/datasets/{name}.jsonl"})


def _steps(session: Session) -> list[str]:
    return [step.metadata.name for step in session.client.list(StepResource, session.namespace)]


def _samples_row(prompt: str) -> dict[str, Any]:
    return {
        "samples": [
            {
                "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
                "evals": {"score": score},
            }
            for answer, score in (("4", 1.0), ("5", 0.0))
        ]
    }


# Reinforcement steps --------------------------------------------------------------------------


def test_reinforcement_step_creates_the_expected_object(sdk_session: Session) -> None:
    session = _with_bucket(sdk_session)
    _base_model(session)
    _dataset(session)
    llm = LLM("qwen3-0-6b", "on-demand", id="base", accelerator_type="CPU", session=session)

    step = llm.reinforcement_step(
        "dataset-1",
        "ckpt-1",
        learning_rate=1e-4,
        kl_coefficient=0.001,
        accelerator_count=0,
        reward_weights={"score": 1.0},
    )

    assert isinstance(step, ReinforcementStep)
    assert step.name == "ckpt-1"
    assert step.state == "JOB_STATE_CREATING"
    assert not step.is_completed
    assert step.output_model == f"accounts/{session.namespace}/models/ckpt-1"
    spec = _raw(session, StepResource, "ckpt-1")["spec"]
    assert (spec["dataset"], spec["model"], spec["outputModel"]) == ("dataset-1", "qwen3-0-6b", "ckpt-1")
    assert spec["training"]["learningRate"] == "0.0001"
    assert spec["training"]["loraRank"] == 16
    assert spec["training"]["batchSize"] == 32768
    assert spec["loss"] == {
        "method": "grpo",
        "klCoefficient": "0.001",
        "advantage": "group",
        "aggregation": "token-mean",
        # the CRD's defaults for the off-policy correction (issue 17), filled in by the API server
        "offPolicyCorrection": "token",
        "importanceCap": "2",
    }
    assert spec["rewardWeights"] == {"score": "1.0"}
    assert spec["accelerator"] == {"type": "CPU", "count": 0}
    assert spec["outputLocation"] == f"{BUCKET}/models/ckpt-1/"
    assert spec["serviceAccountName"] == "default"


def test_step_handle_get_cancel_wait_and_delete(sdk_session: Session) -> None:
    _base_model(sdk_session)
    _dataset(sdk_session)
    step = LLM("qwen3-0-6b", "serverless", session=sdk_session).reinforcement_step(
        "dataset-1", "ckpt-1", accelerator_type="CPU"
    )
    _set_status(
        sdk_session, StepResource, step.name, {"phase": "JOB_STATE_RUNNING", "progress": {"epoch": 1}}
    )
    fresh = step.get()
    assert fresh is not None
    assert fresh.state == "JOB_STATE_RUNNING"
    assert step.state == "JOB_STATE_CREATING", "a snapshot does not change by itself"

    cancelled = fresh.cancel()
    assert _raw(sdk_session, StepResource, step.name)["spec"]["cancel"] is True
    _set_status(
        sdk_session, StepResource, step.name, {"phase": "JOB_STATE_CANCELLED", "message": "cancelled by user"}
    )
    with pytest.raises(RuntimeError, match=r"JOB_STATE_CANCELLED: cancelled by user"):
        cancelled.wait(timeout=30, poll_interval=0.2)

    assert step.delete() is True
    assert step.get() is None
    assert step.delete() is False


def test_wait_returns_the_completed_step(sdk_session: Session) -> None:
    _base_model(sdk_session)
    _dataset(sdk_session)
    step = LLM("qwen3-0-6b", "auto", session=sdk_session).reinforcement_step("dataset-1", "ckpt-1")
    output = f"accounts/{sdk_session.namespace}/models/ckpt-1"
    _set_status(sdk_session, StepResource, step.name, {"phase": "JOB_STATE_COMPLETED", "outputModel": output})
    done = step.wait(timeout=30, poll_interval=0.2)
    assert done.is_completed
    assert done.output_model == output
    found = ReinforcementStep.from_name("ckpt-1", session=sdk_session)
    assert found.is_completed


def test_existing_output_model_is_refused_before_creating_anything(sdk_session: Session) -> None:
    _base_model(sdk_session)
    _lora_model(sdk_session, "ckpt-1")
    _dataset(sdk_session)
    llm = LLM("qwen3-0-6b", "on-demand", id="base", session=sdk_session)
    with pytest.raises(ResourceExistsError, match=r"output_model: accounts/.*/models/ckpt-1 already exists"):
        llm.reinforcement_step("dataset-1", "ckpt-1")
    assert _steps(sdk_session) == []


def test_continuation_from_a_lora_checkpoint_requires_its_parameters(sdk_session: Session) -> None:
    _base_model(sdk_session)
    _lora_model(sdk_session, "ckpt-1")
    _dataset(sdk_session)
    llm = LLM(
        f"accounts/{sdk_session.namespace}/models/ckpt-1",
        "on-demand-lora",
        base_id="base",
        session=sdk_session,
    )

    with pytest.raises(ValueError, match="continuing from LoRA checkpoint") as error:
        llm.reinforcement_step(
            "dataset-1", "ckpt-2", lora_rank=8, learning_rate=2e-4, max_context_length=4096, batch_size=16384
        )
    message = str(error.value)
    for expected in (
        "lora_rank: 8 here, 16 in checkpoint 'ckpt-1'",
        "learning_rate: 0.0002 here, 1e-4 in checkpoint 'ckpt-1'",
        "max_context_length: 4096 here, 8192 in checkpoint 'ckpt-1'",
        "batch_size: 16384 here, 32768 in checkpoint 'ckpt-1'",
    ):
        assert expected in message
    assert _steps(sdk_session) == []

    step = llm.reinforcement_step("dataset-1", "ckpt-2", learning_rate=0.0001)
    assert _raw(sdk_session, StepResource, step.name)["spec"]["model"] == "ckpt-1"


def test_missing_dataset_or_model_is_refused_before_creating_anything(sdk_session: Session) -> None:
    llm = LLM("qwen3-0-6b", "on-demand", id="base", session=sdk_session)
    with pytest.raises(ResourceNotFoundError, match=r"Model 'qwen3-0-6b' .* not found"):
        llm.reinforcement_step("dataset-1", "ckpt-1")
    _base_model(sdk_session)
    with pytest.raises(
        ResourceNotFoundError, match=r"Dataset 'dataset-1' .* not found: dataset: call dataset.sync"
    ):
        llm.reinforcement_step("dataset-1", "ckpt-1")
    assert _steps(sdk_session) == []


def test_a_step_name_in_use_is_a_clear_error(sdk_session: Session) -> None:
    _base_model(sdk_session)
    _dataset(sdk_session)
    llm = LLM("qwen3-0-6b", "on-demand", id="base", session=sdk_session)
    llm.reinforcement_step("dataset-1", "ckpt-1")
    with pytest.raises(
        ResourceExistsError, match=r"step_id: a ReinforcementStep named 'ckpt-1' already exists"
    ):
        llm.reinforcement_step("dataset-1", "ckpt-2", step_id="ckpt-1")


def test_cel_rule_messages_from_the_api_server_are_passed_on(sdk_session: Session) -> None:
    body = {
        "apiVersion": API_VERSION,
        "kind": "ReinforcementStep",
        "metadata": {"name": "bad", "namespace": sdk_session.namespace},
        "spec": {"dataset": "d", "model": "m", "outputModel": "m"},
    }
    with pytest.raises(ResourceInvalidError, match=r"spec.outputModel must differ from spec.model"):
        sdk_session.client.create(StepResource, body)


# Deployments ----------------------------------------------------------------------------------


def test_apply_creates_then_patches_and_refuses_an_accelerator_change(sdk_session: Session) -> None:
    _base_model(sdk_session)
    LLM(
        "qwen3-0-6b", "on-demand", id="base", accelerator_type="CPU", engine="vllm", session=sdk_session
    ).apply(wait=False)
    created = _raw(sdk_session, DeploymentResource, "base")
    assert created["spec"]["accelerator"] == {"type": "CPU", "count": 1}
    assert created["spec"]["engine"] == "vllm"
    assert created["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "rft-sdk"}

    LLM("qwen3-0-6b", "on-demand", id="base", max_replica_count=3, session=sdk_session).apply(wait=False)
    patched = _raw(sdk_session, DeploymentResource, "base")
    assert patched["spec"]["maxReplicaCount"] == 3
    assert patched["spec"]["accelerator"]["type"] == "CPU", "fields left unset keep their values"
    assert patched["metadata"]["generation"] == 2

    LLM("qwen3-0-6b", "on-demand", id="base", max_replica_count=3, session=sdk_session).apply(wait=False)
    assert _raw(sdk_session, DeploymentResource, "base")["metadata"]["generation"] == 2, "no-op apply"

    gpu = LLM("qwen3-0-6b", "on-demand", id="base", accelerator_type="NVIDIA_H100_80GB", session=sdk_session)
    with pytest.raises(ImmutableFieldError, match=r"accelerator_type: deployment 'base' runs on CPU"):
        gpu.apply(wait=False)
    assert _raw(sdk_session, DeploymentResource, "base")["spec"]["accelerator"]["type"] == "CPU"


def test_apply_waits_for_ready_and_recreates_a_failed_deployment(sdk_session: Session) -> None:
    _base_model(sdk_session)
    llm = LLM(
        "qwen3-0-6b", "on-demand", id="base", accelerator_type="CPU", poll_interval=0.2, session=sdk_session
    )
    llm.apply(wait=False)
    first_uid = _raw(sdk_session, DeploymentResource, "base")["metadata"]["uid"]

    _set_status(
        sdk_session,
        DeploymentResource,
        "base",
        {"phase": "FAILED", "observedGeneration": 1, "message": "no GPU"},
    )
    with pytest.raises(DeploymentFailedError, match=r"FAILED: no GPU"):
        llm.wait_ready(timeout=30)

    llm.apply(wait=False)
    recreated = _raw(sdk_session, DeploymentResource, "base")
    assert recreated["metadata"]["uid"] != first_uid

    _set_status(sdk_session, DeploymentResource, "base", {"phase": "READY", "observedGeneration": 1})
    assert llm.apply(wait=True, timeout=30) is llm


def test_on_demand_lora_needs_its_base_and_enables_adapters_on_it(sdk_session: Session) -> None:
    _base_model(sdk_session)
    _lora_model(sdk_session, "ckpt-1")
    lora = LLM("ckpt-1", "on-demand-lora", base_id="base", session=sdk_session)
    with pytest.raises(ResourceNotFoundError, match=r"Deployment 'base' .* not found: create it first"):
        lora.apply(wait=False)

    LLM("qwen3-0-6b", "on-demand", id="base", enable_addons=False, session=sdk_session).apply(wait=False)
    lora.apply(wait=False)
    assert _raw(sdk_session, DeploymentResource, "ckpt-1")["spec"]["baseDeployment"] == "base"
    assert _raw(sdk_session, DeploymentResource, "base")["spec"]["enableLora"] is True

    base = LLM("qwen3-0-6b", "on-demand", id="base", session=sdk_session)
    with pytest.raises(RftError, match=r"serves on-demand-lora deployments ckpt-1"):
        base.delete_deployment()
    assert lora.delete_deployment() is True
    assert base.delete_deployment() is True
    assert base.delete_deployment() is False

    wrong = LLM("qwen3-0-6b", "on-demand-lora", base_id="base", session=sdk_session)
    LLM("qwen3-0-6b", "on-demand", id="base", session=sdk_session).apply(wait=False)
    with pytest.raises(ValueError, match=r"model: .* is a base model"):
        wrong.apply(wait=False)


def test_endpoint_resolves_to_a_ready_endpoint_slice_address(sdk_session: Session) -> None:
    namespace = sdk_session.namespace
    sdk_session.client.core.create_namespaced_service(
        namespace,
        k8s.V1Service(
            metadata=k8s.V1ObjectMeta(name="remote-server"),
            spec=k8s.V1ServiceSpec(ports=[k8s.V1ServicePort(name="http", port=8000, target_port=9000)]),
        ),
    )
    sdk_session.client.discovery.create_namespaced_endpoint_slice(
        namespace,
        k8s.V1EndpointSlice(
            metadata=k8s.V1ObjectMeta(
                name="remote-server-a", labels={"kubernetes.io/service-name": "remote-server"}
            ),
            address_type="IPv4",
            endpoints=[
                k8s.V1Endpoint(addresses=["10.0.0.9"], conditions=k8s.V1EndpointConditions(ready=False)),
                k8s.V1Endpoint(addresses=["10.0.0.5"], conditions=k8s.V1EndpointConditions(ready=True)),
            ],
            ports=[k8s.DiscoveryV1EndpointPort(name="http", port=9000, protocol="TCP")],
        ),
    )
    # Only resolved, never connected to: tests reach loopback addresses only.
    url = resolve_base_url(f"http://remote-server.{namespace}.svc:8000/v1", sdk_session.client)
    assert url == "http://10.0.0.5:9000/v1"
    with pytest.raises(RftError, match=r"Service 'nothing' of the deployment's endpoint does not exist"):
        resolve_base_url(f"http://nothing.{namespace}.svc:8000/v1", sdk_session.client)


def _ready_server_pod(session: Session, name: str, port: int) -> None:
    """A pod the scheduler leaves alone, marked Running and Ready on loopback as a local node would."""
    core = session.client.core
    core.create_namespaced_pod(
        session.namespace,
        k8s.V1Pod(
            metadata=k8s.V1ObjectMeta(name=name, labels={"app": "base-server"}),
            spec=k8s.V1PodSpec(
                scheduling_gates=[k8s.V1PodSchedulingGate(name="rft-operator.io/test-hold")],
                containers=[
                    k8s.V1Container(
                        name="server",
                        image="registry.invalid/server:test",
                        ports=[k8s.V1ContainerPort(name="http", container_port=port)],
                    )
                ],
            ),
        ),
    )
    core.patch_namespaced_pod_status(
        name,
        session.namespace,
        {
            "status": {
                "phase": "Running",
                "podIP": "127.0.0.1",
                "podIPs": [{"ip": "127.0.0.1"}],
                "conditions": [{"type": "Ready", "status": "True"}],
            }
        },
    )


def test_inference_reaches_the_service_through_its_ready_pod_like_port_forward(
    sdk_session: Session, openai_stub: OpenAIStub
) -> None:
    namespace = sdk_session.namespace
    sdk_session.client.core.create_namespaced_service(
        namespace,
        k8s.V1Service(
            metadata=k8s.V1ObjectMeta(name="base-server"),
            spec=k8s.V1ServiceSpec(
                selector={"app": "base-server"},
                ports=[k8s.V1ServicePort(name="http", port=8000, target_port="http")],
            ),
        ),
    )
    _ready_server_pod(sdk_session, "base-server-0", openai_stub.port)
    _base_model(sdk_session)
    llm = LLM(
        "qwen3-0-6b", "on-demand", id="base", accelerator_type="CPU", poll_interval=0.2, session=sdk_session
    )
    llm.apply(wait=False)
    _set_status(
        sdk_session,
        DeploymentResource,
        "base",
        {
            "phase": "READY",
            "observedGeneration": 1,
            "endpoint": f"http://base-server.{namespace}.svc:8000/v1",
            "servedModelName": "served-qwen",
        },
    )

    chat = llm.chat.completions.create(messages=[{"role": "user", "content": "2+2?"}], n=2, temperature=1.0)
    assert [choice.message.content for choice in chat.choices] == ["echo 0: 2+2?", "echo 1: 2+2?"]
    assert llm.base_url() == f"http://127.0.0.1:{openai_stub.port}/v1"
    text = llm.completions.create(prompt="Once", max_tokens=4)
    assert text.choices[0].text == " after Once"

    async def rollouts() -> list[Any]:
        return await gather_limited(
            (llm.chat.completions.acreate(messages=[{"role": "user", "content": f"q{i}"}]) for i in range(5)),
            limit=2,
        )

    results = asyncio.run(rollouts())
    assert [r.choices[0].message.content for r in results] == [f"echo 0: q{i}" for i in range(5)]
    assert {body["model"] for _, body in openai_stub.requests} == {"served-qwen"}
    assert [path for path, _ in openai_stub.requests[:2]] == ["/v1/chat/completions", "/v1/completions"]
    assert openai_stub.requests[0][1]["n"] == 2


def test_first_inference_call_applies_the_deployment(
    sdk_session: Session, openai_stub: OpenAIStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RFT_ENDPOINT_OVERRIDE", openai_stub.base_url)
    _base_model(sdk_session)
    llm = LLM(
        "qwen3-0-6b", "on-demand", id="base", accelerator_type="CPU", poll_interval=0.2, session=sdk_session
    )

    def ask() -> Any:
        return llm.chat.completions.create(messages=[{"role": "user", "content": "hi"}])

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(ask)
        # No operator here: play its part once the implicit apply has created the Deployment.
        wait_for(
            lambda: sdk_session.client.get(DeploymentResource, sdk_session.namespace, "base"),
            timeout=30,
            what="the implicit apply to create the Deployment",
        )
        assert not pending.done(), "the call must wait for the deployment to be READY"
        _set_status(
            sdk_session,
            DeploymentResource,
            "base",
            {
                "phase": "READY",
                "observedGeneration": 1,
                "endpoint": "http://x.y.svc/v1",
                "servedModelName": "m",
            },
        )
        reply = pending.result(timeout=60)
    assert reply.choices[0].message.content == "echo 0: hi"
    assert openai_stub.requests[-1][1]["model"] == "m"
    assert _raw(sdk_session, DeploymentResource, "base")["spec"]["model"] == "qwen3-0-6b"


# Datasets -------------------------------------------------------------------------------------


def test_dataset_sync_uploads_once_creates_validates_and_deletes(
    sdk_session: Session, s3_bucket: Any
) -> None:
    session = _with_bucket(sdk_session, f"{s3_bucket.url}/rft")
    rows = [_samples_row(f"q{i}") for i in range(3)]
    dataset = Dataset.from_list(rows, session=session)
    url = f"{s3_bucket.url}/rft/datasets/{dataset.id}.jsonl"

    dataset.sync(wait=False)
    assert dataset.url == url
    assert storage.exists(url)
    assert storage.read_bytes(url) == canonical_jsonl(rows)
    raw = _raw(session, DatasetResource, dataset.id)
    assert raw["spec"]["source"] == url
    assert raw["spec"]["managedBySdk"] is True

    again = Dataset.from_list(rows, session=session).sync(wait=False)
    assert _raw(session, DatasetResource, again.id)["metadata"]["uid"] == raw["metadata"]["uid"]

    _set_status(
        session, DatasetResource, dataset.id, {"phase": "READY", "rows": 3, "digest": "sha256:" + "0" * 64}
    )
    assert dataset.sync(wait=True, timeout=30).resource is not None
    assert (
        Dataset.from_id(f"accounts/{session.namespace}/datasets/{dataset.id}", session=session).head(1)
        == rows[:1]
    )

    assert dataset.delete() is True
    assert not storage.exists(url)
    assert dataset.get() is None
    assert dataset.delete() is False


def test_dataset_sync_raises_the_validation_errors(sdk_session: Session, tmp_path: Path) -> None:
    session = _with_bucket(sdk_session, f"file://{tmp_path}")
    dataset = Dataset.from_list([_samples_row(f"q{i}") for i in range(3)], session=session).sync(wait=False)
    _set_status(
        session,
        DatasetResource,
        dataset.id,
        {"phase": "FAILED", "errors": [{"line": 2, "message": "reward 'score' is not a number"}]},
    )
    with pytest.raises(
        DatasetValidationError, match=r"failed validation: line 2: reward 'score' is not a number"
    ):
        dataset.sync(wait=True, timeout=30)


def test_dataset_sync_refuses_too_few_rows_before_uploading(sdk_session: Session, tmp_path: Path) -> None:
    session = _with_bucket(sdk_session, f"file://{tmp_path}")
    dataset = Dataset.from_list([_samples_row("only one")], session=session)
    with pytest.raises(DatasetValidationError, match=r"line 0: the dataset has 1 row\(s\); at least 3"):
        dataset.sync()
    assert list(tmp_path.rglob("*.jsonl")) == []
    assert dataset.get() is None


def test_dataset_delete_refuses_while_a_step_uses_it(sdk_session: Session, tmp_path: Path) -> None:
    session = _with_bucket(sdk_session, f"file://{tmp_path}")
    dataset = Dataset.from_list([_samples_row(f"q{i}") for i in range(3)], session=session).sync(wait=False)
    _base_model(session)
    LLM("qwen3-0-6b", "on-demand", id="base", session=session).reinforcement_step(dataset, "ckpt-1")
    with pytest.raises(RftError, match=r"used by unfinished reinforcement step\(s\) ckpt-1"):
        dataset.delete()
    assert dataset.url is not None
    assert storage.exists(dataset.url)
    _set_status(session, StepResource, "ckpt-1", {"phase": "JOB_STATE_COMPLETED"})
    assert dataset.delete() is True
    assert not storage.exists(dataset.url)


def test_dataset_from_url_is_never_copied_or_deleted(sdk_session: Session, tmp_path: Path) -> None:
    existing = tmp_path / "mine.jsonl"
    existing.write_bytes(canonical_jsonl([_samples_row(f"q{i}") for i in range(3)]))
    session = _with_bucket(sdk_session, f"file://{tmp_path}/bucket")
    dataset = Dataset.from_url(f"file://{existing}", session=session).sync(wait=False)
    raw = _raw(session, DatasetResource, dataset.id)
    assert raw["spec"]["source"] == f"file://{existing}"
    assert raw["spec"].get("managedBySdk") is False
    assert not (tmp_path / "bucket").exists()
    assert dataset.delete() is True
    assert existing.exists()


# CLI against the cluster ----------------------------------------------------------------------


def test_cli_lists_steps_and_prints_the_trainer_log_file(
    cluster: ClusterHandle, sdk_session: Session, tmp_path: Path
) -> None:
    _base_model(sdk_session)
    _dataset(sdk_session)
    LLM("qwen3-0-6b", "on-demand", id="base", session=sdk_session).reinforcement_step("dataset-1", "ckpt-1")
    log_file = tmp_path / "trainer.log"
    log_file.write_text('{"event": "progress", "step": 1}\n{"event": "progress", "step": 2}\n')
    _set_status(
        sdk_session, StepResource, "ckpt-1", {"phase": "JOB_STATE_RUNNING", "jobName": "ckpt-1-train"}
    )
    sdk_session.client.core.create_namespaced_pod(
        sdk_session.namespace,
        k8s.V1Pod(
            metadata=k8s.V1ObjectMeta(
                name="ckpt-1-train-abcde",
                labels={"batch.kubernetes.io/job-name": "ckpt-1-train"},
                annotations={"rft-operator.io/log-path": str(log_file)},
            ),
            spec=k8s.V1PodSpec(
                restart_policy="Never",
                containers=[k8s.V1Container(name="trainer", image="registry.invalid/trainer:test")],
            ),
        ),
    )
    runner = CliRunner()
    base_args = ["--kubeconfig", str(cluster.kubeconfig), "--namespace", sdk_session.namespace]

    listed = runner.invoke(app, [*base_args, "steps", "list", "-o", "json"])
    assert listed.exit_code == 0, listed.output
    assert '"name": "ckpt-1"' in listed.output
    assert '"phase": "JOB_STATE_RUNNING"' in listed.output

    logs = runner.invoke(app, [*base_args, "steps", "logs", "ckpt-1"])
    assert logs.exit_code == 0, logs.output
    assert logs.output == log_file.read_text()
    tail = runner.invoke(app, [*base_args, "steps", "logs", "ckpt-1", "--tail", "1"])
    assert tail.output == '{"event": "progress", "step": 2}\n'

    context = CliContext(namespace=sdk_session.namespace, session=sdk_session, console=Console(width=200))
    described = runner.invoke(app, ["steps", "describe", "ckpt-1"], obj=context)
    assert described.exit_code == 0, described.output
    assert "ckpt-1-train" in described.output

    # -f follows the file while the step runs and stops once it has ended (nothing after is lost).
    def finish() -> None:
        time.sleep(1.0)
        with log_file.open("a") as appended:
            appended.write('{"event": "progress", "step": 3}\n')
        _set_status(sdk_session, StepResource, "ckpt-1", {"phase": "JOB_STATE_COMPLETED"})

    writer = threading.Thread(target=finish)
    writer.start()
    followed = runner.invoke(app, [*base_args, "steps", "logs", "ckpt-1", "-f", "--interval", "0.2"])
    writer.join()
    assert followed.exit_code == 0, followed.output
    assert followed.output == log_file.read_text()
    assert followed.output.endswith('"step": 3}\n')

    cancelled = runner.invoke(app, [*base_args, "steps", "cancel", "ckpt-1"])
    assert cancelled.exit_code == 0, cancelled.output
    assert "cancelling ckpt-1" in cancelled.output
    assert _raw(sdk_session, StepResource, "ckpt-1")["spec"]["cancel"] is True
