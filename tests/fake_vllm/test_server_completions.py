"""Chat and text completions over real HTTP with the official OpenAI client (base model only)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import torch
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam
from rft.canary import served_logprobs
from rft_devcluster.fake_vllm.config import ServerConfig
from rft_devcluster.fake_vllm.engine import Engine
from rft_devcluster.fake_vllm.testing import RunningServer, extra_field, running_server
from transformers import AutoModelForCausalLM, AutoTokenizer

MODEL = "tiny"
MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "hello world"},
]
GREEDY: dict[str, Any] = {"temperature": 0, "extra_body": {"ignore_eos": True, "return_token_ids": True}}


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path) -> Iterator[RunningServer]:
    engine = Engine.from_config(ServerConfig(model=str(tiny_model_dir), served_model_names=(MODEL,)))
    with running_server(engine) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.openai_base_url, api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def reference(tiny_model_dir: Path) -> tuple[Any, Any]:
    """The same model loaded independently, to check the server's tokens and logprobs against."""
    model: Any = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    model.eval()
    return model, AutoTokenizer.from_pretrained(str(tiny_model_dir))


def reference_logprobs(model: Any, prompt_ids: list[int], completion_ids: list[int]) -> torch.Tensor:
    """[len(completion), vocab] log-probabilities of every completion position, without a KV cache."""
    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt_ids) - 1 : -1]
    return torch.log_softmax(logits.float(), dim=-1)


def test_health_and_model_list(server: RunningServer, client: openai.OpenAI, tiny_model_dir: Path) -> None:
    assert httpx.get(f"{server.base_url}/health").status_code == 200
    models = client.models.list().data
    assert [model.id for model in models] == [MODEL]
    assert extra_field(models[0], "parent") is None
    assert extra_field(models[0], "root") == str(tiny_model_dir)
    assert extra_field(models[0], "max_model_len") == 2048


def test_chat_uses_the_chat_template_and_counts_usage(
    client: openai.OpenAI, reference: tuple[Any, Any]
) -> None:
    _, tokenizer = reference
    response = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=7, **GREEDY)
    rendered = tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    expected_prompt = tokenizer(rendered, add_special_tokens=False)["input_ids"]
    assert extra_field(response, "prompt_token_ids") == expected_prompt
    assert response.object == "chat.completion"
    assert response.model == MODEL
    choice = response.choices[0]
    assert choice.message.role == "assistant"
    assert choice.finish_reason == "length"
    token_ids = extra_field(choice, "token_ids")
    assert len(token_ids) == 7
    assert choice.message.content == tokenizer.decode(token_ids, skip_special_tokens=True)
    assert response.usage is not None
    assert response.usage.prompt_tokens == len(expected_prompt)
    assert response.usage.completion_tokens == 7
    assert response.usage.total_tokens == len(expected_prompt) + 7


def test_greedy_tokens_are_the_models_argmax_and_logprobs_its_log_softmax(
    client: openai.OpenAI, reference: tuple[Any, Any]
) -> None:
    model, _ = reference
    response = client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        max_tokens=6,
        logprobs=True,
        top_logprobs=3,
        **GREEDY,
    )
    choice = response.choices[0]
    token_ids = extra_field(choice, "token_ids")
    expected = reference_logprobs(model, extra_field(response, "prompt_token_ids"), token_ids)
    assert choice.logprobs is not None
    assert choice.logprobs.content is not None
    assert len(choice.logprobs.content) == len(token_ids)
    for position, (token, entry) in enumerate(zip(token_ids, choice.logprobs.content, strict=True)):
        row = expected[position]
        assert entry.logprob == pytest.approx(row[token].item(), abs=1e-4)
        assert row[token].item() >= row.max().item() - 1e-4  # greedy: the most likely token
        assert len(entry.top_logprobs) == 3
        top_values = [alternative.logprob for alternative in entry.top_logprobs]
        assert top_values == sorted(top_values, reverse=True)
        assert top_values == pytest.approx(torch.topk(row, 3).values.tolist(), abs=1e-4)
        assert entry.bytes == list(entry.token.encode("utf-8"))


