"""The engine without HTTP: model sources, defaults from the model, limits, clean-up."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from rft.storage.checkpoints import publish_checkpoint
from rft_devcluster.fake_vllm import service
from rft_devcluster.fake_vllm.config import ServerConfig
from rft_devcluster.fake_vllm.engine import Engine


def sample(engine: Engine, seed: int, **extra: Any) -> list[int]:
    body = {"model": engine.model_name, "prompt": "the cat", "max_tokens": 8, "seed": seed, **extra}
    choice = service.text_completion(engine, {**body, "ignore_eos": True, "return_token_ids": True})[
        "choices"
    ][0]
    tokens: list[int] = choice["token_ids"]
    return tokens


def test_the_base_model_loads_from_a_committed_checkpoint_url(tiny_model_dir: Path, tmp_path: Path) -> None:
    url = f"file://{tmp_path}/bucket/models/base"
    publish_checkpoint(tiny_model_dir, url, {"kind": "base"})
    from_url = Engine.from_config(ServerConfig(model=url, served_model_names=("base",)))
    local = Engine.from_config(ServerConfig(model=str(tiny_model_dir), served_model_names=("base",)))
    assert sample(from_url, 1, temperature=0) == sample(local, 1, temperature=0)
    assert from_url.models()[0].root == url
    fetched = from_url.download_dir
    assert fetched is not None
    assert (fetched / "base" / "config.json").is_file()
    from_url.close()
    assert not fetched.exists()


def test_fetched_adapters_are_deleted_on_unload(
    tiny_model_dir: Path, adapter_dirs: dict[str, Path], tmp_path: Path
) -> None:
    url = f"file://{tmp_path}/bucket/models/a"
    publish_checkpoint(adapter_dirs["a"], url, {})
    downloads = tmp_path / "downloads"
    engine = Engine.from_config(
        ServerConfig(model=str(tiny_model_dir), enable_lora=True, download_dir=str(downloads))
    )
    engine.load_adapter("a", url)
    assert len(list((downloads / "adapters").iterdir())) == 1
    engine.unload_adapter("a")
    assert list((downloads / "adapters").iterdir()) == []
    engine.close()
    assert downloads.is_dir()  # a directory the operator chose is never deleted


def test_sampling_defaults_come_from_generation_config(tiny_model_dir: Path, tmp_path: Path) -> None:
    plain = Engine.from_config(ServerConfig(model=str(tiny_model_dir)))
    assert sample(plain, 1) != sample(plain, 2)  # default temperature 1: seeds matter

    greedy_dir = Path(shutil.copytree(tiny_model_dir, tmp_path / "greedy-model"))
    config_path = greedy_dir / "generation_config.json"
    generation = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**generation, "temperature": 0.0}))
    greedy = Engine.from_config(ServerConfig(model=str(greedy_dir)))
    assert greedy.sampling_defaults["temperature"] == 0.0
    assert sample(greedy, 1) == sample(greedy, 2) == sample(plain, 1, temperature=0)
    assert sample(greedy, 1, temperature=1.0) == sample(plain, 1, temperature=1.0)  # a request's value wins


def test_max_model_len_cannot_exceed_the_models_positions(tiny_model_dir: Path) -> None:
    with pytest.raises(
        ValueError, match="max_model_len: 4096 is longer than the model's max_position_embeddings"
    ):
        Engine.from_config(ServerConfig(model=str(tiny_model_dir), max_model_len=4096))


def test_a_missing_model_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is not a model directory"):
        Engine.from_config(ServerConfig(model=str(tmp_path / "nothing-here")))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"max_loras": 0}, "max_loras"),
        ({"max_lora_rank": 0}, "max_lora_rank"),
        ({"port": 70000}, "port"),
        ({"device": "tpu"}, "device"),
        ({"served_model_names": ("",)}, "served_model_names"),
        ({"logprobs_mode": "raw_logits"}, "logprobs_mode"),
    ],
)
def test_config_rejects_bad_values_naming_the_field(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ServerConfig(model="/m", **fields)
