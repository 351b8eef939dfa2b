"""The trainer's fast paths compute what the plain paths compute.

Packed attention (one SDPA call per packed sequence) against transformers' sdpa with its
block-diagonal mask; the frozen-head logprobs (gradient made in forward) against plain autograd
through log-softmax; the reference pass of a new adapter with the adapter disabled against the
same pass through the (zero) LoRA layers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from peft import LoraConfig, get_peft_model
from rft.api.model import LoraSettings
from rft_devcluster.tiny import build_tiny_model
from rft_trainer import attention, fused_lora, rotary
from rft_trainer.data import Sample, build_batch
from rft_trainer.logprobs import CompletionLogprobs, gather_logprobs, row_tokens_for
from rft_trainer.loop import reference_logprobs
from rft_trainer.model import attach_new_adapter, load_base_model
from transformers import AutoModelForCausalLM
from transformers.models.qwen2 import modeling_qwen2

LENGTHS = [(11, 4), (7, 2), (13, 6), (5, 1)]  # (tokens, prompt tokens) of each packed sequence


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny"))


def _policy(model_dir: Path, attn: str, *, trained: bool = True) -> Any:
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation=attn)
    for param in model.parameters():
        param.requires_grad_(False)
    policy = attach_new_adapter(
        model, LoraSettings(rank=4, alpha=8, target_modules=["q_proj", "down_proj"]), 0
    )
    if trained:
        torch.manual_seed(1)
        with torch.no_grad():
            for name, param in policy.named_parameters():
                if "lora_B" in name:
                    param.normal_(std=0.05)
    return policy


def _samples() -> list[Sample]:
    generator = torch.Generator().manual_seed(0)
    return [
        Sample(i, i + 1, i, torch.randint(0, 400, (n,), generator=generator).tolist(), p, 0.0, 1.0, None)
        for i, (n, p) in enumerate(LENGTHS)
    ]


def _logprobs_and_grads(policy: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    batch = build_batch(_samples())
    policy.zero_grad(set_to_none=True)
    logp = CompletionLogprobs(policy, chunk_tokens=5)(
        batch.input_ids, batch.position_ids, batch.target_positions
    )
    weights = torch.linspace(-1.0, 1.0, logp.shape[0])
    torch.autograd.backward((logp * weights).sum())
    grads = {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}
    return logp.detach(), grads


def test_the_trainer_loads_models_with_packed_attention_on_cpu(model_dir: Path) -> None:
    model, _ = load_base_model(str(model_dir), torch.device("cpu"))
    assert model.config._attn_implementation == attention.PACKED_SDPA
    assert row_tokens_for(model, 4096) is None  # no [T, T] mask: the packed batch is one row


@pytest.mark.parametrize("fused", [False, True], ids=["peft-lora", "fused-lora"])
def test_packed_attention_logprobs_and_gradients_equal_sdpa(model_dir: Path, fused: bool) -> None:
    plain_logp, plain_grads = _logprobs_and_grads(_policy(model_dir, "sdpa"))
    fast = _policy(model_dir, attention.register())
    if fused:
        fused_lora.install(fast)
    packed_logp, packed_grads = _logprobs_and_grads(fast)
    assert torch.allclose(plain_logp, packed_logp, atol=1e-5)
    assert plain_grads.keys() == packed_grads.keys()
    assert len(plain_grads) == 2 * 2 * 2  # lora_A and lora_B of q_proj and down_proj, 2 layers
    for name, grad in plain_grads.items():
        assert grad.abs().max() > 0, name
        assert torch.allclose(grad, packed_grads[name], atol=1e-6, rtol=1e-4), name


def test_sequence_starts() -> None:
    assert attention.sequence_starts(torch.tensor([0, 1, 2, 0, 1, 0, 0, 1])) == [0, 3, 5, 6, 8]
    assert attention.sequence_starts(torch.tensor([5, 6, 7])) == [0, 3]
    assert attention.sequence_starts(torch.tensor([], dtype=torch.long)) == [0]


def test_packed_attention_keeps_padding_masks_and_generation(model_dir: Path) -> None:
    packed: Any = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation=attention.register()
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


@pytest.mark.parametrize("softcap", [None, 3.0])
@pytest.mark.parametrize("bias", [False, True])
def test_frozen_head_logprobs_and_gradient_equal_autograd(softcap: float | None, bias: bool) -> None:
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 50, bias=bias).requires_grad_(False)
    hidden = torch.randn(20, 8, requires_grad=True)
    targets = torch.randint(0, 50, (20,))
    weights = torch.randn(20)

    logits = head(hidden)
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    expected = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    (expected_grad,) = torch.autograd.grad(expected.mul(weights).sum(), hidden)

    got = gather_logprobs(hidden, targets, head, softcap=softcap, chunk_tokens=6)
    (got_grad,) = torch.autograd.grad(got.mul(weights).sum(), hidden)
    assert torch.allclose(got.detach(), expected.detach(), atol=1e-6)
    assert torch.allclose(got_grad, expected_grad, atol=1e-6)


def test_trainable_head_keeps_the_checkpointed_path() -> None:
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 50)
    hidden = torch.randn(20, 8)
    targets = torch.randint(0, 50, (20,))
    got = gather_logprobs(hidden, targets, head, chunk_tokens=6)
    got.sum().backward()
    assert head.weight.grad is not None
    assert head.weight.grad.abs().max() > 0
    expected = torch.log_softmax(head(hidden), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(got.detach(), expected.detach(), atol=1e-6)


def test_a_new_adapters_reference_pass_with_the_adapter_disabled_is_identical(model_dir: Path) -> None:
    policy = _policy(model_dir, attention.register(), trained=False)  # B = 0
    scorer = CompletionLogprobs(policy)
    batches = [build_batch(_samples()[:2]), build_batch(_samples()[2:])]
    through_lora = reference_logprobs(scorer, batches, torch.device("cpu"))
    with policy.disable_adapter():
        without = reference_logprobs(scorer, batches, torch.device("cpu"))
    assert through_lora.keys() == without.keys() == {0, 1, 2, 3}
    for index, logp in through_lora.items():
        assert torch.equal(logp, without[index]), index


@pytest.mark.parametrize("bias", [False, True])
def test_fused_lora_linear_equals_peft(bias: bool) -> None:
    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Linear(12, 20, bias=bias), torch.nn.Linear(20, 7, bias=bias))
    base.requires_grad_(False)
    outputs, grads = [], []
    for fused in (False, True):
        torch.manual_seed(1)
        peft_model = get_peft_model(
            base, LoraConfig(r=4, lora_alpha=8, target_modules=["0", "1"], lora_dropout=0.0)
        )
        with torch.no_grad():
            for name, param in peft_model.named_parameters():
                if "lora_B" in name:
                    param.normal_(std=0.3)
        if fused:
            assert fused_lora.install(peft_model) == 2
        x = torch.randn(3, 5, 12, generator=torch.Generator().manual_seed(2), requires_grad=True)
        out = peft_model(x)
        out.mul(torch.linspace(-1, 1, 7)).sum().backward()
        outputs.append(out.detach())
        grads.append(
            {"x": x.grad, **{n: p.grad for n, p in peft_model.named_parameters() if p.requires_grad}}
        )
        peft_model.unload()
    assert torch.allclose(outputs[0], outputs[1], atol=1e-6)
    assert grads[0].keys() == grads[1].keys()
    assert len(grads[0]) == 5
    for name, grad in grads[0].items():
        assert grad is not None, name
        assert grad.abs().max() > 0, name
        assert torch.allclose(grad, grads[1][name], atol=1e-6), name


def test_fused_lora_falls_back_for_disabled_adapters(model_dir: Path) -> None:
    policy = _policy(model_dir, attention.register())
    assert fused_lora.install(policy) == 2 * 2  # q_proj and down_proj of both layers
    batch = build_batch(_samples())
    scorer = CompletionLogprobs(policy)
    with torch.no_grad():
        fused = scorer(batch.input_ids, batch.position_ids, batch.target_positions)
        with policy.disable_adapter():
            base = scorer(batch.input_ids, batch.position_ids, batch.target_positions)
    plain = _policy(model_dir, attention.register())
    with torch.no_grad():
        expected = CompletionLogprobs(plain)(batch.input_ids, batch.position_ids, batch.target_positions)
        with plain.disable_adapter():
            expected_base = CompletionLogprobs(plain)(
                batch.input_ids, batch.position_ids, batch.target_positions
            )
    assert torch.allclose(fused, expected, atol=1e-5)
    assert torch.allclose(base, expected_base, atol=1e-6)
    assert not torch.allclose(fused, base, atol=1e-3)  # the adapter (B != 0) does act


def test_fused_rotary_equals_transformers_and_is_installed_only_where_equal(model_dir: Path) -> None:
    original = getattr(modeling_qwen2, rotary._PATCHED, modeling_qwen2.apply_rotary_pos_emb)
    generator = torch.Generator().manual_seed(4)
    q = torch.randn(1, 4, 9, 32, generator=generator).transpose(1, 2).transpose(1, 2)
    q = q.requires_grad_()
    k = torch.randn(1, 2, 9, 32, generator=generator, requires_grad=True)
    angles = torch.randn(1, 9, 32, generator=generator)
    got = rotary.apply_rotary_pos_emb(q, k, angles.cos(), angles.sin())
    expected = original(q, k, angles.cos(), angles.sin())
    weights = torch.randn(1, 4, 9, 32, generator=generator)
    grads = [torch.autograd.grad((qo * weights).sum() + ko.pow(2).sum(), (q, k)) for qo, ko in (got, expected)]
    for a, b in zip((*got, *grads[0]), (*expected, *grads[1]), strict=True):
        assert torch.allclose(a, b, atol=1e-6)

    model, _ = load_base_model(str(model_dir), torch.device("cpu"))
    assert rotary.install(model)
    assert getattr(modeling_qwen2, rotary._PATCHED) is original
    patched = modeling_qwen2.apply_rotary_pos_emb
    assert patched is not original
    for a, b in zip(patched(q, k, angles.cos(), angles.sin()), expected, strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    # mixed dtypes follow the original's type promotion
    mixed = patched(q.detach().bfloat16(), k.detach().bfloat16(), angles.cos(), angles.sin())
    assert all(t.dtype == torch.float32 for t in mixed)

    def interleaved(q: Any, k: Any, cos: Any, sin: Any, unsqueeze_dim: int = 1) -> Any:
        return q * cos.unsqueeze(unsqueeze_dim), k * sin.unsqueeze(unsqueeze_dim)

    assert not rotary._same_numbers(interleaved)


def test_fused_lora_leaves_autocast_to_peft() -> None:
    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Linear(12, 20)).requires_grad_(False)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["0"], lora_dropout=0.0))
    x = torch.randn(5, 12)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = peft_model(x)
        assert fused_lora.install(peft_model) == 1
        got = peft_model(x)
    assert got.dtype == expected.dtype == torch.bfloat16
    assert torch.equal(got, expected)
