"""The adapter canary's logprobs under the policy (see `rft.canary` for what the operator does with them)."""

from __future__ import annotations

from typing import Any

import torch
from rft.api.model import AdapterCanary
from rft.canary import canary_token_ids, make_canary

from rft_trainer.logprobs import CompletionLogprobs, hf_model

_DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


def canary_tokens(policy: Any, tokenizer: Any) -> list[int]:
    """The canary's token ids for this model: ids the tokenizer and the embedding both know,
    special tokens excluded (vLLM refuses ids beyond the tokenizer's vocabulary)."""
    vocab = min(len(tokenizer), hf_model(policy).get_input_embeddings().num_embeddings)
    return canary_token_ids(vocab, excluded=set(getattr(tokenizer, "all_special_ids", ()) or ()))


def canary_logprobs(policy: Any, token_ids: list[int], scorer: torch.nn.Module | None = None) -> list[float]:
    """Log-probability of each token after the first given the ones before it, in eval mode.

    `scorer`: a `CompletionLogprobs` of `policy` to run instead of a new one (the FSDP2 root of a
    sharded policy, whose first forward must go through it)."""
    device = next(hf_model(policy).parameters()).device
    tokens = torch.tensor([token_ids], device=device)
    positions = torch.arange(len(token_ids), device=device).unsqueeze(0)
    targets = torch.arange(1, len(token_ids), device=device)
    was_training = policy.training
    policy.eval()
    try:
        with torch.no_grad():
            score = scorer if scorer is not None else CompletionLogprobs(policy)
            return [float(x) for x in score(tokens, positions, targets)]
    finally:
        policy.train(was_training)


def model_dtype(policy: Any) -> str:
    """The dtype the policy computes in, as the API names it."""
    dtype = next(hf_model(policy).parameters()).dtype
    return _DTYPE_NAMES.get(dtype, "float32")


def record_canary(policy: Any, token_ids: list[int], start_logprobs: list[float]) -> AdapterCanary:
    """The checkpoint's canary record: the policy's logprobs now, and how far they moved from the start's."""
    return make_canary(token_ids, canary_logprobs(policy, token_ids), start_logprobs, model_dtype(policy))
