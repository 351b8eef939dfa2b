"""TrainingSessions from Python: create one, wait for it, and get the official Tinker client for it.

    from rft.sdk.training_session import create_training_session, tinker_service_client

    create_training_session(
        "warm", base_model="qwen3-8b", state_location="s3://bkt/rft/sessions/",
        sampling_deployment="qwen3-8b-base",   # an on-demand Deployment of qwen3-8b: samples go there
    )
    service = tinker_service_client("warm", timeout=900)   # a tinker.ServiceClient
    tc = service.create_lora_training_client("qwen3-8b", rank=16, train_unembed=False).result()

The API key is read from the session's Secret with the caller's own Kubernetes credentials (whoever
may read Secrets in the namespace may use the session). With `auth="kubernetes"` (a session with
spec.authentication.kubernetesTokens) the client presents a ServiceAccount token bound to the
session's audience instead: read from `token_file` (a projected token volume of the caller's pod),
or requested for `service_account` with the TokenRequest API (the caller's credentials need
`create serviceaccounts/token`). The Tinker client refuses an expired token itself: make a new
client before `token_seconds` run out. The base URL is reached as the SDK reaches
a Deployment (`rft.sdk.endpoints.resolve_base_url`: in the cluster, the Service; outside, a ready
endpoint, or `RFT_ENDPOINT_OVERRIDE`). `tinker` is imported only here (`pip install tinker`).
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from rft.api import TrainingSession
from rft.sdk.endpoints import resolve_base_url
from rft.sdk.errors import DeploymentFailedError, RftError
from rft.sdk.kube import translate_api_error
from rft.sdk.session import Session
from rft.sdk.waiting import poll_until

if TYPE_CHECKING:
    import tinker

API_KEY_FIELD = "api-key"
DEFAULT_TOKEN_SECONDS = 3600


def create_training_session(
    name: str,
    *,
    base_model: str,
    state_location: str,
    accelerator_type: str = "NVIDIA_H100_80GB",
    accelerator_count: int = 1,
    max_lora_rank: int | None = None,
    idle_timeout_seconds: int | None = None,
    sampling_deployment: str | None = None,
    kubernetes_tokens: bool = False,
    session: Session | None = None,
) -> TrainingSession:
    """Create the TrainingSession `name` (its ServiceAccount: the SDK session's).
    `sampling_deployment`: the on-demand Deployment of `base_model` (vLLM, LoRA enabled) that
    answers the session's sampling calls. `kubernetes_tokens`: also accept ServiceAccount tokens
    of the namespace (spec.authentication.kubernetesTokens)."""
    sdk = session or Session.create()
    spec: dict[str, Any] = {
        "baseModel": base_model,
        "stateLocation": state_location,
        "accelerator": {"type": accelerator_type, "count": accelerator_count},
        "serviceAccountName": sdk.config.service_account,
    }
    if max_lora_rank is not None:
        spec["maxLoraRank"] = max_lora_rank
    if idle_timeout_seconds is not None:
        spec["idleTimeoutSeconds"] = idle_timeout_seconds
    if kubernetes_tokens:
        spec["authentication"] = {"kubernetesTokens": True}
    if sampling_deployment is not None:
        spec["samplingDeployment"] = sampling_deployment
    body = TrainingSession.model_validate(
        {"metadata": {"name": name, "namespace": sdk.namespace}, "spec": spec}
    ).to_wire()
    body.pop("status", None)
    return sdk.client.create(TrainingSession, body)


def wait_ready(name: str, *, timeout: float | None = 900, session: Session | None = None) -> TrainingSession:
    """The session once READY; DeploymentFailedError when it FAILED, WaitTimeoutError past `timeout`."""
    sdk = session or Session.create()

    def done(obj: TrainingSession) -> bool:
        if obj.status.phase == "FAILED":
            raise DeploymentFailedError(f"TrainingSession {name} failed: {obj.status.message}")
        return obj.status.phase == "READY" and obj.status.observed_generation == obj.metadata.generation

    return poll_until(
        lambda: sdk.client.require(TrainingSession, sdk.namespace, name),
        done,
        timeout=timeout,
        interval=1.0,
        what=f"TrainingSession {name} to be READY",
        describe=lambda o: f"{o.status.phase}: {o.status.message}",
    )


def api_key(obj: TrainingSession, session: Session) -> str:
    """The session's API key, from its Secret (read with the caller's credentials)."""
    secret_name = obj.status.api_key_secret
    if not secret_name:
        raise RftError(f"TrainingSession {obj.metadata.name} has no API key Secret yet")
    try:
        secret = session.client.core.read_namespaced_secret(secret_name, obj.metadata.namespace)
    except ApiException as error:
        raise translate_api_error(error, f"read Secret {obj.metadata.namespace}/{secret_name}") from error
    return base64.b64decode((secret.data or {})[API_KEY_FIELD]).decode()


def kubernetes_token(
    obj: TrainingSession,
    session: Session,
    *,
    service_account: str | None = None,
    token_file: str | Path | None = None,
    token_seconds: int = DEFAULT_TOKEN_SECONDS,
) -> str:
    """A ServiceAccount token for the session: from `token_file`, or requested for
    `service_account` (default: the SDK session's) bound to the session's audience."""
    audience = obj.status.token_audience
    if not audience:
        raise RftError(
            f"TrainingSession {obj.metadata.name} does not accept Kubernetes tokens "
            "(spec.authentication.kubernetesTokens is off): use its API key"
        )
    if token_file is not None:
        return Path(token_file).read_text(encoding="utf-8").strip()
    sa = service_account or session.config.service_account
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[audience], expiration_seconds=token_seconds)
    )
    try:
        answer = session.client.core.create_namespaced_service_account_token(sa, obj.metadata.namespace, request)
    except ApiException as error:
        raise translate_api_error(
            error, f"request a token for ServiceAccount {obj.metadata.namespace}/{sa}"
        ) from error
    if answer.status is None or not answer.status.token:
        raise RftError(f"the API server issued no token for ServiceAccount {obj.metadata.namespace}/{sa}")
    return str(answer.status.token)


def tinker_service_client(
    name: str,
    *,
    auth: Literal["api-key", "kubernetes"] = "api-key",
    service_account: str | None = None,
    token_file: str | Path | None = None,
    token_seconds: int = DEFAULT_TOKEN_SECONDS,
    timeout: float | None = 900,
    session: Session | None = None,
) -> tinker.ServiceClient:
    """A `tinker.ServiceClient` for the READY session `name` (waits up to `timeout`), with its API
    key, or with `auth="kubernetes"` a ServiceAccount token (see `kubernetes_token`)."""
    import tinker  # noqa: PLC0415 - an optional dependency, needed only here

    sdk = session or Session.create()
    obj = wait_ready(name, timeout=timeout, session=sdk)
    assert obj.status.endpoint is not None
    base_url = resolve_base_url(obj.status.endpoint, sdk.client)
    if auth == "kubernetes":
        credential = kubernetes_token(
            obj, sdk, service_account=service_account, token_file=token_file, token_seconds=token_seconds
        )
    elif auth == "api-key":
        credential = api_key(obj, sdk)
    else:
        raise ValueError(f"auth must be 'api-key' or 'kubernetes', not {auth!r}")
    return tinker.ServiceClient(base_url=base_url, api_key=credential)
