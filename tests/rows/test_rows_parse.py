"""Parsing rows of both formats, with a precise line and reason for every bad row."""

from __future__ import annotations

import json
from typing import Any

import pytest
from rft.rows import Completion, Message, PromptGroup, RowError, iter_groups, parse_row


def _sample(answer: str, score: Any = 0.5, prompt: str = "What is 2+2?", **extra: Any) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": answer},
        ],
        "evals": {"score": score},
        **extra,
    }


def _samples_row(*samples: dict[str, Any]) -> str:
    return json.dumps({"samples": list(samples) or [_sample("4", 1.0), _sample("5", 0.0)]})


GOOD_SAMPLES = _samples_row()
GOOD_PC = json.dumps({"prompt": "Say hi", "completions": ["hi", "hello"], "rewards": [0.2, 0.8]})


def test_good_samples_row() -> None:
    row = _samples_row(_sample("4", 1, logprobs=[-0.1, -2.5]), _sample("five", 0.25))
    group = parse_row(7, row)
    assert group == PromptGroup(
        line=7,
        prompt=[Message("system", "Be brief."), Message("user", "What is 2+2?")],
        completions=[
            Completion("4", {"score": 1.0}, [-0.1, -2.5]),
            Completion("five", {"score": 0.25}, None),
        ],
        format="samples",
    )
    assert isinstance(group.completions[0].rewards["score"], float)


def test_finish_reason_length_marks_a_completion_cut_at_max_tokens() -> None:
    row = _samples_row(
        _sample("4", finish_reason="stop"), _sample("5 6 7", finish_reason="length"), _sample("8")
    )
    finished = [c.finished for c in parse_row(1, row).completions]
    assert finished == [True, False, True]


def test_good_prompt_completions_rows() -> None:
    group = parse_row(1, GOOD_PC.encode())
    assert group.format == "prompt-completions"
    assert group.prompt == [Message("user", "Say hi")]
    assert [c.text for c in group.completions] == ["hi", "hello"]
    assert [c.rewards for c in group.completions] == [{"score": 0.2}, {"score": 0.8}]

    chat = {
        "prompt": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
        "completions": ["a", "b", "c"],
        "rewards": [{"acc": 1, "len": 0.1}, {"acc": 0, "len": 0.2}, {"acc": 1, "len": 0.3}],
        "logprobs": [[-0.5], None, [-0.1, -0.2]],
    }
    group = parse_row(2, json.dumps(chat), fmt="prompt-completions")
    assert group.prompt == [Message("system", "s"), Message("user", "u")]
    assert group.completions[2] == Completion("c", {"acc": 1.0, "len": 0.3}, [-0.1, -0.2])
    assert group.completions[1].logprobs is None


def test_unknown_keys_are_ignored_and_crlf_bom_tolerated() -> None:
    row = json.loads(GOOD_SAMPLES)
    row["id"] = "row-1"
    row["samples"][0]["weight"] = 3
    row["samples"][0]["messages"][0]["name"] = "sys"
    assert len(parse_row(1, "\ufeff" + json.dumps(row)).completions) == 2


def _multi_key(first: dict[str, Any], second: dict[str, Any]) -> str:
    a, b = _sample("a"), _sample("b")
    a["evals"], b["evals"] = first, second
    return _samples_row(a, b)


def _with(sample_changes: dict[str, Any], index: int = 1) -> str:
    samples = [_sample("4", 1.0), _sample("5", 0.0)]
    samples[index] = {**samples[index], **sample_changes}
    return _samples_row(*samples)


def _messages(*messages: Any) -> str:
    return _with({"messages": list(messages)})


USER = {"role": "user", "content": "What is 2+2?"}
SYSTEM = {"role": "system", "content": "Be brief."}

