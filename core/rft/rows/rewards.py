"""Combining a completion's named rewards into the one scalar the trainer optimises."""

from __future__ import annotations

import math
from collections.abc import Mapping


class RewardError(ValueError):
    """Rewards and reward weights do not fit together."""


def combine_rewards(rewards: Mapping[str, float], weights: Mapping[str, float] | None = None) -> float:
    """The scalar reward: the only reward, or the weighted sum ``sum(w_k * r_k)`` over ``weights``.

    Without weights (None or empty), the completion must have exactly one reward key. With
    weights, every weighted key must be present; reward keys without a weight are ignored.
    Weights are not normalised.
    """
    if not weights:
        if len(rewards) != 1:
            keys = ", ".join(sorted(rewards)) or "none"
            raise RewardError(
                f"rewards have {len(rewards)} keys ({keys}); with more or fewer than one key, name "
                "reward weights to combine them, e.g. {"
                + ", ".join(f"{k!r}: 1.0" for k in sorted(rewards))
                + "}"
            )
        return float(next(iter(rewards.values())))
    for key, weight in weights.items():
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
            raise RewardError(f"reward weight for {key!r} must be a finite number, got {weight!r}")
    missing = sorted(key for key in weights if key not in rewards)
    if missing:
        raise RewardError(
            f"reward weights name keys missing from the rewards: {', '.join(missing)} "
            f"(rewards have: {', '.join(sorted(rewards)) or 'none'})"
        )
    return float(sum(weight * rewards[key] for key, weight in weights.items()))
