"""Resume after preemption, through the real entry point against S3 (moto, IRSA web identity):
a trainer stopped by SIGTERM saves its in-step state, one killed by SIGKILL loses only the steps
since its last periodic save, and the retry publishes the adapter the uninterrupted run did."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from rft.contracts.trainer_config import (
    TrainerConfig,
    TrainerFailure,
    TrainerResult,
    parse_termination_message,
)
from rft.storage import create_bytes, list_objects
from rft.storage.checkpoints import fetch_checkpoint, is_committed, upload_tree
from rft_devcluster.pytest_fixtures_storage import S3Bucket
from rft_trainer.resume import StepCheckpointer, fingerprint
from rft_trainer.sources import output_is_free, resume_prefix
from safetensors.torch import load_file

from tests.trainer.trainer_testlib import jsonl, samples_row, sha256_of

ROWS = [
    samples_row(f"name an animal {i}", [("cat", 1.0), ("dog dog", 0.0), ("cat bird", 0.5), ("fish", 0.2)])
    for i in range(8)
]
EVERY = 2
RESUMED = re.compile(r"resuming from the in-step checkpoint at optimizer step (\d+)")


class Trainer:
    """One trainer process of the step (a pod), its progress read line by line from stdout."""

    def __init__(self, config_path: Path, env: dict[str, str], log: Path) -> None:
        self.log = log
        self._stderr = log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "rft_trainer", "--config", str(config_path)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )

    def wait_for_step(self, step: int) -> int:
        """Read progress until an optimizer step >= `step` is reported; returns that step."""
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            line = raw.decode()
            if not line.startswith("{"):
                continue
            report = json.loads(line)
            if report["phase"] == "training" and report["step"] >= step:
                return int(report["step"])
        raise AssertionError(f"the trainer ended before step {step}:\n{self.stderr()[-3000:]}")

    def finish(self) -> int:
        try:
            self.process.communicate(timeout=240)
        finally:
            if self.process.poll() is None:
                self.process.kill()
            self._stderr.close()
        return self.process.returncode

    def stderr(self) -> str:
        if not self._stderr.closed:
            self._stderr.flush()
        return self.log.read_text(errors="replace")


@pytest.fixture
def step_setup(s3_bucket: S3Bucket, tiny_model_dir: Path, tmp_path: Path) -> dict[str, Any]:
    base_url = f"{s3_bucket.url}/models/tiny-base"
    upload_tree(tiny_model_dir, base_url, {"kind": "base", "name": "tiny-base"})
    data = jsonl(ROWS)
    dataset_url = f"{s3_bucket.url}/datasets/animals.jsonl"
    create_bytes(dataset_url, data)
    return {"bucket": s3_bucket, "base": base_url, "dataset": dataset_url, "digest": sha256_of(data)}


def _config(setup: dict[str, Any], tmp: Path, output: str) -> Path:
    config = TrainerConfig(
        step_name="step-1",
        namespace="team-a",
        dataset_url=setup["dataset"],
        dataset_digest=setup["digest"],
        base_model_url=setup["base"],
        base_model_name="tiny-base",
        output_url=f"{setup['bucket'].url}/models/{output}",
        output_model_name=output,
        scratch_dir=str(tmp / "scratch"),
        termination_log=str(tmp / f"termination-{output}"),
        device="cpu",
        training={
            "lora_rank": 4,
            "learning_rate": "1e-3",
            "batch_size": 64,
            "max_context_length": 64,
            "epochs": 3,
            "warmup_steps": 5,
            "checkpoint_every_steps": EVERY,
        },
    )
    path = tmp / f"{output}.json"
    path.write_text(config.to_json())
    return path


def _result(tmp: Path, output: str) -> TrainerResult | TrainerFailure:
    return parse_termination_message((tmp / f"termination-{output}").read_text())


@pytest.mark.slow
def test_sigterm_then_sigkill_then_retry_publishes_the_uninterrupted_adapter(
    step_setup: dict[str, Any], tmp_path: Path
) -> None:
    bucket: S3Bucket = step_setup["bucket"]
    env = bucket.pod_env() | {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}

    # The reference: the same step, never interrupted.
    reference = Trainer(_config(step_setup, tmp_path, "reference"), env, tmp_path / "reference.log")
    assert reference.finish() == 0, reference.stderr()[-3000:]
    expected = _result(tmp_path, "reference")
    assert isinstance(expected, TrainerResult)
    total = int(expected.metrics["optimizer_steps"])
    assert total >= 12, f"too few optimizer steps ({total}) to interrupt twice"
    assert not list_objects(resume_prefix(f"{bucket.url}/models/reference"))  # removed when published

    config = _config(step_setup, tmp_path, "model-1")
    output = f"{bucket.url}/models/model-1"
    state_url = resume_prefix(output) + "state.pt"

    # 1. SIGTERM (suspend, preemption, drain) mid-epoch: the pod saves and exits for a retry.
    first = Trainer(config, env, tmp_path / "first.log")
    first.wait_for_step(3)
    first.process.send_signal(signal.SIGTERM)
    assert first.finish() == 2, first.stderr()[-3000:]
    failure = _result(tmp_path, "model-1")
    assert isinstance(failure, TrainerFailure)
    assert failure.reason == "Interrupted"
    stopped_at = int(re.search(r"after optimizer step (\d+)", failure.message).group(1))  # type: ignore[union-attr]
    assert 3 <= stopped_at < total
    assert [o.url for o in list_objects(output + "/")] == [state_url]
    assert not is_committed(output)
    assert output_is_free(output)  # the retry is not refused: only its own in-step state is there

    # 2. The retry continues from the step it stopped at; it is then SIGKILLed (no chance to save).
    second = Trainer(config, env, tmp_path / "second.log")
    reached = second.wait_for_step(stopped_at + EVERY + 1)
    second.process.kill()
    second.finish()
    assert [int(s) for s in RESUMED.findall(second.stderr())] == [stopped_at]
    assert not is_committed(output)

    # 3. The next retry continues from the last periodic save and publishes.
    third = Trainer(config, env, tmp_path / "third.log")
    assert third.finish() == 0, third.stderr()[-3000:]
    resumed = [int(s) for s in RESUMED.findall(third.stderr())]
    assert len(resumed) == 1
    assert stopped_at < resumed[0] <= reached
    assert resumed[0] % EVERY == 0
    result = _result(tmp_path, "model-1")
    assert isinstance(result, TrainerResult)
    assert not list_objects(resume_prefix(output))  # the scratch prefix is gone
    adapter_files = {"adapter_model.safetensors", "adapter_config.json"}
    assert {f.path for f in result.files if not f.path.startswith("metrics/")} == adapter_files

    # Same numbers as the uninterrupted run: exactly (CPU, same threads, deterministic data order).
    for key in (
        "optimizer_steps",
        "loss",
        "adv_logp_first_step",
        "adv_logp_last_step",
        "grad_norm_last_step",
    ):
        assert result.metrics[key] == expected.metrics[key], key
    fetch_checkpoint(f"{bucket.url}/models/reference", tmp_path / "a")
    fetch_checkpoint(output, tmp_path / "b")
    want = load_file(tmp_path / "a" / "adapter_model.safetensors")
    got = load_file(tmp_path / "b" / "adapter_model.safetensors")
    assert want.keys() == got.keys()
    assert any(t.abs().sum() > 0 for n, t in want.items() if "lora_B" in n)
    for name, tensor in want.items():
        assert torch.equal(tensor, got[name]), name
    # The per-step series survives both interruptions: one line per optimizer step, each step's
    # values those of the uninterrupted run (times and throughput aside).
    want_series = _series(tmp_path / "a")
    got_series = _series(tmp_path / "b")
    assert [line["step"] for line in got_series] == list(range(1, total + 1))
    for want_line, got_line in zip(want_series, got_series, strict=True):
        for key in ("loss", "pg_loss", "grad_norm", "lr", "clip_fraction"):
            assert got_line[key] == want_line[key], (got_line["step"], key)


def _series(checkpoint: Path) -> list[dict[str, Any]]:
    lines = (checkpoint / "metrics" / "steps.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_the_scratch_prefix_does_not_occupy_the_output(make_config: Any, tmp_path: Path) -> None:
    config = make_config(jsonl(ROWS))
    output = config.output_url
    assert resume_prefix(output) == f"file://{output}/_resume/"
    (Path(output) / "_resume").mkdir(parents=True)
    (Path(output) / "_resume" / "state.pt").write_bytes(b"saved")
    assert output_is_free(output)
    (Path(output) / "adapter_model.safetensors").write_bytes(b"someone's upload")
    assert not output_is_free(output)


def test_the_fingerprint_ignores_how_often_to_save_but_not_what_is_trained(make_config: Any) -> None:
    config = make_config(jsonl(ROWS))
    same = config.model_copy(
        update={"training": config.training.model_copy(update={"checkpoint_every_steps": 3})}
    )
    other = config.model_copy(update={"training": config.training.model_copy(update={"seed": 7})})
    assert fingerprint(config, 1) == fingerprint(same, 1)
    assert fingerprint(config, 1) != fingerprint(other, 1)
    assert fingerprint(config, 1) != fingerprint(config, 2)  # another world size: another data split


def test_periodic_saves_skip_the_last_step_and_zero_disables_them(tmp_path: Path) -> None:
    every = StepCheckpointer(str(tmp_path / "out"), tmp_path, every_steps=2, fingerprint="x")
    assert [s for s in range(1, 7) if every.should_save(s, 6)] == [2, 4]
    never = StepCheckpointer(str(tmp_path / "out"), tmp_path, every_steps=0, fingerprint="x")
    assert not any(never.should_save(s, 6) for s in range(1, 7))
