"""The decoding loop: n completions of one prompt, batched, with a KV cache.

One prompt's n samples share a batch (no padding: every row has the same prompt), so the
result of a request never depends on what else the server is doing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from rft_devcluster.fake_vllm.config import LogprobsMode
from rft_devcluster.fake_vllm.sampling import (
    SamplingParams,
    make_generator,
    next_tokens,
    processed_logits,
    token_logprobs,
)

FinishReason = Literal["stop", "length"]
Decode = Callable[[Sequence[int], bool], str]


@dataclass(frozen=True)
class TokenLogprob:
    """A generated token's logprob and the most likely alternatives at its position."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class Completion:
    """One finished sample.

    `token_ids` and `logprobs` cover every generated token, including the EOS or stop token that
    ended it (as vLLM does); `text` leaves out that token and anything from a stop string on.
    """

    token_ids: tuple[int, ...]
    text: str
    finish_reason: FinishReason
    stop_reason: str | int | None
    logprobs: tuple[TokenLogprob, ...] | None


@dataclass(frozen=True)
class TokenEvent:
    """One new token of one sample, as streaming reports it.

    `text` is the sample's whole text so far (final once `finish_reason` is set).
    """

    index: int
    token_id: int
    logprob: TokenLogprob | None
    text: str
    finish_reason: FinishReason | None
    stop_reason: str | int | None


class GenerationCancelledError(Exception):
    """The caller no longer wants the result (a streaming client went away)."""


@dataclass
class _Row:
    """The growing state of one sample."""

    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    text: str = ""
    finish_reason: FinishReason | None = None
    stop_reason: str | int | None = None


@torch.inference_mode()
def generate(
    model: Any,
    prompt_ids: Sequence[int],
    params: SamplingParams,
    *,
    decode: Decode,
    eos_token_ids: frozenset[int],
    device: torch.device,
    logprobs_mode: LogprobsMode = "raw_logprobs",
    on_token: Callable[[TokenEvent], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> list[Completion]:
    """Sample `params.n` completions of `prompt_ids` from `model` (a causal LM, maybe a PeftModel).

    `decode(token_ids, skip_special_tokens)` turns tokens into text. Stops a row at an EOS token
    (unless `ignore_eos`), at one of `stop_token_ids`, when its text contains a stop string, or
    after `max_tokens` tokens. `on_token` hears of every new token as it is chosen; when
    `cancelled()` turns true, raises GenerationCancelledError before the next step.
    """
    generator = make_generator(params.seed, device)
    rows = [_Row() for _ in range(params.n)]
    stop_ids = set(params.stop_token_ids)
    end_ids = stop_ids if params.ignore_eos else stop_ids | eos_token_ids
    # The prompt is read once; its cache is then copied for each of the n samples.
    out = model(input_ids=torch.tensor([list(prompt_ids)], dtype=torch.long, device=device), use_cache=True)
    cache = out.past_key_values
    if params.n > 1:
        cache.batch_repeat_interleave(params.n)
    raw = out.logits[:, -1, :].expand(params.n, -1)
    for _ in range(params.max_tokens):
        if cancelled is not None and cancelled():
            raise GenerationCancelledError
        processed = processed_logits(raw, params)
        tokens = next_tokens(processed, params, generator)
        step_logprobs = _logprobs(raw if logprobs_mode == "raw_logprobs" else processed, tokens, params)
        for index, (row, token) in enumerate(zip(rows, tokens.tolist(), strict=True)):
            if row.finish_reason is not None:
                continue
            row.token_ids.append(token)
            if step_logprobs is not None:
                row.logprobs.append(step_logprobs[index])
            _update(
                row,
                token,
                params,
                end_ids=end_ids,
                stop_ids=stop_ids,
                decode=decode,
                track_text=on_token is not None,
            )
            if on_token is not None:
                logprob = step_logprobs[index] if step_logprobs is not None else None
                on_token(TokenEvent(index, token, logprob, row.text, row.finish_reason, row.stop_reason))
        if all(row.finish_reason is not None for row in rows):
            break
        out = model(input_ids=tokens.unsqueeze(-1), past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        raw = out.logits[:, -1, :]
    return [_finish(row, params) for row in rows]


def _logprobs(
    logits: torch.Tensor, tokens: torch.Tensor, params: SamplingParams
) -> list[TokenLogprob] | None:
    if params.logprobs is None:
        return None
    logprobs = token_logprobs(logits)
    chosen = logprobs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1).tolist()
    if params.logprobs > 0:
        top = torch.topk(logprobs, min(params.logprobs, logprobs.shape[-1]), dim=-1)
        top_ids, top_values = top.indices.tolist(), top.values.tolist()
    else:
        top_ids = top_values = [[] for _ in chosen]
    return [
        TokenLogprob(token, value, tuple(zip(ids, values, strict=True)))
        for token, value, ids, values in zip(tokens.tolist(), chosen, top_ids, top_values, strict=True)
    ]


def _update(
    row: _Row,
    token: int,
    params: SamplingParams,
    *,
    end_ids: set[int] | frozenset[int],
    stop_ids: set[int],
    decode: Decode,
    track_text: bool,
) -> None:
    """Record why `row` ends after its newest `token`, if it does; keep `row.text` current when
    `track_text` (streaming) or stop strings need it, else decode only at the end."""
    if token in end_ids:
        row.finish_reason = "stop"
        row.stop_reason = token if token in stop_ids else None
        row.text = decode(row.token_ids[:-1], params.skip_special_tokens)
        return
    decoded = params.stop or track_text
    if decoded:
        # Decoding the whole row each step keeps multi-byte characters split across tokens right.
        row.text = decode(row.token_ids, params.skip_special_tokens)
    hits = [(position, stop) for stop in params.stop if (position := row.text.find(stop)) >= 0]
    if hits:
        position, stop = min(hits)
        row.text = row.text[:position]
        row.finish_reason = "stop"
        row.stop_reason = stop
        return
    if len(row.token_ids) >= params.max_tokens:
        row.finish_reason = "length"
        if not decoded:
            row.text = decode(row.token_ids, params.skip_special_tokens)


def _finish(row: _Row, params: SamplingParams) -> Completion:
    if row.finish_reason is None:
        raise RuntimeError("a row left the decoding loop unfinished")
    return Completion(
        token_ids=tuple(row.token_ids),
        text=row.text,
        finish_reason=row.finish_reason,
        stop_reason=row.stop_reason,
        logprobs=tuple(row.logprobs) if params.logprobs is not None else None,
    )
