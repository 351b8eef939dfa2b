"""The step's status.progress from the trainer's reports: latest values and a short history, small."""

from __future__ import annotations

import json

from rft.api.reinforcement_step import HISTORY_LENGTH, STATUS_METRICS
from rft.contracts.trainer_config import ProgressReport
from rft_operator.progress import live_progress


def _report(step: int, **metrics: float) -> ProgressReport:
    return ProgressReport(
        phase="training",
        epoch=1,
        step=step,
        total_steps=100,
        loss=1.0 / step,
        mean_reward=0.5,
        metrics={"mean_reward": step / 100, "kl": 0.001 * step, "completion_tokens": 512.0, **metrics},
    )


def test_latest_values_of_the_listed_metrics_and_a_bounded_history() -> None:
    progress = None
    for step in (1, 2, 2, 5, *range(6, 40)):  # polled: steps repeat and skip
        progress = live_progress(progress, _report(step, grad_norm=float("nan")))
    assert progress is not None
    assert (progress.step, progress.total_steps, progress.loss) == (39, 100, f"{1 / 39:.6g}")
    assert progress.metrics == {"mean_reward": "0.39", "kl": "0.039"}  # no NaN, nothing unlisted
    assert set(progress.metrics) <= set(STATUS_METRICS)
    assert len(progress.history) == HISTORY_LENGTH
    assert [p.step for p in progress.history] == list(range(20, 40))
    assert progress.history[-1].mean_reward == "0.39"
    # A step's status stays a few kilobytes however long it trains.
    assert len(json.dumps(progress.to_wire())) < 2000


def test_the_first_report_before_any_optimizer_step_has_no_history() -> None:
    report = ProgressReport(phase="training", epoch=1, step=0, total_steps=10, mean_reward=0.25)
    progress = live_progress(None, report)
    assert progress.history == []
    assert progress.mean_reward == "0.25"
