"""The TrainingSession's pure builders and its idle reading (no cluster)."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from rft.api import Deployment, Model, TrainingSession
from rft.api.training_session import token_audience
from rft.contracts.model_check import FILES_DIGEST_ENV
from rft.pods.admin_guard import TOKEN_HASH_ENV
from rft_operator.accelerators import AcceleratorMap
from rft_operator.builders.session import (
    API_KEY_ENV,
    KUBE_API_DIR,
    KUBE_API_VOLUME,
    build_api_key_secret,
    build_session_deployment,
    build_session_service,
    endpoint,
    new_api_key,
)
from rft_operator.config import OperatorConfig
from rft_operator.reconcilers.session import idle_for, ready_pod
from rft_operator.reconcilers.session_sampling import (
    expected_location,
    sampler_model_name,
    sampling_deployment_problem,
)

DIGEST = "sha256:" + "ab" * 32
CONFIG = OperatorConfig()


def _model() -> Model:
    return Model.model_validate(
        {
            "metadata": {"name": "qwen", "namespace": "team-a", "uid": "u-m", "generation": 1},
            "spec": {"kind": "base", "location": "s3://bkt/rft/models/qwen/"},
            "status": {"phase": "READY", "filesDigest": DIGEST, "totalBytes": 10**9},
        }
    )


def _session(**spec: Any) -> TrainingSession:
    return TrainingSession.model_validate(
        {
            "metadata": {"name": "warm", "namespace": "team-a", "uid": "u-s", "generation": 2},
            "spec": {
                "baseModel": "qwen",
                "stateLocation": "s3://bkt/rft/sessions/",
                "serviceAccountName": "rft-trainer",
                **spec,
            },
        }
    )


def test_the_deployment_runs_the_session_over_the_pinned_base_model() -> None:
    session = _session(accelerator={"type": "NVIDIA_H100_80GB", "count": 1}, maxLoraRank=16)
    manifest = build_session_deployment(session, _model(), AcceleratorMap.load(None), CONFIG, replicas=1)
    assert manifest["metadata"]["name"] == "warm-session"
    assert manifest["metadata"]["ownerReferences"][0]["uid"] == "u-s"
    spec = manifest["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "rft-trainer"
    assert pod["automountServiceAccountToken"] is False
    (fetch,) = pod["initContainers"]
    assert fetch["command"][:5] == ["python", "-m", "rft.pods.fetch", "s3://bkt/rft/models/qwen/", "/models/base"]
    assert {"name": FILES_DIGEST_ENV, "value": DIGEST} in fetch["env"]
    (container,) = pod["containers"]
    command = container["command"]
    assert command[:3] == ["python", "-m", "rft_trainer.session"]
    flags = dict(zip(command[3::2], command[4::2], strict=True))
    assert flags == {
        "--base-model": "/models/base",
        "--base-model-name": "qwen",
        "--storage-url": "s3://bkt/rft/sessions/",
        "--host": "0.0.0.0",  # noqa: S104 - the pod's own network namespace
        "--port": "8000",
        "--device": "cuda",
        "--max-context-length": "4096",
        "--max-lora-rank": "16",
    }
    key_env = next(e for e in container["env"] if e["name"] == API_KEY_ENV)
    assert key_env["valueFrom"]["secretKeyRef"] == {"name": "warm-session-key", "key": "api-key"}
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["readinessProbe"]["httpGet"]["path"] == "/api/v1/healthz"
    assert "tcpSocket" in container["livenessProbe"]
    idle = build_session_deployment(session, _model(), AcceleratorMap.load(None), CONFIG, replicas=0)
    assert idle["spec"]["replicas"] == 0


def test_kubernetes_tokens_give_the_session_its_own_api_token_and_audience() -> None:
    plain = build_session_deployment(_session(), _model(), AcceleratorMap.load(None), CONFIG, replicas=1)
    plain_pod = plain["spec"]["template"]["spec"]
    assert "--kube-token-audience" not in plain_pod["containers"][0]["command"]
    assert all(v["name"] != KUBE_API_VOLUME for v in plain_pod["volumes"])

    session = _session(authentication={"kubernetesTokens": True})
    pod = build_session_deployment(session, _model(), AcceleratorMap.load(None), CONFIG, replicas=1)["spec"][
        "template"
    ]["spec"]
    assert pod["automountServiceAccountToken"] is False  # only the volume below, for TokenReviews
    (container,) = pod["containers"]
    command = container["command"]
    flags = dict(zip(command[3::2], command[4::2], strict=True))
    assert flags["--kube-token-audience"] == "rft-operator.io/trainingsession/team-a/warm"
    assert flags["--kube-token-audience"] == token_audience("team-a", "warm")
    assert flags["--kube-namespace"] == "team-a"
    assert flags["--kube-credentials-dir"] == KUBE_API_DIR
    volume = next(v for v in pod["volumes"] if v["name"] == KUBE_API_VOLUME)
    sources = volume["projected"]["sources"]
    # The API server's own audience (no audience given), short-lived, and the cluster CA.
    assert sources[0] == {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}}
    assert sources[1]["configMap"]["name"] == "kube-root-ca.crt"
    assert {"name": KUBE_API_VOLUME, "mountPath": KUBE_API_DIR, "readOnly": True} in container["volumeMounts"]
    (fetch,) = pod["initContainers"]
    assert all(m["name"] != KUBE_API_VOLUME for m in fetch["volumeMounts"])


def test_service_secret_and_endpoint() -> None:
    session = _session()
    service = build_session_service(session)
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"][0]["port"] == 8000
    assert endpoint(session) == "http://warm-session.team-a.svc.cluster.local:8000"
    key = new_api_key()
    assert key.startswith("tml-")
    assert len(key) > 40
    assert new_api_key() != key
    secret = build_api_key_secret(session, key)
    assert secret["stringData"] == {"api-key": key}
    assert secret["metadata"]["ownerReferences"][0]["kind"] == "TrainingSession"


def test_the_model_refuses_a_gpu_without_accelerators() -> None:
    with pytest.raises(ValueError, match=r"accelerator\.count"):
        _session(accelerator={"type": "NVIDIA_H100_80GB", "count": 0})


def test_ready_pod_skips_pods_that_are_not_ready_or_going() -> None:
    ready = {"type": "Ready", "status": "True"}
    pods = [
        {
            "metadata": {"name": "a", "deletionTimestamp": "2026-01-01T00:00:00Z"},
            "status": {"conditions": [ready]},
        },
        {"metadata": {"name": "b"}, "status": {"conditions": [{"type": "Ready", "status": "False"}]}},
        {"metadata": {"name": "c"}, "status": {"conditions": [ready]}},
    ]
    assert ready_pod(pods) is pods[2]
    assert ready_pod(pods[:2]) is None


class _Health(BaseHTTPRequestHandler):
    answer: bytes = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(type(self).answer)

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def health() -> Iterator[tuple[type[_Health], int]]:
    handler = type("Handler", (_Health,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield handler, server.server_address[1]
    server.shutdown()


def test_idle_for_reads_the_pods_report_and_distrusts_junk(
    health: tuple[type[_Health], int], monkeypatch: pytest.MonkeyPatch
) -> None:
    handler, port = health
    monkeypatch.setattr("rft_operator.reconcilers.session.SESSION_PORT", port)
    handler.answer = json.dumps({"status": "ok", "idle_seconds": 12.5}).encode()
    assert idle_for("127.0.0.1") == 12.5
    for junk in (b"not json", b'{"idle_seconds": -3}', b'{"idle_seconds": "a lot"}', b"[1]"):
        handler.answer = junk
        assert idle_for("127.0.0.1") is None


def _deployment(**spec: Any) -> Deployment:
    return Deployment.model_validate(
        {
            "metadata": {"name": "qwen-vllm", "namespace": "team-a", "uid": "u-d", "generation": 1},
            "spec": {"model": "qwen", "deploymentType": "on-demand", "maxLoraRank": 32, **spec},
        }
    )


def test_the_sampling_deployment_must_serve_the_sessions_base_with_lora() -> None:
    session = _session(samplingDeployment="qwen-vllm", maxLoraRank=16)
    assert sampling_deployment_problem(session, _deployment()) is None
    cases = {
        "does not exist in namespace team-a": None,
        "serves Model llama, not the session's base Model qwen": _deployment(model="llama"),
        "has enableLora: false": _deployment(enableLora=False),
        "serves LoRA ranks up to 8, below the session's maxLoraRank 16": _deployment(maxLoraRank=8),
    }
    for words, deployment in cases.items():
        problem = sampling_deployment_problem(session, deployment)
        assert problem is not None
        reason, message = problem
        assert reason in ("SamplingDeploymentNotFound", "SamplingDeploymentInvalid")
        assert message.startswith("spec.samplingDeployment: Deployment qwen-vllm ")
        assert words in message


def test_sampler_weights_names_and_locations_come_from_the_session() -> None:
    session = _session()
    path = "tinker://3f2a-1:train:0/sampler_weights/Step_10.final"
    name = sampler_model_name("warm", path)
    assert name == sampler_model_name("warm", path)  # deterministic
    assert re.fullmatch(r"warm-step-10-final-[0-9a-f]{8}", name)
    assert sampler_model_name("warm", path.replace("Step", "step")) != name
    long_name = sampler_model_name("s" * 63, path + "x" * 100)
    assert len(long_name) <= 63
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", long_name)
    assert (
        expected_location(session, path)
        == "s3://bkt/rft/sessions/3f2a-1-train-0/sampler_weights/Step_10.final"
    )
    # the pod's answers are not trusted: anything but its own sampler weights path is refused
    for bad in ("tinker://run/weights/state", "tinker://run/sampler_weights/../x", "s3://elsewhere/x"):
        assert expected_location(session, bad) is None


def test_the_session_pod_holds_only_the_operator_tokens_hash() -> None:
    manifest = build_session_deployment(
        _session(), _model(), AcceleratorMap.load(None), CONFIG, replicas=1, operator_token_sha256="ab" * 32
    )
    env = {e["name"]: e.get("value") for e in manifest["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env[TOKEN_HASH_ENV] == "ab" * 32
