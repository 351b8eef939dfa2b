"""Deployment: serve a base model on its own replicas, or load a LoRA checkpoint onto a base.

`on-demand` (and `serverless`/`auto`, served the same way on a cluster) renders an apps/v1
Deployment and a ClusterIP Service. `on-demand-lora` creates no pods: the adapter is loaded under
the checkpoint's name onto every ready replica of the base Deployment, re-loaded when a replica
restarts (the reconcile polls), and unloaded when the lora Deployment is deleted (a finalizer
holds the object until then).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException
from rft import canary
from rft.api import GROUP, Deployment, DeploymentStatus, Model
from rft.api.deployment import ColdStart, LoadedAdapters
from rft.api.rules import adapter_on_base_problems
from rft.contracts.vllm_args import training_dtype

from rft_operator.accelerators import AcceleratorMap, UnknownAcceleratorError
from rft_operator.adapters import (
    AdapterAdminError,
    canary_logprobs,
    load_adapter,
    served_models,
    server_metrics,
    unload_adapter,
)
from rft_operator.admintoken import AdminTokens
from rft_operator.autoscale import Load, ScaleState, decide, requests_in_flight
from rft_operator.builders.serving import (
    ADAPTER_ADMIN_PORT,
    ADAPTERS_GATE,
    FETCH_CONTAINER,
    SERVER_CONTAINER,
    build_server_deployment,
    build_server_service,
    endpoint,
    selector_labels,
)
from rft_operator.coldstart import cold_start
from rft_operator.coldstart import describe as describe_cold_start
from rft_operator.conditions import set_condition
from rft_operator.config import OperatorConfig
from rft_operator.kube import Children, ForeignObjectError, Kube, Obj
from rft_operator.podtrouble import PodTrouble, pod_trouble
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

log = logging.getLogger(__name__)

UNLOAD_FINALIZER = f"{GROUP}/unload-adapter"
READY_REFRESH_SECONDS = 30.0


@dataclass(frozen=True)
class Replica:
    pod: str
    ip: str
    # The admin token of the Deployment the pod serves (rft_operator.admintoken).
    token: str


class DeploymentReconciler(Reconciler):
    plural = "deployments"

    def __init__(
        self,
        kube: Kube,
        config: OperatorConfig,
        accelerators: AcceleratorMap,
        tokens: AdminTokens,
        clock: Clock = utcnow,
    ) -> None:
        super().__init__(kube, clock)
        self.config = config
        self.tokens = tokens
        self.accelerators = accelerators
        self.children = Children(kube)
        self.policy = WorkloadPolicy(config)
        # (pod, adapter, Model uid) reloaded after a canary mismatch, until it matches again.
        self._reloaded: set[tuple[str, str, str]] = set()

    def sync(self, namespace: str, name: str) -> float | None:
        raw = self.kube.get(self.plural, namespace, name)
        if raw is None:
            return None
        dep = self.parse_or_fail(Deployment, raw)
        if dep is None:
            return None
        if dep.spec.deployment_type == "on-demand-lora":
            if dep.metadata.deletion_timestamp:
                return self._delete_lora(raw, dep)
            return self._sync_lora(raw, dep)
        if dep.metadata.deletion_timestamp:
            return None
        return self._sync_base(raw, dep)

    # --- on-demand: pods of our own ---------------------------------------------------------------
    def _sync_base(self, raw: Obj, dep: Deployment) -> float | None:
        ns = dep.metadata.namespace
        refusal = self.policy.check(
            self.kube,
            raw,
            self.clock(),
            service_account=dep.spec.service_account_name,
            images={"spec.image": dep.spec.image},
        )
        if refusal is not None:  # before any server pod exists, or is changed to run this
            if refusal.permanent:
                return self._status(raw, dep, "FAILED", False, refusal.reason, refusal.message)
            return self._status(raw, dep, "CREATING", False, refusal.reason, refusal.message)
        model_raw = self.kube.get("models", ns, dep.spec.model)
        if model_raw is None:
            return self._status(
                raw, dep, "CREATING", False, "ModelNotFound", f"waiting for Model {dep.spec.model} to exist"
            )
        model = try_parse(Model, model_raw)
        if isinstance(model, str):
            return self._status(
                raw,
                dep,
                "FAILED",
                False,
                "ModelInvalid",
                f"spec.model: Model {dep.spec.model} is invalid: {model}",
            )
        if model.spec.kind != "base":
            return self._status(
                raw,
                dep,
                "FAILED",
                False,
                "NotABaseModel",
                f"Model {model.metadata.name} is a LoRA checkpoint: serve it with deploymentType on-demand-lora "
                f"and baseDeployment naming a Deployment of {model.spec.base_model}",
            )
        if unusable := base_model_unusable(model):
            permanent, why = unusable
            if permanent:
                return self._status(raw, dep, "FAILED", False, "ModelFailed", why)
            return self._status(raw, dep, "CREATING", False, "ModelNotReady", why)
        pods = self.kube.list_pods(ns, self._selector(dep.metadata.name))
        wanted = self._scale(raw, dep, pods)
        try:
            manifest = build_server_deployment(
                dep,
                model,
                self.accelerators,
                self.config,
                replicas=wanted,
                admin_token_sha256=self.tokens.token_sha256(*self._identity(dep)),
            )
        except UnknownAcceleratorError as exc:
            return self._status(raw, dep, "FAILED", False, "UnknownAccelerator", str(exc))
        try:
            self.children.ensure_service(build_server_service(dep))
            apps = self.children.ensure_deployment(manifest)
        except ApiException as exc:
            if exc.status != 422:
                raise
            message = f"the API server refused a server child of {dep.metadata.name}: {refused_message(exc)}"
            return self._status(raw, dep, "FAILED", False, CHILD_REFUSED_REASON, message)
        except ForeignObjectError as exc:
            if exc.previous:
                return self._status(raw, dep, "CREATING", False, "PreviousChildrenTerminating", str(exc))
            return self._status(raw, dep, "FAILED", False, "ChildExists", str(exc))

        st = apps.get("status", {})
        ready = int(st.get("readyReplicas", 0) or 0)
        stalled = any(
            c.get("type") == "Progressing"
            and c.get("status") == "False"
            and c.get("reason") == "ProgressDeadlineExceeded"
            for c in st.get("conditions", []) or []
        )
        rolled_out = (
            st.get("observedGeneration", 0) >= apps["metadata"].get("generation", 0)
            and int(st.get("updatedReplicas", 0) or 0) >= wanted
        )
        replicas = self._adapters_per_replica(self._replicas(dep, pods), model.metadata.name)
        if dep.spec.enable_lora:
            self._open_gates(dep, pods, replicas)
        updates: dict[str, Any] = {
            "endpoint": endpoint(dep),
            "served_model_name": model.metadata.name,
            "ready_replicas": ready,
            "replicas": replicas,
        }
        if (cold := self._newest_cold_start(raw, dep, pods)) is not None:
            updates["last_cold_start"] = cold
        if stalled:
            return self._status(
                raw,
                dep,
                "FAILED",
                False,
                "ProgressDeadlineExceeded",
                "server pods did not become ready in time; see the pods' events",
                **updates,
            )
        if ready >= max(wanted, 1) or (wanted == 0 and rolled_out):
            if not rolled_out:
                return self._status(
                    raw,
                    dep,
                    "UPDATING",
                    True,
                    "RollingOut",
                    f"{ready} ready, new replicas rolling out",
                    **updates,
                )
            self._status(
                raw,
                dep,
                "READY",
                True,
                "Serving",
                f"{ready}/{wanted} replicas serve {model.metadata.name}",
                **updates,
            )
            # An autoscaled Deployment reads its load at every poll.
            return self.config.poll_seconds if self._autoscaled(dep) else READY_REFRESH_SECONDS
        trouble = pod_trouble(pods)
        if ready >= 1:
            # Serving, with fewer replicas than wanted (scaling up, or a replica lost): its
            # adapters stay served, and go onto the new replicas as they come.
            waiting = f"; {trouble.message}" if trouble is not None else ""
            return self._status(
                raw,
                dep,
                "UPDATING",
                True,
                "ScalingUp",
                f"{ready}/{wanted} replicas ready{waiting}",
                **updates,
            )
        if trouble is not None and trouble.overdue(
            self.clock(), self.config.stuck_pod_seconds, self.config.unschedulable_seconds
        ):
            # Creating forever helps nobody: FAILED with the reason (it recovers if the pods do).
            return self._status(
                raw, dep, "FAILED", False, trouble.reason, self._stuck_message(dep, trouble), **updates
            )
        if trouble is not None:
            return self._status(
                raw,
                dep,
                "CREATING",
                False,
                trouble.reason,
                f"{ready}/{wanted} replicas ready; {trouble.message}",
                **updates,
            )
        return self._status(
            raw, dep, "CREATING", False, "ReplicasNotReady", f"{ready}/{wanted} replicas ready", **updates
        )

    def _newest_cold_start(self, raw: Obj, dep: Deployment, pods: list[Obj]) -> ColdStart | None:
        """The replica that became Ready last; a Normal Event `ReplicaReady` says where its time went."""
        colds = [c for pod in pods if (c := cold_start(pod, FETCH_CONTAINER, SERVER_CONTAINER)) is not None]
        if not colds:
            return None
        newest = max(colds, key=lambda c: c.ready_at)
        known = dep.status.last_cold_start
        if known is None or (known.pod, known.ready_at) != (newest.pod, newest.ready_at):
            message = describe_cold_start(newest)
            self.kube.record_event(raw, "Normal", "ReplicaReady", message)
            log.info("deployment %s/%s: %s", dep.metadata.namespace, dep.metadata.name, message)
        return newest

    def _stuck_message(self, dep: Deployment, trouble: PodTrouble) -> str:
        """Why stuck server pods failed the Deployment, naming the spec field behind it."""
        if trouble.image:
            field = (
                f"spec.image {dep.spec.image}"
                if dep.spec.image
                else f"the operator's server image for {dep.spec.accelerator.type}"
            )
            return f"{field} cannot be pulled: {trouble.message}"
        if trouble.reason == "Unschedulable":
            acc = dep.spec.accelerator
            return (
                f"spec.accelerator ({acc.count} x {acc.type}): no node fits a server pod: {trouble.message}"
            )
        return f"server pods cannot start: {trouble.message}"

    @staticmethod
    def _autoscaled(dep: Deployment) -> bool:
        return dep.spec.min_replica_count < dep.spec.max_replica_count

    def _scale(self, raw: Obj, dep: Deployment, pods: list[Obj]) -> int:
        """The replicas to run (`rft_operator.autoscale`): the decision is written to status (and
        a change recorded as an Event `Scaled`) before the apps/v1 Deployment follows it."""
        spec, status = dep.spec, dep.status
        policy = spec.autoscaling
        previous = (
            ScaleState(status.desired_replicas, status.scale_down_pending_since, status.scale_down_pending_to)
            if status.desired_replicas is not None
            else None
        )
        load = self._load(self._replicas(dep, pods)) if self._autoscaled(dep) else None
        decision = decide(
            previous,
            lowest=spec.min_replica_count,
            highest=spec.max_replica_count,
            target=policy.target_requests_per_replica,
            delay_seconds=policy.scale_down_delay_seconds,
            load=load,
            now=self.clock(),
        )
        state = decision.state
        new_status = status.model_copy(
            update={
                "desired_replicas": state.desired,
                "scale_down_pending_since": state.pending_since,
                "scale_down_pending_to": state.pending_to,
            }
        )
        self.write_status(raw, status, new_status)
        dep.status = new_status
        if previous is not None and state.desired != previous.desired:
            message = f"scaled from {previous.desired} to {state.desired}: {decision.reason}"
            log.info("deployment %s/%s %s", dep.metadata.namespace, dep.metadata.name, message)
            self.kube.record_event(raw, "Normal", "Scaled", message)
        return state.desired

    def _load(self, replicas: list[Replica]) -> Load:
        """Requests in flight on the serving replicas (vLLM's gauges through each sidecar); a
        replica the operator may not contact, or that does not answer, counts as unread."""
        in_flight, unread = 0.0, 0
        for replica in replicas:
            if not may_poll(replica.ip, self.config.progress_poll):
                unread += 1
                continue
            try:
                in_flight += requests_in_flight(
                    server_metrics(replica.ip, ADAPTER_ADMIN_PORT, token=replica.token)
                )
            except (AdapterAdminError, ValueError) as exc:
                log.info("no load from %s: %s", replica.pod, exc)
                unread += 1
        return Load(in_flight, unread)

    # --- on-demand-lora: an adapter on someone else's pods ----------------------------------------
    def _sync_lora(self, raw: Obj, dep: Deployment) -> float | None:
        ns = dep.metadata.namespace
        if UNLOAD_FINALIZER not in (raw["metadata"].get("finalizers") or []):
            updated = self.kube.set_finalizers(
                self.plural,
                ns,
                dep.metadata.name,
                [*(raw["metadata"].get("finalizers") or []), UNLOAD_FINALIZER],
                raw["metadata"]["resourceVersion"],
            )
            raw["metadata"] = updated["metadata"]
        model_raw = self.kube.get("models", ns, dep.spec.model)
        if model_raw is None:
            return self._status(
                raw, dep, "CREATING", False, "ModelNotFound", f"waiting for Model {dep.spec.model} to exist"
            )
        model = try_parse(Model, model_raw)
        if isinstance(model, str):
            return self._status(
                raw,
                dep,
                "FAILED",
                False,
                "ModelInvalid",
                f"spec.model: Model {dep.spec.model} is invalid: {model}",
            )
        if model.spec.kind != "lora" or model.spec.lora is None:
            return self._status(
                raw,
                dep,
                "FAILED",
                False,
                "NotALoraModel",
                f"Model {model.metadata.name} is a base model: serve it with deploymentType on-demand",
            )
        base_name = dep.spec.base_deployment or ""
        base_raw = self.kube.get(self.plural, ns, base_name)
        if base_raw is None:
            return self._status(
                raw,
                dep,
                "CREATING",
                False,
                "BaseDeploymentNotFound",
                f"waiting for base Deployment {base_name} to exist",
            )
        base = try_parse(Deployment, base_raw)
        if isinstance(base, str):
            message = f"spec.baseDeployment: Deployment {base_name} is invalid: {base}"
            return self._status(raw, dep, "FAILED", False, "BaseDeploymentInvalid", message)
        problem = _incompatibility(base, model)
        if problem:
            return self._status(raw, dep, "FAILED", False, "IncompatibleBase", problem)
        common: dict[str, Any] = {
            "endpoint": base.status.endpoint,
            "served_model_name": model.metadata.name,
        }
        if base.status.phase not in ("READY", "UPDATING"):
            return self._status(
                raw,
                dep,
                "CREATING",
                False,
                "BaseNotReady",
                f"waiting for base Deployment {base_name} to be READY",
                **common,
            )
        replicas = self._serving_replicas(base)
        loaded: list[LoadedAdapters] = []
        errors: list[str] = []
        mismatched: list[str] = []
        checks: list[canary.CanaryCheck] = []
        served_dtype = training_dtype(base.spec.accelerator.type)  # the base serves with --dtype this
        for replica in replicas:
            if not may_poll(replica.ip, self.config.progress_poll):
                errors.append(
                    f"{replica.pod}: the operator may not contact pod {replica.ip} (progressPoll={self.config.progress_poll})"
                )
                continue
            try:
                models = self._ensure_loaded(replica, model)
                check = self._canary_check(replica, model, served_dtype)
                reload_key = (replica.pod, model.metadata.name, model.metadata.uid)
                if check is not None and not check.matches and reload_key not in self._reloaded:
                    # Other weights under this name (stale, swapped, half-loaded): load it again,
                    # once; a mismatch that survives a reload is reported, not reloaded forever.
                    self._reloaded.add(reload_key)
                    self.kube.record_event(
                        raw, "Warning", "AdapterMismatch", f"{replica.pod}: {check.describe()}; reloading"
                    )
                    log.warning(
                        "%s serves other weights as %s: %s",
                        replica.pod,
                        model.metadata.name,
                        check.describe(),
                    )
                    # In place: fetched afresh and swapped in, so the name never answers 404.
                    load_adapter(
                        replica.ip,
                        ADAPTER_ADMIN_PORT,
                        model.metadata.name,
                        model.spec.location,
                        in_place=True,
                        token=replica.token,
                    )
                    models = self._ensure_loaded(replica, model)
                    check = self._canary_check(replica, model, served_dtype)
                if check is not None:
                    checks.append(check)
                    if not check.matches:
                        mismatched.append(
                            f"{replica.pod}: {check.describe()} after reloading from {model.spec.location}"
                        )
                        continue
                    self._reloaded.discard(reload_key)
                loaded.append(LoadedAdapters(pod=replica.pod, adapters=sorted(models - {base.spec.model})))
            except AdapterAdminError as exc:
                errors.append(f"{replica.pod}: {exc}")
        common["ready_replicas"] = len(loaded)
        common["replicas"] = loaded
        verified = self._verification(model, mismatched, checks, served_dtype)
        if mismatched or errors:
            phase = "UPDATING" if loaded else "CREATING"
            reason = "AdapterMismatch" if mismatched else "LoadFailed"
            message = "; ".join([*mismatched, *errors])[:2000]
            self._status(raw, dep, phase, bool(loaded), reason, message, verified=verified, **common)
            return self.config.poll_seconds
        if not loaded:
            return self._status(
                raw,
                dep,
                "CREATING",
                False,
                "NoReadyReplicas",
                f"base Deployment {base_name} has no ready replica",
                **common,
            )
        self._status(
            raw,
            dep,
            "READY",
            True,
            "AdapterLoaded",
            f"{model.metadata.name} loaded on {len(loaded)} replica(s) of {base_name}",
            verified=verified,
            **common,
        )
        return self.config.poll_seconds

    def _ensure_loaded(self, replica: Replica, model: Model) -> set[str]:
        """The models `replica` serves, after loading `model` onto it if it was not."""
        models = served_models(replica.ip, ADAPTER_ADMIN_PORT, token=replica.token)
        if model.metadata.name not in models:
            log.info("loading adapter %s onto %s (%s)", model.metadata.name, replica.pod, replica.ip)
            load_adapter(
                replica.ip, ADAPTER_ADMIN_PORT, model.metadata.name, model.spec.location, token=replica.token
            )
            models = served_models(replica.ip, ADAPTER_ADMIN_PORT, token=replica.token)
        return models

    @staticmethod
    def _canary_check(replica: Replica, model: Model, served_dtype: str) -> canary.CanaryCheck | None:
        """How the replica's canary logprobs compare with the checkpoint's; None without a canary."""
        if model.spec.canary is None:
            return None
        served = canary_logprobs(
            replica.ip, ADAPTER_ADMIN_PORT, model.metadata.name, model.spec.canary, token=replica.token
        )
        return canary.check(model.spec.canary, served, served_dtype)

    @staticmethod
    def _verification(
        model: Model, mismatched: list[str], checks: list[canary.CanaryCheck], served_dtype: str
    ) -> tuple[bool, str, str]:
        """The AdapterVerified condition: (status, reason, message)."""
        record = model.spec.canary
        if mismatched:
            return False, "AdapterMismatch", "; ".join(mismatched)[:2000]
        if record is None:
            return (
                False,
                "NoCanary",
                f"Model {model.metadata.name} records no canary: replicas are not checked",
            )
        tolerance = canary.tolerance(record, served_dtype)
        if float(record.start_distance) <= tolerance:
            return (
                False,
                "Unverifiable",
                f"the checkpoint moved {record.start_distance} on the canary from where training "
                f"started, within the tolerance {tolerance:g}: a replica serving the old weights "
                "would pass",
            )
        largest = max((c.difference for c in checks), default=0.0)
        return (
            True,
            "CanaryMatched",
            f"every ready replica matches the canary: mean relative logprob difference at most {largest:.3g} "
            f"(tolerance {tolerance:g})",
        )

    def _delete_lora(self, raw: Obj, dep: Deployment) -> float | None:
        finalizers = raw["metadata"].get("finalizers") or []
        if UNLOAD_FINALIZER not in finalizers:
            return None
        self._status(raw, dep, "DELETING", False, "Unloading", "unloading the adapter from the base replicas")
        base_raw = self.kube.get(self.plural, dep.metadata.namespace, dep.spec.base_deployment or "")
        if base_raw is not None:
            base = Deployment.model_validate(base_raw)
            for replica in self._serving_replicas(base):
                if not may_poll(replica.ip, self.config.progress_poll):
                    continue
                try:
                    if dep.spec.model in served_models(replica.ip, ADAPTER_ADMIN_PORT, token=replica.token):
                        unload_adapter(replica.ip, ADAPTER_ADMIN_PORT, dep.spec.model, token=replica.token)
                except AdapterAdminError as exc:
                    log.warning("could not unload %s from %s: %s", dep.spec.model, replica.pod, exc)
        self.kube.set_finalizers(
            self.plural,
            dep.metadata.namespace,
            dep.metadata.name,
            [f for f in finalizers if f != UNLOAD_FINALIZER],
            raw["metadata"]["resourceVersion"],
        )
        return None

    # --- helpers ------------------------------------------------------------------------------------
    @staticmethod
    def _selector(deployment: str) -> str:
        return ",".join(f"{k}={v}" for k, v in selector_labels(deployment).items())

    @staticmethod
    def _identity(dep: Deployment) -> tuple[str, str, str]:
        return dep.metadata.namespace, dep.metadata.name, dep.metadata.uid

    def _replicas(self, dep: Deployment, pods: list[Obj]) -> list[Replica]:
        """`dep`'s serving pods among `pods`, with `dep`'s admin token."""
        return serving_replicas(pods, self.tokens.token(*self._identity(dep)))

    def _serving_replicas(self, base: Deployment) -> list[Replica]:
        return self._replicas(
            base, self.kube.list_pods(base.metadata.namespace, self._selector(base.metadata.name))
        )

    def _open_gates(self, dep: Deployment, pods: list[Obj], replicas: list[LoadedAdapters]) -> None:
        """Set each serving pod's ADAPTERS_GATE: True once it serves, loaded and verified, every
        adapter that is served on this Deployment (its on-demand-lora Deployments loaded on some
        replica already; one that is loaded nowhere holds no replica back)."""
        ns = dep.metadata.namespace
        served_here = [
            lora
            for obj in self.kube.list_objects(self.plural, ns)
            if obj["spec"].get("baseDeployment") == dep.metadata.name
            and obj["spec"].get("deploymentType") == "on-demand-lora"
            and not obj["metadata"].get("deletionTimestamp")
            and (obj.get("status") or {}).get("replicas")
            and not isinstance(lora := try_parse(Deployment, obj), str)
        ]
        on_pod = {r.pod: set(r.adapters) for r in replicas}
        by_name = {p["metadata"]["name"]: p for p in pods}
        for pod_name, adapters in on_pod.items():
            missing = sorted(
                lora.spec.model
                for lora in served_here
                if lora.spec.model not in adapters or pod_name not in {r.pod for r in lora.status.replicas}
            )
            wanted = adapters_gate(not missing, missing)
            pod = by_name.get(pod_name) or {}
            current: Obj = next(
                (
                    c
                    for c in pod.get("status", {}).get("conditions", []) or []
                    if c.get("type") == ADAPTERS_GATE
                ),
                {},
            )
            if (current.get("status"), current.get("message", "")) != (wanted["status"], wanted["message"]):
                log.info("pod %s: %s %s", pod_name, ADAPTERS_GATE, wanted["status"])
                moment = self.clock().strftime("%Y-%m-%dT%H:%M:%SZ")
                self.kube.set_pod_condition(ns, pod_name, {**wanted, "lastTransitionTime": moment})

    def _adapters_per_replica(self, replicas: list[Replica], base_name: str) -> list[LoadedAdapters]:
        out = []
        for replica in replicas:
            adapters: list[str] = []
            if may_poll(replica.ip, self.config.progress_poll):
                try:
                    adapters = sorted(
                        served_models(replica.ip, ADAPTER_ADMIN_PORT, token=replica.token) - {base_name}
                    )
                except AdapterAdminError:
                    adapters = []
            out.append(LoadedAdapters(pod=replica.pod, adapters=adapters))
        return out

    def _status(
        self,
        raw: Obj,
        dep: Deployment,
        phase: str,
        ready: bool,
        reason: str,
        message: str,
        *,
        verified: tuple[bool, str, str] | None = None,
        **updates: Any,
    ) -> float | None:
        """Write the phase and the Ready condition (and, for adapters, AdapterVerified)."""
        gen = dep.metadata.generation
        status: DeploymentStatus = dep.status.model_copy(deep=True, update=updates)
        old_phase = status.phase
        status.phase = phase  # type: ignore[assignment]
        status.message = message
        status.observed_generation = gen
        now = self.clock()
        status.conditions = set_condition(status.conditions, "Ready", ready, reason, message, gen, now)
        if verified is not None:
            status.conditions = set_condition(status.conditions, "AdapterVerified", *verified, gen, now)
        if self.write_status(raw, dep.status, status) and phase != old_phase:
            self.kube.record_event(
                raw, "Warning" if phase == "FAILED" else "Normal", phase.capitalize(), message
            )
        dep.status = status
        if phase == "FAILED":
            return None
        return self.config.poll_seconds


def _incompatibility(base: Deployment, model: Model) -> str | None:
    """The first reason (`rft.api.rules.adapter_on_base_problems`) the checkpoint cannot be served
    on the base, in the words of the Deployment's condition."""
    problems = adapter_on_base_problems(base, model)
    if not problems:
        return None
    b = base.metadata.name
    rank = model.spec.lora.rank if model.spec.lora is not None else 0
    return {
        "base-is-adapter-deployment": f"baseDeployment {b} is itself on-demand-lora; name an on-demand Deployment",
        "lora-disabled": f"base Deployment {b} has enableLora: false",
        "other-base-model": f"checkpoint {model.metadata.name} adapts {model.spec.base_model}, but {b} serves {base.spec.model}",
        "rank-too-high": f"checkpoint rank {rank} exceeds maxLoraRank {base.spec.max_lora_rank} of {b}",
    }[problems[0]]


def _condition_true(pod: Obj, kind: str) -> bool:
    conditions = pod.get("status", {}).get("conditions", []) or []
    return any(c.get("type") == kind and c.get("status") == "True" for c in conditions)


def serving_replicas(pods: list[Obj], token: str) -> list[Replica]:
    """The server pods whose containers are ready (vLLM answers), with an address and not being
    deleted, by name. They may still wait for their adapters (ADAPTERS_GATE) before the pod is
    Ready and in the Service: adapters are loaded onto these."""
    out = []
    for pod in pods:
        status = pod.get("status", {})
        serving = _condition_true(pod, "ContainersReady") or _condition_true(pod, "Ready")
        if serving and status.get("podIP") and not pod["metadata"].get("deletionTimestamp"):
            out.append(Replica(pod["metadata"]["name"], status["podIP"], token))
    return sorted(out, key=lambda r: r.pod)


def adapters_gate(ready: bool, missing: list[str]) -> Obj:
    """The pod condition ADAPTERS_GATE: True, or False naming the adapters not yet loaded."""
    if ready:
        return {"type": ADAPTERS_GATE, "status": "True", "reason": "AdaptersLoaded", "message": ""}
    return {
        "type": ADAPTERS_GATE,
        "status": "False",
        "reason": "AdaptersLoading",
        "message": f"waiting for {', '.join(missing)} to be loaded and verified",
    }
