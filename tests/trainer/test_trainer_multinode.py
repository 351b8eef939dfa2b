"""The multi-node command the operator writes (two agents of two ranks, c10d rendezvous), run as
two local torchrun agents on CPU/gloo: the agent of node 1 starts first and waits for the store of
node 0 (rank 0 starting last), and the adapter equals one process accumulating the same batches.

Here the endpoint is loopback and node 1 is told it is not the store's host (in a pod it learns
that by resolving `<job>-0.<job>` to another pod's IP); everything else is the builder's command.
The same step as two trainer pods meeting by that name through the local cluster's DNS is
tests/operator/test_step_multinode.py, which reuses ROWS and this test's tolerance."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from rft.contracts.trainer_config import TrainerConfig, TrainerResult, parse_termination_message
from rft_devcluster.emulators import free_port
from rft_operator.builders.jobs import NODE_RANK_ENV, trainer_command
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
            "scratch_dir": str(tmp_path / f"scratch-{name}"),
            "device": "cpu",
            "training": base.training.model_copy(
                update={"batch_size": 128, "gradient_accumulation_steps": accumulation, "epochs": 2}
            ),
        }
    )
    path = tmp_path / f"{name}.json"
    path.write_text(config.to_json())
    return path


def _agent_command(node: int, port: int, config: Path) -> list[str]:
    """The operator's command for a 2 x 2 step, with the pod's name replaced by loopback."""
    command = trainer_command(2, 2, "step-1-train", "uid-1")
    out = [sys.executable, "-m", "torch.distributed.run"]
    for arg in command[1:]:
        if arg.startswith("--rdzv-endpoint="):
            out.append(f"--rdzv-endpoint=127.0.0.1:{port}")
        elif arg == f"--node-rank=$({NODE_RANK_ENV})":
            out.append(f"--node-rank={node}")
        elif arg.startswith("--rdzv-conf=") and node != 0:
            out.append(arg + ",is_host=false")
        else:
            out.append(arg)
    return [*out, "--config", str(config)]


@pytest.mark.slow
def test_two_nodes_of_two_ranks_match_one_process(make_config: ConfigFactory, tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    single = subprocess.run(
        [sys.executable, "-m", "rft_trainer", "--config", str(_config(make_config, tmp_path, "single", 4))],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert single.returncode == 0, single.stderr[-3000:]

    config = _config(make_config, tmp_path, "nodes", 1)
    port = free_port()
    logs = [(tmp_path / f"node-{i}.out").open("w+") for i in range(2)]
    # Node 1 first: it must wait for node 0, which hosts the rendezvous store.
    node1 = subprocess.Popen(
        _agent_command(1, port, config), env=env, stdout=logs[1], stderr=subprocess.STDOUT
    )
    time.sleep(5)
    assert node1.poll() is None, "node 1 gave up before node 0 started"
    node0 = subprocess.Popen(
        _agent_command(0, port, config), env=env, stdout=logs[0], stderr=subprocess.STDOUT
    )
    try:
        codes = [node0.wait(timeout=300), node1.wait(timeout=300)]
    finally:
        for p in (node0, node1):
            if p.poll() is None:
                p.kill()
    text = []
    for log in logs:
        log.seek(0)
        text.append(log.read())
        log.close()
    assert codes == [0, 0], "\n".join(t[-3000:] for t in text)
    assert "sharded over 4 ranks" in "".join(text)

    results = {}
    for name in ("single", "nodes"):
        result = parse_termination_message((tmp_path / f"termination-{name}").read_text())
        assert isinstance(result, TrainerResult)
        results[name] = result
    assert results["nodes"].metrics["optimizer_steps"] == results["single"].metrics["optimizer_steps"]
    assert float(results["nodes"].metrics["loss"]) == pytest.approx(
        float(results["single"].metrics["loss"]), abs=1e-5
    )
    want = load_file(tmp_path / "out" / "single" / "adapter_model.safetensors")
    got = load_file(tmp_path / "out" / "nodes" / "adapter_model.safetensors")
    assert want.keys() == got.keys()
    assert any(t.abs().sum() > 0 for n, t in want.items() if "lora_B" in n)
    # Tolerance as the two-rank test: another summation order may differ in the last bits.
    for name, tensor in want.items():
        assert torch.allclose(tensor, got[name], atol=1e-5), name
