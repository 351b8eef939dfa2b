"""Trajectory samples: prompt_messages, the sampler's token ids per assistant turn, sampling
parameters and a row's tools, each refused with a reason naming the field."""

from __future__ import annotations

import json
from typing import Any

import pytest
from rft.rows import RowError, parse_row

PROMPT = [{"role": "user", "content": "2+3?"}]
CALL = {"id": "c1", "type": "function", "function": {"name": "calc", "arguments": '{"expr": "2+3"}'}}


def _sample(**extra: Any) -> dict[str, Any]:
    messages = [
        *PROMPT,
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [CALL],
            "token_ids": [4, 5, 2],
            "logprobs": [-1, -2, -0.5],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "5"},
        {"role": "assistant", "content": "five", "token_ids": [9, 2], "logprobs": [-0.1, 0]},
    ]
    return {"messages": messages, "prompt_messages": 1, "evals": {"score": 1.0}, **extra}


def _parse(*samples: dict[str, Any], **row: Any) -> Any:
    return parse_row(3, json.dumps({"samples": list(samples), **row}))


def _error(*samples: dict[str, Any], **row: Any) -> str:
    with pytest.raises(RowError) as caught:
        _parse(*samples, **row)
    assert caught.value.line == 3
    return caught.value.reason


def test_a_trajectory_row_parses_with_its_turns_tokens_and_tools() -> None:
    tools = [{"type": "function", "function": {"name": "calc"}}]
    group = _parse(_sample(sampling={"temperature": 0.7, "top_p": 0.9, "top_k": 20}), _sample(), tools=tools)
    assert group.prompt[0].content == "2+3?"
    assert group.tools == tuple(tools)
    first = group.completions[0]
    assert [m.role for m in first.turns] == ["assistant", "tool", "assistant"]
    assert first.text == "five"
    assert first.turn_tokens[0].token_ids == (4, 5, 2)
    assert first.turn_tokens[1] is None
    assert first.turn_tokens[2].logprobs == (-0.1, 0.0)
    assert (first.sampling.temperature, first.sampling.top_p, first.sampling.top_k) == (0.7, 0.9, 20)


def test_a_single_turn_sample_with_token_ids_is_a_trajectory_of_one_turn() -> None:
    sample = {
        "messages": [*PROMPT, {"role": "assistant", "content": "5", "token_ids": [3, 2]}],
        "evals": {"s": 1},
    }
    group = _parse(sample, {"messages": [*PROMPT, {"role": "assistant", "content": "6"}], "evals": {"s": 0}})
    assert group.completions[0].turn_tokens[0].token_ids == (3, 2)
    assert group.completions[1].turns is None  # a plain completion, as before


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"prompt_messages": 0}, "samples[1].prompt_messages must be an integer from 1 to 3"),
        ({"prompt_messages": 2}, "must start with an assistant turn, got role 'tool'"),
        ({"sampling": {"top_p": 0}}, "samples[1].sampling.top_p must be in (0, 1]"),
        ({"sampling": {"top_k": 1.5}}, "samples[1].sampling.top_k must be an integer"),
        ({"logprobs": [-1.0]}, "has both 'logprobs' and per-turn token_ids"),
    ],
)
def test_bad_trajectory_fields_are_named(change: dict[str, Any], reason: str) -> None:
    assert reason in _error(_sample(), _sample(**change))


def test_bad_token_fields_are_named() -> None:
    sample = _sample()
    sample["messages"][3]["logprobs"] = [-0.1]
    assert "samples[0].messages[3].logprobs has 1 numbers but token_ids has 2" in _error(sample, _sample())
    sample = _sample()
    sample["messages"][3]["token_ids"] = [9, -1]
    assert "samples[0].messages[3].token_ids[1] must be a token id" in _error(sample, _sample())
    sample = _sample()
    sample["messages"][3]["logprobs"] = [-0.1, 0.5]
    assert "a log-probability is at most 0" in _error(sample, _sample())
    sample = _sample(prompt_messages=3)
    sample["messages"][1:3] = [
        {"role": "assistant", "content": "hm", "token_ids": [1]},
        {"role": "user", "content": "go"},
    ]
    assert "carries token_ids but is a prompt turn" in _error(sample, _sample())


def test_samples_of_a_row_share_the_prompt_and_tools_are_checked() -> None:
    other = _sample()
    other["messages"][0] = {"role": "user", "content": "3+4?"}
    assert "prompt turns differ from samples[0]'s" in _error(_sample(), other)
    assert "tools[0].function must be an object with a non-empty 'name'" in _error(
        _sample(), _sample(), tools=[{"type": "function", "function": {}}]
    )


def test_a_plain_sample_after_a_trajectory_keeps_its_own_prompt() -> None:
    trajectory = _sample()
    del trajectory["messages"][1]["token_ids"], trajectory["messages"][1]["logprobs"]
    plain = _sample()
    del plain["prompt_messages"]
    for message in plain["messages"]:
        message.pop("token_ids", None)
        message.pop("logprobs", None)
    # its prompt is its first three messages, not the trajectory's one: refused, not merged
    assert plain["messages"][:-1] == trajectory["messages"][:-1]
    assert "prompt turns differ from samples[0]'s" in _error(trajectory, plain)
