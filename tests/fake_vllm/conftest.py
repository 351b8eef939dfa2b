"""Server test fixtures: the tiny chat model and random LoRA adapters, built once per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from rft_devcluster.fake_vllm.testing import make_lora_adapter
from rft_devcluster.tiny import build_tiny_model


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Run the tiny model on one intra-op thread (restored after each module).

    The model's matrices are tiny: thread hand-offs cost more than they save, and on a machine
    whose cores are busy with other work they make decoding many times slower.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Qwen2-architecture chat model directory (random weights, local BPE tokenizer)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def adapter_dirs(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict[str, Path]:
    """Random rank-8 adapters 'a' and 'b' (different seeds) and a rank-32 adapter 'wide'."""
    root = tmp_path_factory.mktemp("adapters")
    return {
        "a": make_lora_adapter(tiny_model_dir, root / "a", rank=8, seed=1),
        "b": make_lora_adapter(tiny_model_dir, root / "b", rank=8, seed=2),
        "wide": make_lora_adapter(tiny_model_dir, root / "wide", rank=32, seed=3),
    }
