"""Multi-LoRA serving: vLLM's adapter admin routes, routing by `model`, and their errors."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import torch
from rft.storage.checkpoints import publish_checkpoint
from rft_devcluster.fake_vllm.config import LoraModule, ServerConfig
from rft_devcluster.fake_vllm.engine import Engine
from rft_devcluster.fake_vllm.testing import RunningServer, extra_field, running_server
from safetensors.torch import load_file, save_file

BASE = "tiny"
PROMPT = "the cat and the dog"


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> Iterator[Engine]:
    config = ServerConfig(
        model=str(tiny_model_dir), served_model_names=(BASE,), enable_lora=True, max_loras=2, max_lora_rank=16
    )
    engine = Engine.from_config(config)
    yield engine
    engine.close()  # removes the directory adapters from URLs were fetched to


@pytest.fixture(scope="module")
def module_server(engine: Engine) -> Iterator[RunningServer]:
    with running_server(engine) as running:
        yield running


@pytest.fixture
def server(module_server: RunningServer, engine: Engine) -> Iterator[RunningServer]:
    """The module's server, with every adapter unloaded again after each test."""
    yield module_server
    for adapter in engine.adapters:
        engine.unload_adapter(adapter.name)


@pytest.fixture(scope="module")
def client(module_server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=module_server.openai_base_url, api_key="unused", max_retries=0)


def load(server: RunningServer, name: str, path: str | Path) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/v1/load_lora_adapter",
        json={"lora_name": name, "lora_path": str(path)},
        timeout=60,
    )


def unload(server: RunningServer, name: str) -> httpx.Response:
    return httpx.post(f"{server.base_url}/v1/unload_lora_adapter", json={"lora_name": name}, timeout=60)


def greedy_tokens(client: openai.OpenAI, model: str) -> list[int]:
    response = client.completions.create(
        model=model,
        prompt=PROMPT,
        max_tokens=8,
        temperature=0,
        extra_body={"ignore_eos": True, "return_token_ids": True},
    )
    tokens: list[int] = extra_field(response.choices[0], "token_ids")
    return tokens


def error_of(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()["error"]
    assert set(body) == {"message", "type", "param", "code"}
    assert body["code"] == response.status_code
    return body


def test_base_and_two_adapters_answer_differently_and_unload_removes_one(
    server: RunningServer, client: openai.OpenAI, adapter_dirs: dict[str, Path]
) -> None:
    base_before = greedy_tokens(client, BASE)
    for name in ("a", "b"):
        response = load(server, name, adapter_dirs[name])
        assert response.status_code == 200
        assert response.text == f"Success: LoRA adapter '{name}' added successfully."
    models = client.models.list().data
    assert [model.id for model in models] == [BASE, "a", "b"]
    assert [extra_field(model, "parent") for model in models] == [None, BASE, BASE]
    assert extra_field(models[1], "root") == str(adapter_dirs["a"])

    outputs = {model: greedy_tokens(client, model) for model in (BASE, "a", "b")}
    assert outputs[BASE] == base_before
    assert len({tuple(tokens) for tokens in outputs.values()}) == 3

    response = unload(server, "a")
    assert response.status_code == 200
    assert response.text == "Success: LoRA adapter 'a' removed successfully."
    assert [model.id for model in client.models.list().data] == [BASE, "b"]
    with pytest.raises(openai.NotFoundError) as caught:
        greedy_tokens(client, "a")
    assert "The model `a` does not exist." in str(caught.value)
    assert greedy_tokens(client, "b") == outputs["b"]
    assert greedy_tokens(client, BASE) == base_before


def test_chat_routes_to_the_named_adapter(
    server: RunningServer, client: openai.OpenAI, adapter_dirs: dict[str, Path]
) -> None:
    assert load(server, "a", adapter_dirs["a"]).status_code == 200

    def reply(model: str) -> str | None:
        response = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "hello"}],
            max_tokens=8,
            temperature=0,
            extra_body={"ignore_eos": True},
        )
        assert response.model == model
        return response.choices[0].message.content

    assert reply("a") != reply(BASE)


