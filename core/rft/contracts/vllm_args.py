"""vLLM's command line and environment: `vllm serve <server_args(...)>` with `server_env(...)`.

The server pods' contract: the operator's builders render it, the tests' fake vLLM
(`rft_devcluster.fake_vllm`) reads the same command line. A light module (no torch, transformers
or fastapi): the operator image has none of those.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

DEFAULT_HOST: Final = "0.0.0.0"  # noqa: S104 (a server in a pod listens on all of the pod's addresses)
DEFAULT_PORT: Final = 8000

# vLLM accepts only these values for --max-lora-rank (vllm/config/lora.py: MaxLoRARanks).
VLLM_MAX_LORA_RANKS: Final = (1, 8, 16, 32, 64, 128, 256, 320, 512)

# vLLM registers /v1/load_lora_adapter and /v1/unload_lora_adapter only when this is true.
RUNTIME_LORA_UPDATING_ENV: Final = "VLLM_ALLOW_RUNTIME_LORA_UPDATING"

# `--dtype` values the operator passes (vLLM accepts more).
SERVER_DTYPES: Final = ("auto", "float32", "float16", "bfloat16")


def training_dtype(accelerator_type: str) -> str:
    """The dtype the trainer computes in on this accelerator (rft_trainer.model: bfloat16 on
    GPUs, float32 on CPU). Servers run in it too, so that the sampler's logprobs are the
    trainer's: vLLM's default would serve a float32 model in bfloat16 on CPU, and its sampled
    tokens' logprobs then differ from the trainer's by up to 2e-2 (measured, docs/serving.md)."""
    return "float32" if accelerator_type == "CPU" else "bfloat16"


def supported_max_lora_rank(rank: int) -> int:
    """The smallest rank vLLM accepts for --max-lora-rank that is at least `rank`.

    Raises ValueError when `rank` is below 1 or above vLLM's largest supported rank.
    """
    if rank < 1:
        raise ValueError(f"max_lora_rank must be at least 1, got {rank}")
    for allowed in VLLM_MAX_LORA_RANKS:
        if allowed >= rank:
            return allowed
    raise ValueError(f"max_lora_rank must be at most {VLLM_MAX_LORA_RANKS[-1]}, got {rank}")


def server_args(
    model_path: str,
    served_name: str,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    max_loras: int = 8,
    max_lora_rank: int = 64,
    max_model_len: int | None = None,
    enable_lora: bool = True,
    lora_modules: Mapping[str, str] | None = None,
    dtype: str | None = None,
    middleware: Sequence[str] = (),
) -> list[str]:
    """Arguments of `vllm serve` (after the program name).

    The model comes first as a positional argument, as `vllm serve` expects it. `max_lora_rank` is
    rounded up to a value vLLM accepts (see `supported_max_lora_rank`). `lora_modules` preloads
    adapters by name (`--lora-modules name=path`); it needs `enable_lora`. `dtype` sets the
    weights' dtype (`--dtype`; None: the engine's default, which for vLLM downcasts float32
    models to bfloat16). `middleware` adds ASGI middleware by import path (`--middleware`).
    Raises ValueError naming the argument when a value is out of range.
    """
    if not model_path:
        raise ValueError("model_path must not be empty")
    if not served_name:
        raise ValueError("served_name must not be empty")
    if not host:
        raise ValueError("host must not be empty")
    if not 1 <= port <= 65535:
        raise ValueError(f"port must be in 1..65535, got {port}")
    if max_model_len is not None and max_model_len < 1:
        raise ValueError(f"max_model_len must be at least 1, got {max_model_len}")
    args = [model_path, "--served-model-name", served_name, "--host", host, "--port", str(port)]
    if dtype is not None:
        if dtype not in SERVER_DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(SERVER_DTYPES)}, got {dtype!r}")
        args += ["--dtype", dtype]
    if max_model_len is not None:
        args += ["--max-model-len", str(max_model_len)]
    if enable_lora:
        if max_loras < 1:
            raise ValueError(f"max_loras must be at least 1, got {max_loras}")
        args += [
            "--enable-lora",
            "--max-loras",
            str(max_loras),
            "--max-lora-rank",
            str(supported_max_lora_rank(max_lora_rank)),
        ]
        if lora_modules:
            args += ["--lora-modules", *_lora_module_args(lora_modules)]
    elif lora_modules:
        raise ValueError("lora_modules needs enable_lora=True")
    for path in middleware:
        args += ["--middleware", path]
    return args


def server_env(
    *, enable_lora: bool = True, allow_runtime_lora_updating: bool = True, cpu_threads: int | None = None
) -> dict[str, str]:
    """Environment variables of the server: the adapter admin routes on or off and, with
    `cpu_threads`, OMP_NUM_THREADS (set it to the pod's CPU limit: torch otherwise starts one
    thread per core of the node, and oversubscribed threads slow a CPU server down many times)."""
    enabled = enable_lora and allow_runtime_lora_updating
    env = {RUNTIME_LORA_UPDATING_ENV: "True" if enabled else "False"}
    if cpu_threads is not None:
        if cpu_threads < 1:
            raise ValueError(f"cpu_threads must be at least 1, got {cpu_threads}")
        env["OMP_NUM_THREADS"] = str(cpu_threads)
    return env


def server_command(args: Sequence[str]) -> list[str]:
    """The full command of a server container: `vllm serve` followed by `args`."""
    return ["vllm", "serve", *args]


def _lora_module_args(lora_modules: Mapping[str, str]) -> list[str]:
    out = []
    for name, path in lora_modules.items():
        if not name or "=" in name:
            raise ValueError(f"lora_modules: adapter name {name!r} must be non-empty and contain no '='")
        if not path:
            raise ValueError(f"lora_modules: adapter {name!r} has an empty path")
        out.append(f"{name}={path}")
    return out
