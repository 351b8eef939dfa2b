"""Only the holder of a Deployment's admin token changes what its server serves.

`rft.pods.admin_guard` in front of the server (as vLLM loads it, `--middleware`) and the adapter
sidecar in front of both, over the reference server; the same guard runs in real vLLM on the local
cluster (tests/operator/test_serving_vllm.py).
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from rft.pods.adapter_sidecar import make_handler
from rft.pods.admin_guard import TOKEN_HASH_ENV, allowed, install, is_open, token_sha256
from rft.storage.checkpoints import publish_checkpoint
from rft_devcluster.fake_vllm.config import ServerConfig
from rft_devcluster.fake_vllm.engine import Engine
from rft_devcluster.fake_vllm.testing import LOOPBACK, RunningServer, make_lora_adapter, running_server

BASE = "tiny"
TOKEN = "the-operators-token-for-this-deployment"
ADMIN_ROUTES = [
    ("POST", "/v1/load_lora_adapter"),
    ("POST", "/v1/unload_lora_adapter"),
    ("POST", "/adapters"),
    ("DELETE", "/adapters/a"),
    ("POST", "/sleep"),
    ("POST", "/wake_up"),
    ("POST", "/reset_prefix_cache"),
    ("POST", "/collective_rpc"),
    ("POST", "/update_weights"),
    ("POST", "/start_profile"),
    ("POST", "/invocations"),
    ("POST", "/v1/completions/../load_lora_adapter"),
    ("POST", "//v1/load_lora_adapter"),
]


@pytest.mark.parametrize(
    "path",
    [
        "/health",
        "/v1/models",
        "/v1/completions",
        "/v1/chat/completions",
        "/v1/responses/resp_1/cancel",
        "/tokenize",
        "/metrics",
        "/metrics/",
    ],
)
def test_the_inference_api_is_open(path: str) -> None:
    assert is_open(path)


@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
def test_every_other_route_needs_the_token(method: str, path: str) -> None:
    expected = token_sha256(TOKEN)
    assert not is_open(path)
    assert not allowed(path, None, expected)
    assert not allowed(path, "Bearer wrong", expected)
    assert not allowed(path, TOKEN, expected), "the scheme is required"
    assert not allowed(path, f"Bearer {TOKEN}", ""), "a pod without a hash opens nothing"
    assert allowed(path, f"Bearer {TOKEN}", expected)
    assert allowed(path, f"bearer  {TOKEN} ", expected)


def test_installed_copy_needs_nothing_but_the_standard_library(tmp_path: Path) -> None:
    """vLLM's image has no `rft`: the init container's copy must import on its own (`-S`: no
    site-packages at all)."""
    copy = install(tmp_path / "plugins")
    assert copy.name == "rft_admin_guard.py"
    code = (
        f"import sys; sys.path.insert(0, {str(copy.parent)!r}); import rft_admin_guard as g; "
        "print(g.is_open('/v1/models'), g.is_open('/v1/load_lora_adapter'))"
    )
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False"]


@pytest.fixture(scope="module")
def guarded(tiny_model_dir: Path) -> Iterator[RunningServer]:
    config = ServerConfig(
        model=str(tiny_model_dir), served_model_names=(BASE,), enable_lora=True, max_loras=2
    )
    engine = Engine.from_config(config)
    with pytest.MonkeyPatch.context() as env:
        env.setenv(TOKEN_HASH_ENV, token_sha256(TOKEN))
        with running_server(engine, middleware=["rft.pods.admin_guard.AdminGuard"]) as running:
            yield running
    engine.close()


@pytest.fixture(scope="module")
def adapter_url(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    local = make_lora_adapter(tiny_model_dir, tmp_path_factory.mktemp("adapter") / "a", seed=3)
    bucket = tmp_path_factory.mktemp("bucket")
    url = f"file://{bucket}/adapters/a/"
    publish_checkpoint(local, url, {"base_model": BASE})
    return url


@pytest.fixture(scope="module")
def sidecar(guarded: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    handler = make_handler(guarded.base_url, tmp_path_factory.mktemp("adapters"), token_sha256(TOKEN))
    server = ThreadingHTTPServer((LOOPBACK, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://{LOOPBACK}:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(10)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def served(base_url: str) -> set[str]:
    answer = httpx.get(f"{base_url}/v1/models", timeout=10)
    answer.raise_for_status()
    return {m["id"] for m in answer.json()["data"]}


def test_server_refuses_admin_calls_without_the_token_and_serves_everyone(
    guarded: RunningServer, tiny_model_dir: Path
) -> None:
    local = make_lora_adapter(tiny_model_dir, tiny_model_dir.parent / "guard-adapter", seed=5)
    body = {"lora_name": "swapped", "lora_path": str(local)}
    for headers in ({}, bearer("guess"), {"Authorization": TOKEN}):
        refused = httpx.post(
            f"{guarded.base_url}/v1/load_lora_adapter", json=body, headers=headers, timeout=30
        )
        assert refused.status_code == 401, refused.text
        assert refused.json()["error"]["type"] == "Unauthorized"
        assert refused.headers["www-authenticate"] == "Bearer"
    assert "swapped" not in served(guarded.base_url)
    completion = httpx.post(
        f"{guarded.base_url}/v1/completions",
        json={"model": BASE, "prompt": "hi", "max_tokens": 2},
        timeout=60,
    )
    assert completion.status_code == 200, "the inference API needs no token"

    loaded = httpx.post(
        f"{guarded.base_url}/v1/load_lora_adapter", json=body, headers=bearer(TOKEN), timeout=60
    )
    assert loaded.status_code == 200, loaded.text
    assert "swapped" in served(guarded.base_url)
    refused = httpx.post(
        f"{guarded.base_url}/v1/unload_lora_adapter", json={"lora_name": "swapped"}, timeout=30
    )
    assert refused.status_code == 401
    assert "swapped" in served(guarded.base_url), "a refused unload unloads nothing"
    unloaded = httpx.post(
        f"{guarded.base_url}/v1/unload_lora_adapter",
        json={"lora_name": "swapped"},
        headers=bearer(TOKEN),
        timeout=30,
    )
    assert unloaded.status_code == 200, unloaded.text


def test_sidecar_refuses_everything_but_health_without_the_token(sidecar: str, adapter_url: str) -> None:
    assert httpx.get(f"{sidecar}/health", timeout=10).status_code == 200
    for path in ("/v1/models", "/metrics"):
        assert httpx.get(f"{sidecar}{path}", timeout=10).status_code == 401, path
    for path, body in (
        ("/v1/load_lora_adapter", {"lora_name": "a", "lora_path": adapter_url}),
        ("/v1/unload_lora_adapter", {"lora_name": "a"}),
        ("/v1/completions", {"model": BASE, "prompt": "hi", "max_tokens": 1}),
    ):
        answer = httpx.post(f"{sidecar}{path}", json=body, headers=bearer("guess"), timeout=30)
        assert answer.status_code == 401, path


def test_sidecar_with_the_token_loads_through_the_guarded_server(
    sidecar: str, guarded: RunningServer, adapter_url: str
) -> None:
    """The sidecar passes the operator's token on: the server's own guard lets the load through."""
    answer = httpx.post(
        f"{sidecar}/v1/load_lora_adapter",
        json={"lora_name": "a", "lora_path": adapter_url},
        headers=bearer(TOKEN),
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    assert "a" in served(guarded.base_url)
    models = httpx.get(f"{sidecar}/v1/models", headers=bearer(TOKEN), timeout=10)
    assert "a" in {m["id"] for m in models.json()["data"]}
    answer = httpx.post(
        f"{sidecar}/v1/unload_lora_adapter", json={"lora_name": "a"}, headers=bearer(TOKEN), timeout=30
    )
    assert answer.status_code == 200, answer.text
    assert "a" not in served(guarded.base_url)
