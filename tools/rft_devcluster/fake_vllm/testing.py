"""Helpers to run the fake vLLM in tests: in a thread of this process or as a process.

    engine = Engine.from_config(ServerConfig(model=str(model_dir), enable_lora=True, max_loras=2))
    with running_server(engine) as server:
        client = openai.OpenAI(base_url=server.openai_base_url, api_key="unused")

Everything binds to loopback only. `make_lora_adapter` writes a random (non-zero) LoRA adapter
for a base model, so that its outputs differ from the base model's.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from rft_devcluster.fake_vllm.app import create_app
from rft_devcluster.fake_vllm.engine import Engine
from rft_devcluster.fake_vllm.main import add_middleware

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class RunningServer:
    """A server that answers on `base_url` (http://host:port)."""

    base_url: str
    engine: Engine | None = None

    @property
    def openai_base_url(self) -> str:
        """The base URL OpenAI clients take (…/v1)."""
        return f"{self.base_url}/v1"


@contextmanager
def running_server(
    engine: Engine,
    *,
    host: str = LOOPBACK,
    runtime_lora_updating: bool = True,
    start_timeout: float = 30.0,
    middleware: Sequence[str] = (),
) -> Iterator[RunningServer]:
    """Serve `engine` with uvicorn in a background thread on a free port; stop on exit.
    `middleware`: import paths, as the server's `--middleware`.

    The socket is bound before the thread starts, so there is no race for the port.
    """
    app = create_app(engine, runtime_lora_updating=runtime_lora_updating)
    for path in middleware:
        add_middleware(app, path)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="rft-server", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + start_timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server on {host}:{port} did not start within {start_timeout}s")
            time.sleep(0.01)
        yield RunningServer(base_url=f"http://{host}:{port}", engine=engine)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def free_port(host: str = LOOPBACK) -> int:
    """A port that was free a moment ago (for servers started as processes)."""
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until_healthy(
    base_url: str, *, timeout: float = 120.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Poll GET /health until it answers 200; raise if `process` exits or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(
                f"the server process exited with code {process.returncode} before it was healthy"
            )
        try:
            with urllib.request.urlopen(f"{base_url}/health", timeout=2) as response:  # noqa: S310 (http only)
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{base_url}/health did not answer 200 within {timeout}s")


@contextmanager
def server_process(
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    base_url: str,
    timeout: float = 120.0,
    log_path: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run `python -m rft_devcluster.fake_vllm *args` until healthy at `base_url`; terminate it on exit.

    Output goes to `log_path` when given (else it is discarded).
    """
    command = [sys.executable, "-m", "rft_devcluster.fake_vllm", *args]
    environment = {**os.environ, **(env or {})}
    with open(log_path or os.devnull, "wb") as log:
        process = subprocess.Popen(command, env=environment, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until_healthy(base_url, timeout=timeout, process=process)
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def make_lora_adapter(
    base_model_dir: str | Path,
    out_dir: str | Path,
    *,
    rank: int = 8,
    alpha: int | None = None,
    seed: int = 0,
    target_modules: Sequence[str] = ("q_proj", "k_proj", "v_proj", "o_proj"),
) -> Path:
    """Write a LoRA adapter for `base_model_dir` with random non-zero A and B to `out_dir`."""
    import torch  # noqa: PLC0415  (only adapter-making tests need torch and peft here)
    from peft import LoraConfig, get_peft_model  # noqa: PLC0415
    from transformers import AutoModelForCausalLM  # noqa: PLC0415

    model = AutoModelForCausalLM.from_pretrained(str(base_model_dir))
    torch.manual_seed(seed)
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha if alpha is not None else 2 * rank,
        target_modules=list(target_modules),
        init_lora_weights=False,  # random B as well as A: the adapter changes the outputs at once
    )
    peft_model = get_peft_model(model, config)
    out = Path(out_dir)
    peft_model.save_pretrained(str(out))
    return out


def extra_field(obj: Any, name: str) -> Any:
    """A vLLM extra field of an OpenAI client object (`stop_reason`, `token_ids`, ...).

    The official client keeps fields it does not know in `model_extra`; raises KeyError when absent.
    """
    extras = getattr(obj, "model_extra", None) or {}
    if name not in extras:
        raise KeyError(f"{type(obj).__name__} has no field {name!r}; it has {sorted(extras)}")
    return extras[name]