def test_the_base_is_unchanged_after_every_adapter_leaves(
    server: RunningServer, client: openai.OpenAI, adapter_dirs: dict[str, Path]
) -> None:
    before = greedy_tokens(client, BASE)
    assert load(server, "a", adapter_dirs["a"]).status_code == 200
    first = greedy_tokens(client, "a")
    assert unload(server, "a").status_code == 200
    assert greedy_tokens(client, BASE) == before
    # Loaded again under another name, the same files give the same answers.
    assert load(server, "a-again", adapter_dirs["a"]).status_code == 200
    assert greedy_tokens(client, "a-again") == first


@pytest.mark.parametrize("name", ["accounts/team-a/models/m1.v2", "lora", "lora_A"])
def test_any_served_name_works_even_ones_peft_could_not_take(
    server: RunningServer, client: openai.OpenAI, adapter_dirs: dict[str, Path], name: str
) -> None:
    assert load(server, "reference", adapter_dirs["a"]).status_code == 200
    assert load(server, name, adapter_dirs["a"]).status_code == 200
    assert greedy_tokens(client, name) == greedy_tokens(client, "reference")
    assert unload(server, name).status_code == 200


def test_load_inplace_swaps_the_weights_served_under_a_name(
    server: RunningServer, client: openai.OpenAI, adapter_dirs: dict[str, Path]
) -> None:
    assert load(server, "b", adapter_dirs["b"]).status_code == 200
    wanted = greedy_tokens(client, "b")
    unload(server, "b")
    assert load(server, "a", adapter_dirs["a"]).status_code == 200
    before = greedy_tokens(client, "a")
    response = httpx.post(
        f"{server.base_url}/v1/load_lora_adapter",
        json={"lora_name": "a", "lora_path": str(adapter_dirs["b"]), "load_inplace": True},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert [model.id for model in client.models.list().data] == [BASE, "a"]
    assert greedy_tokens(client, "a") == wanted != before


def test_admin_errors_carry_vllm_status_codes_and_messages(
    server: RunningServer, adapter_dirs: dict[str, Path], tmp_path: Path
) -> None:
    assert load(server, "a", adapter_dirs["a"]).status_code == 200

    duplicate = load(server, "a", adapter_dirs["b"])
    assert duplicate.status_code == 400
    assert error_of(duplicate)["message"] == (
        "The lora adapter 'a' has already been loaded. If you want to load the adapter in place, "
        "set 'load_inplace' to True."
    )
    assert error_of(duplicate)["type"] == "InvalidUserInput"

    too_wide = load(server, "wide", adapter_dirs["wide"])
    assert too_wide.status_code == 400
    assert error_of(too_wide)["message"] == "LoRA rank 32 is greater than max_lora_rank 16."

    missing = load(server, "ghost", tmp_path / "does-not-exist")
    assert missing.status_code == 404
    assert error_of(missing)["type"] == "NotFoundError"
    assert "No adapter found for" in error_of(missing)["message"]

    not_an_adapter = tmp_path / "empty"
    not_an_adapter.mkdir()
    response = load(server, "empty", not_an_adapter)
    assert response.status_code == 400
    assert "adapter_config.json is missing" in error_of(response)["message"]

    unknown = unload(server, "never-loaded")
    assert unknown.status_code == 404
    assert error_of(unknown)["message"] == "The lora adapter 'never-loaded' cannot be found."

    no_path = httpx.post(f"{server.base_url}/v1/load_lora_adapter", json={"lora_name": "x"})
    assert no_path.status_code == 400
    assert error_of(no_path)["message"] == "Both 'lora_name' and 'lora_path' must be provided."

    base_name = load(server, BASE, adapter_dirs["b"])
    assert base_name.status_code == 400
    assert error_of(base_name)["param"] == "lora_name"

    assert [adapter.name for adapter in server_engine(server).adapters] == ["a"]


def test_loading_beyond_max_loras_is_refused(server: RunningServer, adapter_dirs: dict[str, Path]) -> None:
    assert load(server, "a", adapter_dirs["a"]).status_code == 200
    assert load(server, "b", adapter_dirs["b"]).status_code == 200
    third = load(server, "c", adapter_dirs["a"])
    assert third.status_code == 400
    assert "max_loras=2" in error_of(third)["message"]
    assert unload(server, "a").status_code == 200
    assert load(server, "c", adapter_dirs["a"]).status_code == 200


@pytest.mark.parametrize("first", [True, False], ids=["first-adapter", "beside-another"])
def test_a_broken_adapter_is_refused_and_leaves_the_model_intact(
    server: RunningServer,
    client: openai.OpenAI,
    adapter_dirs: dict[str, Path],
    tmp_path: Path,
    first: bool,
) -> None:
    if not first:
        assert load(server, "b", adapter_dirs["b"]).status_code == 200
    base_before = greedy_tokens(client, BASE)

    wrong_shapes = copy_adapter(adapter_dirs["a"], tmp_path / "wrong-shapes")
    weights = load_file(str(wrong_shapes / "adapter_model.safetensors"))
    save_file({key: torch.zeros(3, 3) for key in weights}, str(wrong_shapes / "adapter_model.safetensors"))
    response = load(server, "broken", wrong_shapes)
    assert response.status_code == 400
    assert error_of(response)["message"].startswith("Loading lora broken failed:")

    wrong_modules = copy_adapter(adapter_dirs["a"], tmp_path / "wrong-modules")
    config_path = wrong_modules / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["target_modules"] = ["no_such_proj"]
    config_path.write_text(json.dumps(config))
    assert load(server, "broken", wrong_modules).status_code == 400

    assert [model.id for model in client.models.list().data] == [BASE] + ([] if first else ["b"])
    assert greedy_tokens(client, BASE) == base_before
    assert load(server, "a", adapter_dirs["a"]).status_code == 200
    assert greedy_tokens(client, "a") != base_before


def test_adapters_load_from_a_committed_checkpoint_url(
    server: RunningServer, client: openai.OpenAI, adapter_dirs: dict[str, Path], tmp_path: Path
) -> None:
    assert load(server, "local", adapter_dirs["a"]).status_code == 200
    expected = greedy_tokens(client, "local")
    assert unload(server, "local").status_code == 200

    url = f"file://{tmp_path}/bucket/models/a"
    publish_checkpoint(adapter_dirs["a"], url, {"base_model": BASE})
    response = load(server, "from-url", url)
    assert response.status_code == 200
    assert greedy_tokens(client, "from-url") == expected
    assert extra_field(client.models.list().data[1], "root") == url

    missing = load(server, "ghost", f"file://{tmp_path}/bucket/models/none")
    assert missing.status_code == 404
    assert "No adapter found for" in error_of(missing)["message"]


def test_adapters_load_from_s3(
    server: RunningServer, client: openai.OpenAI, adapter_dirs: dict[str, Path], s3_bucket: Any
) -> None:
    assert load(server, "local", adapter_dirs["b"]).status_code == 200
    expected = greedy_tokens(client, "local")
    assert unload(server, "local").status_code == 200

    url = f"{s3_bucket.url}/models/b"
    publish_checkpoint(adapter_dirs["b"], url, {"base_model": BASE})
    assert load(server, "from-s3", url).status_code == 200
    assert greedy_tokens(client, "from-s3") == expected
    assert load(server, "ghost", f"{s3_bucket.url}/models/none").status_code == 404


def test_admin_routes_are_absent_unless_enabled(engine: Engine, adapter_dirs: dict[str, Path]) -> None:
    with running_server(engine, runtime_lora_updating=False) as locked:
        assert load(locked, "a", adapter_dirs["a"]).status_code == 404
        assert unload(locked, "a").status_code == 404
        assert httpx.get(f"{locked.base_url}/v1/models").status_code == 200
    assert engine.adapters == ()


def test_lora_modules_are_loaded_at_start(tiny_model_dir: Path, adapter_dirs: dict[str, Path]) -> None:
    config = ServerConfig(
        model=str(tiny_model_dir),
        served_model_names=(BASE,),
        enable_lora=True,
        max_loras=2,
        lora_modules=(LoraModule("a", str(adapter_dirs["a"])), LoraModule("b", str(adapter_dirs["b"]))),
    )
    preloaded = Engine.from_config(config)
    assert [card.id for card in preloaded.models()] == [BASE, "a", "b"]
    assert [card.parent for card in preloaded.models()] == [None, BASE, BASE]


def test_loading_needs_enable_lora(tiny_model_dir: Path, adapter_dirs: dict[str, Path]) -> None:
    plain = Engine.from_config(ServerConfig(model=str(tiny_model_dir), served_model_names=(BASE,)))
    with running_server(plain) as running:
        response = load(running, "a", adapter_dirs["a"])
    assert response.status_code == 400
    assert "--enable-lora" in error_of(response)["message"]


def copy_adapter(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def server_engine(server: RunningServer) -> Engine:
    assert server.engine is not None
    return server.engine