# (raw line, the expected reason, fully matched after "line N: ")
BAD_ROWS: list[tuple[str, str]] = [
    ("{not json", "not valid JSON: Expecting property name enclosed in double quotes at column 2"),
    ("[1, 2]", "a row must be a JSON object, got an array"),
    ('"text"', "a row must be a JSON object, got a string"),
    ('{"sample": []}', "missing 'samples' (row keys: [\"sample\"])"),
    ('{"samples": {}}', "'samples' must be a list, got an object"),
    (
        _samples_row(_sample("only one")),
        "'samples' has 1 sample(s); a row is a prompt group and needs at least 2",
    ),
    ('{"samples": [1, 2]}', "samples[0] must be an object, got a number"),
    (_samples_row({"evals": {"score": 1}}, _sample("x")), "samples[0] has no 'messages'"),
    (_with({"messages": []}), "samples[1].messages is empty"),
    (_with({"messages": "hi"}), "samples[1].messages must be a list of messages, got a string"),
    (
        _messages(SYSTEM, USER),
        "samples[1].messages: the last message must be the assistant's completion, got role 'user'",
    ),
    (
        _messages(USER, {"role": "bot", "content": "4"}),
        "samples[1].messages[1].role is 'bot'; expected one of assistant, system, tool, user",
    ),
    (
        _messages({"content": "x"}, {"role": "assistant", "content": "4"}),
        "samples[1].messages[0].role is missing; expected one of assistant, system, tool, user",
    ),
    (
        _messages(USER, {"role": "assistant", "content": 4}),
        "samples[1].messages[1].content must be a string, got a number",
    ),
    (_messages(USER, {"role": "assistant"}), "samples[1].messages[1].content must be a string, got missing"),
    (_messages(USER, {"role": "assistant", "content": "  "}), "samples[1].messages[1].content is empty"),
    (
        _messages(USER, "hello"),
        "samples[1].messages[1] must be an object with 'role' and 'content', got a string",
    ),
    (
        _messages({"role": "assistant", "content": "4"}),
        "samples[1].messages has no prompt turn before the assistant's completion",
    ),
    (
        _messages(USER, SYSTEM, {"role": "assistant", "content": "4"}),
        "samples[1].messages[1]: a 'system' message may only come first",
    ),
    (
        _samples_row(_sample("a"), _sample("b", prompt="What is 3+3?")),
        "samples[1]: prompt turns differ from samples[0]'s; all samples of a row share one prompt",
    ),
    (
        _samples_row(_sample("a"), {"messages": _sample("b")["messages"]}),
        "samples[1] has no 'evals' (its rewards, e.g. {\"score\": 0.7})",
    ),
    (_with({"evals": {}}), 'samples[1].evals is empty; give at least one reward, e.g. {"score": 0.7}'),
    (
        _with({"evals": [0.5]}),
        'samples[1].evals must be an object of named rewards like {"score": 0.7}, got an array',
    ),
    (_with({"evals": {"score": "high"}}), "samples[1].evals.score must be a number, got a string 'high'"),
    (_with({"evals": {"score": None}}), "samples[1].evals.score must be a number, got null"),
    (
        _with({"evals": {"score": True}}),
        "samples[1].evals.score is a boolean; rewards must be numbers (use 1.0 / 0.0)",
    ),
    (
        GOOD_SAMPLES.replace("0.0", "NaN"),
        "samples[1].evals.score is NaN, which is not allowed: JSON has no NaN or Infinity, "
        "and rewards must be finite numbers",
    ),
    (
        GOOD_SAMPLES.replace("0.0", "-Infinity"),
        "samples[1].evals.score is -Infinity, which is not allowed: JSON has no NaN or Infinity, "
        "and rewards must be finite numbers",
    ),
    (GOOD_SAMPLES.replace("0.0", "1e999"), "samples[1].evals.score is not a finite number"),
    (
        GOOD_SAMPLES.replace("0.0", "1" + "0" * 400),
        "samples[1].evals.score is not a finite number (an integer of 401 digits)",
    ),
    (
        GOOD_SAMPLES.replace("0.0", "1" + "0" * 5000),
        "samples[1].evals.score is an integer of 5001 digits; numbers must be finite "
        "(at most 4300 digits, and rewards must fit a float)",
    ),
    (
        GOOD_SAMPLES.replace('"score"', '"\\udc00"'),
        "a key of samples[0].evals holds a lone surrogate \\udc00 at character 1: not valid Unicode "
        "(a \\uD800-\\uDFFF escape without its pair)",
    ),
    (
        GOOD_SAMPLES.replace('"4"', '"4\\ud83d"'),
        "samples[0].messages[2].content holds a lone surrogate \\ud83d at character 2: not valid Unicode "
        "(a \\uD800-\\uDFFF escape without its pair)",
    ),
    (
        _multi_key({"acc": 1, "fmt": 1}, {"acc": 0}),
        "samples[1] has reward keys ['acc'] but samples[0] has ['acc', 'fmt']; "
        "every completion of a row needs the same reward keys",
    ),
    (
        _with({"logprobs": "-0.5"}),
        "samples[1].logprobs must be a list of numbers (the completion tokens' sampling logprobs), got a string",
    ),
    (_with({"logprobs": [-0.5, "x"]}), "samples[1].logprobs[1] must be a finite number, got 'x'"),
    (_with({"logprobs": [-0.5, True]}), "samples[1].logprobs[1] must be a finite number, got true"),
    (
        _with({"logprobs": []}),
        "samples[1].logprobs is empty; omit it or give one logprob per completion token",
    ),
    (
        json.dumps({"samples": [], "prompt": "x"}),
        "row mixes 'samples' with 'prompt'/'completions'; use one format",
    ),
    # Same prompt turns as samples[0] (the fast path that validates only the completion).
    (
        _messages(SYSTEM, USER, {"role": "assistant", "content": ""}),
        "samples[1].messages[2].content is empty",
    ),
    (
        _messages(SYSTEM, USER, {"role": "user", "content": "x"}),
        "samples[1].messages: the last message must be the assistant's completion, got role 'user'",
    ),
    (
        _messages(SYSTEM, USER, {"role": "system", "content": "x"}),
        "samples[1].messages[2]: a 'system' message may only come first",
    ),
    # prompt-completions
    (json.dumps({"completions": ["a", "b"], "rewards": [1, 2]}), "missing 'prompt'"),
    (json.dumps({"prompt": "", "completions": ["a", "b"], "rewards": [1, 2]}), "'prompt' is empty"),
    (
        json.dumps({"prompt": 3, "completions": ["a", "b"], "rewards": [1, 2]}),
        "'prompt' must be a string or a list of messages, got a number",
    ),
    (json.dumps({"prompt": "p", "rewards": [1, 2]}), "missing 'completions'"),
    (
        json.dumps({"prompt": "p", "completions": ["a"], "rewards": [1]}),
        "'completions' has 1 item(s); a row is a prompt group and needs at least 2",
    ),
    (
        json.dumps({"prompt": "p", "completions": ["a", 2], "rewards": [1, 2]}),
        "completions[1] must be a string, got a number",
    ),
    (json.dumps({"prompt": "p", "completions": ["a", ""], "rewards": [1, 2]}), "completions[1] is empty"),
    (json.dumps({"prompt": "p", "completions": ["a", "b"]}), "missing 'rewards' (one per completion)"),
    (
        json.dumps({"prompt": "p", "completions": ["a", "b"], "rewards": [1]}),
        "'rewards' has 1 item(s) but 'completions' has 2",
    ),
    (
        json.dumps({"prompt": "p", "completions": ["a", "b"], "rewards": [1, {"s": 1}]}),
        "'rewards' mixes numbers and objects; use one form for all completions",
    ),
    (
        json.dumps({"prompt": "p", "completions": ["a", "b"], "rewards": [1, False]}),
        "rewards[1] is a boolean; rewards must be numbers (use 1.0 / 0.0)",
    ),
    (
        json.dumps({"prompt": "p", "completions": ["a", "b"], "rewards": [{"x": 1}, {"y": 1}]}),
        "rewards[1] has reward keys ['y'] but rewards[0] has ['x']; every completion of a row needs the same reward keys",
    ),
    (
        json.dumps({"prompt": "p", "completions": ["a", "b"], "rewards": [1, 2], "logprobs": [[-1.0]]}),
        "'logprobs' must be a list with one entry (a list of numbers, or null) per completion",
    ),
    (json.dumps({"prompt": [], "completions": ["a", "b"], "rewards": [1, 2]}), "prompt is empty"),
    ("   ", "blank line"),
    (
        _samples_row(_sample("4"), _sample("5", finish_reason="max_tokens")),
        "samples[1].finish_reason must be one of stop, length, tool_calls, content_filter, function_call "
        "(the sampler's finish_reason), got 'max_tokens'",
    ),
]


