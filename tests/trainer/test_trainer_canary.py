"""The adapter canary the trainer records is the published adapter's, and says how far it moved.

Through the entry point: a first checkpoint and a continuation of it. The recorded logprobs equal
those of the adapter loaded back from the output with PEFT; `start_distance` is the distance
from the base model (first checkpoint) and from the parent's own canary (continuation).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from rft.canary import CANARY_LENGTH, mean_relative_difference
from rft.contracts.trainer_config import TrainerConfig, TrainerResult, parse_termination_message
from rft_trainer.canary import canary_logprobs, canary_tokens
from rft_trainer.main import main
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.trainer.trainer_testlib import ConfigFactory, continuation_config, jsonl, samples_row

ROWS = [
    samples_row("name an animal", [("cat", 1.0), ("dog", 0.0), ("cat cat", 1.0)]),
    samples_row("name a colour", [("red", 0.2), ("blue", 0.9)]),
]
# A lot of movement for a tiny model in a few steps, so the canary sees it.
TRAINING = {"lora_rank": 4, "learning_rate": "5e-2", "batch_size": 512, "max_context_length": 128}


def _train(config: TrainerConfig, tmp_path: Path, name: str) -> TrainerResult:
    path = tmp_path / f"{name}.json"
    path.write_text(config.to_json())
    assert main(["--config", str(path)]) == 0
    result = parse_termination_message(Path(config.termination_log).read_text())
    assert isinstance(result, TrainerResult)
    return result


def _served(base_dir: str, adapter_dir: str, token_ids: list[int]) -> list[float]:
    base = AutoModelForCausalLM.from_pretrained(base_dir, torch_dtype=torch.float32)
    return canary_logprobs(PeftModel.from_pretrained(base, adapter_dir), token_ids)


def test_the_canary_is_the_published_adapters_and_measures_its_move(
    make_config: ConfigFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    first_config = make_config(jsonl(ROWS), training=TRAINING)
    first = _train(first_config, tmp_path, "first")
    canary = first.canary
    assert canary is not None
    assert canary.dtype == "float32"
    assert len(canary.token_ids) == CANARY_LENGTH
    assert len(canary.logprobs) == CANARY_LENGTH - 1

    base_dir = first_config.base_model_url
    base = AutoModelForCausalLM.from_pretrained(base_dir, torch_dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    assert canary.token_ids == canary_tokens(base, tokenizer), "the same tokens for every checkpoint"
    assert not set(canary.token_ids) & set(tokenizer.all_special_ids)

    recorded = [float(x) for x in canary.logprobs]
    published = _served(base_dir, first_config.output_url, canary.token_ids)
    assert max(abs(a - b) for a, b in zip(recorded, published, strict=True)) < 1e-5
    base_logprobs = canary_logprobs(base, canary.token_ids)
    assert math.isclose(
        float(canary.start_distance), mean_relative_difference(recorded, base_logprobs), rel_tol=1e-4
    )
    assert float(canary.start_distance) > 1e-3, "training moved the adapter on the canary"

    second_config = continuation_config(first_config, tmp_path)
    second = _train(second_config, tmp_path, "second")
    assert second.canary is not None
    assert second.canary.token_ids == canary.token_ids
    second_logprobs = [float(x) for x in second.canary.logprobs]
    assert math.isclose(
        float(second.canary.start_distance), mean_relative_difference(second_logprobs, recorded), rel_tol=1e-3
    ), "a continuation is measured from its parent, not from the base"
