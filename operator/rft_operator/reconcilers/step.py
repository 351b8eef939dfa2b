"""ReinforcementStep: validate references, run exactly one training Job, register the Model.

Level-based: `sync` reads the step, its Job and pods, and the referenced objects, and moves the
status to where the world is. Running it twice, after a restart or on a stale event changes
nothing and never creates a second Job: the Job's name is deterministic, and a step whose Job
vanished fails instead of training again.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException
from rft.api import Dataset, Model, ReinforcementStep, ReinforcementStepStatus, StepPhase
from rft.api.reinforcement_step import TERMINAL_PHASES, StepProgress
from rft.api.rules import check_warm_start_from_model
from rft.contracts.trainer_config import TrainerFailure, TrainerResult, parse_termination_message

from rft_operator import naming
from rft_operator.accelerators import AcceleratorMap, UnknownAcceleratorError
from rft_operator.builders.jobs import (
    TRAINER_CONTAINER,
    build_rendezvous_service,
    build_training_job,
    default_output_location,
    trainer_config,
)
from rft_operator.conditions import set_condition
from rft_operator.config import OperatorConfig
from rft_operator.jobstate import JobState, job_state, owned_by, termination_message
from rft_operator.kube import Children, Kube, Obj
from rft_operator.metrics import METRICS
from rft_operator.podtrouble import PodTrouble, pod_trouble
from rft_operator.policy import WorkloadPolicy
from rft_operator.progress import fetch_progress, live_progress, may_poll
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


@dataclass(frozen=True)
class Ready:
    dataset: Dataset
    source: Model
    base: Model
    output_location: str


@dataclass(frozen=True)
class Wait:
    reason: str
    message: str


@dataclass(frozen=True)
class Refuse:
    reason: str
    message: str


@dataclass(frozen=True)
class AlreadyDone:
    model: Model


def lineage_digest(step: ReinforcementStep, dataset_digest: str | None) -> str:
    """What this very spec would produce: equal digests mean an identical training run."""
    spec = step.spec.to_wire()
    # Lifecycle and scheduling: they change when it runs, never what it trains. (queueName stays in:
    # Models already record digests that include it, and those must still match.)
    for field in (
        "suspend",
        "cancel",
        "ttlSecondsAfterFinished",
        "activeDeadlineSeconds",
        "backoffLimit",
        "priorityClass",
    ):
        spec.pop(field, None)
    payload = json.dumps({"spec": spec, "dataset": dataset_digest}, sort_keys=True)
    return "sha256:" + hashlib.sha256(payload.encode()).hexdigest()


# The wire names of the warm-start rule's fields, for the condition's message.
_WIRE = {
    "lora_rank": "loraRank",
    "learning_rate": "learningRate",
    "max_context_length": "maxContextLength",
    "batch_size": "batchSize",
}


def continuation_mismatches(step: ReinforcementStep, parent: Model) -> list[str]:
    """The warm-start rule (`rft.api.rules.check_warm_start`) in the words of the step's condition."""
    t = step.spec.training
    check = check_warm_start_from_model(
        parent,
        lora_rank=t.lora_rank,
        learning_rate=t.learning_rate,
        max_context_length=t.max_context_length,
        batch_size=t.batch_size,
    )
    name = parent.metadata.name
    out = [
        f"spec.training.{_WIRE[m.field]} is {m.child} but {name} was trained with {m.parent}"
        for m in check.mismatches
    ]
    if check.unrecorded:
        out.append(
            f"parent Model {name} records no training parameters (spec.training), so they cannot be "
            "shown equal; record the ones that trained it"
        )
    return out


