"""Each loss, advantage mode and aggregation against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch
from rft.api.reinforcement_step import LossSettings
from rft_trainer.loss import (
    LossOutput,
    LossParams,
    Normalizers,
    aggregate,
    cispo_loss,
    compute_advantages,
    gspo_loss,
    k3_kl,
    policy_loss,
    ppo_clip_loss,
    reinforce_loss,
)

# A tiny batch: two sequences of two completion tokens each.
LOGP = [-1.0, -0.5, -2.0, -0.1]
REF = [-1.2, -0.5, -1.5, -0.1]  # log ratios: 0.2, 0, -0.5, 0
ADV = [1.0, 1.0, -1.0, -1.0]
SEQ = [0, 0, 1, 1]
E02, E05 = math.exp(0.2), math.exp(-0.5)


def _t(values: list[float], grad: bool = False) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64, requires_grad=grad)


def _seq() -> torch.Tensor:
    return torch.tensor(SEQ)


def _grad(token_loss: torch.Tensor, logp: torch.Tensor) -> list[float]:
    torch.autograd.backward(token_loss.sum())
    assert logp.grad is not None
    return logp.grad.tolist()


def test_reinforce_is_minus_ratio_times_advantage() -> None:
    logp = _t(LOGP, grad=True)
    loss, clipped = reinforce_loss(logp, _t(REF), _t(ADV))
    assert loss.tolist() == pytest.approx([-E02, -1.0, E05, 1.0])
    assert not clipped.any()
    # d(-rho A)/d logp = -rho A
    assert _grad(loss, logp) == pytest.approx([-E02, -1.0, E05, 1.0])


def test_grpo_clips_symmetrically() -> None:
    logp = _t(LOGP, grad=True)
    loss, clipped = ppo_clip_loss(logp, _t(REF), _t(ADV), 0.2, 0.2)
    # token 0: rho 1.221 > 1.2 with A > 0 -> clipped at 1.2; token 2: rho 0.607 < 0.8 with A < 0 -> 0.8
    assert loss.tolist() == pytest.approx([-1.2, -1.0, 0.8, 1.0])
    assert clipped.tolist() == [True, False, True, False]
    # clipped tokens carry no gradient
    assert _grad(loss, logp) == pytest.approx([0.0, -1.0, 0.0, 1.0])


def test_dapo_clip_higher_lets_the_positive_token_through() -> None:
    logp = _t(LOGP, grad=True)
    loss, clipped = ppo_clip_loss(logp, _t(REF), _t(ADV), 0.2, 0.28)
    assert loss.tolist() == pytest.approx([-E02, -1.0, 0.8, 1.0])
    assert clipped.tolist() == [False, False, True, False]


def test_default_clip_ranges_per_method() -> None:
    assert LossParams.from_settings(LossSettings(method="grpo")).clip_high == 0.2
    assert LossParams.from_settings(LossSettings(method="dapo")).clip_high == 0.28
    assert LossParams.from_settings(LossSettings(method="cispo")).clip_high == 5.0
    gspo = LossParams.from_settings(LossSettings(method="gspo"))
    assert (gspo.clip_low, gspo.clip_high) == (3e-4, 4e-4)
    explicit = LossParams.from_settings(LossSettings(method="dapo", clip_low="0.1", clip_high="0.5"))
    assert (explicit.clip_low, explicit.clip_high) == (0.1, 0.5)
    assert LossParams.from_settings(LossSettings(kl_coefficient="0.05")).kl_coefficient == 0.05


def test_cispo_keeps_a_gradient_on_every_token_with_a_capped_weight() -> None:
    logp = _t(LOGP, grad=True)
    loss, clipped = cispo_loss(logp, _t(REF), _t(ADV), 1.1)
    w0 = 1.1  # rho 1.221 capped at 1.1
    assert loss.tolist() == pytest.approx([w0 * 1.0, 0.5, -E05 * 2.0, -0.1])
    assert clipped.tolist() == [True, False, False, False]
    # the weight is a constant: d/dlogp = -w A, also on the capped token
    assert _grad(loss, logp) == pytest.approx([-w0, -1.0, E05, 1.0])


def test_gspo_uses_the_sequence_ratio() -> None:
    s0, s1 = math.exp(0.1), math.exp(-0.25)  # exp(mean log ratio) of each sequence
    logp = _t(LOGP, grad=True)
    loss, clipped = gspo_loss(logp, _t(REF), _t(ADV), _seq(), 2, clip_low=3e-4, clip_high=4e-4, token_level=False)
    assert loss.tolist() == pytest.approx([-1.0004, -1.0004, 0.9997, 0.9997])
    assert clipped.all()
    logp = _t(LOGP, grad=True)
    loss, clipped = gspo_loss(logp, _t(REF), _t(ADV), _seq(), 2, clip_low=0.5, clip_high=0.5, token_level=False)
    assert loss.tolist() == pytest.approx([-s0, -s0, s1, s1])
    assert not clipped.any()
    # each token's loss is -A * exp(mean_t log ratio): d/dlogp_t summed over the 2 tokens = -A s / 2 * 2
    assert _grad(loss, logp) == pytest.approx([-s0, -s0, s1, s1])


def test_gspo_token_has_the_same_value_but_per_token_gradient() -> None:
    s0, s1 = math.exp(0.1), math.exp(-0.25)
    logp = _t(LOGP, grad=True)
    loss, _ = gspo_loss(logp, _t(REF), _t(ADV), _seq(), 2, clip_low=0.5, clip_high=0.5, token_level=True)
    assert loss.tolist() == pytest.approx([-s0, -s0, s1, s1])
    # s_i,t = sg(s_i) exp(logp_t - sg(logp_t)): each token's loss depends only on its own logp
    assert _grad(loss, logp) == pytest.approx([-s0, -s0, s1, s1])
    logp = _t(LOGP, grad=True)
    first_token_only, _ = gspo_loss(
        logp, _t(REF), _t(ADV), _seq(), 2, clip_low=0.5, clip_high=0.5, token_level=True
    )
    torch.autograd.backward(first_token_only[0])
    assert logp.grad is not None
    assert logp.grad.tolist() == pytest.approx([-s0, 0.0, 0.0, 0.0])
    logp = _t(LOGP, grad=True)
    seq_level, _ = gspo_loss(logp, _t(REF), _t(ADV), _seq(), 2, clip_low=0.5, clip_high=0.5, token_level=False)
    torch.autograd.backward(seq_level[0])
    assert logp.grad is not None
    assert logp.grad.tolist() == pytest.approx([-s0 / 2, -s0 / 2, 0.0, 0.0])


def test_k3_kl() -> None:
    logp = _t(LOGP)
    base = _t([-1.0, -0.7, -2.5, 0.0])  # d = base - logp = 0, -0.2, -0.5, 0.1
    expected = [0.0, math.exp(-0.2) - 0.8, math.exp(-0.5) - 0.5, math.exp(0.1) - 1.1]
    assert k3_kl(logp, base).tolist() == pytest.approx(expected)
    assert (k3_kl(logp, base) >= 0).all()


NORMS = Normalizers(tokens=10, sequences=4, max_context_length=8)
TOKEN_LOSS = [1.0, 2.0, 3.0, 4.0, 5.0]
TOKEN_SEQ = [0, 0, 1, 1, 1]


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("token-mean", 15 / 10),  # sum / tokens in the optimizer step
        ("sequence-mean", (1.5 + 4.0) / 4),  # per-sequence means, summed / sequences in the step
        ("constant", 15 / (4 * 8)),  # sum / (sequences * max_context_length)
    ],
)
def test_aggregation(mode: str, expected: float) -> None:
    value = aggregate(_t(TOKEN_LOSS), torch.tensor(TOKEN_SEQ), 2, mode, NORMS)  # type: ignore[arg-type]
    assert float(value) == pytest.approx(expected)


@pytest.mark.parametrize("mode", ["token-mean", "sequence-mean", "constant"])
def test_micro_batches_sum_to_the_whole_step(mode: str) -> None:
    losses = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    seqs = [0, 0, 1, 2, 2, 2]
    norms = Normalizers(tokens=6, sequences=3, max_context_length=8)
    whole = aggregate(_t(losses), torch.tensor(seqs), 3, mode, norms)  # type: ignore[arg-type]
    first = aggregate(_t(losses[:3]), torch.tensor(seqs[:3]), 2, mode, norms)  # type: ignore[arg-type]
    second = aggregate(_t(losses[3:]), torch.tensor([0, 0, 0]), 1, mode, norms)  # type: ignore[arg-type]
    assert float(first + second) == pytest.approx(float(whole))


def test_advantages_group_mode() -> None:
    adv = compute_advantages([[1.0, 0.0], [2.0, 2.0, 2.0], [0.0, 1.0, 2.0]], "group")
    half = 0.5 / math.sqrt(0.5)  # +-0.5 over the sample std of (1, 0), sqrt(0.5)
    assert adv.values[0] == pytest.approx([half, -half], abs=1e-5)
    assert adv.values[1] == [0.0, 0.0, 0.0]
    assert adv.values[2] == pytest.approx([-1.0, 0.0, 1.0], abs=1e-5)  # sample std 1
    assert adv.zero_signal_groups == 1


def test_advantages_none_mode_only_centres() -> None:
    adv = compute_advantages([[1.0, 0.0], [2.0, 2.0, 2.0], [0.0, 1.0, 2.0]], "none")
    assert adv.values == [[0.5, -0.5], [0.0, 0.0, 0.0], [-1.0, 0.0, 1.0]]
    assert adv.zero_signal_groups == 1


def test_advantages_batch_mode_divides_by_the_std_of_all_rewards() -> None:
    adv = compute_advantages([[1.0, 0.0], [2.0, 2.0, 2.0], [0.0, 1.0, 2.0]], "batch")
    std = math.sqrt(5.5 / 7)  # rewards 1,0,2,2,2,0,1,2: mean 1.25, squared deviations sum to 5.5
    assert adv.values[0] == pytest.approx([0.5 / std, -0.5 / std], abs=1e-5)
    assert adv.values[2] == pytest.approx([-1 / std, 0.0, 1 / std], abs=1e-5)
    assert adv.values[1] == [0.0, 0.0, 0.0]


def test_single_completion_groups_carry_no_signal() -> None:
    adv = compute_advantages([[3.0], [1.0]], "group")
    assert adv.values == [[0.0], [0.0]]
    assert adv.zero_signal_groups == 2


def test_on_policy_clip_loss_reads_zero_but_has_the_reinforce_gradient() -> None:
    """With ref = the policy's own detached logprobs rho = 1: loss ~ -mean(A) = 0, gradient -A/N."""
    logp = _t(LOGP, grad=True)
    params = LossParams.from_settings(LossSettings(method="grpo", kl_coefficient="0"))
    out = policy_loss(
        logp,
        logp.detach(),
        _t(ADV),
        _seq(),
        2,
        params=params,
        norms=Normalizers(tokens=4, sequences=2, max_context_length=8),
    )
    assert float(out.loss.detach()) == pytest.approx(0.0)
    torch.autograd.backward(out.loss)
    assert logp.grad is not None
    assert logp.grad.tolist() == pytest.approx([-0.25, -0.25, 0.25, 0.25])
    assert out.adv_logp_sum == pytest.approx(-1.0 - 0.5 + 2.0 + 0.1)
    assert out.ratio_sum == pytest.approx(4.0)
    assert out.clipped_tokens == 0