def test_sampled_logprobs_are_the_models_raw_logprobs(
    client: openai.OpenAI, reference: tuple[Any, Any]
) -> None:
    model, tokenizer = reference
    response = client.completions.create(
        model=MODEL,
        prompt="the cat",
        n=3,
        max_tokens=6,
        temperature=0.7,
        seed=11,
        logprobs=2,
        extra_body={"ignore_eos": True, "return_token_ids": True},
    )
    assert len({tuple(extra_field(choice, "token_ids")) for choice in response.choices}) > 1
    for choice in response.choices:  # every sample of the batch, not just the first row
        token_ids = extra_field(choice, "token_ids")
        assert extra_field(choice, "prompt_token_ids") == tokenizer("the cat")["input_ids"]
        expected = reference_logprobs(model, extra_field(choice, "prompt_token_ids"), token_ids)
        assert choice.logprobs is not None
        assert choice.logprobs.token_logprobs == pytest.approx(
            [expected[i, token].item() for i, token in enumerate(token_ids)], abs=1e-4
        )
        assert choice.logprobs.tokens == [tokenizer.decode([token]) for token in token_ids]
        offsets = [sum(len(token) for token in choice.logprobs.tokens[:i]) for i in range(len(token_ids))]
        assert choice.logprobs.text_offset == offsets
        assert choice.logprobs.top_logprobs is not None
        for token_text, top in zip(choice.logprobs.tokens, choice.logprobs.top_logprobs, strict=True):
            assert token_text in top  # the sampled token is always reported
            assert 2 <= len(top) <= 3


def test_n_samples_differ_when_sampling_and_agree_when_greedy(client: openai.OpenAI) -> None:
    sampled = client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        n=4,
        max_tokens=8,
        temperature=1.0,
        seed=5,
        extra_body={"ignore_eos": True},
    )
    assert [choice.index for choice in sampled.choices] == [0, 1, 2, 3]
    assert len({choice.message.content for choice in sampled.choices}) > 1
    assert sampled.usage is not None
    assert sampled.usage.completion_tokens == 4 * 8
    greedy = client.chat.completions.create(model=MODEL, messages=MESSAGES, n=3, max_tokens=8, **GREEDY)
    single = client.chat.completions.create(model=MODEL, messages=MESSAGES, n=1, max_tokens=8, **GREEDY)
    assert [extra_field(choice, "token_ids") for choice in greedy.choices] == [
        extra_field(single.choices[0], "token_ids")
    ] * 3


def test_seed_makes_sampling_reproducible(client: openai.OpenAI) -> None:
    def sample(seed: int) -> list[list[int]]:
        response = client.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            n=3,
            max_tokens=10,
            temperature=1.0,
            top_p=0.9,
            seed=seed,
            extra_body={"ignore_eos": True, "return_token_ids": True},
        )
        return [extra_field(choice, "token_ids") for choice in response.choices]

    first = sample(1234)
    assert sample(1234) == first
    assert sample(4321) != first


