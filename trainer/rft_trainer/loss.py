"""The policy-gradient objective as small pure functions over flat per-token tensors.

Every tensor here is one-dimensional over the *completion tokens* of a micro-batch (prompt and
padding positions are never selected, so there is nothing to mask): `logp` are the current
policy's log-probabilities (with gradient), `ref_logp` the reference the importance ratio is taken
against (sampling logprobs, or the policy's own at the start of the step, detached), `adv` the
sample's advantage repeated on each of its tokens, and `seq_ids` the index of each token's sequence
within the micro-batch.

Note on the reference: without sampling logprobs the ratio is exactly 1 on the first pass over
the data, so the clipped losses print about 0 (for token-mean with group-normalised advantages)
while their gradient is the REINFORCE gradient. That is correct; watch `adv_logp` (the mean
advantage-weighted log-probability) to see learning move.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from rft.api.model import LossMethod
from rft.api.reinforcement_step import AdvantageMode, Aggregation, LossSettings, OffPolicyCorrection

STD_EPS = 1e-6
"""Added to the reward standard deviation before dividing (GRPO's epsilon)."""

# Default clip ranges per method: PPO/GRPO symmetric 0.2; DAPO's clip-higher 0.28; GSPO's ratio is
# a per-token geometric mean, so its paper clips tightly (3e-4, 4e-4); CISPO caps the weight at 5.
_DEFAULT_CLIPS: dict[str, tuple[float, float]] = {
    "grpo": (0.2, 0.2),
    "dapo": (0.2, 0.28),
    "gspo": (3e-4, 4e-4),
    "gspo-token": (3e-4, 4e-4),
    "cispo": (0.2, 5.0),
    "reinforce": (0.2, 0.2),
}


@dataclass(frozen=True)
class LossParams:
    """LossSettings resolved to numbers, method defaults applied."""

    method: LossMethod
    clip_low: float
    clip_high: float
    kl_coefficient: float
    advantage: AdvantageMode
    aggregation: Aggregation
    off_policy: OffPolicyCorrection = "none"
    importance_cap: float = 2.0

    @classmethod
    def from_settings(cls, settings: LossSettings) -> LossParams:
        """Apply the method's default clip range where the settings leave it open."""
        default_low, default_high = _DEFAULT_CLIPS[settings.method]
        return cls(
            method=settings.method,
            clip_low=float(settings.clip_low) if settings.clip_low is not None else default_low,
            clip_high=float(settings.clip_high) if settings.clip_high is not None else default_high,
            kl_coefficient=float(settings.kl_coefficient),
            advantage=settings.advantage,
            aggregation=settings.aggregation,
            off_policy=settings.off_policy_correction,
            importance_cap=float(settings.importance_cap),
        )


# ---------------------------------------------------------------------------------------------
# Advantages


@dataclass(frozen=True)
class Advantages:
    """One advantage per completion, grouped like the rewards, and how many groups carry no signal."""

    values: list[list[float]]
    zero_signal_groups: int


def _std(values: Sequence[float]) -> float:
    # Sample standard deviation (Bessel-corrected), as TRL and verl use; one value has none.
    return statistics.stdev(values) if len(values) > 1 else 0.0


def compute_advantages(group_rewards: Sequence[Sequence[float]], mode: AdvantageMode) -> Advantages:
    """Advantages of each completion: reward minus its group's mean, scaled per `mode`.

    group: divided by (group std + eps) (GRPO); batch: divided by (std of all rewards + eps);
    none: not scaled (Dr. GRPO). A group whose rewards are all equal has zero advantages (and so no
    policy gradient); such groups are counted in `zero_signal_groups`.
    """
    batch_scale = 1.0
    if mode == "batch":
        batch_scale = _std([r for group in group_rewards for r in group]) + STD_EPS
    values: list[list[float]] = []
    zero_signal = 0
    for rewards in group_rewards:
        mean = math.fsum(rewards) / len(rewards)
        centered = [r - mean for r in rewards]
        if max(rewards) - min(rewards) == 0.0:
            zero_signal += 1
            centered = [0.0] * len(rewards)
        if mode == "group":
            scale = _std(rewards) + STD_EPS
        elif mode == "batch":
            scale = batch_scale
        else:
            scale = 1.0
        values.append([c / scale for c in centered])
    return Advantages(values=values, zero_signal_groups=zero_signal)


# ---------------------------------------------------------------------------------------------
# Per-token losses: each returns (loss per token, boolean "clipped" per token)


def importance_ratio(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """rho_t = exp(logp_theta - logp_ref), the per-token importance weight."""
    return torch.exp(logp - ref_logp)


def reinforce_loss(
    logp: torch.Tensor, ref_logp: torch.Tensor, adv: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Importance-sampled REINFORCE: -rho_t * A (never clipped)."""
    return -importance_ratio(logp, ref_logp) * adv, torch.zeros_like(adv, dtype=torch.bool)


def clipped_surrogate(
    ratio: torch.Tensor, adv: torch.Tensor, clip_low: float, clip_high: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's pessimistic surrogate -min(rho A, clip(rho, 1-low, 1+high) A) for any ratio tensor."""
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high) * adv
    is_clipped = clipped < unclipped
    return -torch.minimum(unclipped, clipped), is_clipped


DUAL_CLIP = 3.0
"""Dual-clip bound on a negative-advantage token's loss, in units of |A| (verl's clip_ratio_c)."""


def ppo_clip_loss(
    logp: torch.Tensor,
    ref_logp: torch.Tensor,
    adv: torch.Tensor,
    clip_low: float,
    clip_high: float,
    dual_clip: float | None = DUAL_CLIP,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO/GRPO clip (and DAPO with clip_high > clip_low) on the per-token ratio.

    With a negative advantage the pessimistic surrogate grows with the ratio without bound: a
    token whose probability rose e-fold several times since sampling would dominate the batch
    (losses of 1e10 were seen on a tiny model). Dual-clip PPO caps that term at
    `dual_clip * |A|` (and its gradient at zero); None disables the cap.
    """
    loss, is_clipped = clipped_surrogate(importance_ratio(logp, ref_logp), adv, clip_low, clip_high)
    if dual_clip is None:
        return loss, is_clipped
    cap = -dual_clip * adv
    capped = (adv < 0) & (loss > cap)
    return torch.where(capped, cap, loss), is_clipped | capped


def cispo_loss(
    logp: torch.Tensor, ref_logp: torch.Tensor, adv: torch.Tensor, max_weight: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """CISPO: -stopgrad(min(rho_t, max_weight)) * A * logp_t; every token keeps a gradient."""
    ratio = importance_ratio(logp, ref_logp).detach()
    weight = torch.clamp(ratio, max=max_weight)
    return -weight * adv * logp, ratio > max_weight


def sequence_mean(values: torch.Tensor, seq_ids: torch.Tensor, n_seqs: int) -> torch.Tensor:
    """Mean of `values` over each sequence's tokens: a tensor of `n_seqs` values."""
    sums = torch.zeros(n_seqs, dtype=values.dtype, device=values.device).index_add(0, seq_ids, values)
    counts = torch.bincount(seq_ids, minlength=n_seqs).to(values.dtype).clamp(min=1)
    return sums / counts


def gspo_loss(
    logp: torch.Tensor,
    ref_logp: torch.Tensor,
    adv: torch.Tensor,
    seq_ids: torch.Tensor,
    n_seqs: int,
    *,
    clip_low: float,
    clip_high: float,
    token_level: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GSPO: the clipped surrogate on the sequence ratio s_i = exp(mean_t(logp - ref)).

    Each token carries its sequence's loss, so sequence-mean aggregation gives the paper's
    objective. GSPO-token uses s_i,t = sg(s_i) * exp(logp_t - sg(logp_t)): the same value, but the
    gradient flows per token (so token advantages could differ).
    """
    log_seq_ratio = sequence_mean(logp - ref_logp, seq_ids, n_seqs)[seq_ids]
    if token_level:
        ratio = torch.exp(log_seq_ratio.detach() + logp - logp.detach())
    else:
        ratio = torch.exp(log_seq_ratio)
    return clipped_surrogate(ratio, adv, clip_low, clip_high)


@dataclass(frozen=True)
class ImportanceWeights:
    """Truncated importance weights min(pi_old / pi_sampler, cap) per token (detached)."""

    weights: torch.Tensor  # [N], 1 where the sampler's logprob is unknown
    capped: torch.Tensor  # [N] bool, the tokens whose weight the cap truncated
    known: torch.Tensor  # [N] bool, the tokens with a sampler logprob


def truncated_importance_weights(
    old_logp: torch.Tensor,
    sampler_logp: torch.Tensor,
    seq_ids: torch.Tensor,
    n_seqs: int,
    *,
    cap: float,
    per_sequence: bool,
) -> ImportanceWeights:
    """TIS: the behaviour policy is the sampler (its logprobs, NaN where unknown), the clip ratio's
    reference the policy at the start of the step; each token's loss is weighted by
    min(pi_old / pi_sampler, cap), or (per sequence) by min(prod_t pi_old / pi_sampler, cap) on
    every token of the sequence. Tokens without a sampler logprob get weight 1."""
    known = ~torch.isnan(sampler_logp)
    log_ratio = torch.where(
        known, old_logp.detach() - torch.nan_to_num(sampler_logp), torch.zeros_like(old_logp)
    )
    if per_sequence:
        sums = torch.zeros(n_seqs, dtype=log_ratio.dtype, device=log_ratio.device).index_add(
            0, seq_ids, log_ratio
        )
        log_ratio = sums[seq_ids]
    log_cap = math.log(cap)
    capped = log_ratio > log_cap
    weights = torch.exp(torch.clamp(log_ratio, max=log_cap))
    return ImportanceWeights(weights=weights, capped=capped & known, known=known)


def k3_kl(logp: torch.Tensor, base_logp: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 estimate of KL(policy || base) per token: exp(d) - d - 1, d = base - policy."""
    d = base_logp - logp
    return torch.exp(d) - d - 1.0


# ---------------------------------------------------------------------------------------------
# Aggregation


@dataclass(frozen=True)
class Normalizers:
    """Totals over the whole optimizer step (all micro-batches and ranks), so that summing the
    micro-batch losses gives exactly the step's aggregated loss."""

    tokens: int
    sequences: int
    max_context_length: int


def aggregate(
    token_loss: torch.Tensor,
    seq_ids: torch.Tensor,
    n_seqs: int,
    mode: Aggregation,
    norms: Normalizers,
) -> torch.Tensor:
    """This micro-batch's share of the optimizer step's loss.

    token-mean: sum over tokens / tokens in the step. sequence-mean: each sequence's token mean,
    summed / sequences in the step. constant: sum over tokens / (sequences in the step *
    max_context_length), Dr. GRPO's length-unbiased form.
    """
    if mode == "token-mean":
        return token_loss.sum() / max(norms.tokens, 1)
    if mode == "sequence-mean":
        return sequence_mean(token_loss, seq_ids, n_seqs).sum() / max(norms.sequences, 1)
    return token_loss.sum() / (max(norms.sequences, 1) * norms.max_context_length)


# ---------------------------------------------------------------------------------------------
# The whole objective for one micro-batch


@dataclass
class LossOutput:
    """The differentiable loss and detached sums for metrics (divide by `tokens` for means)."""

    loss: torch.Tensor
    tokens: int
    pg_loss_sum: float
    kl_sum: float
    clipped_tokens: int
    ratio_sum: float
    adv_logp_sum: float
    # truncated importance sampling: tokens with a sampler logprob, those capped, weight sum, and
    # the sum of |log pi_old - log pi_sampler| (the sampler-trainer logprob gap)
    is_tokens: int = 0
    is_capped_tokens: int = 0
    is_weight_sum: float = 0.0
    sampler_gap_sum: float = 0.0


def policy_loss(
    logp: torch.Tensor,
    ref_logp: torch.Tensor,
    adv: torch.Tensor,
    seq_ids: torch.Tensor,
    n_seqs: int,
    *,
    params: LossParams,
    norms: Normalizers,
    base_logp: torch.Tensor | None = None,
    sampler_logp: torch.Tensor | None = None,
) -> LossOutput:
    """Per-token policy loss (+ beta * k3 when base_logp is given), aggregated per `params`.

    With `sampler_logp` (the behaviour policy's, NaN where unknown) and an off-policy correction,
    `ref_logp` must be the policy's at the start of the step: the policy-gradient term of each token
    is weighted by the truncated importance weight (see `truncated_importance_weights`).
    """
    ref_logp = ref_logp.detach()
    method = params.method
    if method == "reinforce":
        token_loss, clipped = reinforce_loss(logp, ref_logp, adv)
    elif method in ("grpo", "dapo"):
        token_loss, clipped = ppo_clip_loss(logp, ref_logp, adv, params.clip_low, params.clip_high)
    elif method == "cispo":
        token_loss, clipped = cispo_loss(logp, ref_logp, adv, params.clip_high)
    else:
        token_loss, clipped = gspo_loss(
            logp,
            ref_logp,
            adv,
            seq_ids,
            n_seqs,
            clip_low=params.clip_low,
            clip_high=params.clip_high,
            token_level=method == "gspo-token",
        )
    importance = None
    if sampler_logp is not None and params.off_policy != "none":
        importance = truncated_importance_weights(
            ref_logp,
            sampler_logp,
            seq_ids,
            n_seqs,
            cap=params.importance_cap,
            per_sequence=params.off_policy == "sequence",
        )
        token_loss = token_loss * importance.weights
    pg_sum = float(token_loss.detach().sum())
    kl_sum = 0.0
    if base_logp is not None and params.kl_coefficient > 0:
        kl = k3_kl(logp, base_logp.detach())
        kl_sum = float(kl.detach().sum())
        token_loss = token_loss + params.kl_coefficient * kl
    loss = aggregate(token_loss, seq_ids, n_seqs, params.aggregation, norms)
    with torch.no_grad():
        ratio_sum = float(importance_ratio(logp, ref_logp).sum())
        adv_logp_sum = float((adv * logp).sum())
        extra: dict[str, Any] = {}
        if importance is not None:
            assert sampler_logp is not None
            known = importance.known
            extra = {
                "is_tokens": int(known.sum()),
                "is_capped_tokens": int(importance.capped.sum()),
                "is_weight_sum": float(importance.weights[known].sum()),
                "sampler_gap_sum": float((ref_logp[known] - sampler_logp[known]).abs().sum()),
            }
    return LossOutput(
        loss=loss,
        tokens=int(logp.numel()),
        pg_loss_sum=pg_sum,
        kl_sum=kl_sum,
        clipped_tokens=int(clipped.sum()),
        ratio_sum=ratio_sum,
        adv_logp_sum=adv_logp_sum,
        **extra,
    )
