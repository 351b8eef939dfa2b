"""Helpers of the step reconciler that decide without a cluster."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from rft.api import Deployment, Model, ReinforcementStep
from rft_operator.conditions import set_condition
from rft_operator.jobstate import COMPLETION_INDEX_ANNOTATION, job_state, termination_message
from rft_operator.reconcilers.base import status_patch
from rft_operator.reconcilers.deployment import _incompatibility
from rft_operator.reconcilers.step import continuation_mismatches, lineage_digest, needs_job

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def step(**training: Any) -> ReinforcementStep:
    return ReinforcementStep.model_validate(
        {
            "metadata": {"name": "s"},
            "spec": {"dataset": "d", "model": "p", "outputModel": "o", "training": training},
        }
    )


PARENT = Model.model_validate(
    {
        "metadata": {"name": "p"},
        "spec": {
            "kind": "lora",
            "location": "s3://bkt/m/p/",
            "baseModel": "base",
            "lora": {"rank": 16, "alpha": 32, "targetModules": ["q_proj"]},
            "training": {
                "learningRate": "0.0001",
                "maxContextLength": 8192,
                "batchSize": 32768,
                "epochs": 1,
                "lossMethod": "grpo",
            },
        },
    }
)


def test_continuation_accepts_equal_parameters_in_other_spellings() -> None:
    assert continuation_mismatches(step(learningRate="1e-4"), PARENT) == []


def test_continuation_lists_every_mismatch_with_both_values() -> None:
    problems = continuation_mismatches(step(loraRank=8, learningRate="2e-4", batchSize=65536), PARENT)
    assert problems == [
        "spec.training.loraRank is 8 but p was trained with 16",
        "spec.training.learningRate is 2e-4 but p was trained with 0.0001",
        "spec.training.batchSize is 65536 but p was trained with 32768",
    ]


def test_lineage_digest_ignores_lifecycle_fields_but_not_training() -> None:
    a = step()
    b = a.model_copy(deep=True)
    b.spec.ttl_seconds_after_finished = 60
    b.spec.suspend = True
    b.spec.queue_name = a.spec.queue_name = "team-gpus"
    b.spec.priority_class = "urgent"
    assert lineage_digest(a, "sha256:x") == lineage_digest(b, "sha256:x")
    assert lineage_digest(a, "sha256:x") != lineage_digest(a, "sha256:y")
    assert lineage_digest(a, "sha256:x") != lineage_digest(step(loraRank=8), "sha256:x")


def test_condition_transition_time_moves_only_with_the_status() -> None:
    conds = set_condition([], "Ready", False, "Waiting", "a", 1, T0)
    conds = set_condition(conds, "Ready", False, "StillWaiting", "b", 2, T0 + timedelta(seconds=5))
    assert conds[0].last_transition_time == T0
    assert (conds[0].reason, conds[0].observed_generation) == ("StillWaiting", 2)
    conds = set_condition(conds, "Ready", True, "Done", "c", 2, T0 + timedelta(seconds=9))
    assert conds[0].last_transition_time == T0 + timedelta(seconds=9)
    assert len(conds) == 1


def test_status_patch_nulls_removed_keys() -> None:
    assert status_patch({"a": 1, "b": 2}, {"a": 1, "c": 3}) == {"c": 3, "b": None}


def _pod(phase: str, finished: str, message: str, code: int) -> dict[str, Any]:
    return {
        "metadata": {"name": f"p-{finished}"},
        "status": {
            "phase": phase,
            "containerStatuses": [
                {
                    "name": "trainer",
                    "state": {"terminated": {"finishedAt": finished, "message": message, "exitCode": code}},
                }
            ],
        },
    }


def test_a_failed_pod_is_not_a_failed_job() -> None:
    job = {"spec": {}, "status": {"active": 1, "failed": 1, "conditions": []}}
    state = job_state(job, [_pod("Failed", "2026-01-01T00:00:01Z", "oom", 137)])
    assert state.outcome is None
    assert state.failed_pods == 1


def test_terminal_outcome_comes_from_job_conditions_and_newest_message_wins() -> None:
    job = {
        "spec": {},
        "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]},
    }
    pods = [
        _pod("Failed", "2026-01-01T00:00:01Z", "first", 2),
        _pod("Failed", "2026-01-01T00:00:09Z", "last words", 2),
    ]
    state = job_state(job, pods)
    assert (state.outcome, state.reason) == ("failed", "BackoffLimitExceeded")
    assert termination_message(pods, "trainer", succeeded=False) == ("last words", 2)
    assert termination_message(pods, "trainer", succeeded=True) == (None, None)


def test_a_multi_node_steps_result_comes_from_the_pod_that_wrote_one() -> None:
    """All pods of an Indexed Job succeed; only the one running rank 0 leaves a message, and
    another node's pod may finish after it."""
    pods = [
        _pod("Succeeded", "2026-01-01T00:00:05Z", '{"ok": true}', 0),
        _pod("Succeeded", "2026-01-01T00:00:07Z", "", 0),
    ]
    assert termination_message(pods, "trainer", succeeded=True) == ('{"ok": true}', 0)


