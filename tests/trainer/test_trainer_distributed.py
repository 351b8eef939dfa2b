"""torchrun with two CPU ranks (gloo on loopback) trains the same adapter as one process that
accumulates the same batches: the frozen base is sharded with FSDP2, each rank takes its share of
the batches, the replicated LoRA gradients are all-reduced, the aggregation's normalisers stay
global and only rank 0 reports and publishes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from rft.contracts.trainer_config import TrainerConfig, TrainerResult, parse_termination_message
from rft_devcluster.emulators import free_port
from safetensors.torch import load_file

from tests.trainer.trainer_testlib import ConfigFactory, jsonl, samples_row

ROWS = [
    samples_row(f"name an animal {i}", [("cat", 1.0), ("dog dog", 0.0), ("cat bird", 0.5), ("fish", 0.2)])
    for i in range(6)
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
                update={"batch_size": 128, "gradient_accumulation_steps": accumulation, "epochs": 2}
            ),
        }
    )
    path = tmp_path / f"{name}.json"
    path.write_text(config.to_json())
    return path


def _run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.slow
def test_two_ranks_match_one_process_accumulating_the_same_batches(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    single = _run([sys.executable, "-m", "rft_trainer", "--config", str(_config(make_config, tmp_path, "single", 2))], env)
    assert single.returncode == 0, single.stderr[-3000:]

    distributed = _run(
        [
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
            str(_config(make_config, tmp_path, "ddp", 1)),
        ],
        env,
    )
    assert distributed.returncode == 0, distributed.stderr[-3000:]
    sharded = re.findall(r"FSDP2: the frozen base is sharded over 2 ranks, ([0-9.]+) MiB", distributed.stderr)
    assert len(sharded) == 1, distributed.stderr[-3000:]  # rank 0 says so; rank 1 is quiet

    results = {}
    for name in ("single", "ddp"):
        result = parse_termination_message((tmp_path / f"termination-{name}").read_text())
        assert isinstance(result, TrainerResult)
        results[name] = result
    assert results["ddp"].metrics["optimizer_steps"] == results["single"].metrics["optimizer_steps"]
    assert int(results["ddp"].metrics["optimizer_steps"]) >= 4  # several steps, each over both ranks
    assert float(results["ddp"].metrics["loss"]) == pytest.approx(float(results["single"].metrics["loss"]), abs=1e-5)
    # rank 1 printed no progress: every progress line comes from the one reporting rank
    steps = [json.loads(line)["step"] for line in distributed.stdout.splitlines() if line.startswith('{"')]
    assert steps == sorted(steps)

    single_weights = load_file(tmp_path / "out" / "single" / "adapter_model.safetensors")
    ddp_weights = load_file(tmp_path / "out" / "ddp" / "adapter_model.safetensors")
    assert single_weights.keys() == ddp_weights.keys()
    assert any(t.abs().sum() > 0 for n, t in single_weights.items() if "lora_B" in n)
    # Tolerance: the ranks may sum their gradients in another order than one process accumulating
    # them (float32); on this machine (CPU, gloo) the adapters came out identical (max difference 0).
    for name, tensor in single_weights.items():
        assert torch.allclose(tensor, ddp_weights[name], atol=1e-5), name
