"""Helpers for the training-session tests: start `python -m rft_trainer.session` as a process on
loopback (as its pod runs it) and drive it with the official Tinker client."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import tinker
from rft_devcluster.emulators import free_port
from tinker import types

API_KEY = "tml-session-test-key-0123456789"
BASE_NAME = "tiny-base"


@contextmanager
def session_server(
    base_model: str,
    storage_url: str,
    log: Path,
    env: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
) -> Iterator[str]:
    """A session server process; yields its base URL and kills the process on exit."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "rft_trainer.session",
        "--base-model",
        base_model,
        "--base-model-name",
        BASE_NAME,
        "--storage-url",
        storage_url,
        "--port",
        str(port),
        "--device",
        "cpu",
        "--max-context-length",
        "256",
        *extra_args,
    ]
    environment = {**(env if env is not None else os.environ), "RFT_SESSION_API_KEY": API_KEY}
    with log.open("ab") as out:
        process = subprocess.Popen(command, env=environment, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise AssertionError(
                    f"the session server exited with {process.returncode}: {log.read_text()[-3000:]}"
                )
            try:
                if httpx.get(f"{url}/api/v1/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"the session server did not start: {log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield url
    finally:
        process.kill()
        process.wait(timeout=30)


def client(url: str) -> tinker.ServiceClient:
    """The official client pointed at the session, as a user would (base_url and api_key only)."""
    return tinker.ServiceClient(base_url=url, api_key=API_KEY)


def is_datum(tokens: list[int], prompt_len: int, advantage: float, sampling_logprob: float) -> types.Datum:
    """An importance_sampling Datum: input tokens[:-1], targets tokens[1:], the advantage and a
    sampling logprob on the completion targets only."""
    n = len(tokens) - 1
    on_completion = [i >= prompt_len - 1 for i in range(n)]
    return types.Datum(
        model_input=types.ModelInput.from_ints(tokens[:-1]),
        loss_fn_inputs={
            "target_tokens": types.TensorData.from_numpy(np.asarray(tokens[1:], dtype=np.int64)),
            "advantages": _floats([advantage if c else 0.0 for c in on_completion]),
            "logprobs": _floats([sampling_logprob if c else 0.0 for c in on_completion]),
        },
    )


def _floats(values: list[float]) -> types.TensorData:
    return types.TensorData.from_numpy(np.asarray(values, dtype=np.float32))
