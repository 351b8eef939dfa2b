"""Completion log-probabilities: chunked equals full log-softmax, packed equals unpacked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from rft.api.model import LoraSettings
from rft_trainer.data import Sample, build_batch
from rft_trainer.logprobs import CompletionLogprobs, gather_logprobs, row_spans
from rft_trainer.model import attach_new_adapter
from transformers import AutoModelForCausalLM

LENGTHS = [(11, 4), (7, 2), (13, 6), (5, 1)]  # (tokens, prompt tokens) of each sequence


@pytest.fixture(scope="module")
def policy(tiny_model_dir: Path) -> Any:
    """The tiny model with a LoRA adapter whose B is non-zero, so the adapter matters."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    peft_model = attach_new_adapter(
        model, LoraSettings(rank=4, alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]), seed=0
    )
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.05)
    return peft_model


def _samples(vocab: int) -> list[Sample]:
    generator = torch.Generator().manual_seed(0)
    return [
        Sample(
            index=i,
            line=i + 1,
            group=i,
            token_ids=torch.randint(0, vocab, (length,), generator=generator).tolist(),
            prompt_len=prompt,
            reward=0.0,
            advantage=1.0,
            sampling_logprobs=None,
        )
        for i, (length, prompt) in enumerate(LENGTHS)
    ]


def _lora_grads(policy: Any) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}


def test_chunked_gather_equals_full_log_softmax() -> None:
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 50, bias=False)
    hidden = torch.randn(37, 8)
    targets = torch.randint(0, 50, (37,))
    expected = torch.log_softmax(head(hidden), dim=-1).gather(-1, targets[:, None]).squeeze(-1)
    for chunk in (1, 5, 37, 100):
        assert torch.allclose(gather_logprobs(hidden, targets, head, chunk_tokens=chunk), expected, atol=1e-6)


def test_chunked_gather_gradients_equal_full_log_softmax() -> None:
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 50, bias=False)
    hidden = torch.randn(20, 8, requires_grad=True)
    targets = torch.randint(0, 50, (20,))
    weights = torch.randn(20)
    torch.autograd.backward((torch.log_softmax(head(hidden), -1).gather(-1, targets[:, None]).squeeze(-1) * weights).sum())
    assert hidden.grad is not None
    expected = hidden.grad.clone()
    hidden.grad.zero_()
    torch.autograd.backward((gather_logprobs(hidden, targets, head, chunk_tokens=6) * weights).sum())
    assert torch.allclose(hidden.grad, expected, atol=1e-6)


def test_completion_logprobs_match_the_model_logits_at_completion_positions(policy: Any) -> None:
    sample = _samples(policy.config.vocab_size)[0]
    batch = build_batch([sample])
    scorer = CompletionLogprobs(policy, chunk_tokens=3)
    with torch.no_grad():
        got = scorer(batch.input_ids, batch.position_ids, batch.target_positions)
        logits = policy(input_ids=batch.input_ids).logits[0]
    ids = sample.token_ids
    expected = [
        torch.log_softmax(logits[t - 1], -1)[ids[t]].item() for t in range(sample.prompt_len, len(ids))
    ]
    assert got.tolist() == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("row_tokens", [None, 20], ids=["one-row", "rows-of-20"])
def test_packed_batch_equals_separate_sequences_in_logprobs_and_gradients(policy: Any, row_tokens: int | None) -> None:
    samples = _samples(policy.config.vocab_size)
    scorer = CompletionLogprobs(policy, chunk_tokens=8, row_tokens=row_tokens)
    weights = torch.linspace(-1.0, 1.0, sum(length - prompt for length, prompt in LENGTHS))

    policy.zero_grad(set_to_none=True)
    packed = build_batch(samples)
    packed_logp = scorer(packed.input_ids, packed.position_ids, packed.target_positions)
    torch.autograd.backward((packed_logp * weights).sum())
    packed_grads = _lora_grads(policy)

    policy.zero_grad(set_to_none=True)
    parts = []
    for sample in samples:
        single = build_batch([sample])
        parts.append(scorer(single.input_ids, single.position_ids, single.target_positions))
    separate_logp = torch.cat(parts)
    torch.autograd.backward((separate_logp * weights).sum())
    separate_grads = _lora_grads(policy)
    policy.zero_grad(set_to_none=True)

    assert torch.allclose(packed_logp, separate_logp, atol=1e-5)
    assert packed_grads.keys() == separate_grads.keys()
    assert len(packed_grads) > 0
    for name, grad in packed_grads.items():
        assert torch.allclose(grad, separate_grads[name], atol=1e-5, rtol=1e-4), name


def test_without_restarted_positions_sequences_would_see_each_other(policy: Any) -> None:
    """The check above has teeth: continuous position_ids (one long sequence) give other numbers."""
    samples = _samples(policy.config.vocab_size)
    scorer = CompletionLogprobs(policy)
    packed = build_batch(samples)
    continuous = torch.arange(packed.n_tokens)[None, :]
    with torch.no_grad():
        isolated = scorer(packed.input_ids, packed.position_ids, packed.target_positions)
        leaking = scorer(packed.input_ids, continuous, packed.target_positions)
    first = samples[0].completion_len
    assert torch.allclose(isolated[:first], leaking[:first], atol=1e-5)  # nothing precedes sequence 0
    assert not torch.allclose(isolated[first:], leaking[first:], atol=1e-3)


def test_rows_hold_whole_sequences_up_to_the_row_budget() -> None:
    positions = torch.tensor([*range(11), *range(7), *range(13), *range(5)])  # lengths 11, 7, 13, 5
    assert row_spans(positions, None) == [(0, 36)]
    assert row_spans(positions, 100) == [(0, 36)]
    assert row_spans(positions, 20) == [(0, 18), (18, 36)]
    assert row_spans(positions, 10) == [(0, 11), (11, 18), (18, 31), (31, 36)]  # a longer sequence gets its own row
