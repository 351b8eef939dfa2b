"""Token choice (temperature, top-k, top-p) and which logprobs are reported."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from rft_devcluster.fake_vllm import service
from rft_devcluster.fake_vllm.config import ServerConfig
from rft_devcluster.fake_vllm.engine import Engine
from rft_devcluster.fake_vllm.sampling import SamplingParams, make_generator, next_tokens, processed_logits
from transformers import AutoModelForCausalLM

PROBS = [0.5, 0.3, 0.15, 0.05]
LOGITS = torch.tensor([[math.log(p) for p in PROBS]])


def kept(params: SamplingParams) -> list[int]:
    """Indices of the tokens sampling may still draw."""
    return [
        i for i, value in enumerate(processed_logits(LOGITS, params)[0].tolist()) if value != float("-inf")
    ]


@pytest.mark.parametrize(
    ("top_p", "expected"), [(1.0, [0, 1, 2, 3]), (0.81, [0, 1, 2]), (0.7, [0, 1]), (0.45, [0]), (0.1, [0])]
)
def test_top_p_keeps_the_smallest_set_reaching_p(top_p: float, expected: list[int]) -> None:
    assert kept(SamplingParams(top_p=top_p)) == expected


@pytest.mark.parametrize(
    ("top_k", "expected"), [(0, [0, 1, 2, 3]), (-1, [0, 1, 2, 3]), (1, [0]), (3, [0, 1, 2])]
)
def test_top_k_keeps_the_k_most_likely(top_k: int, expected: list[int]) -> None:
    assert kept(SamplingParams(top_k=top_k)) == expected


def test_temperature_zero_is_greedy_and_leaves_logits_unscaled() -> None:
    params = SamplingParams(temperature=0.0)
    assert torch.equal(processed_logits(LOGITS, params), LOGITS)
    assert (
        next_tokens(LOGITS.repeat(5, 1), params, make_generator(0, torch.device("cpu"))).tolist() == [0] * 5
    )


def test_sampling_follows_the_filtered_distribution_and_the_seed() -> None:
    params = SamplingParams(top_p=0.7)
    rows = processed_logits(LOGITS.repeat(4000, 1), params)
    draws = next_tokens(rows, params, make_generator(7, torch.device("cpu")))
    assert set(draws.tolist()) == {0, 1}
    assert (draws == 0).float().mean().item() == pytest.approx(0.5 / 0.8, abs=0.03)
    again = next_tokens(rows, params, make_generator(7, torch.device("cpu")))
    assert torch.equal(draws, again)


@pytest.mark.parametrize("mode", ["raw_logprobs", "processed_logprobs"])
def test_logprobs_mode_selects_the_reported_distribution(tiny_model_dir: Path, mode: str) -> None:
    engine = Engine.from_config(ServerConfig(model=str(tiny_model_dir), logprobs_mode=mode))  # type: ignore[arg-type]
    temperature = 0.5
    body: dict[str, Any] = {
        "model": str(tiny_model_dir),
        "prompt": "the cat",
        "max_tokens": 4,
        "temperature": temperature,
        "seed": 3,
        "logprobs": 0,
        "ignore_eos": True,
        "return_token_ids": True,
    }
    choice = service.text_completion(engine, body)["choices"][0]
    model: Any = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    ids = torch.tensor([choice["prompt_token_ids"] + choice["token_ids"]])
    with torch.no_grad():
        logits = model(ids).logits[0, len(choice["prompt_token_ids"]) - 1 : -1].float()
    if mode == "processed_logprobs":
        logits = logits / temperature
    expected = torch.log_softmax(logits, dim=-1)
    assert choice["logprobs"]["token_logprobs"] == pytest.approx(
        [expected[i, token].item() for i, token in enumerate(choice["token_ids"])], abs=1e-4
    )
