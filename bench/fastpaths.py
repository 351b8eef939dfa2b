"""Proposed trainer speed-ups, measured by the benchmark as a patch ("ours+patch") until they move
into `rft_trainer` (the trainer's owner was still committing when they were written).

1. Packed attention. A packed row holds several sequences whose position_ids restart at 0. With
   `sdpa`, transformers builds a [T, T] block-diagonal causal mask and SDPA computes every score of
   the row before masking: O(T^2) work for O(sum of L_i^2) useful scores; with rows of about a
   thousand tokens holding four or five sequences, most of the attention time. `packed_sdpa` finds
   the sequence boundaries from position_ids and runs one causal SDPA call per sequence (SDPA's
   causal CPU kernel skips the blocks above the diagonal). Registered with transformers'
   AttentionInterface with a mask function that builds no mask when there is no padding mask;
   anything else (a padding mask, a KV cache) goes to the standard sdpa path. In the trainer,
   `model._attention_for` would return `register()` instead of "sdpa".

2. Frozen-head logprobs with the gradient made in forward. d log p(target) / d logits =
   onehot - softmax, so d log p / d hidden = (onehot - softmax) @ W is a [chunk, hidden] matrix
   known before the loss; backward only scales its rows by the per-token incoming gradient. That
   replaces the checkpointed chunk (forward, recomputed forward, backward: three head matmuls and
   two softmaxes) by two matmuls and one softmax, and backward keeps [chunk, hidden] numbers, never
   logits. Only for a frozen linear head (the trainer's case: adapters stay on the blocks). In the
   trainer, `logprobs.gather_logprobs` would call `FrozenHeadLogprobs` for such heads.

3. The reference pass of a new adapter without its LoRA layers. A new adapter's B matrices are
   zero, so the policy at the start of the step is exactly the base model: the pass that computes
   the start-of-step logprobs (when the rows carry no sampling logprobs) can run with the adapter
   disabled and skip the LoRA matmuls, with bit-identical results. In the trainer,
   `Trainer.compute_references` would wrap its pass in `policy.disable_adapter()` when
   `new_adapter`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import rft_trainer.logprobs
import torch
from rft_trainer.loop import Trainer
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

PACKED_SDPA = "rft_packed_sdpa"


def sequence_starts(position_ids: torch.Tensor) -> list[int]:
    """Start offsets of the sequences of a packed row [T], plus T: where the position does not
    continue the previous one (it restarts, usually at 0)."""
    length = int(position_ids.shape[0])
    if length == 0:
        return [0]
    breaks = torch.nonzero(position_ids[1:] != position_ids[:-1] + 1).flatten() + 1
    return [0, *breaks.tolist(), length]


def packed_sdpa(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Causal attention per packed sequence; query [B, H, T, D], key/value [B, KV, T, D]."""
    position_ids = kwargs.get("position_ids")
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    length = query.shape[2]
    if (
        attention_mask is not None
        or position_ids is None
        or not causal
        or length != key.shape[2]
        or kwargs.get("cache") is not None
    ):
        return sdpa_attention_forward(
            module,
            query,
            key,
            value,
            attention_mask,
            dropout=dropout,
            scaling=scaling,
            is_causal=is_causal,
            **kwargs,
        )
    positions = position_ids[..., -length:].expand(query.shape[0], length)
    gqa = query.shape[1] != key.shape[1]
    dropout_p = dropout if module.training else 0.0
    rows = []
    for row in range(query.shape[0]):
        sizes = [end - start for start, end in itertools.pairwise(sequence_starts(positions[row]))]
        # split, not slicing: the backward of a split is one concatenation, while each slice's
        # backward would fill a zero tensor of the whole row
        q, k, v = (t if t.shape[0] == 1 else t[row : row + 1] for t in (query, key, value))
        parts = [
            torch.nn.functional.scaled_dot_product_attention(
                qs, ks, vs, dropout_p=dropout_p, is_causal=True, scale=scaling, enable_gqa=gqa
            )
            for qs, ks, vs in zip(
                torch.split(q, sizes, 2), torch.split(k, sizes, 2), torch.split(v, sizes, 2), strict=True
            )
        ]
        rows.append(parts[0] if len(parts) == 1 else torch.cat(parts, dim=2))
    out = rows[0] if len(rows) == 1 else torch.cat(rows, dim=0)
    return out.transpose(1, 2).contiguous(), None


