"""TrainingSession: one pod serving the Tinker API over a checked base Model.

Level-based: every pass renders the Secret (created once: its key never changes), the Service and
the apps/v1 Deployment from the spec, and reads the pod back. READY when the pod is Ready (its
healthz answers). The idle timeout: the pod's healthz reports how long no client called; past
spec.idleTimeoutSeconds the operator records the generation in status.idleGeneration and scales
the Deployment to zero (phase IDLE). A spec change (a new generation) wakes it; clients continue
from a saved state (load_state), which lives in the bucket. While READY, the sampling half
(reconcilers/session_sampling.py) serves the pod's saved sampler weights on spec.samplingDeployment
and tells the pod where (the Sampling condition).

spec.authentication.kubernetesTokens: the session pod checks clients' ServiceAccount tokens with
TokenReviews as the session's own ServiceAccount. The operator grants nothing: it asks the API
server (a SubjectAccessReview) whether that ServiceAccount may create tokenreviews, and until a
cluster admin has granted it the session waits (CREATING, reason TokenReviewNotPermitted) with no
pod.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import timedelta
from typing import Any

from kubernetes.client.exceptions import ApiException
from rft.api import Model, TrainingSession
from rft.api.training_session import token_audience

from rft_operator import podhttp
from rft_operator.accelerators import AcceleratorMap, UnknownAcceleratorError
from rft_operator.admintoken import AdminTokens
from rft_operator.builders.session import (
    HEALTH_PATH,
    SESSION_PORT,
    api_key_secret_name,
    build_api_key_secret,
    build_session_deployment,
    build_session_service,
    endpoint,
    new_api_key,
    selector_labels,
)
from rft_operator.conditions import set_condition
from rft_operator.config import OperatorConfig
from rft_operator.kube import Children, ForeignObjectError, Kube, Obj
from rft_operator.podtrouble import pod_trouble
from rft_operator.policy import WorkloadPolicy
from rft_operator.progress import may_poll
from rft_operator.reconcilers.base import (
    CHILD_REFUSED_REASON,
    Clock,
    Reconciler,
    refused_message,
    try_parse,
    utcnow,
)
from rft_operator.reconcilers.model import base_model_unusable
from rft_operator.reconcilers.session_sampling import SamplingState, SessionSampling

log = logging.getLogger(__name__)

READY_REFRESH_SECONDS = 30.0
IDLE_SINCE_SLACK_SECONDS = 5.0
TOKEN_REVIEW_GRANT_SECONDS = 300.0  # how long a seen grant is trusted before asking again
TOKEN_REVIEW_NOT_PERMITTED = "TokenReviewNotPermitted"  # noqa: S105 - a condition reason


def idle_for(pod_ip: str, timeout: float = 2.0) -> float | None:
    """Seconds since the session's last client call, as its healthz reports them (None: unknown)."""
    url = f"{podhttp.pod_base_url(pod_ip, SESSION_PORT)}{HEALTH_PATH}"
    try:
        answer = json.loads(podhttp.request(url, timeout=timeout))
    except (podhttp.PodHTTPError, ValueError):
        return None
    value = answer.get("idle_seconds") if isinstance(answer, dict) else None
    return float(value) if isinstance(value, int | float) and value >= 0 else None


def ready_pod(pods: list[Obj]) -> Obj | None:
    """A running, Ready pod of the session (not one on its way out)."""
    for pod in pods:
        if pod["metadata"].get("deletionTimestamp"):
            continue
        conditions = pod.get("status", {}).get("conditions") or []
        if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
            return pod
    return None


