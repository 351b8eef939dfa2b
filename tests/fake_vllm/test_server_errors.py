"""Bad requests get a 4xx with an OpenAI error body naming the problem; the server keeps serving."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from rft_devcluster.fake_vllm.config import ServerConfig
from rft_devcluster.fake_vllm.engine import Engine
from rft_devcluster.fake_vllm.testing import RunningServer, running_server

MODEL = "tiny"
MAX_MODEL_LEN = 64
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
TEXT = {"model": MODEL, "prompt": "hi", "max_tokens": 4}


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path) -> Iterator[RunningServer]:
    config = ServerConfig(model=str(tiny_model_dir), served_model_names=(MODEL,), max_model_len=MAX_MODEL_LEN)
    with running_server(Engine.from_config(config)) as running:
        yield running


def post(server: RunningServer, route: str, body: Any) -> httpx.Response:
    return httpx.post(f"{server.base_url}/v1/{route}", json=body, timeout=60)


def error_of(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()["error"]
    assert set(body) == {"message", "type", "param", "code"}
    assert body["code"] == response.status_code
    return body


@pytest.mark.parametrize(
    ("route", "change", "param", "fragment"),
    [
        ("chat/completions", {"n": 0}, "n", "greater than or equal to 1"),
        ("chat/completions", {"temperature": -0.5}, "temperature", "greater than or equal to 0"),
        ("chat/completions", {"top_p": 0}, "top_p", "greater than 0"),
        ("chat/completions", {"top_p": 1.5}, "top_p", "less than or equal to 1"),
        ("chat/completions", {"max_tokens": 0}, "max_tokens", "greater than or equal to 1"),
        ("chat/completions", {"max_completion_tokens": -1}, "max_completion_tokens", "greater than or equal"),
        ("chat/completions", {"top_logprobs": 3}, "top_logprobs", "`logprobs` must be set to true"),
        (
            "chat/completions",
            {"logprobs": True, "top_logprobs": 21},
            "top_logprobs",
            "less than or equal to 20",
        ),
        ("chat/completions", {"messages": []}, "messages", "at least 1 item"),
        ("chat/completions", {"messages": [{"content": "no role"}]}, "messages.0.role", "field required"),
        ("chat/completions", {"stop": ["ok", ""]}, "stop", "must not be empty"),
        ("chat/completions", {"stream_options": {"include_usage": True}}, "stream_options", "stream=True"),
        ("chat/completions", {"presence_penalty": 0.5}, "presence_penalty", "not supported"),
        ("chat/completions", {"tools": [{"type": "function"}]}, "tools", "not supported"),
        ("chat/completions", {"model": 5}, "model", "valid string"),
        ("chat/completions", {"stop_token_ids": [10**6]}, "stop_token_ids", "outside the vocabulary"),
        ("completions", {"logprobs": 21}, "logprobs", "less than or equal to 20"),
        ("completions", {"prompt": ""}, "prompt", "must not be empty"),
        ("completions", {"prompt": [5, 10**6]}, "prompt", "outside the vocabulary"),
        ("completions", {"echo": True}, "echo", "not supported"),
        ("completions", {"best_of": 3}, "best_of", "best_of equal to n"),
        ("completions", {"n": 1000}, "n", "less than or equal to 128"),
    ],
)
def test_bad_parameters_are_400_naming_the_field(
    server: RunningServer, route: str, change: dict[str, Any], param: str, fragment: str
) -> None:
    base = CHAT if route == "chat/completions" else TEXT
    response = post(server, route, {**base, **change})
    assert response.status_code == 400
    error = error_of(response)
    assert error["param"] == param
    assert error["type"] == "BadRequestError"
    assert fragment in error["message"]
    assert error["message"].startswith(param) or param in error["message"]


def test_unknown_model_is_404(server: RunningServer) -> None:
    for route, base in (("chat/completions", CHAT), ("completions", TEXT)):
        response = post(server, route, {**base, "model": "no-such-model"})
        assert response.status_code == 404
        error = error_of(response)
        assert error["message"] == "The model `no-such-model` does not exist."
        assert error["type"] == "NotFoundError"


def test_a_prompt_longer_than_max_model_len_is_400(server: RunningServer) -> None:
    long_prompt = "hello world " * 200
    response = post(server, "completions", {**TEXT, "prompt": long_prompt})
    assert response.status_code == 400
    message = error_of(response)["message"]
    assert f"maximum context length is {MAX_MODEL_LEN} tokens" in message
    chat = post(server, "chat/completions", {**CHAT, "messages": [{"role": "user", "content": long_prompt}]})
    assert chat.status_code == 400
    assert error_of(chat)["param"] == "messages"


def test_max_tokens_beyond_the_context_is_400(server: RunningServer) -> None:
    response = post(server, "completions", {**TEXT, "max_tokens": MAX_MODEL_LEN})
    assert response.status_code == 400
    error = error_of(response)
    assert error["param"] == "max_tokens"
    assert "'max_tokens' or 'max_completion_tokens' is too large" in error["message"]


def test_without_max_tokens_the_rest_of_the_context_is_the_limit(server: RunningServer) -> None:
    response = post(
        server, "completions", {"model": MODEL, "prompt": [5, 6, 7], "temperature": 0, "ignore_eos": True}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["usage"]["completion_tokens"] == MAX_MODEL_LEN - 3
    assert body["choices"][0]["finish_reason"] == "length"


def test_without_a_model_the_base_model_answers(server: RunningServer) -> None:
    response = post(server, "completions", {"prompt": "hi", "max_tokens": 2})
    assert response.status_code == 200
    assert response.json()["model"] == MODEL


def test_malformed_bodies_are_400(server: RunningServer) -> None:
    not_json = httpx.post(
        f"{server.base_url}/v1/completions",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert not_json.status_code == 400
    assert "not valid JSON" in error_of(not_json)["message"]
    not_object = post(server, "completions", ["a", "list"])
    assert not_object.status_code == 400
    assert "JSON object" in error_of(not_object)["message"]


def test_the_openai_client_raises_typed_errors_with_the_message(server: RunningServer) -> None:
    client = openai.OpenAI(base_url=server.openai_base_url, api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.completions.create(model="missing", prompt="hi", max_tokens=2)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], n=0, max_tokens=2
        )
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["param"] == "n"
    # The server still serves after errors.
    ok = client.completions.create(model=MODEL, prompt="hi", max_tokens=2, temperature=0)
    assert ok.choices[0].finish_reason in ("length", "stop")