def _packed_sdpa_mask(*args: Any, **kwargs: Any) -> torch.Tensor | None:
    # No padding mask and no cache offset: the attention function handles causality and packing
    # itself, so skip building the [T, T] mask. Otherwise build sdpa's mask (and sdpa runs).
    if (
        kwargs.get("attention_mask") is None
        and kwargs.get("q_length") == kwargs.get("kv_length")
        and not kwargs.get("kv_offset")
    ):
        return None
    return sdpa_mask(*args, **kwargs)


def register() -> str:
    """Register the packed attention with transformers (idempotent); returns its name."""
    AttentionInterface.register(PACKED_SDPA, packed_sdpa)
    AttentionMaskInterface.register(PACKED_SDPA, _packed_sdpa_mask)
    return PACKED_SDPA


class FrozenHeadLogprobs(torch.autograd.Function):
    """log p(targets | hidden) through a frozen linear head, gradient to `hidden` made in forward."""

    @staticmethod
    def forward(
        ctx: Any,
        hidden: torch.Tensor,
        targets: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        softcap: float | None,
    ) -> torch.Tensor:
        logits = torch.nn.functional.linear(hidden, weight, bias).float()
        tanh = None
        if softcap:
            tanh = torch.tanh(logits / softcap)
            logits = tanh * softcap
        lse = torch.logsumexp(logits, dim=-1)
        logp = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - lse
        if ctx.needs_input_grad[0]:
            # onehot - softmax, built in place in the logits buffer
            grad_logits = logits.sub_(lse.unsqueeze(-1)).exp_().neg_()
            grad_logits.scatter_add_(-1, targets.unsqueeze(-1), torch.ones_like(lse).unsqueeze(-1))
            if tanh is not None:
                grad_logits.mul_(1.0 - tanh * tanh)
            ctx.save_for_backward(grad_logits.to(weight.dtype) @ weight)
            ctx.hidden_dtype = hidden.dtype
        return logp

    @staticmethod
    def backward(ctx: Any, grad_logp: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None, None]:
        (grad_hidden,) = ctx.saved_tensors
        return (grad_logp.unsqueeze(-1) * grad_hidden).to(ctx.hidden_dtype), None, None, None, None


def _frozen_linear(module: torch.nn.Module) -> bool:
    return isinstance(module, torch.nn.Linear) and not any(p.requires_grad for p in module.parameters())


_original_gather = rft_trainer.logprobs.gather_logprobs


def gather_logprobs(
    hidden: torch.Tensor,
    targets: torch.Tensor,
    lm_head: torch.nn.Module,
    *,
    softcap: float | None = None,
    chunk_tokens: int = rft_trainer.logprobs.DEFAULT_CHUNK_TOKENS,
) -> torch.Tensor:
    """`rft_trainer.logprobs.gather_logprobs` with the frozen-head path; other heads unchanged."""
    if not _frozen_linear(lm_head):
        return _original_gather(hidden, targets, lm_head, softcap=softcap, chunk_tokens=chunk_tokens)
    assert isinstance(lm_head, torch.nn.Linear)
    parts = [
        FrozenHeadLogprobs.apply(
            hidden[start : start + chunk_tokens],
            targets[start : start + chunk_tokens],
            lm_head.weight,
            lm_head.bias,
            softcap,
        )
        for start in range(0, hidden.shape[0], chunk_tokens)
    ]
    if not parts:
        return hidden.new_zeros(0, dtype=torch.float32)
    return torch.cat(parts)


_original_compute_references = Trainer.compute_references


def compute_references(
    self: Trainer,
) -> tuple[dict[int, torch.Tensor] | None, dict[int, torch.Tensor] | None]:
    """`Trainer.compute_references`, with the adapter disabled when it is new (B = 0)."""
    if not self.new_adapter:
        return _original_compute_references(self)
    with self.policy.disable_adapter():
        return _original_compute_references(self)


@contextmanager
def patched(policy: Any) -> Iterator[None]:
    """Use the three speed-ups for `policy` (a PEFT model from `rft_trainer.model`) inside the block."""
    base = policy.get_base_model()
    previous = base.config._attn_implementation
    base.set_attn_implementation(register())
    rft_trainer.logprobs.gather_logprobs = gather_logprobs
    Trainer.compute_references = compute_references  # type: ignore[method-assign]
    try:
        yield
    finally:
        Trainer.compute_references = _original_compute_references  # type: ignore[method-assign]
        rft_trainer.logprobs.gather_logprobs = _original_gather
        base.set_attn_implementation(previous)
