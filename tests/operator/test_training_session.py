"""A TrainingSession on the local cluster, driven by the official Tinker client through its Service.

Everything runs for real: the base Model's check Job, the session pod (its init container fetches
the pinned base model from moto S3 through the emulated IRSA webhook; `python -m rft_trainer.session`
serves the Tinker API), the API key Secret, and the client reaching the Service's ready endpoint
(there is no kube-proxy: as `kubectl port-forward` would). Sampling goes to a real vLLM (its CPU
build) serving the base Model as a `Deployment`: the saved sampler weights are registered as a
Model by the operator and loaded onto it, and vLLM's logprobs of what it sampled match the
trainer's. The pod is deleted after save_state; the Deployment's new pod loads the state and
continues (its client made by the SDK's helper), and still samples from the weights saved before.
Last, a wrong spec.samplingDeployment is named in the Sampling condition, and the idle timeout
scales the session to zero.

The session accepts Kubernetes tokens (spec.authentication.kubernetesTokens): it waits
(TokenReviewNotPermitted) until the cluster admin lets its ServiceAccount create TokenReviews; the
resumed half runs with a ServiceAccount token of the namespace through the official client (the
SDK's `auth="kubernetes"`), and other namespaces' and wrong-audience tokens are refused.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tinker
from kubernetes import client
from rft.api.training_session import token_audience
from rft.sdk.session import Session
from rft.sdk.training_session import tinker_service_client
from rft.storage.checkpoints import is_committed, upload_tree
from rft_devcluster.handle import ClusterHandle
from rft_devcluster.pytest_fixtures_storage import S3Bucket
from rft_devcluster.tiny import VLLM_CPU_SHAPE, build_tiny_model
from tinker import types

from tests.operator.conftest import WORKLOAD, Objects, OperatorProcess
from tests.operator.serving_support import condition, wait_deployment
from tests.trainer.session_testlib import is_datum

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.localnode,
    pytest.mark.slow,
    pytest.mark.vllm,
    pytest.mark.timeout(1500),
]

ROLE = "arn:aws:iam::123456789012:role/rft-session"
ADAM = types.AdamParams(learning_rate=1e-2)
SELECTOR = "rft-operator.io/training-session=warm"
# vLLM's engine start on 2 shared cores: 70-90 s idle, several minutes under the suite's load.
VLLM_READY_SECONDS = 600
PROMPT = [11, 40, 41, 42, 43, 12]
# vLLM (CPU, float32) against the trainer (CPU, float32) on the same adapter: measured up to about
# 1e-5 on this model (docs/training-session.md); the base model's logprobs differ from the
# adapter's by far more than this (checked below), so a match means vLLM serves the saved weights.
SAMPLER_LOGPROB_TOLERANCE = 2e-4


def _data() -> list[types.Datum]:
    rows = [([11, 40, 41, 42, 43, 12, 50, 51, 52, 53], 1.0), ([11, 44, 45, 46, 47, 12, 70, 71, 72], -1.0)]
    return [is_datum(tokens, 6, adv, -6.2) for tokens, adv in rows]


def _logprobs(out: types.ForwardBackwardOutput) -> np.ndarray:
    return np.concatenate([o["logprobs"].to_numpy() for o in out.loss_fn_outputs])


def _wait(what: str, check: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout}s")
        time.sleep(0.5)


def _phase(objects: Objects, phase: str, timeout: float) -> dict[str, Any]:
    def seen() -> dict[str, Any] | None:
        obj = objects.get("trainingsessions", "warm")
        return obj if obj and obj.get("status", {}).get("phase") == phase else None

    try:
        return _wait(f"phase {phase}", seen, timeout)  # type: ignore[no-any-return]
    except AssertionError:
        raise AssertionError(f"phase {phase}: last seen {objects.get('trainingsessions', 'warm')}") from None


def _url(cluster: ClusterHandle, ns: str, not_pod: str | None = None) -> tuple[str, str]:
    """(base URL of a ready endpoint of the session's Service, the pod behind it)."""

    def ready() -> tuple[str, str] | None:
        objs = Objects(cluster, ns)
        pods = [
            p
            for p in objs.core.list_namespaced_pod(ns, label_selector=SELECTOR).items
            if p.metadata.name != not_pod
            and p.metadata.deletion_timestamp is None
            and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
        ]
        objs.api.close()
        endpoints = cluster.ready_endpoints(ns, "warm-session", "http")
        if len(pods) != 1 or not endpoints:
            return None
        host, port = endpoints[0]
        return f"http://{host}:{port}", pods[0].metadata.name

    return _wait("a ready session endpoint", ready, 300)  # type: ignore[no-any-return]


def _grant_token_reviews(cluster: ClusterHandle, ns: str, sa: str) -> Callable[[], None]:
    """The cluster admin's grant (what the chart's workloadServiceAccounts.training.tokenReview
    renders): `sa` may create TokenReviews, nothing else. Returns its removal."""
    name = f"rft-test-token-review-{ns}"
    api = cluster.api_client()
    rbac = client.RbacAuthorizationV1Api(api)
    rbac.create_cluster_role(
        {
            "metadata": {"name": name},
            "rules": [{"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]}],
        }
    )
    rbac.create_cluster_role_binding(
        {
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns}],
        }
    )

    def remove() -> None:
        rbac.delete_cluster_role_binding(name)
        rbac.delete_cluster_role(name)
        api.close()

    return remove


def _token(core: client.CoreV1Api, ns: str, sa: str, audience: str | None) -> str:
    spec = client.V1TokenRequestSpec(audiences=[audience] if audience else [], expiration_seconds=600)
    answer = core.create_namespaced_service_account_token(sa, ns, client.AuthenticationV1TokenRequest(spec=spec))
    return str(answer.status.token)


def test_session_serves_tinker_and_survives_its_pod(
    operator: OperatorProcess, objects: Objects, cluster: ClusterHandle, s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    other_ns = cluster.create_namespace("other")
    undo: list[Callable[[], None]] = []
    try:
        _session_flow(objects, cluster, s3_bucket, tmp_path, other_ns, undo)
    finally:
        cluster.delete_namespace(other_ns)
        for step in undo:
            step()


def _session_flow(
    objects: Objects,
    cluster: ClusterHandle,
    s3_bucket: S3Bucket,
    tmp_path: Path,
    other_ns: str,
    undo: list[Callable[[], None]],
) -> None:
    ns = objects.namespace
    for namespace in (ns, other_ns):
        objects.core.create_namespaced_service_account(namespace, {"metadata": {"name": "caller"}})
    objects.core.create_namespaced_service_account(
        ns,
        {
            "metadata": {
                "name": "rft-trainer",
                "labels": WORKLOAD,
                "annotations": {"eks.amazonaws.com/role-arn": ROLE},
            }
        },
    )
    base_location = f"s3://{s3_bucket.name}/rft/models/tiny/"
    # the shape vLLM's CPU attention serves (head size 64)
    upload_tree(build_tiny_model(tmp_path / "tiny", words_only=True, **VLLM_CPU_SHAPE), base_location)
    objects.create(
        "models",
        "Model",
        "tiny",
        {"kind": "base", "location": base_location, "serviceAccountName": "rft-trainer"},
    )
    # The session's sampling Deployment: real vLLM serving the base Model (it starts meanwhile).
    objects.create(
        "deployments",
        "Deployment",
        "tiny-vllm",
        {
            "model": "tiny",
            "deploymentType": "on-demand",
            "engine": "vllm",
            "accelerator": {"type": "CPU", "count": 0},
            "serviceAccountName": "rft-trainer",
            "maxLoraRank": 8,
            "maxLoras": 2,
            "maxModelLen": 512,
        },
    )
    state_location = f"s3://{s3_bucket.name}/rft/sessions/"
    objects.create(
        "trainingsessions",
        "TrainingSession",
        "warm",
        {
            "baseModel": "tiny",
            "maxLoraRank": 8,
            "maxContextLength": 64,
            "accelerator": {"type": "CPU", "count": 0},
            "serviceAccountName": "rft-trainer",
            "stateLocation": state_location,
            "samplingDeployment": "tiny-vllm",
            "idleTimeoutSeconds": 3600,
            "authentication": {"kubernetesTokens": True},
        },
    )
    # Its ServiceAccount may not check tokens yet: the operator asks, grants nothing, and waits.
    waiting = _wait(
        "TokenReviewNotPermitted",
        lambda: (o := objects.get("trainingsessions", "warm"))
        and any(c.get("reason") == "TokenReviewNotPermitted" for c in o.get("status", {}).get("conditions", []))
        and o,
        120,
    )
    assert waiting["status"]["phase"] == "CREATING"
    assert f"ServiceAccount {ns}/rft-trainer may not create tokenreviews" in waiting["status"]["message"]
    assert [
        d.metadata.name
        for d in objects_apps(cluster).list_namespaced_deployment(ns).items
        if d.metadata.name == "warm-session"
    ] == []
    undo.append(_grant_token_reviews(cluster, ns, "rft-trainer"))
    ready = _phase(objects, "READY", 300)
    status = ready["status"]
    audience = token_audience(ns, "warm")
    assert status["tokenAudience"] == audience
    assert status["endpoint"] == f"http://warm-session.{ns}.svc.cluster.local:8000"
    ready_condition = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready_condition["status"], ready_condition["reason"]) == ("True", "Serving")
    assert ready_condition["observedGeneration"] == ready["metadata"]["generation"]
    secret = objects.core.read_namespaced_secret(status["apiKeySecret"], ns)
    assert secret.metadata.owner_references[0].kind == "TrainingSession"
    api_key = base64.b64decode(secret.data["api-key"]).decode()
    assert api_key.startswith("tml-")

    url, first_pod = _url(cluster, ns)
    data = _data()
    service = tinker.ServiceClient(base_url=url, api_key=api_key)
    with pytest.raises(Exception, match="maxLoraRank"):
        service.create_lora_training_client("tiny", rank=16, train_unembed=False).result()
    tc = service.create_lora_training_client("tiny", rank=4, seed=0, train_unembed=False).result()
    fb = tc.forward_backward(data, "importance_sampling")
    optim = tc.optim_step(ADAM)
    first = fb.result()
    optim.result()
    saved = tc.save_state("step-1").result()
    at_save = tc.forward(data, "importance_sampling").result()
    assert not np.allclose(_logprobs(first), _logprobs(at_save)), "the adapter did not train"
    assert is_committed(f"{state_location}{tc.model_id.replace(':', '-')}/weights/step-1")

    # Sampling: the saved weights become a Model, loaded onto the vLLM Deployment by the operator.
    wait_deployment(objects, "tiny-vllm", "READY", timeout=VLLM_READY_SECONDS)
    sampler_path = tc.save_weights_for_sampler("sampler-1").result().path
    sampler = service.create_sampling_client(model_path=sampler_path).result()
    params = types.SamplingParams(max_tokens=8, temperature=1.0, seed=0, stop=[])
    started = time.monotonic()
    sampled = sampler.sample(types.ModelInput.from_ints(PROMPT), 2, params).result()
    print(
        f"first sample on new sampler weights: {time.monotonic() - started:.1f}s (register, load, verify, sample)"
    )
    base_sampler = service.create_sampling_client(base_model="tiny").result()
    differences, adapter_moved = [], []
    for seq in sampled.sequences:
        assert len(seq.tokens) == 8
        assert seq.stop_reason == "length"
        assert seq.logprobs is not None
        datum = is_datum([*PROMPT, *seq.tokens], len(PROMPT), 0.0, 0.0)
        trainer = (
            tc.forward([datum], "importance_sampling").result().loss_fn_outputs[0]["logprobs"].to_numpy()
        )
        mine = trainer[len(PROMPT) - 1 :]
        differences.append(float(np.max(np.abs(np.asarray(seq.logprobs) - mine))))
        scored = base_sampler.compute_logprobs(types.ModelInput.from_ints([*PROMPT, *seq.tokens])).result()
        base = np.asarray(scored[len(PROMPT) :], dtype=np.float32)
        adapter_moved.append(float(np.max(np.abs(base - mine))))
    print(
        f"sampler logprobs vs trainer: max |diff| {max(differences):.2e}; base vs adapter {max(adapter_moved):.2e}"
    )
    assert max(differences) <= SAMPLER_LOGPROB_TOLERANCE, differences
    assert min(adapter_moved) > 10 * SAMPLER_LOGPROB_TOLERANCE, (
        "the adapter barely moved: the check proves nothing"
    )
    session_obj = _phase(objects, "READY", 60)
    (registered,) = [s for s in session_obj["status"]["samplers"] if s["path"] == sampler_path]
    model = objects.get("models", registered["model"]) or {}
    assert (model["spec"]["kind"], model["spec"]["baseModel"]) == ("lora", "tiny")
    assert model["spec"]["location"].startswith(state_location)
    assert model["metadata"]["annotations"]["rft-operator.io/sampler-path"] == sampler_path
    lora = wait_deployment(objects, registered["model"], "READY", timeout=60)
    assert lora["spec"]["baseDeployment"] == "tiny-vllm"
    verified = condition(lora, "AdapterVerified")
    assert (verified["status"], verified["reason"]) == ("True", "CanaryMatched"), verified
    # save_weights_and_get_sampling_client: its weights (named by the session) sample the same way
    ephemeral = tc.save_weights_and_get_sampling_client().result()
    assert (
        len(ephemeral.sample(types.ModelInput.from_ints(PROMPT), 1, params).result().sequences[0].tokens) == 8
    )
    sampling = condition(_phase(objects, "READY", 60), "Sampling")
    assert sampling["status"] == "True", sampling
    service.close("success").result()

    objects.core.delete_namespaced_pod(first_pod, ns)
    _, second_pod = _url(cluster, ns, not_pod=first_pod)
    assert second_pod != first_pod
    second_url, _ = _url(cluster, ns)
    _phase(objects, "READY", 120)
    # Kubernetes tokens through the official client: another namespace's ServiceAccount (the
    # session's audience) is refused, as is a token of this namespace for the API server.
    with pytest.raises(tinker.PermissionDeniedError, match=f"only ServiceAccounts of namespace {ns}"):
        tinker.RestClient(
            base_url=second_url, api_key=_token(objects.core, other_ns, "caller", audience)
        ).get_server_capabilities().result()
    with pytest.raises(tinker.AuthenticationError, match=f"a token for this session has audience {audience}"):
        tinker.RestClient(
            base_url=second_url, api_key=_token(objects.core, ns, "caller", None)
        ).get_server_capabilities().result()
    # The SDK's way in: a token of this namespace's `caller` bound to the session's audience
    # (TokenRequest with the caller's credentials), the session's ready endpoint.
    sdk = Session.create(namespace=ns, kubeconfig=str(cluster.kubeconfig))
    service = tinker_service_client("warm", auth="kubernetes", service_account="caller", timeout=60, session=sdk)
    resumed = service.create_training_client_from_state_with_optimizer(saved.path).result()
    loaded = resumed.forward(data, "importance_sampling").result()
    np.testing.assert_allclose(_logprobs(loaded), _logprobs(at_save), atol=1e-5)
    fb = resumed.forward_backward(data, "importance_sampling")
    optim = resumed.optim_step(ADAM)
    fb.result()
    optim.result()
    after = resumed.forward(data, "importance_sampling").result()
    # The new pod samples from the weights saved before: the operator still knows where they are.
    again = service.create_sampling_client(model_path=sampler_path).result()
    assert len(again.sample(types.ModelInput.from_ints(PROMPT), 1, params).result().sequences) == 1
    service.close("success").result()
    assert not np.allclose(_logprobs(after), _logprobs(loaded)), "the resumed adapter did not train"

    # A sampling Deployment that does not exist: the Sampling condition names the field.
    objects.patch("trainingsessions", "warm", {"samplingDeployment": "no-such-vllm"})

    def refused() -> dict[str, Any] | None:
        obj = objects.get("trainingsessions", "warm") or {}
        found = [c for c in obj.get("status", {}).get("conditions", []) if c["type"] == "Sampling"]
        return found[0] if found and found[0]["reason"] == "SamplingDeploymentNotFound" else None

    missing = _wait("the Sampling condition", refused, 60)
    assert missing["status"] == "False"
    assert missing["message"].startswith("spec.samplingDeployment: Deployment no-such-vllm does not exist")

    print(cluster.kubectl("get", "trainingsessions", "-n", ns, "-o", "wide").stdout)
    # Idle: a short timeout (a spec change) and no calls: scaled to no pod, IDLE.
    objects.patch("trainingsessions", "warm", {"idleTimeoutSeconds": 3})
    idle = _phase(objects, "IDLE", 60)
    assert next(c for c in idle["status"]["conditions"] if c["type"] == "Ready")["reason"] == "Idle"
    assert idle["status"]["idleGeneration"] == idle["metadata"]["generation"]
    deployment = _wait(
        "scaled to zero",
        lambda: (
            (d := objects_apps(cluster).read_namespaced_deployment("warm-session", ns)).spec.replicas == 0
            and d
        ),
        30,
    )
    assert deployment.spec.replicas == 0
    print(cluster.kubectl("get", "trainingsessions", "-n", ns).stdout)
    # Any spec change wakes it.
    objects.patch("trainingsessions", "warm", {"idleTimeoutSeconds": 3600})
    _wait(
        "scaled back to one pod",
        lambda: objects_apps(cluster).read_namespaced_deployment("warm-session", ns).spec.replicas == 1,
        30,
    )


def objects_apps(cluster: ClusterHandle) -> client.AppsV1Api:
    return client.AppsV1Api(cluster.api_client())
