"""Streaming (`stream: true`): the chunks add up to exactly the non-streamed answer."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from rft_devcluster.fake_vllm.config import ServerConfig
from rft_devcluster.fake_vllm.engine import Engine
from rft_devcluster.fake_vllm.generation import GenerationCancelledError
from rft_devcluster.fake_vllm.sampling import SamplingParams
from rft_devcluster.fake_vllm.streaming import TextDelta
from rft_devcluster.fake_vllm.testing import RunningServer, extra_field, running_server

MODEL = "tiny"
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello there"}]
EXTRA = {"ignore_eos": True, "return_token_ids": True}


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> Engine:
    return Engine.from_config(ServerConfig(model=str(tiny_model_dir), served_model_names=(MODEL,)))


@pytest.fixture(scope="module")
def server(engine: Engine) -> Iterator[RunningServer]:
    with running_server(engine) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.openai_base_url, api_key="unused", max_retries=0)


def test_streamed_chat_adds_up_to_the_whole_answer(client: openai.OpenAI) -> None:
    kwargs: dict[str, Any] = {
        "model": MODEL, "messages": MESSAGES, "n": 2, "max_tokens": 10, "temperature": 1.0, "seed": 9,
        "logprobs": True, "top_logprobs": 2, "extra_body": EXTRA,
    }  # fmt: skip
    whole = client.chat.completions.create(**kwargs)
    texts: dict[int, str] = defaultdict(str)
    logprobs: dict[int, list[float]] = defaultdict(list)
    tokens: dict[int, list[int]] = defaultdict(list)
    roles: dict[int, str] = {}
    finish: dict[int, str] = {}
    for chunk in client.chat.completions.create(stream=True, **kwargs):
        assert chunk.object == "chat.completion.chunk"
        assert chunk.model == MODEL
        for choice in chunk.choices:
            assert choice.index not in finish, "nothing may follow a choice's finish_reason"
            if choice.delta.role:
                roles[choice.index] = choice.delta.role
            texts[choice.index] += choice.delta.content or ""
            if choice.logprobs and choice.logprobs.content:
                logprobs[choice.index] += [entry.logprob for entry in choice.logprobs.content]
            tokens[choice.index] += choice.model_extra.get("token_ids", []) if choice.model_extra else []
            if choice.finish_reason:
                finish[choice.index] = choice.finish_reason
    assert roles == {0: "assistant", 1: "assistant"}
    for choice in whole.choices:
        assert texts[choice.index] == choice.message.content
        assert tokens[choice.index] == extra_field(choice, "token_ids")
        assert choice.logprobs is not None
        assert choice.logprobs.content is not None
        assert logprobs[choice.index] == [entry.logprob for entry in choice.logprobs.content]
        assert finish[choice.index] == choice.finish_reason == "length"


def test_streamed_completion_with_a_stop_string_never_leaks_it(client: openai.OpenAI) -> None:
    unstopped = client.completions.create(
        model=MODEL, prompt="the cat", max_tokens=14, temperature=0, extra_body=EXTRA
    )
    full_text = unstopped.choices[0].text
    stop = full_text[len(full_text) // 2 :][:3]
    assert len(stop) == 3
    kwargs: dict[str, Any] = {
        "model": MODEL, "prompt": "the cat", "max_tokens": 14, "temperature": 0, "stop": stop, "logprobs": 1,
        "extra_body": EXTRA,
    }  # fmt: skip
    whole = client.completions.create(**kwargs)
    streamed = ""
    offsets: list[int] = []
    last: Any = None
    for chunk in client.completions.create(stream=True, **kwargs):
        for choice in chunk.choices:
            streamed += choice.text
            assert stop not in streamed
            if choice.logprobs is not None:
                offsets += choice.logprobs.text_offset or []
            last = choice
    assert streamed == whole.choices[0].text == full_text[: full_text.index(stop)]
    assert last.finish_reason == "stop"
    assert extra_field(last, "stop_reason") == stop
    assert whole.choices[0].logprobs is not None
    assert offsets == whole.choices[0].logprobs.text_offset


def test_include_usage_ends_the_stream_with_the_usage(client: openai.OpenAI) -> None:
    kwargs: dict[str, Any] = {
        "model": MODEL,
        "prompt": ["a b", "c d e"],
        "n": 2,
        "max_tokens": 5,
        "extra_body": EXTRA,
    }
    whole = client.completions.create(**kwargs)
    chunks = list(client.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs))
    assert chunks[-1].choices == []
    assert chunks[-1].usage == whole.usage
    assert {choice.index for chunk in chunks for choice in chunk.choices} == {0, 1, 2, 3}


def test_a_bad_streaming_request_is_refused_before_any_event(server: RunningServer) -> None:
    response = httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json={"model": MODEL, "messages": [], "stream": True},
    )
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]["param"] == "messages"


def test_the_raw_event_stream_ends_with_done(server: RunningServer) -> None:
    body = {"model": MODEL, "prompt": "hi", "max_tokens": 3, "stream": True, "ignore_eos": True}
    with httpx.stream("POST", f"{server.base_url}/v1/completions", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert all(event.startswith("data: ") for event in events)
    assert events[-1] == "data: [DONE]"
    assert len(events) == 3 + 1


def test_a_client_that_leaves_does_not_break_the_server(server: RunningServer, client: openai.OpenAI) -> None:
    body = {"model": MODEL, "prompt": "hi", "max_tokens": 1500, "stream": True, "ignore_eos": True}
    with httpx.stream("POST", f"{server.base_url}/v1/completions", json=body) as response:
        first = next(line for line in response.iter_lines() if line)
        assert first.startswith("data: ")
    answer = client.completions.create(
        model=MODEL, prompt="hi", max_tokens=3, temperature=0, extra_body=EXTRA
    )
    assert len(extra_field(answer.choices[0], "token_ids")) == 3


def test_generation_stops_when_cancelled(engine: Engine) -> None:
    seen: list[int] = []
    with pytest.raises(GenerationCancelledError):
        engine.generate(
            MODEL,
            [5, 6, 7],
            SamplingParams(max_tokens=50, ignore_eos=True),
            on_token=lambda event: seen.append(event.token_id),
            cancelled=lambda: len(seen) >= 4,
        )
    assert len(seen) == 4


def test_text_delta_holds_back_what_may_still_change() -> None:
    delta = TextDelta(stop=["END"])
    assert delta.advance("ab", finished=False) == ""  # could still become "END"
    assert delta.advance("abcd", finished=False) == "ab"
    assert delta.advance("abcdéfg", finished=False) == "cdé"
    assert delta.advance("abcdéfgh", finished=True) == "fgh"
    plain = TextDelta(stop=[])
    assert plain.advance("ab\ufffd", finished=False) == "ab"  # an incomplete character waits
    assert plain.advance("abé", finished=False) == "é"
    assert plain.advance("abé\ufffd", finished=True) == "\ufffd"  # at the end it is what it is
