"""End to end through the S3 API (moto, IRSA web identity, no static keys): the trainer as a pod runs it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from rft.api.model import FileDigest
from rft.contracts.trainer_config import (
    TrainerConfig,
    TrainerFailure,
    TrainerResult,
    parse_termination_message,
)
from rft.storage import create_bytes, write_bytes
from rft.storage.checkpoints import fetch_checkpoint, is_committed, upload_tree
from rft.storage.model_folder import check_model_folder
from rft_devcluster.emulators import free_port
from rft_devcluster.pytest_fixtures_storage import S3Bucket
from rft_trainer.main import main

from tests.trainer.trainer_testlib import jsonl, samples_row, series_from_bucket, sha256_of

ROWS = [
    samples_row(f"name an animal {i}", [("cat", 1.0), ("dog dog", 0.0), ("cat bird", 0.5), ("fish", 0.0)])
    for i in range(6)
]
PHASES = {"loading", "training", "writing_results", "done", "failed"}


@pytest.fixture
def bucket_setup(s3_bucket: S3Bucket, tiny_model_dir: Path, tmp_path: Path) -> dict[str, Any]:
    """The base model and a dataset in the bucket; a config that trains from them."""
    base_url = f"{s3_bucket.url}/models/tiny-base"
    upload_tree(tiny_model_dir, base_url, {"kind": "base", "name": "tiny-base"})
    data = jsonl(ROWS)
    dataset_url = f"{s3_bucket.url}/datasets/animals.jsonl"
    create_bytes(dataset_url, data)
    config = TrainerConfig(
        step_name="step-1",
        namespace="team-a",
        dataset_url=dataset_url,
        dataset_digest=sha256_of(data),
        base_model_url=base_url,
        base_model_name="tiny-base",
        output_url=f"{s3_bucket.url}/models/model-1",
        output_model_name="model-1",
        scratch_dir=str(tmp_path / "scratch"),
        termination_log=str(tmp_path / "termination-log"),
        training={"lora_rank": 4, "learning_rate": "1e-3", "batch_size": 256, "max_context_length": 64},
    )
    return {"config": config, "bucket": s3_bucket, "data": data, "tmp": tmp_path}


def _poll_progress(process: subprocess.Popen[bytes], port: int) -> list[dict[str, Any]]:
    seen = []
    while process.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/progress", timeout=2) as response:
                seen.append(json.loads(response.read()))
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.2)
    return seen


@pytest.mark.slow
def test_trainer_process_reads_s3_and_publishes_adapter_with_lineage(bucket_setup: dict[str, Any]) -> None:
    config: TrainerConfig = bucket_setup["config"]
    bucket: S3Bucket = bucket_setup["bucket"]
    tmp: Path = bucket_setup["tmp"]
    port = free_port()
    config = config.model_copy(update={"progress_port": port})
    config_path = tmp / "config.json"
    config_path.write_text(config.to_json())
    env = bucket.pod_env() | {"HF_HUB_OFFLINE": "1"}
    assert "AWS_SECRET_ACCESS_KEY" not in env  # only the web identity token reaches the bucket
    process = subprocess.Popen(
        [sys.executable, "-m", "rft_trainer", "--config", str(config_path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        seen = _poll_progress(process, port)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr.decode()[-3000:]

    assert seen, "GET /progress never answered while the trainer ran"
    assert {s["phase"] for s in seen} <= PHASES
    progress = [json.loads(line) for line in stdout.decode().splitlines() if line.startswith("{")]
    assert all(p["event"] == "progress" for p in progress)
    training = [p for p in progress if p["phase"] == "training" and p["step"] > 0]
    assert training
    assert training[-1]["step"] == training[-1]["total_steps"]
    assert progress[-1]["phase"] == "done"

    result = parse_termination_message(Path(config.termination_log).read_text())
    assert isinstance(result, TrainerResult)
    assert result.dataset_digest == sha256_of(bucket_setup["data"])
    assert result.lora.rank == 4
    assert result.lora.alpha == 8
    assert float(result.metrics["mean_reward"]) == pytest.approx((1.0 + 0.0 + 0.5 + 0.0) / 4)
    assert "loss" in result.metrics
    paths = {f.path for f in result.files}
    assert {"adapter_model.safetensors", "adapter_config.json", "metrics/steps.jsonl"} <= paths
    (event_file,) = paths - {"adapter_model.safetensors", "adapter_config.json", "metrics/steps.jsonl"}
    assert event_file.startswith("metrics/events.out.tfevents.")

    assert is_committed(config.output_url)
    local = tmp / "fetched"
    metadata = fetch_checkpoint(config.output_url, local)  # verifies every digest
    assert metadata["baseModel"] == {"name": "tiny-base", "location": config.base_model_url}
    assert metadata["parent"] is None
    assert metadata["dataset"]["digest"] == result.dataset_digest
    assert metadata["lora"]["rank"] == 4
    assert metadata["training"]["step"] == "step-1"
    assert {f["path"]: f["sha256"] for f in metadata["files"]} == {f.path: f.sha256 for f in result.files}
    assert json.loads((local / "adapter_config.json").read_text())["base_model_name_or_path"] == "tiny-base"

    # The per-step series, published with the adapter: one point per optimizer step per metric,
    # read back from the bucket with TensorBoard's own reader.
    steps = training[-1]["total_steps"]
    assert steps >= 2
    scalars = series_from_bucket(config.output_url, tmp / "tensorboard")
    expected = {
        "loss", "pg_loss", "kl", "clip_fraction", "entropy", "mean_reward", "mean_advantage",
        "grad_norm", "lr", "tokens_per_second", "flops_per_second",
    }  # fmt: skip
    assert {f"train/{name}" for name in expected} <= set(scalars)
    for tag, points in scalars.items():
        assert [step for step, _ in points] == list(range(1, steps + 1)), tag
    lines = [json.loads(line) for line in (local / "metrics" / "steps.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == list(range(1, steps + 1))
    for line, step in zip(lines, range(steps), strict=True):
        for name in expected:
            assert scalars[f"train/{name}"][step][1] == pytest.approx(line[name], rel=1e-6), name
        # the live progress lines carried the same numbers
        (live,) = [p for p in training if p["step"] == step + 1]
        assert live["metrics"]["grad_norm"] == pytest.approx(line["grad_norm"])
    assert all(line["grad_norm"] > 0 and line["entropy"] > 0 for line in lines)
    assert all(line["lr"] == pytest.approx(1e-3) for line in lines)


def _run_in_process(
    config: TrainerConfig, tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[int, TrainerFailure]:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = tmp / "config-in-process.json"
    path.write_text(config.to_json())
    code = main(["--config", str(path)])
    failure = parse_termination_message(Path(config.termination_log).read_text())
    assert isinstance(failure, TrainerFailure), failure
    return code, failure


def test_existing_output_is_refused_before_training(
    bucket_setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config: TrainerConfig = bucket_setup["config"]
    create_bytes(f"{config.output_url}/adapter_model.safetensors", b"someone else's upload")
    code, failure = _run_in_process(config, bucket_setup["tmp"], monkeypatch)
    assert code == 1
    assert failure.reason == "OutputExists"
    assert config.output_url in failure.message
    assert "never overwritten" in failure.message
    phases = [
        json.loads(line)["phase"] for line in capsys.readouterr().out.splitlines() if line.startswith("{")
    ]
    assert "training" not in phases


def test_dataset_changed_since_validation_is_refused(
    bucket_setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    config: TrainerConfig = bucket_setup["config"]
    tampered = bucket_setup["data"].replace(b'"score": 0.0', b'"score": 1.0')
    write_bytes(config.dataset_url, tampered)
    code, failure = _run_in_process(config, bucket_setup["tmp"], monkeypatch)
    assert code == 1
    assert failure.reason == "DatasetChanged"
    assert sha256_of(tampered) in failure.message
    assert config.dataset_digest in failure.message
    assert not is_committed(config.output_url)


def test_missing_base_model_is_a_clear_failure(
    bucket_setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    config: TrainerConfig = bucket_setup["config"]
    config = config.model_copy(update={"base_model_url": f"{bucket_setup['bucket'].url}/models/nope"})
    code, failure = _run_in_process(config, bucket_setup["tmp"], monkeypatch)
    assert code == 1
    assert failure.reason == "ModelLoadFailed"
    assert "models/nope" in failure.message
    assert "not a committed checkpoint" in failure.message


def test_a_base_model_file_changed_since_its_check_is_refused(
    bucket_setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The step passes the base Model's pins (its check's digests): the trainer fetches exactly
    those files, and one rewritten since is refused before anything trains."""
    config: TrainerConfig = bucket_setup["config"]
    checked = check_model_folder(config.base_model_url)
    pinned = config.model_copy(
        update={
            "base_model_files_digest": checked.digest,
            "base_model_files": [
                FileDigest(path=r.path, sha256=r.sha256, size=r.size) for r in checked.files
            ],
        }
    )
    write_bytes(f"{config.base_model_url}/tokenizer_config.json", b'{"chat_template": "{{ other }}"}')
    code, failure = _run_in_process(pinned, bucket_setup["tmp"], monkeypatch)
    assert code == 1
    assert failure.reason == "ModelLoadFailed"
    assert "tokenizer_config.json" in failure.message
    assert "changed since its Model was checked" in failure.message
    assert not is_committed(config.output_url)
