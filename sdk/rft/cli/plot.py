"""Reward and loss across a chain of checkpoints, drawn to a PNG (matplotlib's Agg backend)."""

from __future__ import annotations

import math
from pathlib import Path

from rft.api.model import Model
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
    # Imported here: matplotlib is slow to import and only this command needs it.
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    from matplotlib import pyplot  # noqa: PLC0415

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
