"""OpenAI response bodies (chat.completion, text_completion, model list) from completions."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from rft_devcluster.fake_vllm.engine import ModelCard
from rft_devcluster.fake_vllm.generation import Completion, TokenLogprob

TokenText = Callable[[int], str]
# JSON has no -inf; OpenAI reports impossible tokens' logprobs as -9999.0.
_MIN_LOGPROB = -9999.0

OWNED_BY = "rft-operator"


def _finite(logprob: float) -> float:
    return logprob if math.isfinite(logprob) else _MIN_LOGPROB


def usage(prompt_tokens: int, completions: Sequence[Completion]) -> dict[str, int]:
    """Token counts: every prompt once, every generated token (EOS and stop tokens included)."""
    completion_tokens = sum(len(completion.token_ids) for completion in completions)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def chat_completion(
    *,
    model: str,
    prompt_ids: Sequence[int],
    completions: Sequence[Completion],
    token_text: TokenText,
    return_token_ids: bool = False,
) -> dict[str, Any]:
    """A `chat.completion` object with one choice per completion."""
    choices: list[dict[str, Any]] = []
    for index, completion in enumerate(completions):
        choice: dict[str, Any] = {
            "index": index,
            "message": {"role": "assistant", "content": completion.text},
            "logprobs": chat_logprobs(completion.logprobs, token_text),
            "finish_reason": completion.finish_reason,
            "stop_reason": completion.stop_reason,
        }
        if return_token_ids:
            choice["token_ids"] = list(completion.token_ids)
        choices.append(choice)
    body: dict[str, Any] = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": usage(len(prompt_ids), completions),
    }
    if return_token_ids:
        body["prompt_token_ids"] = list(prompt_ids)
    return body


def chat_logprobs(logprobs: Sequence[TokenLogprob] | None, token_text: TokenText) -> dict[str, Any] | None:
    """The chat `logprobs` object ({"content": [...]}) of these tokens, or None."""
    if logprobs is None:
        return None
    return {
        "content": [
            {
                **_chat_token(entry.token_id, entry.logprob, token_text),
                "top_logprobs": [_chat_token(token, value, token_text) for token, value in entry.top],
            }
            for entry in logprobs
        ]
    }


def _chat_token(token_id: int, logprob: float, token_text: TokenText) -> dict[str, Any]:
    text = token_text(token_id)
    return {"token": text, "logprob": _finite(logprob), "bytes": list(text.encode("utf-8"))}


def text_completion(
    *,
    model: str,
    prompts: Sequence[Sequence[int]],
    completions: Sequence[Sequence[Completion]],
    token_text: TokenText,
    return_token_ids: bool = False,
    prompt_logprobs: Sequence[Sequence[tuple[float, int]]] | None = None,
) -> dict[str, Any]:
    """A `text_completion` object: the n choices of each prompt in turn (index = prompt * n + i).
    With `prompt_logprobs` ((logprob, rank) of each prompt token after the first), every choice
    carries vLLM's `prompt_logprobs`: None, then {token id: {logprob, rank, decoded_token}}."""
    choices: list[dict[str, Any]] = []
    for index, (prompt_ids, prompt_completions) in enumerate(zip(prompts, completions, strict=True)):
        prompt_entries: list[dict[str, Any] | None] | None = None
        if prompt_logprobs is not None:
            prompt_entries = [None]
            for token, (logprob, rank) in zip(prompt_ids[1:], prompt_logprobs[index], strict=True):
                entry = {"logprob": logprob, "rank": rank, "decoded_token": token_text(token)}
                prompt_entries.append({str(token): entry})
        for completion in prompt_completions:
            choice: dict[str, Any] = {
                "index": len(choices),
                "text": completion.text,
                "logprobs": text_logprobs(completion.logprobs, token_text),
                "finish_reason": completion.finish_reason,
                "stop_reason": completion.stop_reason,
            }
            if return_token_ids:
                choice["prompt_token_ids"] = list(prompt_ids)
                choice["token_ids"] = list(completion.token_ids)
            if prompt_entries is not None:
                choice["prompt_logprobs"] = prompt_entries
            choices.append(choice)
    all_completions = [completion for group in completions for completion in group]
    return {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": usage(sum(len(prompt) for prompt in prompts), all_completions),
    }


def text_logprobs(
    logprobs: Sequence[TokenLogprob] | None, token_text: TokenText, *, offset: int = 0
) -> dict[str, Any] | None:
    """The legacy logprobs object; each `top_logprobs` dict holds the sampled token and the top
    alternatives, as the OpenAI API documents and vLLM does (up to logprobs + 1 entries).
    `offset` is the text offset of the first token (streaming continues where it left off)."""
    if logprobs is None:
        return None
    tokens, token_logprobs, top_logprobs, offsets = [], [], [], []
    for entry in logprobs:
        text = token_text(entry.token_id)
        tokens.append(text)
        token_logprobs.append(_finite(entry.logprob))
        offsets.append(offset)
        offset += len(text)
        top = {text: _finite(entry.logprob)}
        top.update((token_text(token), _finite(value)) for token, value in entry.top)
        top_logprobs.append(top)
    return {
        "tokens": tokens,
        "token_logprobs": token_logprobs,
        "top_logprobs": top_logprobs,
        "text_offset": offsets,
    }


def model_list(cards: Sequence[ModelCard], created: int) -> dict[str, Any]:
    """The /v1/models body, with vLLM's `root`, `parent` and `max_model_len` fields."""
    return {
        "object": "list",
        "data": [
            {
                "id": card.id,
                "object": "model",
                "created": created,
                "owned_by": OWNED_BY,
                "root": card.root,
                "parent": card.parent,
                "max_model_len": card.max_model_len,
            }
            for card in cards
        ],
    }