class StepReconciler(Reconciler):
    plural = "reinforcementsteps"
    failed_phase = StepPhase.FAILED.value
    summary_condition = "Succeeded"

    def __init__(
        self, kube: Kube, config: OperatorConfig, accelerators: AcceleratorMap, clock: Clock = utcnow
    ) -> None:
        super().__init__(kube, clock)
        self.config = config
        self.accelerators = accelerators
        self.policy = WorkloadPolicy(config)

    # ---------------------------------------------------------------------------------------------
    def sync(self, namespace: str, name: str) -> float | None:
        raw = self.kube.get(self.plural, namespace, name)
        if raw is None:
            return None
        step = self.parse_or_fail(ReinforcementStep, raw)
        if step is None or step.metadata.deletion_timestamp:
            return None
        if step.status.phase is not None and step.status.phase.is_terminal:
            return self._expire_after_ttl(step)

        job_name = naming.training_job_name(name)
        # Before the status names a Job, "no Job" needs no confirmation: creating it meets an
        # existing one (409) and reads that instead. After, absence means JobDeleted: confirmed.
        job = self.kube.get_job(namespace, job_name, confirm_absent=bool(step.status.job_name))
        _check_job_owner(job, step)

        if step.spec.cancel:
            if job is not None:
                self.kube.delete_job(namespace, job_name)
            return self._finish(
                raw, step, StepPhase.CANCELLED, "Cancelled", "cancelled by the user (spec.cancel)"
            )

        if job is None:
            return self._before_job(raw, step, job_name)
        return self._with_job(raw, step, job)

    # --- before the Job exists --------------------------------------------------------------------
    def _before_job(self, raw: Obj, step: ReinforcementStep, job_name: str) -> float | None:
        if step.status.job_name:
            return self._finish(
                raw,
                step,
                StepPhase.FAILED,
                "JobDeleted",
                f"training Job {step.status.job_name} was deleted before the step finished; "
                "a step never starts a second Job: create a new ReinforcementStep",
            )
        verdict = self._validate(raw, step)
        status = step.status.model_copy(deep=True)
        now, gen = self.clock(), step.metadata.generation
        if isinstance(verdict, Wait):
            status.phase = StepPhase.CREATING
            status.message = verdict.message
            status.conditions = set_condition(
                status.conditions, "Validated", None, verdict.reason, verdict.message, gen, now
            )
            status.observed_generation = gen
            self._write(raw, step, status)
            return self.config.poll_seconds
        if isinstance(verdict, Refuse):
            refused = set_condition(
                status.conditions, "Validated", False, verdict.reason, verdict.message, gen, now
            )
            return self._finish(
                raw, step, StepPhase.FAILED, verdict.reason, verdict.message, conditions=refused
            )
        if isinstance(verdict, AlreadyDone):
            return self._adopt_existing_output(raw, step, verdict.model)

        status.conditions = set_condition(
            status.conditions,
            "Validated",
            True,
            "ReferencesReady",
            "dataset, model and output name checked",
            gen,
            now,
        )
        status.output_location = verdict.output_location
        status.output_model = naming.full_model_name(step.metadata.namespace, step.spec.output_model)
        if verdict.source.spec.kind == "lora":
            status.warm_start_from = naming.full_model_name(
                step.metadata.namespace, verdict.source.metadata.name
            )
        status.observed_generation = gen
        if step.spec.suspend:
            status.phase = StepPhase.PENDING
            status.message = "suspended before start (spec.suspend); no Job yet"
            status.conditions = set_condition(
                status.conditions, "Suspended", True, "Suspended", status.message, gen, now
            )
            self._write(raw, step, status)
            return None

        trainer = trainer_config(
            step, verdict.dataset, verdict.source, verdict.base, verdict.output_location, self.config
        )
        manifest = build_training_job(step, trainer, self.accelerators, self.config)
        if self.accelerators.nodes(step.spec.accelerator.type, step.spec.accelerator.count)[0] > 1:
            # The pods of a multi-node step find each other by name: the Service comes first.
            Children(self.kube).ensure_service(build_rendezvous_service(step))
        try:
            job, _ = self.kube.create_job(step.metadata.namespace, manifest)
        except ApiException as exc:
            if exc.status != 422:
                raise
            # What only the API server can see (a key or value it refuses on the pod): for good.
            return self._finish(
                raw,
                step,
                StepPhase.FAILED,
                CHILD_REFUSED_REASON,
                f"the API server refused training Job {job_name}: {refused_message(exc)}",
            )
        _check_job_owner(job, step)
        created = _parse_time(raw["metadata"].get("creationTimestamp"))
        if created is not None:
            METRICS.time_to_job.observe(max(0.0, (self.clock() - created).total_seconds()))
        status.phase = StepPhase.PENDING
        status.job_name = job_name
        status.message = _pending_message(step, job_name, 0)
        if any(c.type == "Suspended" for c in status.conditions):
            status.conditions = set_condition(status.conditions, "Suspended", False, "Resumed", "", gen, now)
        self._write(raw, step, status)
        return self.config.poll_seconds

    def _validate(self, raw: Obj, step: ReinforcementStep) -> Ready | Wait | Refuse | AlreadyDone:
        ns = step.metadata.namespace
        spec = step.spec
        refusal = self.policy.check(
            self.kube,
            raw,
            self.clock(),
            service_account=spec.service_account_name,
            images={"spec.trainerImage": spec.trainer_image},
        )
        if refusal is not None:
            return (Refuse if refusal.permanent else Wait)(refusal.reason, refusal.message)
        if spec.priority_class is not None:
            missing = self._priority_class_missing(spec.priority_class)
            if missing is not None:
                return missing
        ds_raw = self.kube.get("datasets", ns, spec.dataset)
        if ds_raw is None:
            return Wait("DatasetNotFound", f"waiting for Dataset {spec.dataset} to exist")
        dataset = try_parse(Dataset, ds_raw)
        if isinstance(dataset, str):
            return Refuse("DatasetInvalid", f"spec.dataset: Dataset {spec.dataset} is invalid: {dataset}")
        if dataset.status.phase == "FAILED":
            detail = (
                dataset.status.errors[0].message
                if dataset.status.errors
                else (dataset.status.conditions[0].message if dataset.status.conditions else "")
            )
            return Refuse(
                "DatasetInvalid", f"Dataset {spec.dataset} failed validation: {detail}".rstrip(": ")
            )
        if dataset.status.phase != "READY" or not dataset.status.digest:
            return Wait("DatasetNotReady", f"waiting for Dataset {spec.dataset} to be validated")

        src_raw = self.kube.get("models", ns, spec.model)
        if src_raw is None:
            return Wait("ModelNotFound", f"waiting for Model {spec.model} to exist")
        source = try_parse(Model, src_raw)
        if isinstance(source, str):
            return Refuse("ModelInvalid", f"spec.model: Model {spec.model} is invalid: {source}")
        if source.status.phase == "FAILED":
            return Refuse("ModelFailed", f"source Model {spec.model} is FAILED")
        base = source
        if source.spec.kind == "lora":
            base_name = source.spec.base_model or ""
            base_raw = self.kube.get("models", ns, base_name)
            if base_raw is None:
                return Wait(
                    "BaseModelNotFound", f"waiting for base Model {base_name} of {spec.model} to exist"
                )
            parsed = try_parse(Model, base_raw)
            if isinstance(parsed, str):
                return Refuse("ModelInvalid", f"base Model {base_name} of {spec.model} is invalid: {parsed}")
            base = parsed
        if unusable := base_model_unusable(base):
            permanent, why = unusable
            return Refuse("ModelFailed", why) if permanent else Wait("ModelNotReady", why)

        # A Model of that name made in the watch's last moments is still caught at registration.
        out_raw = self.kube.get("models", ns, spec.output_model, confirm_absent=False)
        if out_raw is not None:
            existing = try_parse(Model, out_raw)
            if not isinstance(existing, str) and existing.metadata.annotations.get(
                naming.ANNOTATION_LINEAGE
            ) == lineage_digest(step, dataset.status.digest):
                return AlreadyDone(existing)
            return Refuse(
                "OutputModelExists",
                f"Model {spec.output_model} already exists (not produced by this spec); choose another spec.outputModel",
            )

        if source.spec.kind == "lora":
            mismatches = continuation_mismatches(step, source)
            if mismatches:
                return Refuse(
                    "IncompatibleCheckpoint", f"cannot warm-start from {spec.model}: " + "; ".join(mismatches)
                )
        try:
            self.accelerators.nodes(spec.accelerator.type, spec.accelerator.count)
        except UnknownAcceleratorError as exc:
            return Refuse("UnknownAccelerator", str(exc))
        output = spec.output_location or default_output_location(source, spec.output_model)
        return Ready(dataset, source, base, output)

    def _priority_class_missing(self, name: str) -> Refuse | Wait | None:
        """Kueue never admits a Job whose priority class does not exist (it retries building the
        Workload in its own log, and the Job stays suspended): as for a pod's priorityClassName,
        a class that is not there refuses the step at once, naming the field."""
        try:
            found = self.kube.read_workload_priority_class(name)
        except ApiException as exc:
            if exc.status != 403:
                raise
            return Wait(
                "PriorityClassUnreadable",
                f"spec.priorityClass: the operator may not read WorkloadPriorityClass {name} "
                "(kueue.x-k8s.io); grant it get on workloadpriorityclasses",
            )
        if found is None:
            return Refuse(
                "PriorityClassNotFound",
                f"spec.priorityClass: Kueue WorkloadPriorityClass {name} does not exist (or Kueue is "
                "not installed); create the class, then a new ReinforcementStep",
            )
        return None

    # --- while the Job exists ----------------------------------------------------------------------
    def _with_job(self, raw: Obj, step: ReinforcementStep, job: Obj) -> float | None:
        ns, job_name = step.metadata.namespace, job["metadata"]["name"]
        # Only the Job's own pods speak for it (result, progress, trouble): a pod that merely
        # carries its label, made by whoever may create pods in the namespace, does not.
        pods = [p for p in self.kube.job_pods(ns, job_name) if owned_by(p, job)]
        state = job_state(job, pods)
        if state.outcome is not None:
            # The verdict reads the pods' termination messages: from the API, not from a pod
            # watch that may lag behind the Job's.
            pods = [
                p
                for p in self.kube.list_pods(ns, f"batch.kubernetes.io/job-name={job_name}")
                if owned_by(p, job)
            ]
            state = job_state(job, pods)
        # Under Kueue, admission unsuspends the Job: the operator only ever suspends it.
        may_patch = step.spec.queue_name is None or step.spec.suspend
        if bool(job["spec"].get("suspend")) != step.spec.suspend and state.outcome is None and may_patch:
            self.kube.patch_job(ns, job_name, {"spec": {"suspend": step.spec.suspend}})
        if state.outcome == "complete":
            return self._complete(raw, step, pods)
        if state.outcome == "failed":
            return self._failed(raw, step, state, pods)
        return self._in_progress(raw, step, job, state, pods)

    def _in_progress(
        self, raw: Obj, step: ReinforcementStep, job: Obj, state: JobState, pods: list[Obj]
    ) -> float | None:
        status = step.status.model_copy(deep=True)
        now, gen = self.clock(), step.metadata.generation
        status.observed_generation = gen
        status.job_name = job["metadata"]["name"]
        status.failed_pods = state.failed_pods or None
        if step.spec.suspend:
            status.phase = StepPhase.PENDING
            status.message = (
                "suspended (spec.suspend): the Job's pods are stopped; when resumed it continues from "
                "its in-step checkpoint"
            )
            status.conditions = set_condition(
                status.conditions, "Suspended", True, "Suspended", status.message, gen, now
            )
            self._write(raw, step, status)
            return None
        if any(c.type == "Suspended" for c in status.conditions):
            status.conditions = set_condition(status.conditions, "Suspended", False, "Resumed", "", gen, now)
        if step.spec.queue_name is not None:
            if job["spec"].get("suspend"):
                return self._queued(raw, step, status)
            status.conditions = set_condition(
                status.conditions,
                "Admitted",
                True,
                "Admitted",
                f"admitted by Kueue from LocalQueue {step.spec.queue_name}",
                gen,
                now,
            )
        if state.running_pod is not None:
            pod = state.running_pod
            status.phase = StepPhase.RUNNING
            status.start_time = status.start_time or _parse_time(pod["status"].get("startTime")) or now
            status.message = f"training on {pod['spec'].get('nodeName', 'a node')}"
            pod_ip = pod["status"].get("podIP")
            if may_poll(pod_ip, self.config.progress_poll):
                report = fetch_progress(pod_ip, self.config.progress_port)
                if report is not None:
                    status.progress = live_progress(status.progress, report)
                    if report.phase == "writing_results":
                        status.phase = StepPhase.WRITING_RESULTS
                        status.message = "writing the checkpoint"
        elif state.succeeded_pods and status.phase is not None:
            # The trainer exited 0 and the Job's Complete condition follows (its event wakes the
            # step): stay where the step is instead of falling back to PENDING for that moment.
            pass
        else:
            status.phase = StepPhase.PENDING
            status.message = _pending_message(step, status.job_name, state.failed_pods)
            trouble = pod_trouble(pods)
            if trouble is not None:
                status.message = f"{status.message}; {trouble.reason}: {trouble.message}"
                if trouble.overdue(now, self.config.stuck_pod_seconds, self.config.unschedulable_seconds):
                    # Pending forever helps nobody: the Job goes, the step fails with the reason.
                    self.kube.delete_job(step.metadata.namespace, job["metadata"]["name"])
                    return self._finish(
                        raw,
                        step,
                        StepPhase.FAILED,
                        trouble.reason,
                        _stuck_message(step, trouble, self.config),
                    )
        self._write(raw, step, status)
        return self.config.poll_seconds

    def _queued(self, raw: Obj, step: ReinforcementStep, status: ReinforcementStepStatus) -> float | None:
        """A Kueue-managed Job that is suspended: waiting for admission, or evicted after it ran."""
        now, gen = self.clock(), step.metadata.generation
        status.phase = StepPhase.PENDING
        if status.start_time is not None:
            reason = "Preempted"
            status.message = (
                f"preempted by Kueue (LocalQueue {step.spec.queue_name}): the pods were stopped and "
                "training continues from the in-step checkpoint when the Job is admitted again"
            )
        else:
            reason = "Queued"
            status.message = f"waiting in Kueue LocalQueue {step.spec.queue_name} for admission"
        status.conditions = set_condition(
            status.conditions, "Admitted", False, reason, status.message, gen, now
        )
        self._write(raw, step, status)
        return self.config.poll_seconds

    def _failed(self, raw: Obj, step: ReinforcementStep, state: JobState, pods: list[Obj]) -> float | None:
        if state.reason == "DeadlineExceeded":
            return self._finish(
                raw,
                step,
                StepPhase.EXPIRED,
                "DeadlineExceeded",
                f"the step ran longer than spec.activeDeadlineSeconds ({step.spec.active_deadline_seconds}s)",
            )
        text, code = termination_message(pods, TRAINER_CONTAINER, succeeded=False)
        reason, detail = "TrainingFailed", state.message or state.reason
        if text:
            try:
                parsed = parse_termination_message(text)
            except ValueError:
                detail = text.strip().splitlines()[-1][:1024] if text.strip() else detail
            else:
                if isinstance(parsed, TrainerFailure):
                    reason, detail = parsed.reason, parsed.message
        attempts = state.failed_pods or 1
        message = (
            f"trainer failed after {attempts} attempt(s)"
            + (f" (exit code {code})" if code is not None else "")
            + f": {detail}"
        )
        return self._finish(raw, step, StepPhase.FAILED, reason, message)

    def _complete(self, raw: Obj, step: ReinforcementStep, pods: list[Obj]) -> float | None:
        text, _ = termination_message(pods, TRAINER_CONTAINER, succeeded=True)
        try:
            result = parse_termination_message(text or "")
        except ValueError as exc:
            return self._finish(
                raw,
                step,
                StepPhase.FAILED,
                "InvalidResult",
                f"the trainer succeeded but its result summary is unusable: {exc}",
            )
        if isinstance(result, TrainerFailure):
            return self._finish(raw, step, StepPhase.FAILED, result.reason, result.message)
        problem = self._register_model(step, result)
        if problem:
            return self._finish(raw, step, StepPhase.FAILED, "OutputModelExists", problem)
        progress = (step.status.progress or StepProgress()).model_copy(
            update={"loss": result.metrics.get("loss"), "mean_reward": result.metrics.get("mean_reward")}
        )
        return self._finish(
            raw,
            step,
            StepPhase.COMPLETED,
            "Completed",
            f"trained {naming.full_model_name(step.metadata.namespace, step.spec.output_model)} at {result.output_location}",
            metrics=dict(result.metrics),
            progress=progress,
            output_location=result.output_location,
        )

    def _register_model(self, step: ReinforcementStep, result: TrainerResult) -> str | None:
        """Create the output Model; a problem message when the name belongs to someone else."""
        ns = step.metadata.namespace
        src_raw = self.kube.get("models", ns, step.spec.model)
        source = Model.model_validate(src_raw) if src_raw else None
        base_name = (
            source.spec.base_model if source and source.spec.kind == "lora" else step.spec.model
        ) or step.spec.model
        ds_raw = self.kube.get("datasets", ns, step.spec.dataset)
        ds_digest = Dataset.model_validate(ds_raw).status.digest if ds_raw else result.dataset_digest
        body = Model.model_validate(
            {
                "metadata": {
                    "name": step.spec.output_model,
                    "namespace": ns,
                    "labels": naming.labels("checkpoint", **{naming.LABEL_STEP: step.metadata.name}),
                    "annotations": {
                        naming.ANNOTATION_STEP_UID: step.metadata.uid,
                        naming.ANNOTATION_LINEAGE: lineage_digest(step, ds_digest),
                    },
                },
                "spec": {
                    "kind": "lora",
                    "location": result.output_location,
                    "serviceAccountName": step.spec.service_account_name,
                    "baseModel": base_name,
                    "parent": step.spec.model if source and source.spec.kind == "lora" else None,
                    "lora": result.lora.to_wire(),
                    "training": result.training.model_copy(update={"step": step.metadata.name}).to_wire(),
                    "datasetDigest": result.dataset_digest,
                    "files": [f.to_wire() for f in result.files],
                    "metrics": result.metrics,
                    "canary": result.canary.to_wire() if result.canary else None,
                },
            }
        ).to_wire()
        body["metadata"] = {k: v for k, v in body["metadata"].items() if v not in ("", 0, None, {})}
        created, is_new = self.kube.create("models", ns, body)
        model = Model.model_validate(created)
        if not is_new and model.metadata.annotations.get(naming.ANNOTATION_STEP_UID) != step.metadata.uid:
            return f"Model {step.spec.output_model} was created by someone else while this step ran; the checkpoint is at {result.output_location}"
        if model.status.phase != "READY":
            now = self.clock()
            self.kube.patch_status(
                "models",
                ns,
                model.metadata.name,
                {
                    "phase": "READY",
                    "observedGeneration": model.metadata.generation,
                    "conditions": [
                        c.to_wire()
                        for c in set_condition(
                            [],
                            "Ready",
                            True,
                            "Registered",
                            f"registered by ReinforcementStep {step.metadata.name}",
                            model.metadata.generation,
                            now,
                        )
                    ],
                },
            )
        return None

    def _adopt_existing_output(self, raw: Obj, step: ReinforcementStep, model: Model) -> float | None:
        """GitOps re-created a finished step: its output already exists with this very lineage."""
        return self._finish(
            raw,
            step,
            StepPhase.COMPLETED,
            "AlreadyTrained",
            f"Model {model.metadata.name} already holds the result of this exact spec; not training again",
            output_location=model.spec.location,
            metrics=dict(model.spec.metrics),
            progress=StepProgress(
                loss=model.spec.metrics.get("loss"), mean_reward=model.spec.metrics.get("mean_reward")
            ),
        )

    # --- the end -----------------------------------------------------------------------------------
    def _finish(
        self, raw: Obj, step: ReinforcementStep, phase: StepPhase, reason: str, message: str, **updates: Any
    ) -> float | None:
        """Move to a terminal phase (with `updates` to other status fields) and honour the TTL."""
        status: ReinforcementStepStatus = step.status.model_copy(deep=True, update=updates)
        now, gen = self.clock(), step.metadata.generation
        status.phase = phase
        status.message = message
        status.observed_generation = gen
        status.completion_time = now
        if phase == StepPhase.COMPLETED:
            status.output_model = naming.full_model_name(step.metadata.namespace, step.spec.output_model)
        status.conditions = set_condition(
            status.conditions, "Succeeded", phase == StepPhase.COMPLETED, reason, message, gen, now
        )
        self._write(raw, step, status)
        METRICS.steps_finished.labels(phase=phase.value).inc()
        return self._expire_after_ttl(step.model_copy(update={"status": status}))

    def _expire_after_ttl(self, step: ReinforcementStep) -> float | None:
        ttl = step.spec.ttl_seconds_after_finished
        if ttl is None or step.status.completion_time is None:
            return None
        remaining = (step.status.completion_time + timedelta(seconds=ttl) - self.clock()).total_seconds()
        if remaining > 0:
            return remaining
        # Foreground: the Job (and its pods) go first, then the step: removed together.
        self.kube.delete(self.plural, step.metadata.namespace, step.metadata.name, propagation="Foreground")
        return None

    def _write(self, raw: Obj, step: ReinforcementStep, status: ReinforcementStepStatus) -> None:
        old_phase = step.status.phase
        if (
            self.write_status(raw, step.status, status)
            and status.phase != old_phase
            and status.phase is not None
        ):
            warning = status.phase in (StepPhase.FAILED, StepPhase.EXPIRED)
            self.kube.record_event(
                raw,
                "Warning" if warning else "Normal",
                _event_reason(status.phase),
                status.message or status.phase.value,
            )
            log.info(
                "step %s/%s: %s -> %s: %s",
                step.metadata.namespace,
                step.metadata.name,
                old_phase,
                status.phase,
                status.message,
            )
        step.status = status


