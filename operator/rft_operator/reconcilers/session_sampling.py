"""A TrainingSession's sampling: its saved sampler weights become Models served by its vLLM
Deployment (`spec.samplingDeployment`), and the session pod learns where.

The session pod has no Kubernetes API token (a resource never grants more than its author has:
the operator, not the pod, creates the Models and Deployments). At each look at a READY session
the operator, level-based:

1. checks spec.samplingDeployment: an on-demand Deployment of this namespace serving the session's
   base Model with LoRA enabled and a maxLoraRank no lower than the session's (else the `Sampling`
   condition names the field and the reason);
2. reads the pod's saved sampler weights (`GET /api/v1/rft/sampler_weights`, with the operator's
   token for this session) and checks each against the session: its location must be the one its
   tinker path names under spec.stateLocation (the pod's answers are its author's, not trusted);
3. registers each as a `Model` (kind lora, the session's base, LoRA settings, canary, file
   digests; lineage: the session's uid and the tinker path) and an `on-demand-lora` Deployment of
   the same name on the sampling Deployment, owned by the session: the Deployment reconciler
   loads the adapter onto every ready replica and verifies it with the canary;
4. tells the pod where each is served (`POST /api/v1/rft/sampling_targets`): the vLLM URLs (pod
   IP and port) of the replicas that serve it, verified. Pod IPs, not the Service: the operator
   knows which replicas hold which adapter, and the Service would also route to a replica still
   loading (and a cluster without kube-proxy has no Service routing at all).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException
from rft.api import GROUP, Deployment, Model, TrainingSession
from rft.api.training_session import SamplerModel

from rft_operator import naming, podhttp
from rft_operator.builders.pods import owner_reference
from rft_operator.builders.serving import SERVER_PORT
from rft_operator.builders.serving import selector_labels as server_selector_labels
from rft_operator.builders.session import SESSION_PORT
from rft_operator.conditions import set_condition
from rft_operator.kube import Kube, Obj
from rft_operator.reconcilers.base import Clock, try_parse
from rft_operator.reconcilers.deployment import serving_replicas

log = logging.getLogger(__name__)

SAMPLER_WEIGHTS_PATH = "/api/v1/rft/sampler_weights"
SAMPLING_TARGETS_PATH = "/api/v1/rft/sampling_targets"
ANNOTATION_SESSION_UID = f"{GROUP}/session-uid"
ANNOTATION_SAMPLER_PATH = f"{GROUP}/sampler-path"
MAX_SAMPLERS = 1000
API_VERSION = f"{GROUP}/v1alpha1"
_PATH = re.compile(
    r"^tinker://([A-Za-z0-9][A-Za-z0-9:_-]{0,127})/sampler_weights/([A-Za-z0-9][A-Za-z0-9._-]{0,127})$"
)
_SLUG = re.compile(r"[^a-z0-9-]+")


@dataclass
class SamplingState:
    """What a pass found: the Sampling condition and the samplers for the status."""

    ready: bool | None
    reason: str
    message: str
    samplers: list[SamplerModel] = field(default_factory=list)
    pending: bool = False  # something is on its way: look again soon


def sampler_model_name(session: str, path: str) -> str:
    """The Model (and on-demand-lora Deployment) name of sampler weights: deterministic from the
    session and the tinker path, an RFC 1035 label (<= 63)."""
    checkpoint = path.rsplit("/", 1)[-1]
    slug = _SLUG.sub("-", checkpoint.lower()).strip("-") or "weights"
    digest = hashlib.sha256(f"{session}\n{path}".encode()).hexdigest()[:8]
    head = session[: 63 - len(digest) - 2 - min(len(slug), 20)].rstrip("-")
    return f"{head}-{slug[:20].strip('-')}-{digest}".replace("--", "-")


def expected_location(session: TrainingSession, path: str) -> str | None:
    """Where the session server writes the weights of `path` (None: not a sampler weights path)."""
    match = _PATH.match(path)
    if match is None:
        return None
    run, name = match.groups()
    return f"{session.spec.state_location.rstrip('/')}/{run.replace(':', '-')}/sampler_weights/{name}"


def sampling_deployment_problem(session: TrainingSession, base: Deployment | None) -> tuple[str, str] | None:
    """(reason, message) when spec.samplingDeployment cannot serve the session's samples."""
    name = session.spec.sampling_deployment
    field_ = f"spec.samplingDeployment: Deployment {name}"
    if base is None:
        return (
            "SamplingDeploymentNotFound",
            f"{field_} does not exist in namespace {session.metadata.namespace}",
        )
    if base.spec.deployment_type == "on-demand-lora":
        return (
            "SamplingDeploymentInvalid",
            f"{field_} is on-demand-lora; name the on-demand Deployment of base Model {session.spec.base_model}",
        )
    if base.spec.model != session.spec.base_model:
        return (
            "SamplingDeploymentInvalid",
            f"{field_} serves Model {base.spec.model}, not the session's base Model {session.spec.base_model}",
        )
    if not base.spec.enable_lora:
        return (
            "SamplingDeploymentInvalid",
            f"{field_} has enableLora: false: no adapter can be loaded onto it",
        )
    if base.spec.max_lora_rank < session.spec.max_lora_rank:
        return (
            "SamplingDeploymentInvalid",
            f"{field_} serves LoRA ranks up to {base.spec.max_lora_rank}, below the session's maxLoraRank "
            f"{session.spec.max_lora_rank}",
        )
    return None


