"""Pure builders of a TrainingSession's children: an apps/v1 Deployment (one pod serving the Tinker
API, `python -m rft_trainer.session`), its ClusterIP Service, and the Secret holding the session's
API key.

The base model is fetched as a server pod fetches it: an init container (`python -m rft.pods.fetch`, the
serving-helpers image, the pod's workload identity) copies the pinned files of the checked base
Model to a volume, refusing any file that differs; the trainer image then loads it from there.
"""

from __future__ import annotations

import math
import secrets

from rft.api import Model, TrainingSession
from rft.api.training_session import token_audience
from rft.contracts import entrypoints
from rft.pods.admin_guard import TOKEN_HASH_ENV

from rft_operator import naming
from rft_operator.accelerators import AcceleratorMap
from rft_operator.builders.pods import (
    GIB,
    SCRATCH,
    TERMINATION_LOG,
    Manifest,
    container_security_context,
    offline_env,
    owner_reference,
    pod_security_context,
    quantity_bytes,
    scratch_volumes,
    storage_quantity,
    with_storage,
)
from rft_operator.builders.serving import fetch_resources, model_volume_bytes, pinned_files_env
from rft_operator.config import OperatorConfig

SESSION_PORT = 8000
SESSION_CONTAINER = "session"
FETCH_CONTAINER = "fetch-model"
LOCAL_MODEL_DIR = "/models/base"
HEALTH_PATH = "/api/v1/healthz"
API_KEY_ENV = "RFT_SESSION_API_KEY"
API_KEY_FIELD = "api-key"
OPERATOR_TOKEN_HASH_ENV = TOKEN_HASH_ENV  # the session's sampling routes take the operator's token
# Listens on every address of the pod: probes and the Service reach it on the pod IP.
SESSION_HOST = "0.0.0.0"  # noqa: S104 - inside the pod's own network namespace
STARTUP_PERIOD = 10
# With spec.authentication.kubernetesTokens: the pod's own API token (for its TokenReviews) and the
# cluster's CA, in a projected volume of their own (the pod's automount stays off).
KUBE_API_VOLUME = "kube-api"
KUBE_API_DIR = "/var/run/secrets/rft-operator.io/kube-api"
KUBE_API_TOKEN_SECONDS = 3600


def session_name(session: str) -> str:
    """The apps/v1 Deployment and the Service of a session share this name."""
    return naming.child_name(session, "session")


def api_key_secret_name(session: str) -> str:
    return naming.child_name(session, "session-key")


def selector_labels(session: str) -> dict[str, str]:
    return {naming.LABEL_SESSION: session, naming.LABEL_COMPONENT: "training-session"}


def endpoint(session: TrainingSession) -> str:
    """The base URL clients pass to tinker.ServiceClient (inside the cluster)."""
    return f"http://{session_name(session.metadata.name)}.{session.metadata.namespace}.svc.cluster.local:{SESSION_PORT}"


def kube_api_volume() -> Manifest:
    """The session's own API token (the API server's audience, rotated by the kubelet) and the
    cluster CA, as the ServiceAccount admission plugin would mount them: only for TokenReviews."""
    return {
        "name": KUBE_API_VOLUME,
        "projected": {
            "defaultMode": 0o444,
            "sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": KUBE_API_TOKEN_SECONDS}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            ],
        },
    }


def new_api_key() -> str:
    """A fresh key in the form the Tinker client insists on (it starts with `tml-`)."""
    return "tml-" + secrets.token_urlsafe(32)


