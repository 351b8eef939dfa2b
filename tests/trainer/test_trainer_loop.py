"""The optimisation loop on the tiny model: every loss runs, accumulation keeps the aggregation,
sampling logprobs are the reference when present, the KL reference is the adapter-free base."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from rft.api.model import LoraSettings
from rft.api.reinforcement_step import LossSettings
from rft_trainer.data import RawSample, Sample, SampleTokenizer, build_batch, tokenize_samples
from rft_trainer.errors import BadInputError
from rft_trainer.logprobs import CompletionLogprobs
from rft_trainer.loop import OptimSettings, Trainer, warmup_factor
from rft_trainer.loss import LossParams
from rft_trainer.model import attach_new_adapter, enable_gradient_checkpointing, load_base_model
from torch.optim.optimizer import register_optimizer_step_pre_hook

CPU = torch.device("cpu")
LORA = LoraSettings(rank=4, alpha=8, target_modules=["q_proj", "v_proj", "up_proj"])


def _settings(**overrides: Any) -> OptimSettings:
    values: dict[str, Any] = {
        "learning_rate": 1e-3,
        "weight_decay": 0.0,
        "max_grad_norm": 0.0,
        "warmup_steps": 0,
        "gradient_accumulation_steps": 1,
        "epochs": 1,
        "batch_tokens": 4096,
        "max_context_length": 128,
        "seed": 0,
    }
    values.update(overrides)
    return OptimSettings(**values)


@pytest.fixture
def tokenizer_and_policy(tiny_model_dir: Path) -> tuple[Any, Any]:
    model, tokenizer = load_base_model(str(tiny_model_dir), CPU)
    return tokenizer, attach_new_adapter(model, LORA, seed=0)


def _samples(tokenizer: Any) -> list[Sample]:
    completions = [("cat cat cat", 1.0), ("dog", -1.0), ("apple cat red blue", 0.5), ("fish", -0.5)]
    raw = [
        RawSample(
            line=g + 1,
            group=g,
            where=f"samples[{k}]",
            prompt=[{"role": "user", "content": f"question {g}"}],
            completion=text,
            reward=adv,
            advantage=adv,
            sampling_logprobs=None,
        )
        for g in range(3)
        for k, (text, adv) in enumerate(completions)
    ]
    return tokenize_samples(raw, SampleTokenizer(tokenizer, 128)).samples


@pytest.fixture
def captured_gradients() -> Iterator[list[dict[str, torch.Tensor]]]:
    """The LoRA gradients each optimizer step applies, captured just before the step."""
    captured: list[dict[str, torch.Tensor]] = []

    def hook(optimizer: torch.optim.Optimizer, _args: Any, _kwargs: Any) -> None:
        captured.append(
            {
                f"{g}.{i}": p.grad.clone()
                for g, group in enumerate(optimizer.param_groups)
                for i, p in enumerate(group["params"])
                if p.grad is not None
            }
        )

    handle = register_optimizer_step_pre_hook(hook)
    yield captured
    handle.remove()


@pytest.mark.parametrize("method", ["grpo", "dapo", "gspo", "gspo-token", "cispo", "reinforce"])
@pytest.mark.parametrize("aggregation", ["token-mean", "sequence-mean", "constant"])
def test_every_loss_and_aggregation_trains(
    tokenizer_and_policy: tuple[Any, Any], method: str, aggregation: str
) -> None:
    tokenizer, policy = tokenizer_and_policy
    params = LossParams.from_settings(
        LossSettings(method=method, aggregation=aggregation, kl_coefficient="0.01")
    )
    before = {n: p.detach().clone() for n, p in policy.named_parameters() if "lora_B" in n}
    outcome = Trainer(policy, _samples(tokenizer), _settings(epochs=2), params, CPU, new_adapter=True).run()
    assert outcome.optimizer_steps == 2
    assert all(math.isfinite(s.loss) and s.grad_norm > 0 for s in outcome.steps)
    after = dict(policy.named_parameters())
    assert all(not torch.equal(before[n], after[n]) for n in before)


@pytest.mark.parametrize("aggregation", ["token-mean", "sequence-mean", "constant"])
def test_gradient_accumulation_gives_the_gradient_of_the_whole_batch(
    tiny_model_dir: Path, captured_gradients: list[dict[str, torch.Tensor]], aggregation: str
) -> None:
    params = LossParams.from_settings(LossSettings(method="grpo", aggregation=aggregation, kl_coefficient="0"))
    grads = []
    for budget, accumulation in ((4096, 1), (60, 8)):
        model, tokenizer = load_base_model(str(tiny_model_dir), CPU)
        policy = attach_new_adapter(model, LORA, seed=0)
        trainer = Trainer(
            policy,
            _samples(tokenizer),
            _settings(batch_tokens=budget, gradient_accumulation_steps=accumulation),
            params,
            CPU,
            new_adapter=True,
        )
        n_batches = len(trainer.epoch_batches[0])
        trainer.run()
        grads.append(captured_gradients.pop())
        assert (n_batches == 1) == (accumulation == 1)
    whole, accumulated = grads
    assert whole.keys() == accumulated.keys()
    for name, grad in whole.items():
        assert torch.allclose(grad, accumulated[name], atol=1e-6, rtol=1e-4), name


def _below_policy(tokenizer: Any, policy: Any, nats: float) -> list[Sample]:
    """The samples with sampling logprobs `nats` below the policy's own."""
    scorer = CompletionLogprobs(policy)
    samples = []
    with torch.no_grad():
        for s in _samples(tokenizer):
            batch = build_batch([s])
            logp = scorer(batch.input_ids, batch.position_ids, batch.target_positions)
            samples.append(Sample(**{**s.__dict__, "sampling_logprobs": (logp - nats).tolist()}))
    return samples


