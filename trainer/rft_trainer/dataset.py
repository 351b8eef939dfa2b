"""Reading the dataset: streamed, every row validated, the digest re-checked against validation's."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from rft.api.reinforcement_step import AdvantageMode
from rft.rows import DEFAULT_MAX_LINE_BYTES, PromptGroup, RowError, iter_groups
from rft.storage import NotFound, open_stream
from rft.storage.lines import DigestingChunks, split_lines

from rft_trainer.data import RawSample
from rft_trainer.errors import BadInputError
from rft_trainer.loss import Advantages, compute_advantages


@dataclass(frozen=True)
class LoadedDataset:
    """The prompt groups of a dataset whose bytes matched the expected digest."""

    groups: list[PromptGroup]
    digest: str
    bytes: int


def load_dataset(
    url: str, expected_digest: str, fmt: str = "auto", max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
) -> LoadedDataset:
    """Stream and parse every row of `url` while hashing its bytes.

    The digest is checked before any row error is reported: a dataset that changed since
    validation is reported as changed, not as whatever its new bytes happen to contain.
    """
    groups: list[PromptGroup] = []
    row_error: RowError | None = None
    try:
        with open_stream(url) as stream:
            digesting = DigestingChunks(stream)
            chunks = iter(digesting)
            try:
                groups.extend(
                    iter_groups(split_lines(chunks, max_line_bytes), fmt=fmt, max_line_bytes=max_line_bytes)
                )
            except RowError as exc:
                row_error = exc
                for _ in chunks:  # keep hashing to the end, for the digest check
                    pass
    except NotFound as exc:
        raise BadInputError("InvalidDataset", f"the dataset is gone: {exc}") from None
    if digesting.digest != expected_digest:
        raise BadInputError(
            "DatasetChanged",
            f"the dataset {url} changed after validation: its content has digest {digesting.digest}, "
            f"but the Dataset was validated with {expected_digest}. Upload the new rows as a new Dataset.",
        )
    if row_error is not None:
        raise BadInputError("InvalidDataset", str(row_error))
    if not groups:
        raise BadInputError("InvalidDataset", "line 0: the dataset has no rows")
    return LoadedDataset(groups=groups, digest=digesting.digest, bytes=digesting.bytes)


def parse_reward_weights(weights: Mapping[str, str]) -> dict[str, float]:
    """The config's decimal-string weights as numbers (empty: the rows' single reward key)."""
    parsed: dict[str, float] = {}
    for key, text in weights.items():
        value = float(text)
        if not math.isfinite(value):
            raise BadInputError("InvalidConfig", f"rewardWeights[{key!r}]: {text!r} is not a finite number")
        parsed[key] = value
    return parsed


@dataclass(frozen=True)
class ScoredDataset:
    """Samples with combined rewards and advantages, plus reward statistics."""

    samples: list[RawSample]
    advantages: Advantages
    rewards: list[float]

    @property
    def mean_reward(self) -> float:
        return math.fsum(self.rewards) / len(self.rewards)

    @property
    def reward_std(self) -> float:
        mean = self.mean_reward
        return math.sqrt(math.fsum((r - mean) ** 2 for r in self.rewards) / len(self.rewards))


def score_groups(
    groups: list[PromptGroup], weights: Mapping[str, float], advantage_mode: AdvantageMode
) -> ScoredDataset:
    """Combine each completion's rewards, compute the advantages, flatten into samples."""
    group_rewards: list[list[float]] = []
    for group in groups:
        try:
            group_rewards.append(group.combined_rewards(weights))
        except RowError as exc:
            raise BadInputError("InvalidDataset", str(exc)) from None
    advantages = compute_advantages(group_rewards, advantage_mode)
    samples: list[RawSample] = []
    for g, group in enumerate(groups):
        prompt = [message.template_dict() for message in group.prompt]
        tools = list(group.tools) if group.tools else None
        for k, completion in enumerate(group.completions):
            turns = turn_tokens = None
            if completion.turns is not None:
                turns = [message.template_dict() for message in completion.turns]
                turn_tokens = [
                    (list(t.token_ids), list(t.logprobs) if t.logprobs is not None else None)
                    if t is not None
                    else None
                    for t in completion.turn_tokens or [None] * len(turns)
                ]
            samples.append(
                RawSample(
                    line=group.line,
                    group=g,
                    where=f"{'samples' if group.format == 'samples' else 'completions'}[{k}]",
                    prompt=prompt,
                    completion=completion.text,
                    reward=group_rewards[g][k],
                    advantage=advantages.values[g][k],
                    sampling_logprobs=completion.logprobs,
                    finished=completion.finished,
                    tools=tools,
                    turns=turns,
                    turn_tokens=turn_tokens,
                )
            )
    return ScoredDataset(
        samples=samples, advantages=advantages, rewards=[r for rs in group_rewards for r in rs]
    )