def build_api_key_secret(session: TrainingSession, api_key: str) -> Manifest:
    """The session's API key, owned by the session (deleted with it). Whoever may read Secrets in the
    namespace may use the session: that is the namespace's users, not other namespaces'."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": api_key_secret_name(session.metadata.name),
            "namespace": session.metadata.namespace,
            "labels": {**naming.labels("training-session"), naming.LABEL_SESSION: session.metadata.name},
            "ownerReferences": [owner_reference(session)],
        },
        "stringData": {API_KEY_FIELD: api_key},
    }


def session_resources(
    session: TrainingSession, model: Model, accelerators: AcceleratorMap, config: OperatorConfig
) -> Manifest:
    """CPU, memory and accelerators from the accelerator map; ephemeral storage: the model volume
    (read for as long as the session runs) and the scratch (states on their way to the bucket)."""
    acc = session.spec.accelerator
    expected, limit = model_volume_bytes(model, config)
    return with_storage(
        accelerators.pod_resources(acc.type, acc.count),
        expected + 2 * GIB,
        limit + quantity_bytes(config.scratch_size),
    )


def session_probes(config: OperatorConfig) -> Manifest:
    """Its HTTP server listens once the base model is loaded: the startup probe allows
    config.server_startup_seconds for that. healthz answers from the event loop, not the worker
    thread, so a long forward_backward does not fail it."""

    def probe(period: int, failures: int) -> Manifest:
        return {
            "httpGet": {"path": HEALTH_PATH, "port": "http"},
            "periodSeconds": period,
            "timeoutSeconds": 5,
            "failureThreshold": failures,
        }

    return {
        "startupProbe": probe(STARTUP_PERIOD, math.ceil(config.server_startup_seconds / STARTUP_PERIOD)),
        "readinessProbe": probe(5, 3),
        # The process is alive when its port accepts connections (a slow healthz must not restart
        # it: that would drop the adapter held in memory).
        "livenessProbe": {
            "tcpSocket": {"port": "http"},
            "periodSeconds": 20,
            "timeoutSeconds": 5,
            "failureThreshold": 6,
        },
    }


def build_session_deployment(
    session: TrainingSession,
    model: Model,
    accelerators: AcceleratorMap,
    config: OperatorConfig,
    *,
    replicas: int,
    operator_token_sha256: str | None = None,
) -> Manifest:
    """One pod (or none, when idle) serving the session. Recreate: never two pods holding one
    session's adapter at once. `operator_token_sha256`: the SHA-256 of the operator's token for
    this session (rft_operator.admintoken), which its sampling routes take."""
    name = session_name(session.metadata.name)
    spec = session.spec
    acc = spec.accelerator
    placement = accelerators.placement(acc.type)
    labels = {**naming.labels("training-session"), **selector_labels(session.metadata.name)}
    volumes, mounts = scratch_volumes(config.scratch_size, shm_size="16Gi" if acc.type != "CPU" else None)
    model_expected, model_limit = model_volume_bytes(model, config)
    volumes.append({"name": "models", "emptyDir": {"sizeLimit": storage_quantity(model_limit)}})
    mounts.append({"name": "models", "mountPath": "/models"})
    command = entrypoints.python_command(
        entrypoints.TRAINING_SESSION,
        "--base-model",
        LOCAL_MODEL_DIR,
        "--base-model-name",
        spec.base_model,
        "--storage-url",
        spec.state_location,
        "--host",
        SESSION_HOST,
        "--port",
        str(SESSION_PORT),
        "--device",
        "cpu" if acc.type == "CPU" else "cuda",
        "--max-context-length",
        str(spec.max_context_length),
        "--max-lora-rank",
        str(spec.max_lora_rank),
    )
    if spec.authentication.kubernetes_tokens:
        command += [
            "--kube-token-audience",
            token_audience(session.metadata.namespace, session.metadata.name),
            "--kube-namespace",
            session.metadata.namespace,
            "--kube-credentials-dir",
            KUBE_API_DIR,
        ]
        volumes.append(kube_api_volume())
    # Only the session container sees its API token (not the init container).
    session_mounts = [*mounts]
    if spec.authentication.kubernetes_tokens:
        session_mounts.append({"name": KUBE_API_VOLUME, "mountPath": KUBE_API_DIR, "readOnly": True})
    env: list[Manifest] = [
        {
            "name": API_KEY_ENV,
            "valueFrom": {
                "secretKeyRef": {"name": api_key_secret_name(session.metadata.name), "key": API_KEY_FIELD}
            },
        },
        *offline_env(),
        {"name": "TMPDIR", "value": SCRATCH},
    ]
    if operator_token_sha256:
        env.append({"name": OPERATOR_TOKEN_HASH_ENV, "value": operator_token_sha256})
    container: Manifest = {
        "name": SESSION_CONTAINER,
        "image": spec.trainer_image or config.trainer_image,
        "imagePullPolicy": config.image_pull_policy,
        "command": command,
        "env": env,
        "ports": [{"name": "http", "containerPort": SESSION_PORT, "protocol": "TCP"}],
        "resources": session_resources(session, model, accelerators, config),
        "securityContext": container_security_context(),
        "volumeMounts": session_mounts,
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        **session_probes(config),
    }
    fetch: Manifest = {
        "name": FETCH_CONTAINER,
        "image": config.serving_helpers_image,
        "imagePullPolicy": config.image_pull_policy,
        "command": entrypoints.python_command(
            entrypoints.MODEL_FETCH, model.spec.location, LOCAL_MODEL_DIR, "--termination-log", TERMINATION_LOG
        ),
        "env": [*offline_env(), *pinned_files_env(model)],
        "resources": fetch_resources(model_expected, model_limit),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": container_security_context(),
        "volumeMounts": mounts,
    }
    pod_spec: Manifest = {
        "serviceAccountName": spec.service_account_name,
        # Workload identity works without a token; the session talks to the Kubernetes API only for
        # TokenReviews, with the token of its own kube-api volume (kubernetesTokens).
        "automountServiceAccountToken": False,
        "securityContext": pod_security_context(),
        "initContainers": [fetch],
        "containers": [container],
        "volumes": volumes,
        "terminationGracePeriodSeconds": 30,
    }
    if placement.node_selector:
        pod_spec["nodeSelector"] = dict(placement.node_selector)
    if placement.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in placement.tolerations]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": session.metadata.namespace,
            "labels": labels,
            "ownerReferences": [owner_reference(session)],
        },
        "spec": {
            "replicas": replicas,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": selector_labels(session.metadata.name)},
            "progressDeadlineSeconds": 3600,
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }


def build_session_service(session: TrainingSession) -> Manifest:
    """A ClusterIP Service: the session stays inside the cluster."""
    name = session_name(session.metadata.name)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": session.metadata.namespace,
            "labels": {**naming.labels("training-session"), **selector_labels(session.metadata.name)},
            "ownerReferences": [owner_reference(session)],
        },
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(session.metadata.name),
            "ports": [{"name": "http", "port": SESSION_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }
