"""`token_ids=True` asks the server for the sampled tokens' ids and logprobs; `Trajectory` turns
an agent loop's replies into a row the trainer takes (parsed here by the row parser)."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from rft.rows import parse_row
from rft.sdk.inference import ChatCompletions
from rft.sdk.trajectory import Trajectory, choice_tokens, row, with_token_ids

from tests.sdk.openai_stub import OpenAIStub


class _Target:
    """An InferenceTarget aimed at the stub server (the LLM's deployment is not what is tested)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def sync_client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url, api_key="none")

    def async_client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.base_url, api_key="none")

    def served_model_name(self) -> str:
        return "served"

    def is_resolved(self) -> bool:
        return True


def test_token_ids_true_sends_vllms_logprobs_and_token_id_fields(openai_stub: OpenAIStub) -> None:
    chat = ChatCompletions(_Target(openai_stub.base_url))
    chat.create(messages=[{"role": "user", "content": "hi"}], token_ids=True, extra_body={"top_k": 5})
    chat.create(messages=[{"role": "user", "content": "hi"}])
    (_, with_ids), (_, plain) = openai_stub.requests
    assert with_ids["logprobs"] is True
    assert with_ids["return_tokens_as_token_ids"] is True
    assert with_ids["top_k"] == 5  # the caller's extra body is kept
    assert "token_ids" not in with_ids
    assert "logprobs" not in plain
    assert "return_tokens_as_token_ids" not in plain
    with pytest.raises(ValueError, match="needs logprobs"):
        with_token_ids({"logprobs": False})


def _choice(content: str, ids: list[int], calls: list[dict[str, Any]] | None = None) -> Any:
    """A chat completion choice as vLLM returns it with logprobs and return_tokens_as_token_ids."""
    return openai.types.chat.ChatCompletion.model_validate(
        {
            "id": "c",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "tool_calls" if calls else "stop",
                    "message": {"role": "assistant", "content": content or None, "tool_calls": calls},
                    "logprobs": {
                        "content": [
                            {"token": f"token_id:{i}", "logprob": -0.5, "bytes": None, "top_logprobs": []}
                            for i in ids
                        ]
                    },
                }
            ],
        }
    ).choices[0]


def test_a_trajectory_becomes_a_row_the_parser_takes() -> None:
    tools = [{"type": "function", "function": {"name": "calc", "parameters": {"type": "object"}}}]
    call = {"id": "call_1", "type": "function", "function": {"name": "calc", "arguments": '{"expr": "2+3"}'}}
    trajectory = Trajectory([{"role": "user", "content": "2+3?"}], tools=tools)
    message = trajectory.add_choice(_choice("", [5, 6, 2], [call]))
    assert message["tool_calls"][0]["function"]["name"] == "calc"
    trajectory.add_tool_result("call_1", "5")
    assert all("token_ids" not in m for m in trajectory.request_messages())
    trajectory.add_choice(_choice("five", [7, 2]))
    sample = trajectory.sample({"score": 1.0}, sampling={"temperature": 1.0})
    assert sample["prompt_messages"] == 1
    assert sample["messages"][1]["token_ids"] == [5, 6, 2]
    assert sample["messages"][3]["logprobs"] == [-0.5, -0.5]
    other = Trajectory([{"role": "user", "content": "2+3?"}], tools=tools)
    other.add_choice(_choice("six", [8, 2]))
    group = parse_row(1, json.dumps(row([sample, other.sample({"score": 0.0})], tools=tools)))
    assert group.tools is not None
    first = group.completions[0]
    assert first.turn_tokens is not None
    assert [t.token_ids if t else None for t in first.turn_tokens] == [(5, 6, 2), None, (7, 2)]
    assert first.sampling is not None
    assert first.sampling.temperature == 1.0


def test_a_choice_without_token_ids_is_refused() -> None:
    choice = _choice("x", [1])
    choice.logprobs.content[0].token = "x"  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="not ids"):
        choice_tokens(choice)
    choice.logprobs = None
    with pytest.raises(ValueError, match="token_ids=True"):
        choice_tokens(choice)
