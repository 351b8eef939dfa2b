"""`ReinforcementStep` snapshots: state, completion, output model and bad-state errors."""

from __future__ import annotations

from typing import Any

import pytest
from rft import ReinforcementStep
from rft.api import ReinforcementStep as StepResource
from rft.api import StepPhase
from rft.sdk.config import load_config
from rft.sdk.session import Session


def _step(phase: StepPhase | None, message: str | None = None, **status: Any) -> ReinforcementStep:
    resource = StepResource.model_validate(
        {
            "metadata": {"name": "step-1", "namespace": "team-a"},
            "spec": {"dataset": "d", "model": "base", "outputModel": "ckpt-1"},
            "status": {"phase": phase, "message": message, **status},
        }
    )
    return ReinforcementStep(resource, Session(load_config()))


BAD = {StepPhase.FAILED, StepPhase.CANCELLED, StepPhase.EXPIRED}


@pytest.mark.parametrize("phase", list(StepPhase))
def test_raise_if_bad_state_per_state(phase: StepPhase) -> None:
    step = _step(phase, message="trainer exited with code 1")
    if phase in BAD:
        with pytest.raises(RuntimeError) as error:
            step.raise_if_bad_state()
        assert str(phase) in str(error.value)
        assert "trainer exited with code 1" in str(error.value)
        assert "step-1" in str(error.value)
    else:
        step.raise_if_bad_state()


def test_bad_state_without_message_says_so() -> None:
    with pytest.raises(RuntimeError, match=r"JOB_STATE_EXPIRED: no message"):
        _step(StepPhase.EXPIRED).raise_if_bad_state()


@pytest.mark.parametrize("phase", list(StepPhase))
def test_state_and_completion(phase: StepPhase) -> None:
    step = _step(phase)
    assert step.state == phase.value
    assert isinstance(step.state, str)
    assert step.is_completed is (phase == StepPhase.COMPLETED)
    assert step.is_terminal is phase.is_terminal


def test_state_before_the_operator_reports_is_creating() -> None:
    step = _step(None)
    assert step.state == "JOB_STATE_CREATING"
    assert not step.is_completed
    step.raise_if_bad_state()


def test_output_model_is_the_full_name() -> None:
    assert _step(None).output_model == "accounts/team-a/models/ckpt-1"
    reported = _step(StepPhase.COMPLETED, outputModel="accounts/team-a/models/ckpt-1")
    assert reported.output_model == "accounts/team-a/models/ckpt-1"


def test_repr_names_the_step() -> None:
    assert repr(_step(StepPhase.RUNNING)) == (
        "ReinforcementStep(name='step-1', namespace='team-a', state='JOB_STATE_RUNNING')"
    )
