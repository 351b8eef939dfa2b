"""Model: a base model or checkpoint location. The operator cannot read buckets, so a Model is
READY once its references hold together; the trainer and servers verify the files themselves
(commit marker, digests) when they fetch them."""

from __future__ import annotations

from datetime import datetime

from rft.api import Model

from rft_operator import naming
from rft_operator.conditions import set_condition
from rft_operator.reconcilers.base import Reconciler

STEP_REGISTRATION_GRACE = 30.0
"""A Model a ReinforcementStep registers gets its status from that step (one writer, one write);
this reconciler writes it only if the step has not within this many seconds (deleted meanwhile)."""


class ModelReconciler(Reconciler):
    plural = "models"

    def sync(self, namespace: str, name: str) -> float | None:
        raw = self.kube.get(self.plural, namespace, name)
        if raw is None:
            return None
        model = Model.model_validate(raw)
        gen = model.metadata.generation
        if model.status.observed_generation == gen and model.status.phase is not None:
            return None
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
        if model.spec.kind == "lora" and model.spec.base_model:
            base_raw = self.kube.get(self.plural, namespace, model.spec.base_model)
            if base_raw is None:
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
        self.write_status(raw, model.status, status)
        return None if ready else 30.0