def test_policy_loss_adds_the_weighted_kl() -> None:
    logp = _t(LOGP, grad=True)
    base = _t([-1.0, -0.7, -2.5, 0.0])
    params = LossParams.from_settings(LossSettings(method="reinforce", kl_coefficient="0.5"))
    norms = Normalizers(tokens=4, sequences=2, max_context_length=8)
    out = policy_loss(logp, _t(REF), _t(ADV), _seq(), 2, params=params, norms=norms, base_logp=base)
    kl = [0.0, math.exp(-0.2) - 0.8, math.exp(-0.5) - 0.5, math.exp(0.1) - 1.1]
    pg = [-E02, -1.0, E05, 1.0]
    assert float(out.loss.detach()) == pytest.approx((sum(pg) + 0.5 * sum(kl)) / 4)
    assert out.kl_sum == pytest.approx(sum(kl))
    assert out.pg_loss_sum == pytest.approx(sum(pg))


def test_dual_clip_caps_negative_advantage_tokens_whose_ratio_exploded() -> None:
    logp = torch.tensor([0.0, 0.0, 0.0], requires_grad=True)
    ref = torch.tensor([-25.0, -25.0, -0.1])  # ratios e^25, e^25 and about 1.1
    adv = torch.tensor([-1.0, 1.0, -1.0])
    loss, clipped = ppo_clip_loss(logp, ref, adv, 0.2, 0.2)
    # A < 0 and an exploded ratio: capped at 3|A|; A > 0: clipped at (1 + 0.2) A; small ratio: untouched.
    assert loss.tolist() == pytest.approx([3.0, -1.2, float(torch.exp(torch.tensor(0.1)))], rel=1e-5)
    assert clipped.tolist() == [True, True, False]
    loss.sum().backward()
    assert logp.grad is not None
    assert logp.grad[0].item() == 0.0, "a capped token gives no gradient"
    unbounded, _ = ppo_clip_loss(logp.detach(), ref, adv, 0.2, 0.2, dual_clip=None)
    assert unbounded[0].item() > 1e10


