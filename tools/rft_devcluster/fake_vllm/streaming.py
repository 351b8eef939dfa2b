"""Chunks of streamed responses (`chat.completion.chunk`, streamed `text_completion`).

Text is released as it becomes final: the tail that could still turn into a stop string, or a
trailing partial UTF-8 character, is held back until the next token settles it, so a client never
receives text that the complete response would not contain.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from rft_devcluster.fake_vllm.generation import TokenEvent
from rft_devcluster.fake_vllm.responses import TokenText, chat_logprobs, text_logprobs

_REPLACEMENT = "\ufffd"  # what decoding shows for an incomplete multi-byte character


class TextDelta:
    """The new, final part of one sample's text at each step."""

    def __init__(self, stop: Sequence[str]) -> None:
        self._hold = max((len(s) for s in stop), default=1) - 1
        self.sent = 0

    def advance(self, text: str, *, finished: bool) -> str:
        """The text after what was sent, up to what can no longer change."""
        end = len(text) if finished else max(len(text) - self._hold, 0)
        if not finished:
            while end > self.sent and text[end - 1] == _REPLACEMENT:
                end -= 1
        if end <= self.sent:
            return ""
        delta, self.sent = text[self.sent : end], end
        return delta


class ChatChunks:
    """Builds the chunks of one streamed chat completion."""

    def __init__(
        self,
        *,
        model: str,
        n: int,
        stop: Sequence[str],
        token_text: TokenText,
        logprobs: bool,
        return_token_ids: bool,
    ) -> None:
        self._base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk"}
        self._created = int(time.time())
        self._model = model
        self._n = n
        self._texts = [TextDelta(stop) for _ in range(n)]
        self._token_text = token_text
        self._logprobs = logprobs
        self._return_token_ids = return_token_ids

    def opening(self, prompt_ids: Sequence[int]) -> list[dict[str, Any]]:
        """One chunk per choice giving the assistant role (the first also the prompt's tokens)."""
        chunks = []
        for index in range(self._n):
            chunk = self._chunk(
                {"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": None}
            )
            if self._return_token_ids and index == 0:
                chunk["prompt_token_ids"] = list(prompt_ids)
            chunks.append(chunk)
        return chunks

    def token(self, event: TokenEvent) -> dict[str, Any]:
        """The chunk for one new token of choice `event.index`."""
        finished = event.finish_reason is not None
        choice: dict[str, Any] = {
            "index": event.index,
            "delta": {"content": self._texts[event.index].advance(event.text, finished=finished)},
            "logprobs": chat_logprobs([event.logprob], self._token_text)
            if self._logprobs and event.logprob is not None
            else None,
            "finish_reason": event.finish_reason,
            "stop_reason": event.stop_reason,
        }
        if self._return_token_ids:
            choice["token_ids"] = [event.token_id]
        return self._chunk(choice)

    def usage(self, usage: dict[str, int]) -> dict[str, Any]:
        """The closing chunk of `stream_options.include_usage`: no choices, the usage."""
        return {**self._chunk(None), "choices": [], "usage": usage}

    def _chunk(self, choice: dict[str, Any] | None) -> dict[str, Any]:
        return {
            **self._base,
            "created": self._created,
            "model": self._model,
            "choices": [] if choice is None else [choice],
        }


class CompletionChunks:
    """Builds the chunks of one streamed text completion (all its prompts)."""

    def __init__(self, *, model: str, token_text: TokenText, return_token_ids: bool) -> None:
        self._base = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion"}
        self._created = int(time.time())
        self._model = model
        self._token_text = token_text
        self._return_token_ids = return_token_ids

    def prompt(
        self, *, first_index: int, n: int, stop: Sequence[str], prompt_ids: Sequence[int]
    ) -> Callable[[TokenEvent], dict[str, Any]]:
        """A chunk builder for the n choices of one prompt, numbered from `first_index`."""
        texts = [TextDelta(stop) for _ in range(n)]
        offsets = [0] * n
        started = [False] * n

        def chunk(event: TokenEvent) -> dict[str, Any]:
            finished = event.finish_reason is not None
            logprobs = None
            if event.logprob is not None:
                logprobs = text_logprobs([event.logprob], self._token_text, offset=offsets[event.index])
                offsets[event.index] += len(self._token_text(event.token_id))
            choice: dict[str, Any] = {
                "index": first_index + event.index,
                "text": texts[event.index].advance(event.text, finished=finished),
                "logprobs": logprobs,
                "finish_reason": event.finish_reason,
                "stop_reason": event.stop_reason,
            }
            if self._return_token_ids:
                choice["token_ids"] = [event.token_id]
                if not started[event.index]:
                    choice["prompt_token_ids"] = list(prompt_ids)
            started[event.index] = True
            return self._chunk([choice])

        return chunk

    def usage(self, usage: dict[str, int]) -> dict[str, Any]:
        """The closing chunk of `stream_options.include_usage`: no choices, the usage."""
        return {**self._chunk([]), "usage": usage}

    def _chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {**self._base, "created": self._created, "model": self._model, "choices": choices}
