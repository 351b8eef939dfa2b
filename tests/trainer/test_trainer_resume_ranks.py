"""Resume under torchrun: SIGTERM to the torchrun agent (what the kubelet sends the pod) reaches
both ranks, they agree on the step to stop after, rank 0 saves, and the restarted agent's ranks
continue from it to the adapter one process accumulating the same batches trains."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from rft.contracts.trainer_config import (
    TrainerConfig,
    TrainerFailure,
    TrainerResult,
    parse_termination_message,
)
from rft_devcluster.emulators import free_port
from safetensors.torch import load_file

from tests.trainer.trainer_testlib import ConfigFactory, jsonl, samples_row

ROWS = [
    samples_row(f"name an animal {i}", [("cat", 1.0), ("dog dog", 0.0), ("cat bird", 0.5), ("fish", 0.2)])
    for i in range(8)
]


def _config(make_config: ConfigFactory, tmp_path: Path, name: str, accumulation: int) -> Path:
    base = make_config(jsonl(ROWS))
    config: TrainerConfig = base.model_copy(
        update={
            "output_url": str(tmp_path / "out" / name),
            "output_model_name": name,
            "termination_log": str(tmp_path / f"termination-{name}"),
            "device": "cpu",
            "training": base.training.model_copy(
                update={
                    "batch_size": 128,
                    "gradient_accumulation_steps": accumulation,
                    "epochs": 3,
                    "checkpoint_every_steps": 0,  # only at SIGTERM
                }
            ),
        }
    )
    path = tmp_path / f"{name}.json"
    path.write_text(config.to_json())
    return path


def _torchrun(config: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=1",
        "--nproc-per-node=2",
        "--master-addr=127.0.0.1",
        f"--master-port={free_port()}",
        "-m",
        "rft_trainer",
        "--config",
        str(config),
    ]


@pytest.mark.slow
def test_sigterm_under_torchrun_saves_once_and_both_ranks_resume(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    single = subprocess.run(
        [sys.executable, "-m", "rft_trainer", "--config", str(_config(make_config, tmp_path, "single", 2))],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    expected = parse_termination_message((tmp_path / "termination-single").read_text())
    assert isinstance(expected, TrainerResult)

    config = _config(make_config, tmp_path, "ranks", 1)
    log = (tmp_path / "first.log").open("w")
    first = subprocess.Popen(_torchrun(config), env=env, stdout=subprocess.PIPE, stderr=log)
    assert first.stdout is not None
    for raw in first.stdout:
        line = raw.decode()
        if line.startswith("{") and json.loads(line)["phase"] == "training" and json.loads(line)["step"] >= 2:
            break
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=120)
    log.close()
    assert first.returncode != 0
    failure = parse_termination_message((tmp_path / "termination-ranks").read_text())
    assert isinstance(failure, TrainerFailure), (tmp_path / "first.log").read_text()[-3000:]
    assert failure.reason == "Interrupted"
    stopped = int(re.search(r"after optimizer step (\d+)", failure.message).group(1))  # type: ignore[union-attr]
    assert 2 <= stopped < int(expected.metrics["optimizer_steps"])

    second = subprocess.run(
        _torchrun(config), env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"resuming from the in-step checkpoint at optimizer step {stopped}" in second.stderr
    result = parse_termination_message((tmp_path / "termination-ranks").read_text())
    assert isinstance(result, TrainerResult)
    assert result.metrics["optimizer_steps"] == expected.metrics["optimizer_steps"]
    assert not (tmp_path / "out" / "ranks" / "_resume").exists()
    want = load_file(tmp_path / "out" / "single" / "adapter_model.safetensors")
    got = load_file(tmp_path / "out" / "ranks" / "adapter_model.safetensors")
    assert want.keys() == got.keys()
    for name, tensor in want.items():  # tolerance as the two-rank test
        assert torch.allclose(tensor, got[name], atol=1e-5), name