class SessionSampling:
    """The sampling half of the TrainingSession reconciler."""

    def __init__(self, kube: Kube, clock: Clock) -> None:
        self.kube = kube
        self.clock = clock

    def sync(self, session: TrainingSession, pod_ip: str, token: str) -> SamplingState:
        ns = session.metadata.namespace
        name = session.spec.sampling_deployment
        previous = list(session.status.samplers)
        headers = {"Authorization": f"Bearer {token}"}
        base_url = podhttp.pod_base_url(pod_ip, SESSION_PORT)
        refusal: tuple[str, str] | None = None
        base: Deployment | str | None = None
        if name is None:
            refusal = (
                "NoSamplingDeployment",
                "spec.samplingDeployment is not set: sampling calls are refused",
            )
        else:
            base_raw = self.kube.get("deployments", ns, name)
            base = try_parse(Deployment, base_raw) if base_raw is not None else None
            if isinstance(base, str):
                refusal = ("SamplingDeploymentInvalid", f"spec.samplingDeployment: {base}")
            else:
                refusal = sampling_deployment_problem(session, base)
        if refusal is not None or name is None or base is None or isinstance(base, str):
            reason, message = refusal or ("SamplingDeploymentNotFound", "")
            # the pod refuses samples at once, saying why (instead of waiting for weights in vain)
            unavailable: Obj = {"deployment": name, "problem": message}
            try:
                podhttp.request(base_url + SAMPLING_TARGETS_PATH, unavailable, timeout=5.0, headers=headers)
            except podhttp.PodHTTPError as exc:
                log.info("cannot tell session %s/%s: %s", ns, session.metadata.name, exc)
            return SamplingState(False, reason, message, previous)
        try:
            answer = json.loads(
                podhttp.request(base_url + SAMPLER_WEIGHTS_PATH, timeout=5.0, headers=headers)
            )
            records = answer.get("samplerWeights") if isinstance(answer, dict) else None
            if not isinstance(records, list):
                raise ValueError("no samplerWeights list")
        except (podhttp.PodHTTPError, ValueError) as exc:
            return SamplingState(
                None,
                "SessionUnreachable",
                f"cannot read the session's sampler weights: {exc}",
                previous,
                True,
            )

        replicas = serving_replicas(
            self.kube.list_pods(ns, ",".join(f"{k}={v}" for k, v in server_selector_labels(name).items())), ""
        )
        ip_of = {r.pod: r.ip for r in replicas}
        known = {s.path: s for s in previous}
        problems: list[str] = []
        adapters: dict[str, Obj] = {}
        pending: dict[str, str] = {}
        for record in records[:MAX_SAMPLERS]:
            path = record.get("path") if isinstance(record, dict) else None
            if not isinstance(path, str):
                continue
            model_name = sampler_model_name(session.metadata.name, path)
            refused = self._register(session, base, record, path, model_name)
            if refused is not None:
                problems.append(refused)
                continue
            known[path] = SamplerModel(path=path, model=model_name, served=False)
        for path, sampler in list(known.items()):
            lora_raw = self.kube.get("deployments", ns, sampler.model)
            lora = try_parse(Deployment, lora_raw) if lora_raw is not None else None
            urls = []
            if not isinstance(lora, str) and lora is not None and lora.status.phase in ("READY", "UPDATING"):
                urls = [
                    f"{podhttp.pod_base_url(ip_of[r.pod], SERVER_PORT)}"
                    for r in lora.status.replicas
                    if r.pod in ip_of and sampler.model in r.adapters
                ]
            if urls:
                adapters[path] = {"model": sampler.model, "urls": urls}
            else:
                why = (lora.status.message if not isinstance(lora, str) and lora is not None else None) or (
                    f"waiting for Deployment {sampler.model} to load the adapter onto {name}"
                )
                pending[path] = why[:500]
            known[path] = sampler.model_copy(update={"served": bool(urls)})
        # vLLM answers for the base model on every serving replica (adapters still loading or not)
        base_urls = [podhttp.pod_base_url(r.ip, SERVER_PORT) for r in replicas]
        targets: Obj = {
            "deployment": name,
            "base": {"model": base.status.served_model_name or base.spec.model, "urls": base_urls}
            if base_urls
            else None,
            "adapters": adapters,
            "pending": pending,
        }
        samplers = sorted(known.values(), key=lambda s: s.path)[:MAX_SAMPLERS]
        try:
            podhttp.request(base_url + SAMPLING_TARGETS_PATH, targets, timeout=5.0, headers=headers)
        except podhttp.PodHTTPError as exc:
            return SamplingState(
                None,
                "SessionUnreachable",
                f"cannot tell the session where vLLM serves: {exc}",
                samplers,
                True,
            )
        if problems:
            return SamplingState(
                False, "SamplerWeightsRefused", "; ".join(problems)[:2000], samplers, bool(pending)
            )
        if not base_urls:
            return SamplingState(
                False, "SamplingDeploymentNotReady", f"Deployment {name} has no ready replica", samplers, True
            )
        if pending:
            waiting = ", ".join(known[p].model for p in sorted(pending))
            return SamplingState(
                False, "LoadingSamplerWeights", f"loading {waiting} onto {name}"[:2000], samplers, True
            )
        served = sum(1 for s in samplers if s.served)
        return SamplingState(
            True,
            "Serving",
            f"Deployment {name} serves the base model and {served} sampler weight(s) on {len(base_urls)} replica(s)",
            samplers,
        )

    def _register(
        self, session: TrainingSession, base: Deployment, record: dict[str, Any], path: str, model_name: str
    ) -> str | None:
        """Create the Model and the on-demand-lora Deployment of sampler weights (both once);
        a problem message when the record or an existing object of that name does not fit."""
        ns = session.metadata.namespace
        location = expected_location(session, path)
        if location is None or record.get("location") != location:
            return f"{path}: not a sampler weights path of this session under spec.stateLocation"
        lineage = (
            "sha256:"
            + hashlib.sha256(
                json.dumps({"session": session.metadata.uid, "path": path, "location": location}).encode()
            ).hexdigest()
        )
        annotations = {
            ANNOTATION_SESSION_UID: session.metadata.uid,
            ANNOTATION_SAMPLER_PATH: path,
            naming.ANNOTATION_LINEAGE: lineage,
        }
        labels = naming.labels("checkpoint", **{naming.LABEL_SESSION: session.metadata.name})
        steps = record.get("steps")
        body = {
            "apiVersion": API_VERSION,
            "kind": "Model",
            "metadata": {"name": model_name, "namespace": ns, "labels": labels, "annotations": annotations},
            "spec": {
                "kind": "lora",
                "location": location,
                "serviceAccountName": session.spec.service_account_name,
                "baseModel": session.spec.base_model,
                "lora": record.get("lora"),
                "canary": record.get("canary"),
                "files": record.get("files") or [],
                "metrics": {"optimizerSteps": str(steps)} if isinstance(steps, int) else {},
            },
        }
        model = try_parse(Model, body)
        if isinstance(model, str):
            return f"{path}: the session's record does not make a valid Model: {model}"
        created = self.kube.get("models", ns, model_name) or self.kube.create("models", ns, body)[0]
        if (created["metadata"].get("annotations") or {}).get(ANNOTATION_SESSION_UID) != session.metadata.uid:
            return f"{path}: Model {model_name} exists and was not registered by this session"
        if (created.get("status") or {}).get("phase") != "READY":
            now = self.clock()
            gen = created["metadata"].get("generation", 1)
            self.kube.patch_status(
                "models",
                ns,
                model_name,
                {
                    "phase": "READY",
                    "observedGeneration": gen,
                    "conditions": [
                        c.to_wire()
                        for c in set_condition(
                            [],
                            "Ready",
                            True,
                            "Registered",
                            f"registered by TrainingSession {session.metadata.name} ({path})",
                            gen,
                            now,
                        )
                    ],
                },
            )
        lora = {
            "apiVersion": API_VERSION,
            "kind": "Deployment",
            "metadata": {
                "name": model_name,
                "namespace": ns,
                "labels": labels,
                "annotations": {ANNOTATION_SAMPLER_PATH: path},
                "ownerReferences": [owner_reference(session)],
            },
            "spec": {
                "model": model_name,
                "deploymentType": "on-demand-lora",
                "baseDeployment": base.metadata.name,
                "accelerator": base.spec.accelerator.to_wire(),
                "serviceAccountName": base.spec.service_account_name,
            },
        }
        try:
            existing = (
                self.kube.get("deployments", ns, model_name) or self.kube.create("deployments", ns, lora)[0]
            )
        except ApiException as exc:
            if exc.status == 422:
                return f"{path}: the API server refused Deployment {model_name}: {exc.reason}"
            raise
        owners = existing["metadata"].get("ownerReferences") or []
        if not any(o.get("uid") == session.metadata.uid for o in owners):
            return f"{path}: Deployment {model_name} exists and is not this session's"
        return None
