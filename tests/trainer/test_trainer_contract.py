"""The operator-trainer contract: config parsing, termination messages, progress reporting."""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from rft.api.model import FileDigest, LoraSettings, TrainingRecord
from rft.contracts.trainer_config import (
    CONFIG_ENV_VAR,
    TERMINATION_MESSAGE_LIMIT,
    ProgressReport,
    TrainerConfig,
    TrainerFailure,
    TrainerResult,
    parse_termination_message,
)
from rft_trainer.checkpoint import failure_message, make_failure, result_message
from rft_trainer.main import main
from rft_trainer.progress import ProgressReporter

DIGEST = "sha256:" + "ab" * 32
MINIMAL = {
    "stepName": "s",
    "namespace": "ns",
    "datasetUrl": "s3://bucket/datasets/d.jsonl",
    "datasetDigest": DIGEST,
    "baseModelUrl": "s3://bucket/models/base",
    "baseModelName": "base",
    "outputUrl": "s3://bucket/models/out",
    "outputModelName": "out",
}


def test_config_round_trips_through_json_with_crd_defaults() -> None:
    config = TrainerConfig.from_json(json.dumps(MINIMAL | {"training": {"loraRank": 8}}))
    assert config.training.lora_rank == 8
    assert config.lora_alpha == 16  # twice the rank by default
    assert config.loss.method == "grpo"
    assert config.allow_hub_download is False
    assert config.termination_log == "/dev/termination-log"
    assert TrainerConfig.from_json(config.to_json()) == config
    assert config.training_record().loss_method == "grpo"


def test_config_loads_from_a_file_or_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(MINIMAL))
    assert TrainerConfig.load(path).step_name == "s"
    assert TrainerConfig.load(None, {CONFIG_ENV_VAR: json.dumps(MINIMAL)}).step_name == "s"
    with pytest.raises(ValueError, match=f"pass --config PATH or set {CONFIG_ENV_VAR}"):
        TrainerConfig.load(None, {})
    with pytest.raises(ValueError, match="cannot read trainer config"):
        TrainerConfig.load(tmp_path / "missing.json")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"datasetDigest": "md5:abc"}, "datasetDigest: String should match pattern"),
        ({"training": {"loraRank": 0}}, "training.loraRank: Input should be greater than or equal to 1"),
        ({"loss": {"method": "ppo2"}}, "loss.method: Input should be"),
        ({"parentAdapterUrl": "s3://b/m/p"}, "parentAdapterUrl and parentModelName must be given together"),
        ({"rewardWeights": {"score": "high"}}, "rewardWeights['score']: 'high' is not a decimal number"),
        ({"unknownField": 1}, "unknownField: Extra inputs are not permitted"),
        ({"device": "tpu"}, "device: Input should be 'auto', 'cpu' or 'cuda'"),
    ],
)
def test_bad_config_names_the_field(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match="invalid trainer config") as caught:
        TrainerConfig.from_json(json.dumps(MINIMAL | change))
    assert message in str(caught.value)


def test_entry_point_reports_a_bad_config_and_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(CONFIG_ENV_VAR, json.dumps(MINIMAL | {"training": {"epochs": 0}}))
    assert main([]) == 1
    assert "training.epochs: Input should be greater than or equal to 1" in capsys.readouterr().err


def _result(metrics: dict[str, str]) -> TrainerResult:
    return TrainerResult(
        output_location="s3://bucket/models/out/",
        files=[FileDigest(path="adapter_model.safetensors", sha256="0" * 64, size=10)],
        metrics=metrics,
        dataset_digest=DIGEST,
        lora=LoraSettings(rank=4, alpha=8, target_modules=["q_proj"]),
        training=TrainingRecord(learning_rate="1e-4", max_context_length=128, batch_size=512, epochs=1, loss_method="grpo"),
    )


def test_result_message_round_trips_and_stays_under_the_limit() -> None:
    result = _result({"loss": "0.1", "mean_reward": "0.5"})
    text = result_message(result)
    parsed = parse_termination_message(text)
    assert parsed == result
    assert json.loads(text)["outputLocation"] == "s3://bucket/models/out/"

    bloated = _result({"loss": "0.1", "mean_reward": "0.5"} | {f"metric_{i}": "1.23456" * 10 for i in range(100)})
    text = result_message(bloated)
    assert len(text.encode()) < TERMINATION_MESSAGE_LIMIT
    assert parse_termination_message(text).metrics == {"loss": "0.1", "mean_reward": "0.5"}  # type: ignore[union-attr]


def test_failure_message_is_cut_to_fit() -> None:
    failure = make_failure("StorageError", "é" * 10_000)
    text = failure_message(failure)
    assert len(text.encode()) < TERMINATION_MESSAGE_LIMIT
    parsed = parse_termination_message(text)
    assert isinstance(parsed, TrainerFailure)
    assert parsed.reason == "StorageError"
    assert parsed.message.endswith("...")


def test_termination_message_parser_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="invalid trainer result"):
        parse_termination_message('{"ok": true, "outputLocation": "x"}')
    with pytest.raises(ValueError, match="invalid trainer result"):
        parse_termination_message("Error: segfault")


def test_progress_lines_and_the_progress_endpoint() -> None:
    out, err = io.StringIO(), io.StringIO()
    reporter = ProgressReporter(out, err)
    port = reporter.serve(0, host="127.0.0.1")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/progress", timeout=5) as response:
            assert json.loads(response.read())["phase"] == "loading"
        reporter.update(ProgressReport(phase="training", epoch=1, step=3, total_steps=10, loss=0.25, mean_reward=0.5))
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/progress", timeout=5) as response:
            body = json.loads(response.read())
        assert body == {
            "phase": "training",
            "epoch": 1,
            "step": 3,
            "total_steps": 10,
            "loss": 0.25,
            "mean_reward": 0.5,
            "metrics": {},
            "message": None,
        }
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)
        assert caught.value.code == 404
    finally:
        reporter.close()
    line = json.loads(out.getvalue().splitlines()[-1])
    assert line["event"] == "progress"
    assert line["step"] == 3
    # The operator parses the same line back with the shared model.
    assert ProgressReport.model_validate({k: v for k, v in line.items() if k != "event"}).loss == 0.25
    assert "step 3/10" in err.getvalue()
    assert "loss 0.25" in err.getvalue()