def test_stop_string_truncates_the_text(client: openai.OpenAI) -> None:
    unstopped = client.completions.create(
        model=MODEL, prompt="the cat", max_tokens=12, temperature=0, extra_body={"ignore_eos": True}
    )
    full_text = unstopped.choices[0].text
    stop = full_text[len(full_text) // 2 :][:2]
    assert len(stop) == 2
    stopped = client.completions.create(
        model=MODEL, prompt="the cat", max_tokens=12, temperature=0, stop=[stop, "never-produced"],
        extra_body={"ignore_eos": True},
    )  # fmt: skip
    choice = stopped.choices[0]
    assert choice.text == full_text[: full_text.index(stop)]
    assert choice.finish_reason == "stop"
    assert extra_field(choice, "stop_reason") == stop


def test_stop_token_ids_end_the_completion_at_that_token(
    client: openai.OpenAI, reference: tuple[Any, Any]
) -> None:
    _, tokenizer = reference
    body = {"ignore_eos": True, "return_token_ids": True}
    full = client.completions.create(
        model=MODEL, prompt="a dog", max_tokens=10, temperature=0, extra_body=body
    )
    generated = extra_field(full.choices[0], "token_ids")
    stop_token = generated[2]
    end = generated.index(stop_token)
    stopped = client.completions.create(
        model=MODEL,
        prompt="a dog",
        max_tokens=10,
        temperature=0,
        extra_body={**body, "stop_token_ids": [stop_token]},
    )
    choice = stopped.choices[0]
    assert extra_field(choice, "token_ids") == generated[: end + 1]
    assert choice.text == tokenizer.decode(generated[:end], skip_special_tokens=True)
    assert choice.finish_reason == "stop"
    assert extra_field(choice, "stop_reason") == stop_token
    assert stopped.usage is not None
    assert stopped.usage.completion_tokens == end + 1


def test_a_batch_of_prompts_answers_each_as_alone(client: openai.OpenAI, reference: tuple[Any, Any]) -> None:
    _, tokenizer = reference
    prompts = ["the cat", "a dog and a bird"]
    batch = client.completions.create(model=MODEL, prompt=prompts, n=2, max_tokens=5, **GREEDY)
    assert [choice.index for choice in batch.choices] == [0, 1, 2, 3]
    for number, prompt in enumerate(prompts):
        alone = client.completions.create(model=MODEL, prompt=prompt, max_tokens=5, **GREEDY)
        assert [choice.text for choice in batch.choices[2 * number : 2 * number + 2]] == [
            alone.choices[0].text
        ] * 2
    assert batch.usage is not None
    assert batch.usage.prompt_tokens == sum(len(tokenizer(prompt)["input_ids"]) for prompt in prompts)
    assert batch.usage.completion_tokens == 4 * 5


def test_token_id_prompts_equal_text_prompts(client: openai.OpenAI, reference: tuple[Any, Any]) -> None:
    _, tokenizer = reference
    ids = tokenizer("hello world")["input_ids"]
    by_text = client.completions.create(model=MODEL, prompt="hello world", max_tokens=6, **GREEDY)
    by_ids = client.completions.create(model=MODEL, prompt=ids, max_tokens=6, **GREEDY)
    assert by_ids.choices[0].text == by_text.choices[0].text
    assert extra_field(by_ids.choices[0], "prompt_token_ids") == ids


def test_async_client_gets_the_same_answer(server: RunningServer, client: openai.OpenAI) -> None:
    async def ask() -> str | None:
        async with openai.AsyncOpenAI(base_url=server.openai_base_url, api_key="unused") as async_client:
            response: ChatCompletion = await async_client.chat.completions.create(
                model=MODEL, messages=MESSAGES, max_tokens=5, **GREEDY
            )
            return response.choices[0].message.content

    expected = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5, **GREEDY)
    assert asyncio.run(ask()) == expected.choices[0].message.content


def test_prompt_logprobs_are_the_prompt_tokens_own_in_vllms_shape(
    client: openai.OpenAI, reference: tuple[Any, Any]
) -> None:
    """What the operator's adapter canary check reads (rft.canary.served_logprobs)."""
    model, _ = reference
    prompt = [5, 17, 3, 42, 8, 99]
    response = client.completions.create(
        model=MODEL, prompt=prompt, max_tokens=1, temperature=0, extra_body={"prompt_logprobs": 0}
    )
    entries = extra_field(response.choices[0], "prompt_logprobs")
    assert entries[0] is None
    expected = reference_logprobs(model, prompt[:1], prompt[1:])
    for position, (token, entry) in enumerate(zip(prompt[1:], entries[1:], strict=True)):
        assert list(entry) == [str(token)]
        row = expected[position]
        assert entry[str(token)]["logprob"] == pytest.approx(row[token].item(), abs=1e-4)
        assert entry[str(token)]["rank"] == int((row > row[token]).sum()) + 1
    assert served_logprobs(response.model_dump(), prompt) == [
        e[str(t)]["logprob"] for t, e in zip(prompt[1:], entries[1:], strict=True)
    ]


def test_prompt_logprobs_with_alternatives_are_refused(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="prompt_logprobs: only 0"):
        client.completions.create(model=MODEL, prompt=[5, 6], max_tokens=1, extra_body={"prompt_logprobs": 2})