def test_sampling_logprobs_are_the_ratio_reference(tokenizer_and_policy: tuple[Any, Any]) -> None:
    """Sampling logprobs 0.5 nats below the policy's: ratio e^0.5 on the first pass, and clipped
    (without off-policy correction)."""
    tokenizer, policy = tokenizer_and_policy
    samples = _below_policy(tokenizer, policy, 0.5)
    params = LossParams.from_settings(
        LossSettings(method="grpo", kl_coefficient="0", off_policy_correction="none")
    )
    outcome = Trainer(policy, samples, _settings(), params, CPU, new_adapter=True).run()
    metrics = outcome.steps[0].metrics()
    assert metrics["ratio_mean"] == pytest.approx(math.exp(0.5), rel=1e-4)
    # rho = 1.65 > 1.2: every token with a positive advantage is clipped
    positive = sum(s.completion_len for s in samples if s.advantage > 0)
    assert metrics["clip_fraction"] == pytest.approx(positive / sum(s.completion_len for s in samples))


@pytest.mark.parametrize(("nats", "capped"), [(0.5, False), (1.0, True)])
def test_with_truncated_importance_sampling_the_sampler_is_the_behaviour_policy(
    tokenizer_and_policy: tuple[Any, Any], nats: float, capped: bool
) -> None:
    """TIS (the default): the clip ratio is taken against the policy at the start of the step (1 on
    the first pass, nothing clipped), each token weighted by min(e^nats, 2)."""
    tokenizer, policy = tokenizer_and_policy
    samples = _below_policy(tokenizer, policy, nats)
    params = LossParams.from_settings(LossSettings(method="grpo", kl_coefficient="0"))
    assert params.off_policy == "token"
    assert params.importance_cap == 2.0
    metrics = Trainer(policy, samples, _settings(), params, CPU, new_adapter=True).run().steps[0].metrics()
    assert metrics["ratio_mean"] == pytest.approx(1.0, abs=1e-6)
    assert metrics["clip_fraction"] == 0.0
    assert metrics["sampler_logp_abs_diff"] == pytest.approx(nats, abs=1e-4)
    assert metrics["is_weight_mean"] == pytest.approx(min(math.exp(nats), 2.0), rel=1e-4)
    assert metrics["is_capped_fraction"] == (1.0 if capped else 0.0)