@pytest.mark.parametrize(("raw", "reason"), BAD_ROWS, ids=[f"bad{i:02d}" for i in range(len(BAD_ROWS))])
def test_bad_row_reasons(raw: str, reason: str) -> None:
    with pytest.raises(RowError) as excinfo:
        parse_row(12, raw)
    assert excinfo.value.line == 12
    assert excinfo.value.reason == reason
    assert str(excinfo.value) == f"line 12: {reason}"


def test_invalid_utf8_and_oversized_lines() -> None:
    with pytest.raises(
        RowError, match=r"^line 3: not valid UTF-8 \(byte 14 is 0xff\); a dataset is UTF-8 text"
    ):
        parse_row(3, b'{"samples": "\xff"}')
    with pytest.raises(RowError, match=r"^line 4: line is longer than the limit of 100 bytes$"):
        parse_row(4, GOOD_SAMPLES, max_line_bytes=100)
    assert parse_row(5, GOOD_SAMPLES, max_line_bytes=len(GOOD_SAMPLES.encode())).line == 5


def test_explicit_format_mismatch_names_both_formats() -> None:
    with pytest.raises(RowError, match="missing 'samples': the row is in the prompt-completions format"):
        parse_row(1, GOOD_PC, fmt="samples")
    with pytest.raises(
        RowError, match="the row is in the samples format but the dataset's format is prompt-comp"
    ):
        parse_row(1, GOOD_SAMPLES, fmt="prompt-completions")
    with pytest.raises(ValueError, match="unknown row format 'jsonl'"):
        parse_row(1, GOOD_SAMPLES, fmt="jsonl")


def test_iter_groups_numbers_lines_and_stops_at_the_first_bad_row() -> None:
    lines = [GOOD_SAMPLES.encode(), GOOD_SAMPLES.encode(), b"oops", GOOD_SAMPLES.encode()]
    groups = iter_groups(lines)
    assert next(groups).line == 1
    assert next(groups).line == 2
    with pytest.raises(RowError, match=r"^line 3: not valid JSON"):
        next(groups)


def test_iter_groups_blank_lines_only_at_the_end() -> None:
    assert [g.line for g in iter_groups([GOOD_PC, GOOD_PC, "", "  "])] == [1, 2]
    with pytest.raises(RowError, match=r"^line 2: blank line; blank lines are allowed only at the end$"):
        list(iter_groups([GOOD_PC, "", "", GOOD_PC]))


def test_iter_groups_refuses_mixed_formats() -> None:
    with pytest.raises(
        RowError,
        match=r"^line 3: row is in the prompt-completions format but line 1 is in the samples format",
    ):
        list(iter_groups([GOOD_SAMPLES, GOOD_SAMPLES, GOOD_PC]))
