"""Log-probabilities of the completion tokens of a packed batch, without [T, vocab] log-softmax.

The decoder runs over the packed row (split into rows of about one context length for attention
kernels that materialise a mask); the output projection is then applied only to the
hidden states that predict completion tokens, a chunk at a time, and each chunk's logits are
reduced at once to (target logit - logsumexp).

With gradients on, backward must not keep [chunk, vocab] logits. For a frozen linear head (the
trainer's case: adapters stay on the blocks) `FrozenHeadLogprobs` computes the gradient with
respect to the hidden states in the forward pass: d log p(target) / d logits = onehot - softmax,
so d log p / d hidden = (onehot - softmax) @ W, a [chunk, hidden] matrix known before the loss;
backward only scales its rows. Two head matmuls and one softmax, where a checkpointed chunk
(any other head) costs three matmuls and two softmaxes.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

from rft_trainer.attention import PACKED_SDPA

DEFAULT_CHUNK_TOKENS = 1024
DEFAULT_ROW_TOKENS = 1024


def _chunk_logprobs(
    hidden: torch.Tensor, targets: torch.Tensor, lm_head: torch.nn.Module, softcap: float | None
) -> torch.Tensor:
    logits: torch.Tensor = lm_head(hidden).float()
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


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


def _frozen_linear(module: torch.nn.Module) -> torch.nn.Linear | None:
    """`module` when it is a Linear layer with no trainable parameter, else None."""
    if isinstance(module, torch.nn.Linear) and not any(p.requires_grad for p in module.parameters()):
        return module
    return None


def gather_logprobs(
    hidden: torch.Tensor,
    targets: torch.Tensor,
    lm_head: torch.nn.Module,
    *,
    softcap: float | None = None,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
) -> torch.Tensor:
    """log p(targets[k] | hidden[k]) for each row k of `hidden` [N, H], computed in chunks."""
    frozen_head = _frozen_linear(lm_head)
    parts = []
    for start in range(0, hidden.shape[0], chunk_tokens):
        h = hidden[start : start + chunk_tokens]
        t = targets[start : start + chunk_tokens]
        if frozen_head is not None:
            part = FrozenHeadLogprobs.apply(h, t, frozen_head.weight, frozen_head.bias, softcap)
        elif torch.is_grad_enabled() and h.requires_grad:
            part = checkpoint(_chunk_logprobs, h, t, lm_head, softcap, use_reentrant=False)
        else:
            part = _chunk_logprobs(h, t, lm_head, softcap)
        parts.append(part)
    if not parts:
        return hidden.new_zeros(0, dtype=torch.float32)
    return torch.cat(parts)


class CompletionLogprobs(torch.nn.Module):
    """Wraps a causal LM (plain or PEFT): forward(packed row) -> completion-token log-probs.

    A module of its own so that DistributedDataParallel can wrap exactly the computation whose
    gradients it must all-reduce.
    """

    def __init__(
        self, causal_lm: Any, chunk_tokens: int = DEFAULT_CHUNK_TOKENS, row_tokens: int | None = None
    ) -> None:
        """`row_tokens`: run the decoder on rows of at most this many tokens (whole sequences
        each); None runs the packed row at once."""
        super().__init__()
        self.causal_lm = causal_lm
        self.chunk_tokens = chunk_tokens
        self.row_tokens = row_tokens
        config = hf_model(causal_lm).config
        self.softcap: float | None = getattr(config, "final_logit_softcapping", None)

    def forward(
        self, input_ids: torch.Tensor, position_ids: torch.Tensor, target_positions: torch.Tensor
    ) -> torch.Tensor:
        """[N] log-probabilities of input_ids[0, target_positions] given everything before them."""
        hidden = self.hidden_states(input_ids, position_ids)[target_positions - 1]
        return self.target_logprobs(hidden, input_ids[0, target_positions])

    def hidden_states(self, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        """[T, H] last hidden states of the packed row [1, T] (sequences kept independent)."""
        decoder = hf_model(self.causal_lm).get_decoder()
        parts = []
        for start, end in row_spans(position_ids[0], self.row_tokens):
            # attention_mask=None and no cache: transformers then derives the block-diagonal
            # causal mask from the restarting position_ids, so packed sequences stay independent.
            out = decoder(
                input_ids=input_ids[:, start:end],
                position_ids=position_ids[:, start:end],
                attention_mask=None,
                use_cache=False,
            )
            parts.append(out.last_hidden_state[0])
        return torch.cat(parts)

    def target_logprobs(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """[N] log p(targets[k] | hidden[k]) through the output head."""
        return gather_logprobs(
            hidden,
            targets,
            hf_model(self.causal_lm).get_output_embeddings(),
            softcap=self.softcap,
            chunk_tokens=self.chunk_tokens,
        )


def row_spans(position_ids: torch.Tensor, row_tokens: int | None) -> list[tuple[int, int]]:
    """[start, end) spans of whole sequences (position 0 starts one), each at most `row_tokens`
    long unless a single sequence is longer; one span when `row_tokens` is None."""
    total = int(position_ids.shape[0])
    if row_tokens is None or total <= row_tokens:
        return [(0, total)]
    starts = [*(position_ids == 0).nonzero().flatten().tolist(), total]
    spans: list[tuple[int, int]] = []
    row_start = 0
    for seq_start, seq_end in itertools.pairwise(starts):
        if seq_end - row_start > row_tokens and seq_start > row_start:
            spans.append((row_start, seq_start))
            row_start = seq_start
    spans.append((row_start, total))
    return spans


def row_tokens_for(causal_lm: Any, max_context_length: int) -> int | None:
    """How long one decoder row may be. Flash-attention and the packed SDPA work on sequence
    boundaries and take the whole packed batch as one row; other kernels build a [row, row] mask
    and spend attention time quadratic in the row, so rows are kept near one context length."""
    if hf_model(causal_lm).config._attn_implementation in ("flash_attention_2", PACKED_SDPA):
        return None
    return max(max_context_length, DEFAULT_ROW_TOKENS)


def hf_model(causal_lm: Any) -> Any:
    """The transformers model inside a PEFT wrapper (the LoRA layers are injected in place)."""
    get_base = getattr(causal_lm, "get_base_model", None)
    return get_base() if callable(get_base) else causal_lm
