"""The training session's core on the tiny model, without HTTP: Tinker's loss definitions against a
hand computation from the model's logits, gradient accumulation and clearing, refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from rft_trainer.model import load_base_model
from rft_trainer.session.core import AdamStep, SessionError, TrainingSession
from rft_trainer.session.wire import WireDatum

CPU = torch.device("cpu")


def _datum(tokens: list[int], **inputs: list[float]) -> WireDatum:
    arrays = {k: np.asarray(v, dtype=np.float32) for k, v in inputs.items()}
    arrays["target_tokens"] = np.asarray(tokens[1:], dtype=np.int64)
    return WireDatum(tokens=np.asarray(tokens[:-1], dtype=np.int64), inputs=arrays)


@pytest.fixture
def session(tiny_model_dir: Path) -> TrainingSession:
    base, _ = load_base_model(str(tiny_model_dir), CPU)
    s = TrainingSession(base, "tiny-base", CPU, max_context_length=64)
    s.create(s.resolve_spec(rank=4, seed=0, train_attn=True, train_mlp=True, train_unembed=False))
    return s


def _reference_logprobs(session: TrainingSession, tokens: list[int]) -> torch.Tensor:
    with torch.no_grad(), session.policy.disable_adapter():
        logits = session.policy(input_ids=torch.tensor([tokens[:-1]])).logits[0].float()
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(tokens[1:]).unsqueeze(-1)).squeeze(-1)


def test_cross_entropy_is_the_weighted_sum_of_target_logprobs(session: TrainingSession) -> None:
    a, b = [3, 14, 15, 92, 65, 35], [8, 9, 79, 32]
    weights_a, weights_b = [0.0, 0.0, 1.0, 1.0, 0.5], [1.0, 2.0, 0.0]
    out = session.forward_backward(
        [_datum(a, weights=weights_a), _datum(b, weights=weights_b)], "cross_entropy", forward_only=True
    )
    # a new adapter's B is zero: the policy is the base model, packed or not
    want_a, want_b = _reference_logprobs(session, a), _reference_logprobs(session, b)
    np.testing.assert_allclose(out.outputs[0]["logprobs"], want_a.numpy(), atol=1e-5)
    np.testing.assert_allclose(out.outputs[1]["logprobs"], want_b.numpy(), atol=1e-5)
    want = -(torch.tensor(weights_a) * want_a).sum() - (torch.tensor(weights_b) * want_b).sum()
    assert out.metrics["loss:sum"] == pytest.approx(float(want), rel=1e-5)
    assert all(p.grad is None for p in session.params)  # forward only


def test_gradients_add_up_until_the_optimizer_step(session: TrainingSession) -> None:
    datum = _datum([3, 14, 15, 92, 65], advantages=[0.0, 1.0, -1.0, 0.5], logprobs=[-6.0] * 4)
    session.forward_backward([datum], "importance_sampling")
    once = [p.grad.clone() for p in session.params if p.grad is not None]
    session.forward_backward([datum], "importance_sampling")
    twice = [p.grad.clone() for p in session.params if p.grad is not None]
    assert once, "the adapter got no gradient"
    for g1, g2 in zip(once, twice, strict=True):
        torch.testing.assert_close(g2, 2 * g1)
    before = session.forward_backward([datum], "importance_sampling", forward_only=True).outputs[0][
        "logprobs"
    ]
    metrics = session.optim_step(AdamStep(learning_rate=1e-2))
    assert metrics["step:max"] == 1.0
    assert all(p.grad is None for p in session.params)
    after = session.forward_backward([datum], "importance_sampling", forward_only=True).outputs[0]["logprobs"]
    assert not np.allclose(before, after)


def test_refusals_say_why(session: TrainingSession) -> None:
    with pytest.raises(SessionError, match="train_unembed"):
        session.resolve_spec(rank=4, seed=0, train_attn=True, train_mlp=True, train_unembed=True)
    with pytest.raises(SessionError, match="one adapter per session"):
        session.create(
            session.resolve_spec(rank=4, seed=0, train_attn=True, train_mlp=False, train_unembed=False)
        )
    with pytest.raises(SessionError, match="'dro' is not supported"):
        session.forward_backward([_datum([1, 2, 3], advantages=[1, 1], logprobs=[0, 0])], "dro")
    with pytest.raises(SessionError, match="no 'logprobs'"):
        session.forward_backward([_datum([1, 2, 3], advantages=[1, 1])], "importance_sampling")
    with pytest.raises(SessionError, match="expected \\[2\\]"):
        session.forward_backward([_datum([1, 2, 3], weights=[1, 1, 1])], "cross_entropy")
    with pytest.raises(SessionError, match="token ids must lie"):
        session.forward_backward([_datum([1, 2, 100_000], weights=[1, 1])], "cross_entropy")


@pytest.mark.parametrize("loss_fn", ["ppo", "cispo"])
def test_clipped_losses_follow_tinkers_definitions(session: TrainingSession, loss_fn: str) -> None:
    tokens = [3, 14, 15, 92, 65, 35, 89]
    logp = _reference_logprobs(session, tokens)
    # ratios exp(0.5), exp(-0.5), exp(0.1), exp(-0.1), 1, exp(0.3): some clipped, some not
    sampling = logp - torch.tensor([0.5, -0.5, 0.1, -0.1, 0.0, 0.3])
    adv = torch.tensor([1.0, 1.0, -1.0, 2.0, 0.0, -0.5])
    config = {"clip_low_threshold": 0.9, "clip_high_threshold": 1.2}
    datum = _datum(tokens, advantages=adv.tolist(), logprobs=sampling.tolist())

    out = session.forward_backward([datum], loss_fn, forward_only=True, config=config)

    ratio = torch.exp(logp - sampling)
    clipped = ratio.clamp(0.9, 1.2)
    if loss_fn == "ppo":
        want = -torch.minimum(ratio * adv, clipped * adv).sum()
    else:
        want = -(clipped * adv * logp).sum()
    assert out.metrics["loss:sum"] == pytest.approx(float(want), rel=1e-5)
    with pytest.raises(SessionError, match="not supported"):
        session.forward_backward([datum], loss_fn, config={"clip_ratio": 0.2})


def test_load_state_onto_the_adapter_restores_weights_and_optimizer(
    session: TrainingSession, tmp_path: Path
) -> None:
    datum = _datum([3, 14, 15, 92, 65], advantages=[0.0, 1.0, -1.0, 0.5], logprobs=[-6.0] * 4)
    session.forward_backward([datum], "importance_sampling")
    session.optim_step(AdamStep(learning_rate=1e-2))
    url = (tmp_path / "bucket" / "state").as_uri()
    session.save_state(url, {})
    saved = [p.detach().clone() for p in session.params]
    assert session.optimizer is not None
    saved_steps = [float(s["step"]) for s in session.optimizer.state_dict()["state"].values()]
    session.forward_backward([datum], "importance_sampling")
    session.optim_step(AdamStep(learning_rate=1e-2))
    assert any(not torch.equal(p, q) for p, q in zip(session.params, saved, strict=True))

    session.load_state(url, with_optimizer=True, create=False)  # the client's legacy load_state

    for p, q in zip(session.params, saved, strict=True):
        assert torch.equal(p, q)
    assert session.steps == 1
    assert [float(s["step"]) for s in session.optimizer.state_dict()["state"].values()] == saved_steps
    with pytest.raises(SessionError, match="one adapter per session"):
        session.load_state(url, with_optimizer=True, create=True)