def test_without_sampling_logprobs_the_first_ratio_is_one(tokenizer_and_policy: tuple[Any, Any]) -> None:
    tokenizer, policy = tokenizer_and_policy
    params = LossParams.from_settings(LossSettings(method="grpo", kl_coefficient="0"))
    outcome = Trainer(policy, _samples(tokenizer), _settings(epochs=3), params, CPU, new_adapter=True).run()
    first, last = outcome.steps[0].metrics(), outcome.steps[-1].metrics()
    assert first["ratio_mean"] == pytest.approx(1.0, abs=1e-6)
    assert first["clip_fraction"] == 0.0
    assert last["adv_logp"] > first["adv_logp"]  # the metric that moves while the loss reads ~0


def test_kl_is_measured_against_the_base_with_the_adapter_disabled(tiny_model_dir: Path) -> None:
    params = LossParams.from_settings(LossSettings(method="grpo", kl_coefficient="0.1"))
    model, tokenizer = load_base_model(str(tiny_model_dir), CPU)
    fresh = attach_new_adapter(model, LORA, seed=0)
    outcome = Trainer(fresh, _samples(tokenizer), _settings(), params, CPU, new_adapter=True).run()
    assert outcome.steps[0].metrics()["kl"] == pytest.approx(0.0, abs=1e-7)  # B = 0: policy == base

    model, tokenizer = load_base_model(str(tiny_model_dir), CPU)
    continued = attach_new_adapter(model, LORA, seed=0)
    with torch.no_grad():
        for name, param in continued.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.2)  # as if continuing from a trained checkpoint
    outcome = Trainer(continued, _samples(tokenizer), _settings(), params, CPU, new_adapter=False).run()
    assert outcome.steps[0].metrics()["kl"] > 1e-4


def test_warmup_is_linear_then_constant() -> None:
    assert [warmup_factor(step, 4) for step in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert warmup_factor(0, 0) == 1.0


def test_gradient_checkpointing_gives_the_same_gradients(
    tiny_model_dir: Path, captured_gradients: list[dict[str, torch.Tensor]]
) -> None:
    params = LossParams.from_settings(LossSettings(method="grpo", kl_coefficient="0"))
    for checkpointing in (False, True):
        model, tokenizer = load_base_model(str(tiny_model_dir), CPU)
        policy = attach_new_adapter(model, LORA, seed=0)
        if checkpointing:
            enable_gradient_checkpointing(policy)
        assert policy.get_base_model().is_activation_checkpointing == checkpointing
        Trainer(policy, _samples(tokenizer), _settings(), params, CPU, new_adapter=True).run()
    plain, checkpointed = captured_gradients
    assert plain.keys() == checkpointed.keys()
    assert any(g.abs().sum() > 0 for g in plain.values())  # (lora_A has none yet while B = 0)
    for name, grad in plain.items():
        assert torch.allclose(grad, checkpointed[name], atol=1e-6, rtol=1e-4), name


def test_a_diverging_step_stops_training_before_the_update(tokenizer_and_policy: tuple[Any, Any]) -> None:
    tokenizer, policy = tokenizer_and_policy
    # Sampling logprobs 1e4 nats below the policy's: exp(logp - ref) overflows to inf.
    samples = [Sample(**{**s.__dict__, "sampling_logprobs": [-1e4] * s.completion_len}) for s in _samples(tokenizer)]
    before = {n: p.detach().clone() for n, p in policy.named_parameters() if p.requires_grad}
    params = LossParams.from_settings(
        LossSettings(method="reinforce", kl_coefficient="0", off_policy_correction="none")
    )
    with pytest.raises(BadInputError, match="training diverged: loss") as caught:
        Trainer(policy, samples, _settings(), params, CPU, new_adapter=True).run()
    assert caught.value.reason == "TrainingFailed"
    assert all(torch.equal(before[n], p) for n, p in policy.named_parameters() if p.requires_grad)
