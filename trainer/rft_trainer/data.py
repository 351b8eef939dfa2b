"""From prompt groups to packed, token-budgeted training batches.

Tokenization mirrors inference exactly: the prompt is the chat template rendered with the
generation prompt (what the server fed the model), the completion is the completion text's tokens
followed by the end-of-turn token (what the model emitted, and where it should stop). Only
completion tokens are trained on.

A multi-turn trajectory (an agent's assistant turns interleaved with tool and user turns) is one
sequence: before each assistant turn, the conversation so far rendered with the generation prompt
(what the server fed the sampler for that turn); then the turn's tokens, trained: the sampler's
own token ids when the row carries them, else the template's rendering of the turn up to its
end-of-turn token. Every other token (prompt, tool results, template markup) is masked. When the
rendering of turn k+1's context does not start with the sequence built so far (re-tokenization
drift: the template or the tokenizer renders the sampler's tokens differently), the trajectory is
split there, each part in exactly the context the sampler saw, and the sample is counted as
drifted.

Packing is padding-free: the sequences of a batch are concatenated into one row whose
position_ids restart at 0 for each sequence. Transformers derives a block-diagonal causal mask
from such position_ids when no attention mask is passed (and flash-attention uses them as
variable-length boundaries), so sequences never attend to each other; a test checks that packed
and separate sequences give the same log-probabilities and gradients.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from rft_trainer.errors import BadInputError


class ChatTokenizer(Protocol):
    """The part of a Hugging Face tokenizer the trainer uses."""

    eos_token_id: int | None

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...

    def __call__(self, text: str, **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class RawSample:
    """One completion of a prompt group, before tokenization."""

    line: int
    group: int
    where: str  # how the row names this completion, e.g. "samples[1]", for error messages
    prompt: list[dict[str, Any]]  # chat-template messages (see rft.rows.Message.template_dict)
    completion: str
    reward: float
    advantage: float
    sampling_logprobs: list[float] | None
    # False: cut at max_tokens (finish_reason "length"), so no end-of-turn token follows it.
    finished: bool = True
    tools: list[dict[str, Any]] | None = None  # the row's function schemas, for the chat template
    # A trajectory: the messages after the prompt (chat-template dicts), and per message the
    # sampler's (token ids, logprobs or None), or None for a turn without them.
    turns: list[dict[str, Any]] | None = None
    turn_tokens: list[tuple[list[int], list[float] | None] | None] | None = None


@dataclass(frozen=True)
class Sample:
    """One tokenized prompt + completion with its advantage."""

    index: int
    line: int
    group: int
    token_ids: list[int]
    prompt_len: int
    reward: float
    advantage: float
    # One per completion token; NaN where the sampler did not report one (e.g. the end-of-turn token).
    sampling_logprobs: list[float] | None
    truncated: bool = False
    # The trained positions of token_ids (assistant turns of a trajectory); None: every position
    # from prompt_len on.
    targets: tuple[int, ...] | None = None

    @property
    def completion_len(self) -> int:
        return len(self.targets) if self.targets is not None else len(self.token_ids) - self.prompt_len

    def target_positions(self) -> list[int]:
        """The positions of token_ids that are trained."""
        return (
            list(self.targets)
            if self.targets is not None
            else list(range(self.prompt_len, len(self.token_ids)))
        )


@dataclass
class TokenizedDataset:
    """The samples to train on and what tokenization had to drop or cut."""

    samples: list[Sample] = field(default_factory=list)
    truncated: int = 0
    skipped: int = 0
    # Trajectory samples whose carried token ids differ from the chat template's re-rendering, as
    # (line, where, assistant turn index); and how many trajectories drift split in parts.
    drifted: list[tuple[int, str, int]] = field(default_factory=list)
    split: int = 0
    trajectory_samples: int = 0


class SampleTokenizer:
    """Tokenizes prompts (cached per group) and completions the way the inference server does."""

    def __init__(
        self, tokenizer: ChatTokenizer, max_context_length: int, vocab_size: int | None = None
    ) -> None:
        if tokenizer.eos_token_id is None:
            raise BadInputError(
                "ModelLoadFailed",
                "the base model's tokenizer has no eos_token: cannot mark the end of a turn",
            )
        self._tokenizer = tokenizer
        self.eos_token_id: int = tokenizer.eos_token_id
        self.max_context_length = max_context_length
        # the model's embedding rows: a carried token id beyond them was sampled from another model
        self.vocab_size = vocab_size

    def render(
        self,
        messages: list[dict[str, Any]],
        line: int,
        *,
        generation_prompt: bool,
        tools: list[dict[str, Any]] | None = None,
    ) -> str:
        """The messages as the chat template renders them (with the row's tools, if any)."""
        extra: dict[str, Any] = {"tools": tools} if tools else {}
        try:
            text = self._tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=generation_prompt, **extra
            )
        except Exception as exc:
            raise BadInputError(
                "InvalidDataset", f"line {line}: the chat template cannot render the prompt: {exc}"
            ) from None
        return str(text)

    def ids(self, text: str) -> list[int]:
        """The text's tokens, without special tokens added."""
        return list(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt_ids(
        self, messages: list[dict[str, Any]], line: int, tools: list[dict[str, Any]] | None = None
    ) -> list[int]:
        """The prompt rendered with the chat template and the generation prompt."""
        ids = self.ids(self.render(messages, line, generation_prompt=True, tools=tools))
        if not ids:
            raise BadInputError("InvalidDataset", f"line {line}: the prompt renders to no tokens")
        return ids

    def rendered_turn(
        self, conversation: list[dict[str, Any]], index: int, line: int, tools: list[dict[str, Any]] | None
    ) -> tuple[list[int], list[int]]:
        """(trained, after) tokens of the assistant turn ``conversation[index]`` as the template renders
        it: the turn up to and including its end-of-turn token, then the template's text after it."""
        context = self.render(conversation[:index], line, generation_prompt=True, tools=tools)
        whole = self.render(conversation[: index + 1], line, generation_prompt=False, tools=tools)
        if not whole.startswith(context):
            raise BadInputError(
                "InvalidDataset",
                f"line {line}: the chat template does not render assistant turn {index} after its context "
                "(the rendering up to the turn is not a prefix of the rendering with it), so the turn's "
                "tokens cannot be told apart; give the sampler's token_ids with the turn",
            )
        ids = self.ids(whole[len(context) :])
        if self.eos_token_id in ids:
            end = ids.index(self.eos_token_id) + 1
            return ids[:end], ids[end:]
        return ids, []

    def completion_ids(self, text: str, *, finished: bool = True) -> list[int]:
        """The completion's tokens, followed by the end-of-turn token if the model ended it (a
        completion cut at max_tokens has none: training one would teach a token never sampled)."""
        ids = list(self._tokenizer(text, add_special_tokens=False)["input_ids"])
        return [*ids, self.eos_token_id] if finished else ids


def _aligned_logprobs(raw: RawSample, completion_len: int) -> list[float] | None:
    """Sampling logprobs aligned one-to-one with the completion tokens (NaN for a missing end-of-turn)."""
    if raw.sampling_logprobs is None:
        return None
    given = len(raw.sampling_logprobs)
    if given == completion_len:
        return list(raw.sampling_logprobs)
    if raw.finished and given == completion_len - 1:
        return [*raw.sampling_logprobs, math.nan]
    text_len = completion_len - 1 if raw.finished else completion_len
    end = " (+1 end-of-turn)" if raw.finished else ""
    raise BadInputError(
        "InvalidDataset",
        f"line {raw.line}: {raw.where} has {given} logprobs but tokenizes to "
        f"{text_len} tokens{end} with the base model's tokenizer: the rows "
        "were sampled from a model with another tokenizer, or the logprobs do not belong to the text",
    )


@dataclass
class _Part:
    """One sequence of a trajectory: its tokens, the trained positions and their logprobs."""

    token_ids: list[int] = field(default_factory=list)
    targets: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class TrajectoryTokens:
    """A trajectory's sequences (one, or several where drift split it) and its drifted turns."""

    parts: list[_Part]
    drifted_turns: list[int]


def _turn_logprobs(raw: RawSample, trained: list[int], turn: int, last: bool) -> list[float]:
    """Sampling logprobs for a turn rendered from text: the sample-level ones for its only turn."""
    if raw.sampling_logprobs is None or not last or turn != 0:
        return [math.nan] * len(trained)
    given = len(raw.sampling_logprobs)
    if given == len(trained):
        return list(raw.sampling_logprobs)
    if raw.finished and given == len(trained) - 1:
        return [*raw.sampling_logprobs, math.nan]
    raise BadInputError(
        "InvalidDataset",
        f"line {raw.line}: {raw.where} has {given} logprobs but its turn tokenizes to {len(trained)} "
        "tokens with the base model's chat template",
    )


def tokenize_trajectory(raw: RawSample, tokenizer: SampleTokenizer) -> TrajectoryTokens:
    """The sequences of a multi-turn sample, assistant turns trained and everything else masked."""
    assert raw.turns is not None
    conversation = [*raw.prompt, *raw.turns]
    assistant = [i for i, m in enumerate(raw.turns) if m["role"] == "assistant"]
    parts = [_Part()]
    drifted: list[int] = []
    for turn, offset in enumerate(assistant):
        index = len(raw.prompt) + offset
        last = turn == len(assistant) - 1
        part = parts[-1]
        context = tokenizer.prompt_ids(conversation[:index], raw.line, raw.tools)
        if part.token_ids and context[: len(part.token_ids)] != part.token_ids:
            part = _Part()  # drift: this turn's context is not the sequence so far
            parts.append(part)
        part.token_ids.extend(context[len(part.token_ids) :])
        rendered, after = tokenizer.rendered_turn(conversation, index, raw.line, raw.tools)
        if last and not raw.finished and rendered and rendered[-1] == tokenizer.eos_token_id:
            rendered, after = rendered[:-1], []
        carried = raw.turn_tokens[offset] if raw.turn_tokens is not None else None
        if carried is not None:
            trained, logprobs = list(carried[0]), carried[1]
            if tokenizer.vocab_size is not None and max(trained) >= tokenizer.vocab_size:
                raise BadInputError(
                    "InvalidDataset",
                    f"line {raw.line}: {raw.where}: assistant turn {turn} has token id {max(trained)}, beyond "
                    f"the base model's vocabulary of {tokenizer.vocab_size}: the rows were sampled from "
                    "another model",
                )
            # a turn cut at max_tokens has no end-of-turn token, which the template adds
            cut = rendered[:-1] if rendered and rendered[-1] == tokenizer.eos_token_id else None
            if trained not in (rendered, cut):
                drifted.append(turn)
            after = []  # the next context (rendered) follows the sampler's tokens
            lps = list(logprobs) if logprobs is not None else [math.nan] * len(trained)
        else:
            trained, lps = rendered, _turn_logprobs(raw, rendered, turn, last)
        start = len(part.token_ids)
        part.token_ids.extend(trained)
        part.targets.extend(range(start, start + len(trained)))
        part.logprobs.extend(lps)
        if not last:
            part.token_ids.extend(after)
    return TrajectoryTokens(parts, drifted)


def _trajectory_samples(raw: RawSample, tokenizer: SampleTokenizer, out: TokenizedDataset) -> None:
    out.trajectory_samples += 1
    tokens = tokenize_trajectory(raw, tokenizer)
    if tokens.drifted_turns:
        out.drifted.extend((raw.line, raw.where, turn) for turn in tokens.drifted_turns)
    if len(tokens.parts) > 1:
        out.split += 1
    limit = tokenizer.max_context_length
    for part in tokens.parts:
        keep = [k for k, position in enumerate(part.targets) if position < limit]
        if not keep:
            out.skipped += 1
            continue
        truncated = len(keep) < len(part.targets)
        out.truncated += truncated
        out.samples.append(
            Sample(
                index=len(out.samples),
                line=raw.line,
                group=raw.group,
                token_ids=part.token_ids[:limit],
                prompt_len=part.targets[0],
                reward=raw.reward,
                advantage=raw.advantage,
                sampling_logprobs=[part.logprobs[k] for k in keep],
                truncated=truncated,
                targets=tuple(part.targets[k] for k in keep),
            )
        )


def tokenize_samples(raw_samples: Sequence[RawSample], tokenizer: SampleTokenizer) -> TokenizedDataset:
    """Tokenize every sample; cut completions to max_context_length, skip samples with no room left."""
    out = TokenizedDataset()
    prompt_cache: dict[int, list[int]] = {}
    limit = tokenizer.max_context_length
    for raw in raw_samples:
        if raw.turns is not None:
            _trajectory_samples(raw, tokenizer, out)
            continue
        prompt = prompt_cache.get(raw.group)
        if prompt is None:
            prompt = prompt_cache[raw.group] = tokenizer.prompt_ids(raw.prompt, raw.line, raw.tools)
        completion = tokenizer.completion_ids(raw.completion, finished=raw.finished)
        logprobs = _aligned_logprobs(raw, len(completion))
        room = limit - len(prompt)
        if room < 1:
            out.skipped += 1
            continue
        truncated = len(completion) > room
        if truncated:
            out.truncated += 1
            completion = completion[:room]
            logprobs = logprobs[:room] if logprobs is not None else None
        out.samples.append(
            Sample(
                index=len(out.samples),
                line=raw.line,
                group=raw.group,
                token_ids=prompt + completion,
                prompt_len=len(prompt),
                reward=raw.reward,
                advantage=raw.advantage,
                sampling_logprobs=logprobs,
                truncated=truncated,
            )
        )
    return out


@dataclass(frozen=True)
class PackedBatch:
    """Several samples concatenated into one row, with their completion positions.

    `target_positions[k]` is the position (in the packed row) of the k-th completion token; its
    log-probability comes from the logits at `target_positions[k] - 1`. `seq_ids[k]` indexes
    `sample_indices`.
    """

    sample_indices: list[int]
    input_ids: torch.Tensor  # [1, T] long
    position_ids: torch.Tensor  # [1, T] long
    target_positions: torch.Tensor  # [N] long
    seq_ids: torch.Tensor  # [N] long
    advantages: torch.Tensor  # [N] float32
    sampling_logprobs: torch.Tensor  # [N] float32, NaN where unknown

    @property
    def n_tokens(self) -> int:
        return int(self.input_ids.shape[1])

    @property
    def n_completion_tokens(self) -> int:
        return int(self.target_positions.shape[0])

    @property
    def n_sequences(self) -> int:
        return len(self.sample_indices)


def build_batch(samples: Sequence[Sample]) -> PackedBatch:
    """Pack `samples` (in order) into one row."""
    input_ids: list[int] = []
    position_ids: list[int] = []
    targets: list[int] = []
    seq_ids: list[int] = []
    advantages: list[float] = []
    sampling: list[float] = []
    for k, sample in enumerate(samples):
        offset = len(input_ids)
        input_ids.extend(sample.token_ids)
        position_ids.extend(range(len(sample.token_ids)))
        n = sample.completion_len
        targets.extend(offset + position for position in sample.target_positions())
        seq_ids.extend([k] * n)
        advantages.extend([sample.advantage] * n)
        sampling.extend(sample.sampling_logprobs if sample.sampling_logprobs is not None else [math.nan] * n)
    return PackedBatch(
        sample_indices=[s.index for s in samples],
        input_ids=torch.tensor([input_ids], dtype=torch.long),
        position_ids=torch.tensor([position_ids], dtype=torch.long),
        target_positions=torch.tensor(targets, dtype=torch.long),
        seq_ids=torch.tensor(seq_ids, dtype=torch.long),
        advantages=torch.tensor(advantages, dtype=torch.float32),
        sampling_logprobs=torch.tensor(sampling, dtype=torch.float32),
    )


def pack(samples: Sequence[Sample], order: Sequence[int], token_budget: int) -> list[PackedBatch]:
    """Greedy packing in `order`: a batch takes samples while their total length fits `token_budget`."""
    batches: list[PackedBatch] = []
    current: list[Sample] = []
    used = 0
    for i in order:
        sample = samples[i]
        length = len(sample.token_ids)
        if length > token_budget:
            raise BadInputError(
                "InvalidConfig",
                f"line {sample.line}: a sample of {length} tokens exceeds batchSize={token_budget} "
                "(the token budget must be at least maxContextLength)",
            )
        if current and used + length > token_budget:
            batches.append(build_batch(current))
            current, used = [], 0
        current.append(sample)
        used += length
    if current:
        batches.append(build_batch(current))
    return batches


def epoch_order(n_samples: int, seed: int, epoch: int) -> list[int]:
    """A seeded shuffle of the sample indices, different for each epoch and reproducible."""
    order = list(range(n_samples))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)  # noqa: S311 - reproducible shuffling, not security
    return order
