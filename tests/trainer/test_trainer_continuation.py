"""Warm starts through the entry point: a continuation trains and records its parent; an
incompatible parent (rank, alpha, other base, other learning rate or batch size) is refused before
training with a clear message."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from rft.contracts.trainer_config import (
    TrainerConfig,
    TrainerFailure,
    TrainerResult,
    parse_termination_message,
)
from rft.storage.checkpoints import fetch_checkpoint
from rft_trainer.main import main

from tests.trainer.trainer_testlib import ConfigFactory, continuation_config, jsonl, samples_row

ROWS = [
    samples_row("name an animal", [("cat", 1.0), ("dog", 0.0), ("cat cat", 1.0)]),
    samples_row("name a fruit", [("apple", 0.5), ("banana", 0.5)]),  # identical rewards: no signal
    samples_row("name a colour", [("red", 0.2), ("blue", 0.9)]),
]


def _run(config: TrainerConfig, tmp_path: Path, name: str) -> tuple[int, TrainerResult | TrainerFailure]:
    path = tmp_path / f"{name}.json"
    path.write_text(config.to_json())
    code = main(["--config", str(path)])
    return code, parse_termination_message(Path(config.termination_log).read_text())


@pytest.fixture
def first_checkpoint(make_config: ConfigFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TrainerConfig:
    """A trained first checkpoint (rank 4) from the tiny base."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = make_config(jsonl(ROWS))
    code, result = _run(config, tmp_path, "first")
    assert code == 0, result
    assert isinstance(result, TrainerResult)
    assert result.metrics["zero_signal_rows"] == "1"
    assert result.metrics["rows"] == "3"
    assert result.metrics["samples"] == "7"
    return config


def test_continuation_trains_from_the_parent_and_records_it(first_checkpoint: TrainerConfig, tmp_path: Path) -> None:
    config = continuation_config(first_checkpoint, tmp_path)
    code, result = _run(config, tmp_path, "second")
    assert code == 0, result
    assert isinstance(result, TrainerResult)
    assert float(result.metrics["kl"]) > 0  # the parent's adapter already moved the policy off the base
    metadata = fetch_checkpoint(config.output_url, tmp_path / "fetched")
    assert metadata["parent"] == {"name": "model-1", "location": first_checkpoint.output_url}
    assert metadata["baseModel"]["name"] == "tiny-base"
    first_files = json.loads((Path(first_checkpoint.output_url) / "metadata.json").read_text())["files"]
    second_files = metadata["files"]
    weights = {f["path"]: f["sha256"] for f in first_files}["adapter_model.safetensors"]
    assert {f["path"]: f["sha256"] for f in second_files}["adapter_model.safetensors"] != weights


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"training": {"lora_rank": 8, "learning_rate": "1e-3", "batch_size": 512, "max_context_length": 128}},
         "it has LoRA rank 4 (this step: 8)"),
        ({"training": {"lora_rank": 4, "lora_alpha": 4, "learning_rate": "1e-3", "batch_size": 512,
                       "max_context_length": 128}},
         "LoRA alpha 8 (this step: 4)"),
        ({"base_model_name": "other-base"}, "base model 'tiny-base' (this step: 'other-base')"),
        ({"training": {"lora_rank": 4, "learning_rate": "2e-3", "batch_size": 1024, "max_context_length": 128}},
         "learning rate 1e-3 (this step: 2e-3); batch size 512 (this step: 1024)"),
    ],
    ids=["rank", "alpha", "base", "learning-rate-and-batch"],
)
def test_incompatible_parent_is_refused_before_training(
    first_checkpoint: TrainerConfig,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    changes: dict[str, Any],
    expected: str,
) -> None:
    fields = dict(changes)
    if "training" in fields:
        fields["training"] = first_checkpoint.training.model_validate(fields["training"])
    config = continuation_config(first_checkpoint, tmp_path, **fields)
    capsys.readouterr()
    code, failure = _run(config, tmp_path, "bad")
    assert code == 1
    assert isinstance(failure, TrainerFailure)
    assert failure.reason == "IncompatibleCheckpoint"
    assert "cannot continue from checkpoint 'model-1'" in failure.message
    assert expected in failure.message
    phases = [json.loads(line)["phase"] for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert "training" not in phases
    assert not Path(config.output_url).exists()


def test_missing_parent_is_refused(first_checkpoint: TrainerConfig, tmp_path: Path) -> None:
    config = continuation_config(first_checkpoint, tmp_path, parent_adapter_url=str(tmp_path / "nowhere"))
    code, failure = _run(config, tmp_path, "missing")
    assert code == 1
    assert isinstance(failure, TrainerFailure)
    assert failure.reason == "IncompatibleCheckpoint"
    assert "is not a directory" in failure.message