class TrainingSessionReconciler(Reconciler):
    plural = "trainingsessions"

    def __init__(
        self,
        kube: Kube,
        config: OperatorConfig,
        accelerators: AcceleratorMap,
        tokens: AdminTokens | None = None,
        clock: Clock = utcnow,
    ) -> None:
        super().__init__(kube, clock)
        self.config = config
        self.accelerators = accelerators
        # The operator's token per session (its sampling routes); None: no sampling
        self.tokens = tokens
        self.sampling = SessionSampling(kube, self.clock)
        self.children = Children(kube)
        self.policy = WorkloadPolicy(config)
        self._secrets: set[tuple[str, str]] = set()  # (namespace, session uid) with a Secret
        self._token_review_grants: dict[tuple[str, str], float] = {}  # (ns, SA) -> monotonic expiry

    def sync(self, namespace: str, name: str) -> float | None:
        raw = self.kube.get(self.plural, namespace, name)
        if raw is None:
            return None
        session = self.parse_or_fail(TrainingSession, raw)
        if session is None or session.metadata.deletion_timestamp:
            return None
        refusal = self.policy.check(
            self.kube,
            raw,
            self.clock(),
            service_account=session.spec.service_account_name,
            images={"spec.trainerImage": session.spec.trainer_image},
        )
        if refusal is not None:
            phase = "FAILED" if refusal.permanent else "CREATING"
            return self._status(raw, session, phase, False, refusal.reason, refusal.message)
        model = self._base_model(raw, session)
        if isinstance(model, float) or model is None:
            return model
        if session.spec.authentication.kubernetes_tokens and (why := self._token_review_refused(session)):
            return self._status(raw, session, "CREATING", False, TOKEN_REVIEW_NOT_PERMITTED, why)
        ns, gen = namespace, session.metadata.generation
        idle = session.status.idle_generation == gen
        try:
            self._ensure_secret(session)
            manifest = build_session_deployment(
                session,
                model,
                self.accelerators,
                self.config,
                replicas=0 if idle else 1,
                operator_token_sha256=self._token_sha256(session),
            )
            self.children.ensure_service(build_session_service(session))
            self.children.ensure_deployment(manifest)
        except UnknownAcceleratorError as exc:
            return self._status(raw, session, "FAILED", False, "UnknownAccelerator", str(exc))
        except ApiException as exc:
            if exc.status != 422:
                raise
            message = f"the API server refused a child of {name}: {refused_message(exc)}"
            return self._status(raw, session, "FAILED", False, CHILD_REFUSED_REASON, message)
        except ForeignObjectError as exc:
            if exc.previous:
                return self._status(raw, session, "CREATING", False, "PreviousChildrenTerminating", str(exc))
            return self._status(raw, session, "FAILED", False, "ChildExists", str(exc))
        if idle:
            timeout = session.spec.idle_timeout_seconds
            return self._status(
                raw,
                session,
                "IDLE",
                False,
                "Idle",
                f"no client call for {timeout}s: scaled to no pod; change the spec to wake it",
            )
        pods = self.kube.list_pods(ns, ",".join(f"{k}={v}" for k, v in selector_labels(name).items()))
        pod = ready_pod(pods)
        if pod is not None:
            return self._serving(raw, session, pod)
        trouble = pod_trouble(pods)
        if trouble is not None and trouble.overdue(
            self.clock(), self.config.stuck_pod_seconds, self.config.unschedulable_seconds
        ):
            return self._status(
                raw,
                session,
                "FAILED",
                False,
                trouble.reason,
                f"the session pod cannot run: {trouble.message}",
            )
        reason, message = (
            (trouble.reason, f"the session pod is not ready: {trouble.message}")
            if trouble is not None
            else ("PodNotReady", "waiting for the session pod to load the base model and answer")
        )
        return self._status(raw, session, "CREATING", False, reason, message)

    def _base_model(self, raw: Obj, session: TrainingSession) -> Model | float | None:
        """The checked base Model, or what the status says instead (the next look, or None)."""
        name = session.spec.base_model
        model_raw = self.kube.get("models", session.metadata.namespace, name)
        if model_raw is None:
            return self._status(
                raw, session, "CREATING", False, "ModelNotFound", f"waiting for Model {name} to exist"
            )
        model = try_parse(Model, model_raw)
        if isinstance(model, str):
            return self._status(
                raw,
                session,
                "FAILED",
                False,
                "ModelInvalid",
                f"spec.baseModel: Model {name} is invalid: {model}",
            )
        if model.spec.kind != "base":
            return self._status(
                raw,
                session,
                "FAILED",
                False,
                "NotABaseModel",
                f"spec.baseModel: Model {name} is a LoRA checkpoint; a session trains a new adapter on a base "
                "Model (continue a checkpoint with load_state)",
            )
        if unusable := base_model_unusable(model):
            permanent, why = unusable
            return self._status(
                raw,
                session,
                "FAILED" if permanent else "CREATING",
                False,
                "ModelFailed" if permanent else "ModelNotReady",
                why,
            )
        return model

    def _token_review_refused(self, session: TrainingSession) -> str | None:
        """Why the session's ServiceAccount cannot check tokens (None: it can). Asked with a
        SubjectAccessReview; a grant seen is trusted for TOKEN_REVIEW_GRANT_SECONDS."""
        ns, sa = session.metadata.namespace, session.spec.service_account_name
        now = time.monotonic()
        if self._token_review_grants.get((ns, sa), 0.0) > now:
            return None
        allowed, reason = self.kube.service_account_may(
            ns, sa, verb="create", group="authentication.k8s.io", resource="tokenreviews"
        )
        if allowed:
            self._token_review_grants[(ns, sa)] = now + TOKEN_REVIEW_GRANT_SECONDS
            return None
        self._token_review_grants.pop((ns, sa), None)
        return (
            f"spec.authentication.kubernetesTokens: ServiceAccount {ns}/{sa} may not create "
            "tokenreviews.authentication.k8s.io, which the session needs to check clients' tokens; "
            "a cluster admin grants it (the chart's workloadServiceAccounts.training.tokenReview, or "
            f"a ClusterRoleBinding to system:auth-delegator), or turn the field off{f' ({reason})' if reason else ''}"
        )

    def _token(self, session: TrainingSession) -> str | None:
        """The operator's token for this session's sampling routes (rft_operator.admintoken)."""
        if self.tokens is None:
            return None
        meta = session.metadata
        return self.tokens.token(meta.namespace, f"trainingsession/{meta.name}", meta.uid)

    def _token_sha256(self, session: TrainingSession) -> str | None:
        meta = session.metadata
        if self.tokens is None:
            return None
        return self.tokens.token_sha256(meta.namespace, f"trainingsession/{meta.name}", meta.uid)

    def _sample_state(self, session: TrainingSession, ip: str | None) -> SamplingState | None:
        """The sampling half (reconcilers/session_sampling.py); None when it cannot run here."""
        token = self._token(session)
        if token is None or not ip or not may_poll(ip, self.config.progress_poll):
            return None
        try:
            return self.sampling.sync(session, ip, token)
        except ApiException as exc:
            # Sampling's trouble is not the session's: training goes on, the condition says why.
            if exc.status in (409, 429) or (exc.status or 500) >= 500:
                raise  # transient: the work queue retries the whole pass
            return SamplingState(
                False,
                "RegistrationFailed",
                f"the API server refused a sampler weights object: HTTP {exc.status} {exc.reason}",
                list(session.status.samplers),
                pending=True,
            )

    def _ensure_secret(self, session: TrainingSession) -> None:
        """Create the API key's Secret once (its key never changes). The operator may create
        Secrets but not read them (least privilege): "already exists" means it is there, and each
        session's is created at most once per operator process."""
        key = (session.metadata.namespace, session.metadata.uid)
        if key in self._secrets:
            return
        self.kube.writes.add("create", "secrets")
        try:
            self.kube.core.create_namespaced_secret(
                session.metadata.namespace,
                build_api_key_secret(session, new_api_key()),  # type: ignore[arg-type]
            )
        except ApiException as exc:
            if exc.status != 409:
                raise
        self._secrets.add(key)

    def _serving(self, raw: Obj, session: TrainingSession, pod: Obj) -> float | None:
        timeout = session.spec.idle_timeout_seconds
        ip = pod.get("status", {}).get("podIP")
        idle = idle_for(ip) if timeout and may_poll(ip, self.config.progress_poll) else None
        now = self.clock()
        extra: dict[str, Any] = {}
        if idle is not None:
            since = now - timedelta(seconds=int(idle))
            known = session.status.idle_since
            # Rounding moves the estimate by a second between looks: only a real change (a client
            # call) is written, so that a status write does not cause the next look, and so on.
            if known is None or abs((since - known).total_seconds()) > IDLE_SINCE_SLACK_SECONDS:
                extra["idle_since"] = since
        if idle is not None and idle >= timeout:
            log.info(
                "trainingsession %s/%s idle for %.0fs: scaling to zero",
                session.metadata.namespace,
                session.metadata.name,
                idle,
            )
            self._status(
                raw,
                session,
                "IDLE",
                False,
                "Idle",
                f"no client call for {timeout}s: scaled to no pod; change the spec to wake it",
                idle_generation=session.metadata.generation,
                **extra,
            )
            return 0.0  # the next pass scales the Deployment down
        sampling = self._sample_state(session, ip)
        if sampling is not None:
            extra["samplers"] = sampling.samplers
        self._status(
            raw,
            session,
            "READY",
            True,
            "Serving",
            f"pod {pod['metadata']['name']} serves the Tinker API",
            sampling=sampling,
            **extra,
        )
        if sampling is not None and sampling.pending:
            return self.config.poll_seconds
        if timeout:
            remaining = timeout - (idle or 0.0)
            return max(1.0, min(self.config.poll_seconds * 10, remaining, READY_REFRESH_SECONDS))
        return READY_REFRESH_SECONDS

    def _status(
        self,
        raw: Obj,
        session: TrainingSession,
        phase: str,
        ready: bool | None,
        reason: str,
        message: str,
        sampling: SamplingState | None = None,
        **updates: object,
    ) -> float | None:
        gen = session.metadata.generation
        status = session.status.model_copy(deep=True)
        status.phase = phase  # type: ignore[assignment]
        status.observed_generation = gen
        status.message = message
        status.endpoint = endpoint(session)
        status.api_key_secret = api_key_secret_name(session.metadata.name)
        status.token_audience = (
            token_audience(session.metadata.namespace, session.metadata.name)
            if session.spec.authentication.kubernetes_tokens
            else None
        )
        if phase != "IDLE":
            status.idle_generation = None
        for key, value in updates.items():
            setattr(status, key, value)
        status.conditions = set_condition(
            status.conditions, "Ready", ready, reason, message, gen, self.clock()
        )
        if sampling is not None:
            status.conditions = set_condition(
                status.conditions,
                "Sampling",
                sampling.ready,
                sampling.reason,
                sampling.message,
                gen,
                self.clock(),
            )
        self.write_phase(raw, session.status, status)
        if phase in {"FAILED", "IDLE"}:
            return None
        return self.config.poll_seconds
