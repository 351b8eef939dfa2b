"""Model: a base model or checkpoint location.

A base Model is READY only once a check Job (`python -m rft.pods.check_model`, under the Model's
ServiceAccount: the operator cannot read buckets) has read its folder, found a model a server can
load, and reported its files' digests; they are pinned in the status, and every pod that fetches
the model later refuses files that differ. A LoRA Model is registered by the ReinforcementStep that
trained it (its files and digests are in its spec) or by hand; it is READY once its base Model
exists.
"""

from __future__ import annotations

from datetime import datetime

from rft.api import Model, ModelStatus
from rft.contracts.model_check import CHECK_CONTAINER, ModelCheckSummary

from rft_operator import naming
from rft_operator.builders.jobs import build_model_check_job
from rft_operator.conditions import set_condition
from rft_operator.config import OperatorConfig
from rft_operator.jobstate import job_state, owned_by, termination_message
from rft_operator.kube import Kube, Obj
from rft_operator.podtrouble import pod_trouble
from rft_operator.policy import WorkloadPolicy
from rft_operator.reconcilers.base import Clock, Reconciler, utcnow

STEP_REGISTRATION_GRACE = 30.0
"""A Model a ReinforcementStep registers gets its status from that step (one writer, one write);
this reconciler writes it only if the step has not within this many seconds (deleted meanwhile)."""


class ModelReconciler(Reconciler):
    plural = "models"

    def __init__(self, kube: Kube, config: OperatorConfig, clock: Clock = utcnow) -> None:
        super().__init__(kube, clock)
        self.config = config
        self.policy = WorkloadPolicy(config)

    def sync(self, namespace: str, name: str) -> float | None:
        raw = self.kube.get(self.plural, namespace, name)
        if raw is None:
            return None
        model = self.parse_or_fail(Model, raw)
        if model is None:
            return None
        gen = model.metadata.generation
        if model.status.observed_generation == gen and model.status.phase in ("READY", "FAILED"):
            return None
        if model.spec.kind == "base":
            return self._check_base(raw, model)
        if model.status.phase is None and model.metadata.annotations.get(naming.ANNOTATION_STEP_UID):
            created = raw["metadata"].get("creationTimestamp")
            if created:
                waited = (
                    self.clock() - datetime.fromisoformat(created.replace("Z", "+00:00"))
                ).total_seconds()
                if waited < STEP_REGISTRATION_GRACE:
                    return STEP_REGISTRATION_GRACE - waited
        status = model.status.model_copy(deep=True)
        ready, reason, message = True, "Registered", f"{model.spec.kind} model at {model.spec.location}"
        if model.spec.base_model and self.kube.get(self.plural, namespace, model.spec.base_model) is None:
            ready, reason, message = (
                False,
                "BaseModelNotFound",
                f"base Model {model.spec.base_model} does not exist",
            )
        status.phase = "READY" if ready else "FAILED"
        status.observed_generation = gen
        status.conditions = set_condition(
            status.conditions, "Ready", ready, reason, message, gen, self.clock()
        )
        self.write_phase(raw, model.status, status)
        return None if ready else 30.0

    # --- base models: checked by a Job, pinned by digest ---------------------------------------------
    def _check_base(self, raw: Obj, model: Model) -> float | None:
        ns, gen = model.metadata.namespace, model.metadata.generation
        job_name = naming.model_check_job_name(model.metadata.name, gen)
        status = model.status.model_copy(deep=True)
        job = self.kube.get_job(ns, job_name)
        if job is None:
            now = self.clock()
            refusal = self.policy.check(self.kube, raw, now, service_account=model.spec.service_account_name)
            if refusal is not None:  # nothing of an earlier generation stays pinned
                status = ModelStatus(
                    conditions=status.conditions, phase="FAILED" if refusal.permanent else "CHECKING"
                )
                status.observed_generation = gen
                status.conditions = set_condition(
                    status.conditions,
                    "Ready",
                    False if refusal.permanent else None,
                    refusal.reason,
                    refusal.message,
                    gen,
                    now,
                )
                self.write_phase(raw, model.status, status)
                return None if refusal.permanent else self.config.poll_seconds
            if not self.create_job_or_fail(raw, ns, build_model_check_job(model, self.config)):
                return None
            status = ModelStatus(conditions=status.conditions, phase="CHECKING", check_job=job_name)
            status.observed_generation = gen
            message = f"Job {job_name} checks the files at {model.spec.location}"
            status.conditions = set_condition(
                status.conditions, "Ready", None, "Checking", message, gen, self.clock()
            )
            self.write_phase(raw, model.status, status)
            return self.config.poll_seconds
        # Only the Job's own pods speak for it: a pod that merely carries its label does not.
        pods = [
            p for p in self.kube.list_pods(ns, f"batch.kubernetes.io/job-name={job_name}") if owned_by(p, job)
        ]
        state = job_state(job, pods)
        if state.outcome is None:
            trouble = pod_trouble(pods)
            if trouble is not None and trouble.overdue(
                self.clock(), self.config.stuck_pod_seconds, self.config.unschedulable_seconds
            ):
                self.kube.delete_job(ns, job_name)
                self.fail_raw(raw, trouble.reason, f"Job {job_name} cannot run: {trouble.message}")
                return None
            reason, message = (
                (trouble.reason, f"Job {job_name} cannot run: {trouble.message}")
                if trouble is not None
                else ("Checking", f"Job {job_name} checks the files at {model.spec.location}")
            )
            status.conditions = set_condition(
                status.conditions, "Ready", None, reason, message, gen, self.clock()
            )
            self.write_phase(raw, model.status, status)
            return self.config.poll_seconds
        text, _ = termination_message(pods, CHECK_CONTAINER, succeeded=state.outcome == "complete")
        summary = ModelCheckSummary.parse(text)
        status.observed_generation = gen
        status.check_job = job_name
        if state.outcome == "complete" and summary is not None and summary.ok and summary.files_digest:
            status.phase = "READY"
            status.format = summary.format
            status.architecture = summary.architecture
            status.parameters = summary.parameters
            status.dtype = summary.dtype
            status.file_count = summary.file_count
            status.total_bytes = summary.total_bytes
            status.files_digest = summary.files_digest
            status.files = list(summary.files or [])
            ready, reason, message = True, "Checked", summary.message
        else:
            status.phase = "FAILED"
            ready = False
            if summary is not None and not summary.ok:
                reason, message = summary.reason, summary.message
            else:
                reason = "CheckJobFailed"
                message = (text or state.message or state.reason or f"Job {job_name} failed").strip()[-1024:]
        status.conditions = set_condition(
            status.conditions, "Ready", ready, reason, message, gen, self.clock()
        )
        self.write_phase(raw, model.status, status)
        return None


def base_model_unusable(base: Model) -> tuple[bool, str] | None:
    """None when the base Model's files are checked and pinned (READY for its current generation);
    else (permanent, why): permanent when its check FAILED, else the check has not finished."""
    ready = next((c for c in base.status.conditions if c.type == "Ready"), None)
    detail = f": {ready.message}" if ready and ready.message else ""
    if base.status.observed_generation == base.metadata.generation:
        if base.status.phase == "READY" and base.status.files_digest:
            return None
        if base.status.phase == "FAILED":
            return True, f"base Model {base.metadata.name} failed its check{detail}"
    return False, f"waiting for base Model {base.metadata.name} to be checked{detail}"
