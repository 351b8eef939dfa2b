"""The parsed form of a dataset row: one prompt group with its completions and their rewards."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rft.rows.rewards import RewardError, combine_rewards


class RowError(ValueError):
    """A bad row: ``line`` is its 1-based line number (0 for the whole dataset)."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


@dataclass(frozen=True)
class ToolCall:
    """One function call of an assistant turn, in OpenAI's shape (``arguments`` is a JSON object
    encoded as a string, as the sampler wrote it)."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Message:
    """One chat turn. An assistant turn may carry tool calls (its content may then be empty); a
    ``tool`` turn answers the call named by ``tool_call_id``."""

    role: str
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None

    def template_dict(self) -> dict[str, Any]:
        """The message as a Hugging Face chat template takes it (tool call arguments as objects)."""
        rendered: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            rendered["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": json.loads(call.arguments)},
                }
                for call in self.tool_calls
            ]
        if self.tool_call_id is not None:
            rendered["tool_call_id"] = self.tool_call_id
        return rendered


@dataclass(frozen=True)
class TurnTokens:
    """What the sampler produced for one assistant turn: its token ids (end-of-turn token included
    when it sampled one) and, optionally, their logprobs (one per id), as vLLM returns them."""

    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...] | None = None


@dataclass(frozen=True)
class SamplingParams:
    """The sampler's settings for a trajectory (None where the row does not say)."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None


@dataclass(frozen=True)
class Completion:
    """One sampled completion, its rewards by key, and optionally its tokens' sampling logprobs.

    A multi-turn (agent) sample, or one carrying the sampler's token ids, has ``turns``: the
    messages after the prompt (assistant turns, which are trained, interleaved with tool and user
    turns, which are not), ``text`` is then its last assistant turn's content, and ``turn_tokens``
    gives, per message of ``turns``, the sampler's tokens (None for a turn without them).
    """

    text: str
    rewards: dict[str, float]
    logprobs: list[float] | None = None
    # False when the sampler cut the completion at max_tokens (OpenAI finish_reason "length"): the
    # model never produced its end-of-turn token, so the trainer does not train one.
    finished: bool = True
    turns: tuple[Message, ...] | None = None
    turn_tokens: tuple[TurnTokens | None, ...] | None = None
    sampling: SamplingParams | None = None


@dataclass(frozen=True)
class PromptGroup:
    """One row: a prompt and the completions sampled for it (at least two)."""

    line: int
    prompt: list[Message]
    completions: list[Completion]
    format: str = "samples"
    # The row's function schemas (OpenAI's ``tools``), rendered by the chat template.
    tools: tuple[dict[str, Any], ...] | None = None

    def combined_rewards(self, weights: Mapping[str, float] | None = None) -> list[float]:
        """One scalar reward per completion (see :func:`rft.rows.combine_rewards`).

        Raises :class:`RowError` naming this row's line when the rewards cannot be combined.
        """
        try:
            return [combine_rewards(completion.rewards, weights) for completion in self.completions]
        except RewardError as exc:
            raise RowError(self.line, str(exc)) from exc
