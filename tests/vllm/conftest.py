"""One real vLLM server (its CPU build, tools/vllm-cpu) for the session, started the way the
operator starts it: the same command line (`server_args`, `server_command`) and environment
(`server_env`, `vllm_writable_env`), on loopback, serving the tiny model of VLLM_CPU_SHAPE."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from rft.contracts.vllm_args import server_args, server_command, server_env, training_dtype
from rft_devcluster.fake_vllm.testing import make_lora_adapter
from rft_devcluster.tiny import VLLM_CPU_SHAPE, build_tiny_model
from rft_devcluster.vllm_env import ensure_vllm_env
from rft_operator.builders.serving import vllm_writable_env

# vLLM's engine start on 2 shared cores: 70-90 s idle, a few minutes under load.
START_SECONDS = 600
SERVED_NAME = "tiny"


@dataclass(frozen=True)
class VllmServer:
    url: str
    model_dir: Path
    adapter_dir: Path
    log_path: Path

    def post(self, path: str, body: dict[str, Any]) -> Any:
        request = urllib.request.Request(  # noqa: S310 - loopback
            self.url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310 - loopback
            raw = response.read()
        return json.loads(raw) if raw.strip().startswith((b"{", b"[")) else raw.decode()

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=60) as response:  # noqa: S310 - loopback
            return json.loads(response.read())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=5) as response:  # noqa: S310 - loopback
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    root = tmp_path_factory.mktemp("vllm")
    model_dir = build_tiny_model(root / "model", words_only=True, **VLLM_CPU_SHAPE)
    adapter_dir = make_lora_adapter(model_dir, root / "adapter", rank=8, seed=3)
    environment = ensure_vllm_env()
    port = _free_port()
    args = server_args(
        str(model_dir),
        SERVED_NAME,
        host="127.0.0.1",
        port=port,
        max_loras=2,
        max_lora_rank=8,
        max_model_len=512,
        dtype=training_dtype("CPU"),
    )
    command = server_command(args)
    command[0] = str(environment / "bin" / command[0])
    # The pod's writable paths, moved from its volumes to this test's directory.
    scratch = root / "scratch"
    writable = {k: v.replace("/tmp/rft", str(scratch)) for k, v in vllm_writable_env().items()}
    writable = {k: str(root) if v == "/tmp" else v for k, v in writable.items()}
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "VIRTUAL_ENV"))},
        **server_env(cpu_threads=2),
        **writable,
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "HF_HUB_OFFLINE": "1",
    }
    log_path = root / "vllm.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_SECONDS
        while not _healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-4000:]
                raise RuntimeError(f"vLLM did not become healthy (exit {proc.poll()}):\n{tail}")
            time.sleep(1)
        yield VllmServer(url, model_dir, adapter_dir, log_path)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
