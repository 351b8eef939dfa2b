"""The fake vLLM's settings, validated once at start-up."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from rft.contracts.vllm_args import DEFAULT_HOST, DEFAULT_PORT, SERVER_DTYPES

Device = Literal["auto", "cpu", "cuda"]
DType = Literal["auto", "float32", "float16", "bfloat16"]
# raw: the model's own distribution (vLLM's default); processed: after temperature, top-k, top-p.
LogprobsMode = Literal["raw_logprobs", "processed_logprobs"]
LOGPROBS_MODES: Final = ("raw_logprobs", "processed_logprobs")
DEVICES: Final = ("auto", "cpu", "cuda")
DTYPES: Final = SERVER_DTYPES
LOG_LEVELS: Final = ("critical", "error", "warning", "info", "debug", "trace")


@dataclass(frozen=True)
class LoraModule:
    """An adapter to load at start-up: its served name and a local path or storage URL."""

    name: str
    path: str


@dataclass(frozen=True)
class ServerConfig:
    """Everything the server needs; `__post_init__` rejects bad values naming the field.

    Defaults follow vLLM's where the concept is the same (LoRA off, one adapter, rank 16).
    """

    model: str
    served_model_names: tuple[str, ...] = ()
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    enable_lora: bool = False
    max_loras: int = 1
    max_lora_rank: int = 16
    max_model_len: int | None = None
    lora_modules: tuple[LoraModule, ...] = ()
    allow_runtime_lora_updating: bool = False
    device: Device = "auto"
    dtype: DType = "auto"
    download_dir: str | None = None
    logprobs_mode: LogprobsMode = "raw_logprobs"
    uvicorn_log_level: str = "info"
    middleware: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("model: must name a model directory or a storage URL")
        if any(not name for name in self.served_model_names):
            raise ValueError("served_model_names: names must not be empty")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port: must be in 0..65535, got {self.port}")
        if self.max_loras < 1:
            raise ValueError(f"max_loras: must be at least 1, got {self.max_loras}")
        if self.max_lora_rank < 1:
            raise ValueError(f"max_lora_rank: must be at least 1, got {self.max_lora_rank}")
        if self.max_model_len is not None and self.max_model_len < 2:
            raise ValueError(f"max_model_len: must be at least 2, got {self.max_model_len}")
        if self.device not in DEVICES:
            raise ValueError(f"device: must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype: must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.logprobs_mode not in LOGPROBS_MODES:
            raise ValueError(
                f"logprobs_mode: must be one of {', '.join(LOGPROBS_MODES)}, got {self.logprobs_mode!r}"
            )
        if self.uvicorn_log_level not in LOG_LEVELS:
            raise ValueError(
                f"uvicorn_log_level: must be one of {', '.join(LOG_LEVELS)}, got {self.uvicorn_log_level!r}"
            )
        if self.lora_modules and not self.enable_lora:
            raise ValueError("lora_modules: preloading adapters needs enable_lora")
        if len(self.lora_modules) > self.max_loras:
            raise ValueError(
                f"lora_modules: {len(self.lora_modules)} adapters exceed max_loras={self.max_loras}"
            )
        names = [module.name for module in self.lora_modules]
        if len(set(names)) != len(names):
            raise ValueError(f"lora_modules: adapter names must be unique, got {names}")
        clashes = set(names) & set(self.model_names)
        if clashes:
            raise ValueError(f"lora_modules: {sorted(clashes)} clash with the served model name")

    @property
    def model_names(self) -> tuple[str, ...]:
        """The names the base model answers to; the first is reported in responses."""
        return self.served_model_names or (self.model,)