def test_a_multi_node_steps_progress_is_polled_from_the_pod_of_index_0() -> None:
    """Only rank 0 serves progress; torchrun's rendezvous puts it in the pod of completion index 0
    (its FQDN sorts first), whichever pod the API lists first."""

    def running(index: str) -> dict[str, Any]:
        annotations = {COMPLETION_INDEX_ANNOTATION: index}
        return {"metadata": {"name": f"p-{index}", "annotations": annotations}, "status": {"phase": "Running"}}

    job: dict[str, Any] = {"spec": {}, "status": {"active": 3}}
    state = job_state(job, [running("2"), running("0"), running("1")])
    assert state.running_pod is not None
    assert state.running_pod["metadata"]["name"] == "p-0"
    # Pods of a plain Job carry no index: the first running one, as before.
    plain = [_pod("Running", "", "", 0), {"metadata": {"name": "q"}, "status": {"phase": "Running"}}]
    assert job_state(job, plain).running_pod is plain[0]


def test_needs_job_marks_steps_whose_next_reconcile_may_create_their_job() -> None:
    assert needs_job({"metadata": {"name": "s"}, "spec": {}})  # new: no status at all
    assert needs_job({"metadata": {"name": "s"}, "status": {"phase": "JOB_STATE_CREATING"}})
    assert not needs_job(
        {"metadata": {"name": "s"}, "status": {"phase": "JOB_STATE_PENDING", "jobName": "s-train"}}
    )
    assert not needs_job({"metadata": {"name": "s"}, "status": {"phase": "JOB_STATE_FAILED"}})
    assert not needs_job({"metadata": {"name": "s", "deletionTimestamp": "2026-01-01T00:00:00Z"}})


def test_continuation_from_a_parent_without_a_training_record_is_refused() -> None:
    """The warm-start rule (rft.api.rules) refuses it; the SDK and the trainer refuse it too."""
    bare = PARENT.model_copy(deep=True)
    bare.spec.training = None
    assert continuation_mismatches(step(loraRank=8, learningRate="1e-4"), bare) == [
        "spec.training.loraRank is 8 but p was trained with 16",
        "parent Model p records no training parameters (spec.training), so they cannot be shown equal; "
        "record the ones that trained it",
    ]


def _base(**spec: Any) -> Deployment:
    return Deployment.model_validate(
        {
            "metadata": {"name": "b"},
            "spec": {"model": "base", "deploymentType": "on-demand", "enableLora": True, **spec},
        }
    )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({}, None),
        (
            {"deploymentType": "on-demand-lora", "baseDeployment": "x", "enableLora": False},
            "baseDeployment b is itself on-demand-lora; name an on-demand Deployment",
        ),
        ({"enableLora": False, "model": "other"}, "base Deployment b has enableLora: false"),
        ({"model": "other", "maxLoraRank": 8}, "checkpoint p adapts base, but b serves other"),
        ({"maxLoraRank": 8}, "checkpoint rank 16 exceeds maxLoraRank 8 of b"),
    ],
)
def test_deployment_names_the_first_adapter_on_base_problem(spec: dict[str, Any], message: str | None) -> None:
    assert _incompatibility(_base(**spec), PARENT) == message
