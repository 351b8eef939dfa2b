"""The benchmark's proposed trainer speed-ups compute what the trainer computes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from rft.api.model import LoraSettings
from rft_trainer.data import Sample, build_batch
from rft_trainer.logprobs import CompletionLogprobs, gather_logprobs
from rft_trainer.model import attach_new_adapter
from rft_trainer.tiny import build_tiny_model
from transformers import AutoModelForCausalLM

from bench import fastpaths

LENGTHS = [(11, 4), (7, 2), (13, 6), (5, 1)]  # (tokens, prompt tokens) of each packed sequence


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny"))


def _policy(model_dir: Path) -> Any:
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    for param in model.parameters():
        param.requires_grad_(False)
    policy = attach_new_adapter(
        model, LoraSettings(rank=4, alpha=8, target_modules=["q_proj", "down_proj"]), 0
    )
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.05)
    return policy


def _batch() -> Any:
    generator = torch.Generator().manual_seed(0)
    samples = [
        Sample(i, i + 1, i, torch.randint(0, 400, (n,), generator=generator).tolist(), p, 0.0, 1.0, None)
        for i, (n, p) in enumerate(LENGTHS)
    ]
    return build_batch(samples)


def _run(policy: Any, patch: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    batch = _batch()
    policy.zero_grad(set_to_none=True)
    with fastpaths.patched(policy) if patch else torch.enable_grad():
        logp = CompletionLogprobs(policy, chunk_tokens=5)(
            batch.input_ids, batch.position_ids, batch.target_positions
        )
        weights = torch.linspace(-1.0, 1.0, logp.shape[0])
        torch.autograd.backward((logp * weights).sum())
    grads = {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}
    return logp.detach(), grads


def test_patched_logprobs_and_gradients_equal_the_trainer(model_dir: Path) -> None:
    policy = _policy(model_dir)
    plain_logp, plain_grads = _run(policy, patch=False)
    patched_logp, patched_grads = _run(policy, patch=True)
    assert policy.get_base_model().config._attn_implementation == "sdpa"  # restored afterwards
    assert torch.allclose(plain_logp, patched_logp, atol=1e-5)
    assert plain_grads.keys() == patched_grads.keys()
    assert plain_grads
    for name, grad in plain_grads.items():
        assert torch.allclose(grad, patched_grads[name], atol=1e-6, rtol=1e-4), name


def test_sequence_starts() -> None:
    assert fastpaths.sequence_starts(torch.tensor([0, 1, 2, 0, 1, 0, 0, 1])) == [0, 3, 5, 6, 8]
    assert fastpaths.sequence_starts(torch.tensor([5, 6, 7])) == [0, 3]


def test_packed_attention_keeps_padding_masks_and_generation(model_dir: Path) -> None:
    fastpaths.register()
    packed: Any = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation=fastpaths.PACKED_SDPA
    )
    plain: Any = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation="sdpa"
    )
    ids = torch.randint(0, 400, (2, 9), generator=torch.Generator().manual_seed(3))
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, :3] = 0
    with torch.no_grad():
        got = packed(input_ids=ids, attention_mask=mask).logits
        expected = plain(input_ids=ids, attention_mask=mask).logits
        assert torch.allclose(got[mask.bool()], expected[mask.bool()], atol=1e-5)
        assert torch.equal(
            packed.generate(ids[:1], max_new_tokens=4, do_sample=False),
            plain.generate(ids[:1], max_new_tokens=4, do_sample=False),
        )


def test_frozen_head_gradient_equals_autograd_with_softcap() -> None:
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 50, bias=True).requires_grad_(False)
    hidden = torch.randn(20, 8, requires_grad=True)
    targets = torch.randint(0, 50, (20,))
    weights = torch.randn(20)
    for softcap in (None, 3.0):
        grads = []
        outputs = []
        for gather in (gather_logprobs, fastpaths.gather_logprobs):
            (grad,) = torch.autograd.grad(
                (out := gather(hidden, targets, head, softcap=softcap, chunk_tokens=6)).mul(weights).sum(),
                hidden,
            )
            grads.append(grad)
            outputs.append(out.detach())
        assert torch.allclose(outputs[0], outputs[1], atol=1e-6)
        assert torch.allclose(grads[0], grads[1], atol=1e-6)