def needs_job(body: Mapping[str, Any]) -> bool:
    """Whether the step's next reconcile may create its training Job: it names no Job yet and has
    not ended. The operator queues such steps at high priority (Job creation first)."""
    status = body.get("status") or {}
    if status.get("jobName") or body.get("metadata", {}).get("deletionTimestamp"):
        return False
    phase = status.get("phase")
    return phase not in TERMINAL_PHASES


def _check_job_owner(job: Obj | None, step: ReinforcementStep) -> None:
    """A Job of that name made for an earlier step of the same name (still being deleted)."""
    if (
        job is not None
        and job["metadata"].get("annotations", {}).get(naming.ANNOTATION_STEP_UID) != step.metadata.uid
    ):
        raise kopf.TemporaryError(
            f"Job {job['metadata']['name']} of an earlier step with this name is still being deleted", delay=5
        )


def _pending_message(step: ReinforcementStep, job_name: str, failed_pods: int) -> str:
    """The same words when the Job is created and while it waits, so waiting rewrites nothing."""
    if failed_pods:
        return f"Job {job_name} waiting for a pod to run (after {failed_pods} failed attempt(s))"
    return f"Job {job_name} created; waiting for a {step.spec.accelerator.type} node"


def _stuck_message(step: ReinforcementStep, trouble: PodTrouble, config: OperatorConfig) -> str:
    """Why a stuck training pod failed the step, naming the spec field behind it."""
    if trouble.image:
        image = step.spec.trainer_image
        field = (
            f"spec.trainerImage {image}" if image else f"the operator's trainer image {config.trainer_image}"
        )
        return f"{field} cannot be pulled: {trouble.message}"
    if trouble.reason == "Unschedulable":
        acc = step.spec.accelerator
        return (
            f"spec.accelerator ({acc.count} x {acc.type}): no node fits the training pod: {trouble.message}"
        )
    return f"the training pod cannot start: {trouble.message}"


def _event_reason(phase: StepPhase) -> str:
    return "".join(part.capitalize() for part in phase.value.removeprefix("JOB_STATE_").split("_"))


def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None
