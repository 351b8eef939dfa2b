"""Training-session API overhead: one training step through the Tinker API against the same step on
the session's core in process.

The workload: a random Qwen2-architecture model (`rft_devcluster.tiny`, hidden 256, 4 layers,
vocabulary 512), LoRA rank 16 on every block linear, a batch of 16 datums of 128 tokens
(`importance_sampling`), AdamW. One step is `forward_backward` + `optim_step`, waited for.

- Ours: the step through `python -m rft_trainer.session` on loopback, driven by the official
  client (`tinker`): protobuf encoding, HTTP, futures polled with `retrieve_future`.
- Peer: the same calls on `rft_trainer.session.core.TrainingSession` in this process: the
  trainer core's cost with no API around it.

Both sides run with the same torch threads (`bench.common.THREADS`), after one warm-up step, and
report the median of the timed steps. The ratio is the API's overhead factor (1.0 is free). What
the issue ultimately asks, a session's step against a `ReinforcementStep` Job's on the local
cluster, is not measured here.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import tinker
import torch
from rft_devcluster.emulators import free_port
from rft_devcluster.tiny import build_tiny_model
from rft_trainer.model import load_base_model
from rft_trainer.session.core import AdamStep, TrainingSession
from rft_trainer.session.wire import WireDatum
from tinker import types

from bench.common import THREADS, Row, write_result

API_KEY = "tml-bench-session-0123456789"
BASE_NAME = "bench-base"
RANK = 16
LR = 1e-4


def _batch(
    n: int, length: int, vocab: int, seed: int = 0
) -> list[tuple[list[int], list[float], list[float]]]:
    """(tokens, advantages, sampling logprobs) per datum, seeded."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        tokens = rng.integers(3, vocab, size=length + 1).tolist()
        adv = [0.0] * (length // 2) + [1.0 if i % 2 else -1.0] * (length - length // 2)
        out.append((tokens, adv, [-6.0] * length))
    return out


def _in_process(model_dir: Path, batch: list[Any], steps: int) -> list[float]:
    base, _ = load_base_model(str(model_dir), torch.device("cpu"))
    session = TrainingSession(base, BASE_NAME, torch.device("cpu"), max_context_length=1024)
    session.create(
        session.resolve_spec(rank=RANK, seed=0, train_attn=True, train_mlp=True, train_unembed=False)
    )
    data = [
        WireDatum(
            tokens=np.asarray(tokens[:-1], dtype=np.int64),
            inputs={
                "target_tokens": np.asarray(tokens[1:], dtype=np.int64),
                "advantages": np.asarray(adv, dtype=np.float32),
                "logprobs": np.asarray(logprobs, dtype=np.float32),
            },
        )
        for tokens, adv, logprobs in batch
    ]
    times = []
    for step in range(steps + 1):
        started = time.perf_counter()
        session.forward_backward(data, "importance_sampling")
        session.optim_step(AdamStep(learning_rate=LR))
        if step:  # the first is the warm-up
            times.append(time.perf_counter() - started)
    return times


@contextmanager
def _server(model_dir: Path, storage: Path, log: Path) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "RFT_SESSION_API_KEY": API_KEY, "OMP_NUM_THREADS": str(THREADS)}
    command = [
        sys.executable,
        "-m",
        "rft_trainer.session",
        "--base-model",
        str(model_dir),
        "--base-model-name",
        BASE_NAME,
        "--storage-url",
        storage.as_uri(),
        "--port",
        str(port),
        "--device",
        "cpu",
        "--max-context-length",
        "1024",
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the session server exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/api/v1/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the session server did not start")
            time.sleep(0.2)
        yield url
    finally:
        process.kill()
        process.wait(timeout=30)


def _through_api(url: str, batch: list[Any], steps: int) -> list[float]:
    service = tinker.ServiceClient(base_url=url, api_key=API_KEY)
    tc = service.create_lora_training_client(BASE_NAME, rank=RANK, seed=0, train_unembed=False).result()
    data = [
        types.Datum(
            model_input=types.ModelInput.from_ints(tokens[:-1]),
            loss_fn_inputs={
                "target_tokens": types.TensorData.from_numpy(np.asarray(tokens[1:], dtype=np.int64)),
                "advantages": types.TensorData.from_numpy(np.asarray(adv, dtype=np.float32)),
                "logprobs": types.TensorData.from_numpy(np.asarray(logprobs, dtype=np.float32)),
            },
        )
        for tokens, adv, logprobs in batch
    ]
    times = []
    for step in range(steps + 1):
        started = time.perf_counter()
        fb = tc.forward_backward(data, "importance_sampling")
        optim = tc.optim_step(types.AdamParams(learning_rate=LR))
        fb.result()
        optim.result()
        if step:
            times.append(time.perf_counter() - started)
    service.close("success").result()
    return times


def benchmark(quick: bool, results_dir: Path | None = None) -> list[Row]:
    """Median step latency through the API and in process, and their ratio."""
    n, length, steps = (4, 32, 2) if quick else (16, 128, 8)
    torch.set_num_threads(THREADS)
    with tempfile.TemporaryDirectory(prefix="rft-bench-session-") as tmp:
        work = Path(tmp)
        model_dir = build_tiny_model(
            work / "model", hidden_size=256, layers=4, heads=4, kv_heads=2, intermediate_size=688
        )
        batch = _batch(n, length, vocab=512)
        core = _in_process(model_dir, batch, steps)
        started = time.perf_counter()
        with _server(model_dir, work / "bucket", work / "session.log") as url:
            ready = time.perf_counter() - started
            api = _through_api(url, batch, steps)
    api_ms, core_ms = statistics.median(api) * 1e3, statistics.median(core) * 1e3
    write_result(
        "session_api",
        {
            "workload": {"datums": n, "tokens_per_datum": length, "lora_rank": RANK, "timed_steps": steps},
            "api_step_seconds": api,
            "core_step_seconds": core,
            "server_ready_seconds": ready,
            "threads": THREADS,
        },
        results_dir,
    )
    return [
        Row(
            "session_api",
            "step latency ms (Tinker API / in-process core)",
            f"{api_ms:.1f}",
            f"{core_ms:.1f}",
            f"{api_ms / core_ms:.2f}x",
            note=f"{n} datums x {length} tokens; server ready in {ready:.1f}s",
        ),
    ]
