"""Sharded loading: under torchrun each rank builds the model on the meta device, attaches the
adapter, shards the frozen base and reads only its shards from the safetensors files
(`rft_trainer.sharding.load_sharded_base`). Two CPU ranks (gloo) must train exactly the adapter
that the older loading (every rank loads the whole base, then shards it) trains."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from rft.api.model import LoraSettings
from rft.contracts.trainer_config import TrainerConfig, TrainerResult, parse_termination_message
from rft_devcluster.emulators import free_port
from rft_trainer.model import (
    adapter_materialized_on,
    attach_new_adapter,
    attach_parent_adapter,
    load_base_model,
    load_base_model_on_meta,
)
from rft_trainer.sharding import WHOLE_LOAD_ENV, loads_sharded
from safetensors.torch import load_file

from tests.trainer.trainer_testlib import ConfigFactory, jsonl, samples_row

ROWS = [
    samples_row(f"name an animal {i}", [("cat", 1.0), ("dog dog", 0.0), ("cat bird", 0.5), ("fish", 0.2)])
    for i in range(4)
]


def _train_two_ranks(make_config: ConfigFactory, tmp_path: Path, name: str, whole_load: bool) -> str:
    base = make_config(jsonl(ROWS))
    config: TrainerConfig = base.model_copy(
        update={
            "output_url": str(tmp_path / "out" / name),
            "output_model_name": name,
            "termination_log": str(tmp_path / f"termination-{name}"),
            "device": "cpu",
            "training": base.training.model_copy(update={"batch_size": 128, "epochs": 1}),
        }
    )
    path = tmp_path / f"{name}.json"
    path.write_text(config.to_json())
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    env[WHOLE_LOAD_ENV] = "1" if whole_load else "0"
    proc = subprocess.run(
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
            str(path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stderr


@pytest.mark.slow
def test_two_ranks_reading_their_shards_train_the_adapter_of_the_whole_load(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    logs = {
        "whole": _train_two_ranks(make_config, tmp_path, "whole", whole_load=True),
        "sharded": _train_two_ranks(make_config, tmp_path, "sharded", whole_load=False),
    }
    assert re.search(r"sharded over 2 ranks.*each rank loaded the whole base first", logs["whole"])
    assert re.search(r"sharded over 2 ranks.*each rank read only its shards of the base", logs["sharded"])

    results = {}
    for name in logs:
        result = parse_termination_message((tmp_path / f"termination-{name}").read_text())
        assert isinstance(result, TrainerResult)
        results[name] = result
    assert int(results["sharded"].metrics["optimizer_steps"]) >= 2
    assert results["sharded"].metrics["loss"] == results["whole"].metrics["loss"]
    canary, whole_canary = results["sharded"].canary, results["whole"].canary
    assert canary is not None
    assert whole_canary is not None
    assert canary.logprobs == whole_canary.logprobs  # the trained adapter's, bit-exact
    # The start logprobs are computed after the shards are read, so through the trainer's fused
    # rotary and LoRA forwards rather than transformers' own: float32 rounding apart, the same
    # (measured: start_distance 0.000523919 vs 0.000523909).
    assert float(canary.start_distance) == pytest.approx(float(whole_canary.start_distance), rel=1e-3)

    whole = load_file(tmp_path / "out" / "whole" / "adapter_model.safetensors")
    sharded = load_file(tmp_path / "out" / "sharded" / "adapter_model.safetensors")
    assert whole.keys() == sharded.keys()
    assert any(t.abs().sum() > 0 for n, t in whole.items() if "lora_B" in n)  # it trained
    # Bit-exact: the same LoRA initialisation (same seed, same RNG order), the same base numbers
    # (float32 file, float32 model) and the same sharded computation afterwards.
    for name, tensor in whole.items():
        assert torch.equal(tensor, sharded[name]), name


def test_adapter_on_a_meta_base_is_initialised_as_on_a_loaded_one(tiny_model_dir: Path) -> None:
    """The LoRA weights attached to the meta-device model are real and equal (same seed, same
    order of random numbers) to those attached to the loaded model; the base stays on meta."""
    lora = LoraSettings(rank=4, alpha=8, target_modules=["q_proj", "v_proj", "down_proj"])
    cpu = torch.device("cpu")
    loaded, _ = load_base_model(str(tiny_model_dir), cpu)
    expected = {n: t for n, t in attach_new_adapter(loaded, lora, seed=7).named_parameters() if "lora_" in n}
    meta, _ = load_base_model_on_meta(str(tiny_model_dir), cpu)
    with adapter_materialized_on(meta, cpu):
        policy = attach_new_adapter(meta, lora, seed=7)
    got = dict(policy.named_parameters())
    assert {n for n in got if "lora_" in n} == expected.keys()
    for name, tensor in expected.items():
        assert got[name].device == cpu, name
        assert got[name].requires_grad, name
        assert torch.equal(got[name], tensor), name
    frozen = [t for n, t in got.items() if "lora_" not in n]
    assert frozen
    assert all(t.is_meta and not t.requires_grad for t in frozen)


def test_one_process_and_non_safetensors_directories_load_whole(tiny_model_dir: Path, tmp_path: Path) -> None:
    assert loads_sharded(str(tiny_model_dir), world_size=2)
    assert not loads_sharded(str(tiny_model_dir), world_size=1)  # the 1-process path is unchanged
    assert not loads_sharded(str(tmp_path), world_size=2)  # no safetensors files here
    assert not loads_sharded("Qwen/Qwen2-0.5B", world_size=2)  # a hub id: from_pretrained


def test_parent_adapter_on_a_meta_base_keeps_its_weights(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A continued adapter loaded onto the meta-device model holds the checkpoint's numbers."""
    lora = LoraSettings(rank=4, alpha=8, target_modules=["q_proj", "v_proj"])
    cpu = torch.device("cpu")
    loaded, _ = load_base_model(str(tiny_model_dir), cpu)
    parent = attach_new_adapter(loaded, lora, seed=3)
    with torch.no_grad():
        for name, param in parent.named_parameters():
            if "lora_B" in name:
                param.normal_()  # a trained adapter's B is not zero
    parent.save_pretrained(tmp_path / "parent")
    saved = load_file(tmp_path / "parent" / "adapter_model.safetensors")
    meta, _ = load_base_model_on_meta(str(tiny_model_dir), cpu)
    with adapter_materialized_on(meta, cpu):
        policy = attach_parent_adapter(meta, tmp_path / "parent", "parent")
    got = {n: t for n, t in policy.named_parameters() if "lora_" in n}
    assert len(got) == len(saved) == 8
    for name, tensor in got.items():
        key = name.replace(".default", "")
        assert tensor.requires_grad, name
        assert torch.equal(tensor.detach(), saved[key]), name
