"""Concurrent requests across the base model and two adapters get exactly their solo answers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from rft_devcluster.fake_vllm.config import LoraModule, ServerConfig
from rft_devcluster.fake_vllm.engine import Engine
from rft_devcluster.fake_vllm.testing import RunningServer, extra_field, running_server

BASE = "tiny"


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, adapter_dirs: dict[str, Path]) -> Iterator[RunningServer]:
    config = ServerConfig(
        model=str(tiny_model_dir),
        served_model_names=(BASE,),
        enable_lora=True,
        max_loras=3,
        max_lora_rank=32,
        lora_modules=(LoraModule("a", str(adapter_dirs["a"])), LoraModule("b", str(adapter_dirs["b"]))),
    )
    with running_server(Engine.from_config(config)) as running:
        yield running


def requests() -> list[tuple[str, dict[str, Any]]]:
    """Eight different greedy requests spread over the base model and both adapters."""
    out: list[tuple[str, dict[str, Any]]] = []
    for number, model in enumerate([BASE, "a", "b", BASE, "a", "b", "a", "b"]):
        extra = {"ignore_eos": True, "return_token_ids": True}
        if number % 2:
            body = {
                "model": model,
                "prompt": f"the cat {number}",
                "max_tokens": 12,
                "temperature": 0,
                **extra,
            }
            out.append(("completions", body))
        else:
            messages = [{"role": "user", "content": f"hello {number}"}]
            body = {"model": model, "messages": messages, "max_tokens": 12, "temperature": 0, "n": 2, **extra}
            out.append(("chat/completions", body))
    return out


def answer(server: RunningServer, route: str, body: dict[str, Any]) -> list[list[int]]:
    response = httpx.post(f"{server.base_url}/v1/{route}", json=body, timeout=120)
    assert response.status_code == 200, response.text
    assert response.json()["model"] == body["model"]
    return [choice["token_ids"] for choice in response.json()["choices"]]


def test_concurrent_requests_equal_the_same_requests_made_alone(server: RunningServer) -> None:
    batch = requests()
    alone = [answer(server, route, body) for route, body in batch]
    with ThreadPoolExecutor(max_workers=len(batch)) as pool:
        together = list(pool.map(lambda item: answer(server, *item), batch))
    assert together == alone
    # The adapters really differ: the same prompt through base, a and b gives three answers.
    same_prompt = {
        "prompt": "the cat 1",
        "max_tokens": 12,
        "temperature": 0,
        "ignore_eos": True,
        "return_token_ids": True,
    }
    by_model = {
        model: answer(server, "completions", {**same_prompt, "model": model})[0] for model in (BASE, "a", "b")
    }
    assert len({tuple(tokens) for tokens in by_model.values()}) == 3


def test_loading_and_unloading_during_requests_changes_no_answer(
    server: RunningServer, adapter_dirs: dict[str, Path]
) -> None:
    batch = requests()
    alone = [answer(server, route, body) for route, body in batch]
    stop = threading.Event()
    churn_errors: list[str] = []

    def churn() -> None:
        # A third adapter comes and goes while the requests run.
        while not stop.is_set():
            for route, body in (
                ("load_lora_adapter", {"lora_name": "c", "lora_path": str(adapter_dirs["wide"])}),
                ("unload_lora_adapter", {"lora_name": "c"}),
            ):
                response = httpx.post(f"{server.base_url}/v1/{route}", json=body, timeout=120)
                if response.status_code != 200:
                    churn_errors.append(response.text)

    churner = threading.Thread(target=churn)
    churner.start()
    try:
        with ThreadPoolExecutor(max_workers=len(batch)) as pool:
            together = list(pool.map(lambda item: answer(server, *item), batch))
    finally:
        stop.set()
        churner.join()
    assert churn_errors == []
    assert together == alone


def test_the_openai_client_sees_the_adapters(server: RunningServer) -> None:
    client = openai.OpenAI(base_url=server.openai_base_url, api_key="unused", max_retries=0)
    models = client.models.list().data
    assert [model.id for model in models] == [BASE, "a", "b"]
    assert extra_field(models[2], "parent") == BASE
