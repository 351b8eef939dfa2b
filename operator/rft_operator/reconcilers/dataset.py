"""Dataset: validated once per generation by a Job that runs under the Dataset's ServiceAccount.

The operator never reads the user's bucket: the validation Job does, and reports counts, digest
and the first bad lines through its termination message.
"""

from __future__ import annotations

from rft.api import Dataset
from rft.contracts.validation_summary import parse_summary

from rft_operator import naming
from rft_operator.builders.jobs import VALIDATOR_CONTAINER, build_validation_job
from rft_operator.conditions import set_condition
from rft_operator.config import OperatorConfig
from rft_operator.jobstate import job_state, owned_by, termination_message
from rft_operator.kube import Kube
from rft_operator.podtrouble import pod_trouble
from rft_operator.policy import WorkloadPolicy
from rft_operator.reconcilers.base import Clock, Reconciler, utcnow


class DatasetReconciler(Reconciler):
    plural = "datasets"

    def __init__(self, kube: Kube, config: OperatorConfig, clock: Clock = utcnow) -> None:
        super().__init__(kube, clock)
        self.config = config
        self.policy = WorkloadPolicy(config)

    def sync(self, namespace: str, name: str) -> float | None:
        raw = self.kube.get(self.plural, namespace, name)
        if raw is None:
            return None
        dataset = self.parse_or_fail(Dataset, raw)
        if dataset is None:
            return None
        gen = dataset.metadata.generation
        if dataset.status.observed_generation == gen and dataset.status.phase in ("READY", "FAILED"):
            return None
        job_name = naming.validation_job_name(name, gen)
        job = self.kube.get_job(namespace, job_name)
        status = dataset.status.model_copy(deep=True)
        now = self.clock()
        if job is None:
            refusal = self.policy.check(
                self.kube, raw, now, service_account=dataset.spec.service_account_name
            )
            if refusal is not None:
                status.observed_generation = gen
                status.phase = "FAILED" if refusal.permanent else "VALIDATING"
                status.conditions = set_condition(
                    status.conditions,
                    "Ready",
                    False if refusal.permanent else None,
                    refusal.reason,
                    refusal.message,
                    gen,
                    now,
                )
                self.write_phase(raw, dataset.status, status)
                return None if refusal.permanent else self.config.poll_seconds
            if not self.create_job_or_fail(raw, namespace, build_validation_job(dataset, self.config)):
                return None
            status.phase = "VALIDATING"
            status.validation_job = job_name
            status.observed_generation = gen
            status.conditions = set_condition(
                status.conditions,
                "Ready",
                None,
                "Validating",
                f"Job {job_name} validates {dataset.spec.source}",
                gen,
                now,
            )
            self.write_phase(raw, dataset.status, status)
            return self.config.poll_seconds
        # Only the Job's own pods speak for it: a pod that merely carries its label does not.
        pods = [
            p
            for p in self.kube.list_pods(namespace, f"batch.kubernetes.io/job-name={job_name}")
            if owned_by(p, job)
        ]
        state = job_state(job, pods)
        if state.outcome is None:
            trouble = pod_trouble(pods)
            if trouble is not None and trouble.overdue(
                now, self.config.stuck_pod_seconds, self.config.unschedulable_seconds
            ):
                self.kube.delete_job(namespace, job_name)
                self.fail_raw(raw, trouble.reason, f"validation Job {job_name} cannot run: {trouble.message}")
                return None
            return self.config.poll_seconds
        text, _ = termination_message(pods, VALIDATOR_CONTAINER, succeeded=state.outcome == "complete")
        summary = parse_summary(text)
        status.observed_generation = gen
        if state.outcome == "complete" and summary is not None and summary.ok:
            status.phase = "READY"
            status.resolved_source = summary.resolved_source
            status.rows = summary.rows
            status.format = summary.format
            status.min_samples_per_row = summary.min_samples
            status.max_samples_per_row = summary.max_samples
            status.reward_keys = summary.reward_keys
            status.bytes = summary.bytes
            status.digest = summary.digest
            status.errors = []
            message = f"{summary.rows} rows ({summary.format}), {summary.digest}"
            status.conditions = set_condition(
                status.conditions, "Ready", True, "Validated", message, gen, now
            )
        else:
            status.phase = "FAILED"
            if summary is not None:
                status.errors = summary.errors[:20]
                status.digest = summary.digest
                status.rows = summary.rows
            if summary is not None and summary.errors:
                first = summary.errors[0]
                message = f"line {first.line}: {first.message}" if first.line else first.message
                total = max(summary.error_count or 0, len(summary.errors))
                if total > 1:
                    message += f" ({total} malformed rows in all; the first {len(status.errors)} in status.errors)"
                reason = "InvalidRows"
            elif summary is not None and summary.error:
                message, reason = summary.error, summary.failure_reason()
            else:
                message = (text or state.message or state.reason or "the validation Job failed").strip()[
                    -1024:
                ]
                reason = "ValidationJobFailed"
            status.conditions = set_condition(status.conditions, "Ready", False, reason, message, gen, now)
        self.write_phase(raw, dataset.status, status)
        return None
