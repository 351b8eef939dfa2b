"""Tokenization (prompt masked, end-of-turn trained, logprobs aligned, truncation) and packing."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
from rft.rows import parse_row
from rft_trainer.data import (
    RawSample,
    Sample,
    SampleTokenizer,
    build_batch,
    epoch_order,
    pack,
    tokenize_samples,
)
from rft_trainer.dataset import score_groups
from rft_trainer.errors import BadInputError
from transformers import AutoTokenizer

PROMPT = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "name a fruit"}]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Any:
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _raw(
    completion: str,
    *,
    group: int = 0,
    logprobs: list[float] | None = None,
    line: int = 1,
    finished: bool = True,
) -> RawSample:
    return RawSample(
        line=line,
        group=group,
        where="samples[0]",
        prompt=PROMPT,
        completion=completion,
        reward=1.0,
        advantage=0.5,
        sampling_logprobs=logprobs,
        finished=finished,
    )


def test_prompt_is_the_generation_prompt_and_completion_ends_with_end_of_turn(tokenizer: Any) -> None:
    sample = tokenize_samples([_raw("apple banana")], SampleTokenizer(tokenizer, 256)).samples[0]
    prompt_text = tokenizer.apply_chat_template(PROMPT, tokenize=False, add_generation_prompt=True)
    assert tokenizer.decode(sample.token_ids[: sample.prompt_len]) == prompt_text
    completion = sample.token_ids[sample.prompt_len :]
    assert completion[-1] == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.decode(completion[:-1]) == "apple banana"
    # The full sequence is exactly what the chat template renders for the whole conversation,
    # minus the template's newline after the end-of-turn token (never generated, never trained).
    full = tokenizer.apply_chat_template(
        [*PROMPT, {"role": "assistant", "content": "apple banana"}], tokenize=False
    )
    assert tokenizer.decode(sample.token_ids) + "\n" == full


def test_batch_targets_only_completion_tokens(tokenizer: Any) -> None:
    tok = SampleTokenizer(tokenizer, 256)
    samples = tokenize_samples([_raw("apple"), _raw("red dog cat", group=1)], tok).samples
    batch = build_batch(samples)
    first, second = samples
    expected = list(range(first.prompt_len, len(first.token_ids))) + [
        len(first.token_ids) + p for p in range(second.prompt_len, len(second.token_ids))
    ]
    assert batch.target_positions.tolist() == expected
    assert batch.seq_ids.tolist() == [0] * first.completion_len + [1] * second.completion_len
    assert batch.position_ids[0].tolist() == list(range(len(first.token_ids))) + list(
        range(len(second.token_ids))
    )
    assert batch.advantages.tolist() == [0.5] * (first.completion_len + second.completion_len)
    assert batch.n_completion_tokens == first.completion_len + second.completion_len


def test_sampling_logprobs_align_with_or_without_the_end_of_turn_token(tokenizer: Any) -> None:
    tok = SampleTokenizer(tokenizer, 256)
    n = len(tokenizer("apple banana", add_special_tokens=False)["input_ids"])
    with_eot = tokenize_samples([_raw("apple banana", logprobs=[-0.5] * (n + 1))], tok).samples[0]
    assert with_eot.sampling_logprobs == [-0.5] * (n + 1)
    without_eot = tokenize_samples([_raw("apple banana", logprobs=[-0.5] * n)], tok).samples[0]
    assert without_eot.sampling_logprobs is not None
    assert without_eot.sampling_logprobs[:n] == [-0.5] * n
    assert math.isnan(without_eot.sampling_logprobs[n])


def test_a_completion_cut_at_max_tokens_trains_no_end_of_turn(tokenizer: Any) -> None:
    """finish_reason "length": the model never sampled its end-of-turn, so none is trained, and
    the sampler's logprobs cover exactly the text's tokens."""
    tok = SampleTokenizer(tokenizer, 256)
    ids = tokenizer("apple banana", add_special_tokens=False)["input_ids"]
    cut = tokenize_samples([_raw("apple banana", finished=False, logprobs=[-0.5] * len(ids))], tok).samples[0]
    assert cut.token_ids[cut.prompt_len :] == ids
    assert cut.sampling_logprobs == [-0.5] * len(ids)
    with pytest.raises(
        BadInputError, match=rf"has {len(ids) + 1} logprobs but tokenizes to {len(ids)} tokens with"
    ):
        tokenize_samples([_raw("apple banana", finished=False, logprobs=[-0.5] * (len(ids) + 1))], tok)


def test_misaligned_sampling_logprobs_name_the_line(tokenizer: Any) -> None:
    with pytest.raises(BadInputError, match=r"line 7: samples\[0\] has 40 logprobs but tokenizes to"):
        tokenize_samples([_raw("apple", logprobs=[-0.1] * 40, line=7)], SampleTokenizer(tokenizer, 256))


def test_long_completions_are_cut_and_prompts_without_room_skipped(tokenizer: Any) -> None:
    tok = SampleTokenizer(tokenizer, 256)
    prompt_len = tokenize_samples([_raw("a")], tok).samples[0].prompt_len
    limit = prompt_len + 3
    long_text = "apple banana cherry red blue green cat dog"
    out = tokenize_samples([_raw(long_text, logprobs=None)], SampleTokenizer(tokenizer, limit))
    assert out.truncated == 1
    assert out.samples[0].truncated
    assert len(out.samples[0].token_ids) == limit
    out = tokenize_samples([_raw(long_text)], SampleTokenizer(tokenizer, prompt_len))
    assert out.skipped == 1
    assert out.samples == []


def _sample(index: int, length: int) -> Sample:
    return Sample(
        index=index,
        line=index + 1,
        group=index,
        token_ids=list(range(length)),
        prompt_len=1,
        reward=0.0,
        advantage=0.0,
        sampling_logprobs=None,
    )


def test_packing_respects_the_token_budget_and_the_order() -> None:
    samples = [_sample(i, length) for i, length in enumerate([5, 4, 3, 6, 2])]
    batches = pack(samples, [0, 1, 2, 3, 4], token_budget=9)
    assert [b.sample_indices for b in batches] == [[0, 1], [2, 3], [4]]
    assert all(b.n_tokens <= 9 for b in batches)
    batches = pack(samples, [4, 3, 2, 1, 0], token_budget=9)
    assert [b.sample_indices for b in batches] == [[4, 3], [2, 1], [0]]


def test_a_sample_longer_than_the_budget_is_a_clear_error() -> None:
    with pytest.raises(BadInputError, match="exceeds batchSize=4"):
        pack([_sample(0, 5)], [0], token_budget=4)


def test_epoch_order_is_seeded_and_differs_between_epochs() -> None:
    assert epoch_order(50, seed=3, epoch=0) == epoch_order(50, seed=3, epoch=0)
    assert epoch_order(50, seed=3, epoch=0) != epoch_order(50, seed=3, epoch=1)
    assert epoch_order(50, seed=3, epoch=0) != epoch_order(50, seed=4, epoch=0)
    assert sorted(epoch_order(50, seed=3, epoch=1)) == list(range(50))


def test_tool_calls_of_the_prompt_reach_the_chat_template(tokenizer: Any) -> None:
    """A row's tool calls and tool results are handed to the chat template, arguments as objects."""
    call = {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": '{"a": 2, "b": 2}'}}
    row = {
        "prompt": [
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "4"},
        ],
        "completions": ["4", "four"],
        "rewards": [1, 0],
    }
    groups = [parse_row(1, json.dumps(row))]
    raw = score_groups(groups, {}, "group").samples[0]
    template = (
        "{% for m in messages %}{{ m.role }}:{{ m.content }}"
        "{% for c in m.tool_calls or [] %}[{{ c.function.name }} {{ c.function.arguments.a }}]{% endfor %}"
        "{% if m.tool_call_id %}#{{ m.tool_call_id }}{% endif %} {% endfor %}"
    )
    tool_tokenizer = copy.deepcopy(tokenizer)
    tool_tokenizer.chat_template = template
    ids = SampleTokenizer(tool_tokenizer, 256).prompt_ids(raw.prompt, raw.line)
    assert tool_tokenizer.decode(ids).split() == ["user:2+2?", "assistant:[add", "2]", "tool:4#call_1"]
