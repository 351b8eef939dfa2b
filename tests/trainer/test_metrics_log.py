"""The per-step series writer: JSONL and TensorBoard event files that TensorBoard's reader reads back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from rft_trainer.metrics_log import MetricsLog, flops_per_token, peak_flops
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def test_each_step_is_one_point_per_metric_in_both_files(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path / "scratch", flops_per_token=4.0 * 1000, peak_flops=1e9, run_name="m")
    for step in (1, 2, 3):
        values = log.record(step, 1, {"loss": 0.5 / step, "tokens_per_second": 100.0 * step})
        assert values["flops_per_second"] == pytest.approx(4000 * 100 * step)
        assert values["mfu"] == pytest.approx(4000 * 100 * step / 1e9)
    copied = log.copy_into(tmp_path / "adapter")
    assert "metrics/steps.jsonl" in copied
    assert len([p for p in copied if p.startswith("metrics/events.out.tfevents.") and p.endswith(".m")]) == 1

    lines = [json.loads(x) for x in (tmp_path / "adapter/metrics/steps.jsonl").read_text().splitlines()]
    assert [(x["step"], x["epoch"], x["loss"]) for x in lines] == [(1, 1, 0.5), (2, 1, 0.25), (3, 1, 0.5 / 3)]
    reader = EventAccumulator(str(tmp_path / "adapter/metrics"), size_guidance={"scalars": 0})
    reader.Reload()
    assert set(reader.Tags()["scalars"]) == {
        "train/loss",
        "train/tokens_per_second",
        "train/flops_per_second",
        "train/mfu",
    }
    points = reader.Scalars("train/loss")
    assert [e.step for e in points] == [1, 2, 3]
    assert [e.value for e in points] == pytest.approx([0.5, 0.25, 0.5 / 3])
    with pytest.raises(RuntimeError, match="closed"):
        log.record(4, 1, {"loss": 0.0})


def test_flop_estimates(monkeypatch: pytest.MonkeyPatch) -> None:
    assert flops_per_token(10, gradient_checkpointing=False) == 40
    assert flops_per_token(10, gradient_checkpointing=True) == 60
    monkeypatch.delenv("RFT_PEAK_FLOPS", raising=False)
    assert peak_flops(torch.device("cpu")) is None  # no honest peak for a CPU: no mfu is logged
    monkeypatch.setenv("RFT_PEAK_FLOPS", "2e12")
    assert peak_flops(torch.device("cpu")) == 2e12
    monkeypatch.setenv("RFT_PEAK_FLOPS", "fast")
    assert peak_flops(torch.device("cpu")) is None
