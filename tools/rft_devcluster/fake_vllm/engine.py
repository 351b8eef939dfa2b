"""The engine: one base model, its resident adapters, the tokenizer, and a lock around them.

Every call that runs or changes the model holds one lock, so a request always runs with exactly
the adapter it named, and adapters change only between requests. Requests are served one at a
time (the n samples of a request are batched); correctness first, throughput is vLLM's job.
A request waiting for the lock counts as waiting, the one holding it as running: vLLM's
`num_requests_waiting` and `num_requests_running` gauges (`request_counts`, GET /metrics).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rft_devcluster.fake_vllm.adapters import AdapterInfo, AdapterSet
from rft_devcluster.fake_vllm.config import LogprobsMode, ServerConfig
from rft_devcluster.fake_vllm.errors import bad_request, invalid_user_input, model_not_found
from rft_devcluster.fake_vllm.generation import Completion, TokenEvent, generate
from rft_devcluster.fake_vllm.sampling import SamplingParams
from rft_devcluster.fake_vllm.sources import fetch, fetch_adapter, is_storage_url

logger = logging.getLogger(__name__)

# Sampling defaults a model may set in generation_config.json (vLLM's `--generation-config auto`).
_GENERATION_DEFAULT_KEYS = {"temperature": float, "top_p": float, "top_k": int, "max_new_tokens": int}


@dataclass(frozen=True)
class ModelCard:
    """One entry of /v1/models: the base model (parent None) or an adapter (parent = base name)."""

    id: str
    root: str
    parent: str | None
    max_model_len: int | None


class Engine:
    """A base causal LM with resident LoRA adapters, serving one request at a time."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        model_names: Sequence[str],
        model_root: str,
        max_model_len: int,
        device: torch.device,
        enable_lora: bool,
        max_loras: int,
        max_lora_rank: int,
        download_dir: Path | None = None,
        owns_download_dir: bool = False,
        logprobs_mode: LogprobsMode = "raw_logprobs",
        sampling_defaults: Mapping[str, float | int] | None = None,
    ) -> None:
        if not model_names:
            raise ValueError("model_names: at least one name is needed")
        self._lock = threading.Lock()  # the model and its adapters
        self._tokenizer_lock = threading.Lock()  # fast tokenizers must not be used by two threads at once
        self._counts_lock = threading.Lock()  # the two counts below
        self._running = 0
        self._waiting = 0
        self._tokenizer = tokenizer
        self._adapters = AdapterSet(model, max_loras=max_loras, max_lora_rank=max_lora_rank)
        self._fetched: dict[str, Path] = {}
        self._token_text: dict[int, str] = {}
        self.enable_lora = enable_lora
        self.model_names = tuple(model_names)
        self.model_root = model_root
        self.max_model_len = max_model_len
        self.device = device
        self._download_dir = download_dir
        self._owns_download_dir = owns_download_dir
        self.logprobs_mode: LogprobsMode = logprobs_mode
        self.sampling_defaults = dict(sampling_defaults or {})
        self.vocab_size = len(tokenizer)
        self.eos_token_ids = _eos_token_ids(model, tokenizer)

    @classmethod
    def from_config(cls, config: ServerConfig) -> Engine:
        """Load the base model and tokenizer named by `config` and preload its `lora_modules`."""
        download_dir = Path(config.download_dir) if config.download_dir else None
        owns_download_dir = False
        model_dir = Path(config.model)
        if is_storage_url(config.model):
            if download_dir is None:
                download_dir, owns_download_dir = Path(tempfile.mkdtemp(prefix="rft-server-")), True
            logger.info("fetching the base model from %s", config.model)
            model_dir = fetch(config.model, download_dir / "base")
        if not model_dir.is_dir():
            raise ValueError(f"model: {config.model} is not a model directory")
        device = _device(config.device)
        dtype = _dtype(config.dtype, device)
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        model: Any = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype)
        model.to(device)
        model.eval()
        engine = cls(
            model,
            tokenizer,
            model_names=config.model_names,
            model_root=config.model,
            max_model_len=_max_model_len(config.max_model_len, model.config),
            device=device,
            enable_lora=config.enable_lora,
            max_loras=config.max_loras,
            max_lora_rank=config.max_lora_rank,
            download_dir=download_dir,
            owns_download_dir=owns_download_dir,
            logprobs_mode=config.logprobs_mode,
            sampling_defaults=read_sampling_defaults(model_dir),
        )
        for module in config.lora_modules:
            engine.load_adapter(module.name, module.path)
        return engine

    @property
    def model_name(self) -> str:
        """The base model's name as reported in responses."""
        return self.model_names[0]

    @property
    def download_dir(self) -> Path | None:
        """Where files from storage URLs were fetched to (None before the first fetch)."""
        return self._download_dir

    @property
    def adapters(self) -> tuple[AdapterInfo, ...]:
        """The resident adapters, in load order."""
        return self._adapters.adapters

    def models(self) -> list[ModelCard]:
        """The base model and every resident adapter, as /v1/models lists them."""
        base = [ModelCard(name, self.model_root, None, self.max_model_len) for name in self.model_names]
        return base + [ModelCard(a.name, a.source, self.model_name, None) for a in self.adapters]

    def request_counts(self) -> tuple[int, int]:
        """(running, waiting): the request being served (0 or 1) and those waiting for their turn."""
        with self._counts_lock:
            return self._running, self._waiting

    @contextmanager
    def _request_turn(self) -> Iterator[None]:
        """Hold the model lock for one request, counted as waiting until it has it, then running."""
        with self._counts_lock:
            self._waiting += 1
        self._lock.acquire()
        with self._counts_lock:
            self._waiting -= 1
            self._running += 1
        try:
            yield
        finally:
            with self._counts_lock:
                self._running -= 1
            self._lock.release()

    def resolve_model(self, name: str) -> str | None:
        """The adapter a request's `model` names, or None for the base model; 404 when unknown."""
        if name in self.model_names:
            return None
        if name in self._adapters:
            return name
        raise model_not_found(name)

    def chat_prompt_ids(
        self,
        messages: list[dict[str, Any]],
        *,
        add_generation_prompt: bool = True,
        continue_final_message: bool = False,
    ) -> list[int]:
        """Token ids of `messages` rendered with the tokenizer's chat template."""
        if not getattr(self._tokenizer, "chat_template", None):
            raise bad_request("This model's tokenizer has no chat template: use /v1/completions.")
        with self._tokenizer_lock:
            try:
                text = self._tokenizer.apply_chat_template(
                    messages,
                    tokenize=False,
                    add_generation_prompt=add_generation_prompt,
                    continue_final_message=continue_final_message,
                )
            except Exception as error:  # a template's errors are about the messages it was given
                raise bad_request(f"Cannot apply the chat template: {error}", "messages") from error
            return list(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def text_prompt_ids(self, prompt: str) -> list[int]:
        """Token ids of a text prompt (with the tokenizer's special tokens, as vLLM does)."""
        with self._tokenizer_lock:
            return list(self._tokenizer(prompt, add_special_tokens=True)["input_ids"])

    def check_token_ids(self, token_ids: Sequence[int], param: str) -> None:
        """400 naming `param` when a token id is outside the vocabulary."""
        bad = [token for token in token_ids if not 0 <= token < self.vocab_size]
        if bad:
            raise bad_request(
                f"{param}: token ids {bad[:5]} are outside the vocabulary (0..{self.vocab_size - 1})", param
            )

    def fit_max_tokens(self, prompt_tokens: int, max_tokens: int | None, param: str) -> int:
        """The number of tokens a request may generate; 400 when the prompt or the request is too long.

        Without `max_tokens`, the model's `max_new_tokens` default or else the rest of the context.
        """
        if prompt_tokens >= self.max_model_len:
            raise bad_request(
                f"This model's maximum context length is {self.max_model_len} tokens. However, your "
                f"request has {prompt_tokens} input tokens. Please reduce the length of the input "
                f"{param}.",
                param,
            )
        room = self.max_model_len - prompt_tokens
        if max_tokens is None:
            default = self.sampling_defaults.get("max_new_tokens")
            return min(int(default), room) if default else room
        if max_tokens > room:
            raise bad_request(
                f"'max_tokens' or 'max_completion_tokens' is too large: {max_tokens}. This model's "
                f"maximum context length is {self.max_model_len} tokens and your request has "
                f"{prompt_tokens} input tokens ({max_tokens} > {self.max_model_len} - {prompt_tokens}).",
                "max_tokens",
            )
        return max_tokens

    def generate(
        self,
        model: str,
        prompt_ids: Sequence[int],
        params: SamplingParams,
        *,
        on_token: Callable[[TokenEvent], None] | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> list[Completion]:
        """Sample `params.n` completions of `prompt_ids` from the base model or adapter `model`.

        Blocks while another request runs. Raises ApiError 404 when `model` is unknown (or was
        unloaded while the request waited). `on_token` and `cancelled` serve streaming (see
        `generation.generate`).
        """
        with self._request_turn():
            adapter = self.resolve_model(model)
            with self._adapters.activated(adapter) as module:
                return generate(
                    module,
                    prompt_ids,
                    params,
                    decode=self._decode,
                    eos_token_ids=self.eos_token_ids,
                    device=self.device,
                    logprobs_mode=self.logprobs_mode,
                    on_token=on_token,
                    cancelled=cancelled,
                )

    def prompt_logprobs(self, model: str, prompt_ids: Sequence[int]) -> list[tuple[float, int]]:
        """(logprob, rank) of each prompt token after the first given the ones before it, under
        the base model or adapter `model` (vLLM's `prompt_logprobs`, raw logprobs)."""
        with self._request_turn():
            adapter = self.resolve_model(model)
            with self._adapters.activated(adapter) as module, torch.no_grad():
                ids = torch.tensor([list(prompt_ids)], dtype=torch.long, device=self.device)
                logits = module(input_ids=ids, use_cache=False).logits[0, :-1].float()
                logprobs = torch.log_softmax(logits, dim=-1)
                chosen = logprobs.gather(1, ids[0, 1:, None])
                ranks = (logprobs > chosen).sum(dim=-1) + 1
                return [(float(lp), int(rank)) for lp, rank in zip(chosen[:, 0], ranks, strict=True)]

    def token_text(self, token_id: int) -> str:
        """The text of one token as logprobs report it (special tokens included)."""
        text = self._token_text.get(token_id)
        if text is None:
            with self._tokenizer_lock:
                text = self._token_text[token_id] = str(self._tokenizer.decode([token_id]))
        return text

    def load_adapter(self, name: str, path: str, *, in_place: bool = False) -> AdapterInfo:
        """Make adapter `path` (a local directory or a storage URL) servable as model `name`
        (`in_place`: replacing the adapter served under that name, which stays served meanwhile).

        Storage URLs are fetched and verified first, without holding the lock. Raises ApiError
        (400/404, vLLM's messages) when the request cannot be honoured.
        """
        if not name or not path:
            raise invalid_user_input("Both 'lora_name' and 'lora_path' must be provided.")
        if not self.enable_lora:
            raise bad_request("LoRA is not enabled on this server: start it with --enable-lora.", "lora_name")
        if name in self.model_names:
            raise invalid_user_input(
                f"'{name}' is the base model's name; choose another lora_name.", "lora_name"
            )
        self._adapters.check_can_add(name, in_place=in_place)  # fail fast; checked again under the lock
        local_dir = Path(path)
        if is_storage_url(path):
            local_dir = fetch_adapter(name, path, self._downloads())
        try:
            with self._lock:
                info = self._adapters.add(name, local_dir, source=path, in_place=in_place)
        except BaseException:
            if is_storage_url(path):
                shutil.rmtree(local_dir, ignore_errors=True)
            raise
        previous = self._fetched.pop(name, None)
        if previous is not None and previous != local_dir:
            shutil.rmtree(previous, ignore_errors=True)
        if is_storage_url(path):
            self._fetched[name] = local_dir
        logger.info("Loaded new LoRA adapter: name '%s', path '%s'", name, path)
        return info

    def unload_adapter(self, name: str) -> AdapterInfo:
        """Remove adapter `name`; ApiError 404 when it is not loaded."""
        if not name:
            raise invalid_user_input("'lora_name' needs to be provided to unload a LoRA adapter.")
        with self._lock:
            info = self._adapters.remove(name)
        fetched = self._fetched.pop(name, None)
        if fetched is not None:
            shutil.rmtree(fetched, ignore_errors=True)
        logger.info("Removed LoRA adapter: name '%s'", name)
        return info

    def close(self) -> None:
        """Delete the files this engine fetched into a temporary directory of its own."""
        if self._owns_download_dir and self._download_dir is not None:
            shutil.rmtree(self._download_dir, ignore_errors=True)
            self._download_dir = None
            self._owns_download_dir = False

    def _downloads(self) -> Path:
        """Where fetched files go: --download-dir, else a temporary directory made on first use."""
        if self._download_dir is None:
            self._download_dir = Path(tempfile.mkdtemp(prefix="rft-server-"))
            self._owns_download_dir = True
        return self._download_dir

    def _decode(self, token_ids: Sequence[int], skip_special_tokens: bool) -> str:
        with self._tokenizer_lock:
            return str(self._tokenizer.decode(list(token_ids), skip_special_tokens=skip_special_tokens))


def read_sampling_defaults(model_dir: Path) -> dict[str, float | int]:
    """The sampling defaults a model's generation_config.json sets (temperature, top_p, top_k,
    max_new_tokens); values a request gives take precedence."""
    path = model_dir / "generation_config.json"
    if not path.is_file():
        return {}
    config = json.loads(path.read_text())
    defaults: dict[str, float | int] = {}
    for key, kind in _GENERATION_DEFAULT_KEYS.items():
        value = config.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            defaults[key] = kind(value)
    return defaults


def _eos_token_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    ids: set[int] = set()
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (configured, tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(int(v) for v in value)
    return frozenset(ids)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: cuda was asked for but no CUDA device is available")
    return torch.device(name)


def _dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        # Half precision on CPU is slow and less exact; on GPUs bfloat16 is what vLLM would use.
        return torch.float32 if device.type == "cpu" else torch.bfloat16
    dtype: torch.dtype = getattr(torch, name)
    return dtype


def _max_model_len(requested: int | None, model_config: Any) -> int:
    limit = getattr(model_config, "max_position_embeddings", None)
    if requested is None:
        if not isinstance(limit, int):
            raise ValueError(
                "max_model_len: the model config has no max_position_embeddings; pass --max-model-len"
            )
        return limit
    if isinstance(limit, int) and requested > limit:
        raise ValueError(
            f"max_model_len: {requested} is longer than the model's max_position_embeddings ({limit})"
        )
    return requested
