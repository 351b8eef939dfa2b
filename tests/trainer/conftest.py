"""Trainer test fixtures: a tiny random chat model built once per session, a config builder."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rft.contracts.trainer_config import TrainerConfig
from rft_devcluster.emulators import free_port
from rft_devcluster.tiny import build_tiny_model

from tests.trainer.trainer_testlib import ConfigFactory, sha256_of


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Qwen2-architecture chat model directory (random weights, local BPE tokenizer)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture
def make_config(tmp_path: Path, tiny_model_dir: Path) -> ConfigFactory:
    """A TrainerConfig on local paths; keyword arguments override fields (training/loss as dicts).

    With `dataset` bytes, they are written to a file and its digest recorded as validation would.
    """

    def factory(dataset: bytes | None = None, **overrides: Any) -> TrainerConfig:
        fields: dict[str, Any] = {
            "step_name": "step-1",
            "namespace": "team-a",
            "base_model_url": str(tiny_model_dir),
            "base_model_name": "tiny-base",
            "output_url": str(tmp_path / "out" / "model-1"),
            "output_model_name": "model-1",
            "scratch_dir": str(tmp_path / "scratch"),
            "termination_log": str(tmp_path / "termination-log"),
            "training": {"lora_rank": 4, "learning_rate": "1e-3", "batch_size": 512, "max_context_length": 128},
            "loss": {"method": "grpo"},
        }
        if dataset is not None:
            path = tmp_path / f"dataset-{hashlib.sha256(dataset).hexdigest()[:8]}.jsonl"
            path.write_bytes(dataset)
            fields["dataset_url"] = str(path)
            fields["dataset_digest"] = sha256_of(dataset)
        fields.update(overrides)
        return TrainerConfig.model_validate(fields)

    return factory


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow tracking server (`mlflow server`, SQLite store) on a free loopback port."""
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (root / "server.log").open("wb")
    process = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("mlflow")),
            "server",
            "--host=127.0.0.1",
            f"--port={port}",
            f"--backend-store-uri=sqlite:///{root / 'store.db'}",
            f"--default-artifact-root={(root / 'artifacts').as_uri()}",
            "--workers=1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=root,
    )
    try:
        deadline = time.monotonic() + 180  # its database migrations take most of a minute on busy cores
        while True:
            assert process.poll() is None, (root / "server.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:  # noqa: S310 - http on loopback
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "mlflow server did not answer /health in 180 s"
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