def _tis_gradient(cap: float, sampler: list[float], mode: str = "token") -> tuple[list[float], LossOutput]:
    """d loss / d logp for GRPO with truncated importance sampling on the first pass (pi = pi_old)."""
    logp = _t(LOGP, grad=True)
    params = LossParams.from_settings(
        LossSettings(method="grpo", kl_coefficient="0", off_policy_correction=mode, importance_cap=str(cap))
    )
    norms = Normalizers(tokens=4, sequences=2, max_context_length=8)
    out = policy_loss(
        logp, _t(LOGP), _t(ADV), _seq(), 2, params=params, norms=norms, sampler_logp=_t(sampler)
    )
    torch.autograd.backward(out.loss)
    assert logp.grad is not None
    return logp.grad.tolist(), out


def test_the_importance_cap_changes_the_gradient_only_beyond_it() -> None:
    # pi_old / pi_sampler per token: e^0.1, e^0.5, e^1, e^2; the cap 2 truncates the last two
    log_ratios = [0.1, 0.5, 1.0, 2.0]
    sampler = [lp - r for lp, r in zip(LOGP, log_ratios, strict=True)]
    capped, out = _tis_gradient(2.0, sampler)
    uncapped, _ = _tis_gradient(1000.0, sampler)
    # on the first pass rho = 1 (no PPO clip): d loss / d logp_t = -w_t A_t / tokens
    assert uncapped == pytest.approx([-math.exp(r) * a / 4 for r, a in zip(log_ratios, ADV, strict=True)])
    assert capped[:2] == pytest.approx(uncapped[:2])  # below the cap: the same gradient
    assert capped[2:] == pytest.approx([-2.0 * a / 4 for a in ADV[2:]])  # beyond it: weight 2
    assert capped[2] != pytest.approx(uncapped[2])
    assert capped[3] != pytest.approx(uncapped[3])
    assert (out.is_tokens, out.is_capped_tokens) == (4, 2)
    assert out.is_weight_sum == pytest.approx(math.exp(0.1) + math.exp(0.5) + 2 + 2)
    assert out.sampler_gap_sum == pytest.approx(sum(log_ratios))


def test_unknown_sampler_logprobs_weigh_one_and_sequence_mode_weighs_whole_sequences() -> None:
    sampler = [LOGP[0] - 0.3, math.nan, LOGP[2] - 0.4, LOGP[3] - 0.5]
    grad, out = _tis_gradient(2.0, sampler)
    weights = [math.exp(0.3), 1.0, math.exp(0.4), math.exp(0.5)]
    assert grad == pytest.approx([-w * a / 4 for w, a in zip(weights, ADV, strict=True)])
    assert out.is_tokens == 3
    grad, out = _tis_gradient(2.0, sampler, mode="sequence")
    # sequence 0: e^0.3 (the unknown token adds nothing); sequence 1: e^0.9 > 2, capped
    weights = [math.exp(0.3), math.exp(0.3), 2.0, 2.0]
    assert grad == pytest.approx([-w * a / 4 for w, a in zip(weights, ADV, strict=True)])
    assert out.is_capped_tokens == 2


def test_without_correction_the_sampler_logprobs_change_nothing() -> None:
    sampler = [lp - 1.0 for lp in LOGP]
    grad, out = _tis_gradient(2.0, sampler, mode="none")
    assert grad == pytest.approx([-a / 4 for a in ADV])
    assert out.is_tokens == 0
