"""The parsed form of a dataset row: one prompt group with its completions and their rewards."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from rft.rows.rewards import RewardError, combine_rewards


class RowError(ValueError):
    """A bad row: ``line`` is its 1-based line number (0 for the whole dataset)."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


@dataclass(frozen=True)
class Message:
    """One chat turn."""

    role: str
    content: str


@dataclass(frozen=True)
class Completion:
    """One sampled completion, its rewards by key, and optionally its tokens' sampling logprobs."""

    text: str
    rewards: dict[str, float]
    logprobs: list[float] | None = None
    # False when the sampler cut the completion at max_tokens (OpenAI finish_reason "length"): the
    # model never produced its end-of-turn token, so the trainer does not train one.
    finished: bool = True


@dataclass(frozen=True)
class PromptGroup:
    """One row: a prompt and the completions sampled for it (at least two)."""

    line: int
    prompt: list[Message]
    completions: list[Completion]
    format: str = "samples"

    def combined_rewards(self, weights: Mapping[str, float] | None = None) -> list[float]:
        """One scalar reward per completion (see :func:`rft.rows.combine_rewards`).

        Raises :class:`RowError` naming this row's line when the rewards cannot be combined.
        """
        try:
            return [combine_rewards(completion.rewards, weights) for completion in self.completions]
        except RewardError as exc:
            raise RowError(self.line, str(exc)) from exc
