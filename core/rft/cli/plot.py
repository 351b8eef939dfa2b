"""Plots to PNG (matplotlib's Agg backend): per-optimizer-step curves from the series each
checkpoint carries in the bucket (metrics/steps.jsonl), or reward and loss per checkpoint from
spec.metrics. matplotlib is optional (the `plot` extra)."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rft.api.model import Model
from rft.sdk.errors import RftError
from rft.sdk.lineage import metric

REWARD_KEY = "mean_reward"
LOSS_KEY = "loss"


def plot_history(checkpoints: list[Model], path: Path, title: str = "") -> Path:
    """Draw mean reward and loss per checkpoint (oldest first) into `path` and return it.

    Raises ValueError when no checkpoint has either metric.
    """
    rewards = [metric(model, REWARD_KEY) for model in checkpoints]
    losses = [metric(model, LOSS_KEY) for model in checkpoints]
    if all(math.isnan(value) for value in [*rewards, *losses]):
        raise ValueError(
            f"no checkpoint in the chain has spec.metrics {REWARD_KEY!r} or {LOSS_KEY!r} to plot"
        )
    pyplot = _pyplot()
    positions = list(range(1, len(checkpoints) + 1))
    names = [model.metadata.name for model in checkpoints]
    figure, (reward_axis, loss_axis) = pyplot.subplots(
        2, 1, sharex=True, figsize=(max(6.0, 0.6 * len(names)), 6)
    )
    try:
        reward_axis.plot(positions, rewards, marker="o", color="tab:green")
        reward_axis.set_ylabel("mean reward")
        reward_axis.grid(alpha=0.3)
        loss_axis.plot(positions, losses, marker="o", color="tab:blue")
        loss_axis.set_ylabel("loss")
        loss_axis.set_xlabel("checkpoint")
        loss_axis.grid(alpha=0.3)
        loss_axis.set_xticks(positions)
        loss_axis.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
        figure.suptitle(title or f"Reward and loss over {len(names)} checkpoint(s)")
        figure.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, format="png", dpi=100)
    finally:
        pyplot.close(figure)
    return path


SERIES_FILE = "metrics/steps.jsonl"
# The per-step panels, in order, when the series has them.
STEP_PANELS = (
    ("mean_reward", "mean reward"),
    ("loss", "loss"),
    ("kl", "KL to the base"),
    ("entropy", "entropy (est.)"),
    ("grad_norm", "grad norm"),
    ("clip_fraction", "clip fraction"),
)


@dataclass(frozen=True)
class StepSeries:
    """One checkpoint's per-optimizer-step metrics (its metrics/steps.jsonl)."""

    model: str
    points: list[dict[str, float]]


def read_step_series(model: Model) -> StepSeries | None:
    """The checkpoint's per-step series from its bucket, checked against the digest its Model
    records; None when the checkpoint has none (trained before the trainer wrote one)."""
    entry = next((f for f in model.spec.files if f.path == SERIES_FILE), None)
    if entry is None:
        return None
    from rft.storage import read_bytes  # noqa: PLC0415 - only this command reads the bucket

    url = model.spec.location.rstrip("/") + "/" + SERIES_FILE
    data = read_bytes(url)
    actual = hashlib.sha256(data).hexdigest()
    if actual != entry.sha256:
        raise ValueError(
            f"{url}: content has sha256 {actual}, but Model {model.metadata.name} records {entry.sha256}"
        )
    points = [json.loads(line) for line in data.decode().splitlines() if line.strip()]
    return StepSeries(model.metadata.name, points)


def _pyplot() -> Any:
    try:
        import matplotlib  # noqa: PLC0415 - slow to import, optional, and only plots need it
    except ImportError:
        raise RftError(
            "rft plot needs matplotlib, which the SDK does not install by default: "
            "pip install 'rft-operator[plot]'"
        ) from None
    matplotlib.use("Agg")
    from matplotlib import pyplot  # noqa: PLC0415

    return pyplot


def plot_steps(series: list[StepSeries], path: Path, title: str = "") -> Path:
    """Draw the per-optimizer-step curves of a chain of checkpoints (oldest first) into `path`.

    The x axis counts optimizer steps across the chain; a dashed line marks where each
    checkpoint's step began. Raises ValueError when no series has a point.
    """
    if not any(s.points for s in series):
        raise ValueError("no checkpoint in the chain has per-step metrics to plot")
    panels = [(key, label) for key, label in STEP_PANELS if any(key in p for s in series for p in s.points)]
    pyplot = _pyplot()
    figure, axes = pyplot.subplots(len(panels), 1, sharex=True, figsize=(8, 1.8 * len(panels) + 0.8))
    axes = list(axes) if len(panels) > 1 else [axes]
    try:
        offset = 0
        for index, one in enumerate(series):
            xs = [offset + int(p["step"]) for p in one.points]
            color = f"C{index % 10}"
            for axis, (key, _label) in zip(axes, panels, strict=True):
                ys = [float(p.get(key, math.nan)) for p in one.points]
                axis.plot(xs, ys, marker="o", markersize=3, color=color, label=one.model)
            if index:
                for axis in axes:
                    axis.axvline(offset + 0.5, color="grey", linestyle="--", linewidth=0.8)
            offset += max((int(p["step"]) for p in one.points), default=0)
        for axis, (_key, label) in zip(axes, panels, strict=True):
            axis.set_ylabel(label, fontsize=8)
            axis.grid(alpha=0.3)
        axes[-1].set_xlabel("optimizer step")
        axes[-1].xaxis.get_major_locator().set_params(integer=True)
        axes[0].legend(fontsize=7, loc="best")
        figure.suptitle(title or f"Per-step metrics over {len(series)} checkpoint(s)")
        figure.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, format="png", dpi=100)
    finally:
        pyplot.close(figure)
    return path
