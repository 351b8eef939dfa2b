"""Resident LoRA adapters on one base model (peft multi-adapter).

The base model is wrapped in a PeftModel once the first adapter arrives and unwrapped when the
last one leaves (peft cannot run a PeftModel without adapters). Requests for the base model run
with adapters disabled. Not thread-safe: the engine serialises every call.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peft import PeftConfig, PeftModel

from rft_devcluster.fake_vllm.errors import bad_request, invalid_user_input, not_found

ADAPTER_CONFIG = "adapter_config.json"


@dataclass(frozen=True)
class AdapterInfo:
    """A loaded adapter: its served name, where it came from, its rank, and its name inside peft."""

    name: str
    source: str
    rank: int
    peft_name: str


def adapter_rank(adapter_dir: Path, name: str) -> int:
    """The largest LoRA rank in the adapter's config (including per-module `rank_pattern`).

    Raises ApiError 400 when the config is missing, unreadable, or not a LoRA config.
    """
    config_path = adapter_dir / ADAPTER_CONFIG
    try:
        config = json.loads(config_path.read_text())
    except FileNotFoundError:
        raise bad_request(f"Loading lora {name} failed: {config_path} is missing") from None
    except (OSError, ValueError) as error:
        raise bad_request(f"Loading lora {name} failed: cannot read {config_path}: {error}") from None
    if not isinstance(config, dict) or str(config.get("peft_type", "")).upper() != "LORA":
        raise bad_request(f"Loading lora {name} failed: {config_path} is not a LoRA adapter config")
    declared: list[object] = [config.get("r")]
    pattern = config.get("rank_pattern") or {}
    if isinstance(pattern, dict):
        declared += list(pattern.values())
    ranks = [rank for rank in declared if isinstance(rank, int) and not isinstance(rank, bool) and rank >= 1]
    if len(ranks) != len(declared):
        raise bad_request(f"Loading lora {name} failed: {config_path} has an invalid rank in {declared}")
    return max(ranks)


class AdapterSet:
    """The adapters resident on a base model, at most `max_loras`, each of rank <= `max_lora_rank`."""

    def __init__(self, base_model: Any, *, max_loras: int, max_lora_rank: int) -> None:
        self._base = base_model
        self._peft: Any = None
        self._adapters: dict[str, AdapterInfo] = {}
        # Served names are the client's (they may hold '.' or be part of peft's 'lora_' key prefix,
        # which peft cannot take); inside peft every adapter gets a fresh safe name instead.
        self._loaded_count = 0
        self.max_loras = max_loras
        self.max_lora_rank = max_lora_rank

    @property
    def adapters(self) -> tuple[AdapterInfo, ...]:
        """The loaded adapters, in load order."""
        return tuple(self._adapters.values())

    def __contains__(self, name: object) -> bool:
        return name in self._adapters

    def check_can_add(self, name: str, *, in_place: bool = False) -> None:
        """Raise ApiError 400 when `name` is already loaded (unless replaced `in_place`) or every
        slot is taken."""
        if name in self._adapters:
            if in_place:
                return
            raise invalid_user_input(
                f"The lora adapter '{name}' has already been loaded. If you want to load the adapter "
                "in place, set 'load_inplace' to True.",
                "lora_name",
            )
        if len(self._adapters) >= self.max_loras:
            loaded = ", ".join(self._adapters)
            raise bad_request(
                f"Cannot load lora {name}: max_loras={self.max_loras} adapters are already loaded "
                f"({loaded}); unload one first.",
                "lora_name",
            )

    def add(self, name: str, adapter_dir: Path, *, source: str, in_place: bool = False) -> AdapterInfo:
        """Load the adapter in `adapter_dir` under `name`; `source` is what the client asked for.
        `in_place` replaces an adapter loaded under `name` as vLLM's `load_inplace` does: the new
        weights are loaded first, then swapped in, so the name is served throughout.

        Raises ApiError: 400 for a duplicate name, no free slot, a rank above max_lora_rank or an
        adapter that does not fit the base model; 404 when the directory does not exist.
        """
        self.check_can_add(name, in_place=in_place)
        if not adapter_dir.is_dir():
            raise not_found(f"Loading lora {name} failed: No adapter found for {source}", "lora_path")
        rank = adapter_rank(adapter_dir, name)
        if rank > self.max_lora_rank:
            raise bad_request(
                f"LoRA rank {rank} is greater than max_lora_rank {self.max_lora_rank}.", "lora_path"
            )
        self._loaded_count += 1
        peft_name = f"adapter{self._loaded_count}"
        try:
            self._load_into_model(peft_name, adapter_dir)
        except Exception as error:
            raise bad_request(f"Loading lora {name} failed: {error}", "lora_path") from error
        info = AdapterInfo(name=name, source=source, rank=rank, peft_name=peft_name)
        replaced = self._adapters.get(name)
        self._adapters[name] = info
        if replaced is not None:
            if replaced.peft_name in self._peft.active_adapters:
                self._peft.set_adapter(peft_name)  # peft warns when the active adapter is deleted
            self._peft.delete_adapter(replaced.peft_name)
        return info

    def remove(self, name: str) -> AdapterInfo:
        """Unload `name`; raises ApiError 404 when it is not loaded (vLLM's words)."""
        if name not in self._adapters:
            raise not_found(f"The lora adapter '{name}' cannot be found.", "lora_name")
        peft_name = self._adapters[name].peft_name
        others = [info.peft_name for info in self._adapters.values() if info.name != name]
        if others and peft_name in self._peft.active_adapters:
            self._peft.set_adapter(others[0])  # peft warns when the active adapter is deleted
        self._peft.delete_adapter(peft_name)
        if len(self._adapters) == 1:
            self._base = self._peft.unload()
            self._peft = None
        return self._adapters.pop(name)

    @contextmanager
    def activated(self, name: str | None) -> Iterator[Any]:
        """Yield the module to run for adapter `name`, or for the base model when `name` is None."""
        if name is None:
            if self._peft is None:
                yield self._base
            else:
                with self._peft.disable_adapter():
                    yield self._peft
            return
        if name not in self._adapters:
            raise not_found(f"The model `{name}` does not exist.", "model")
        self._peft.set_adapter(self._adapters[name].peft_name)
        yield self._peft

    def _load_into_model(self, name: str, adapter_dir: Path) -> None:
        created = self._peft is None
        if created:
            config = PeftConfig.from_pretrained(str(adapter_dir))
            config.inference_mode = True
            self._peft = PeftModel(self._base, config, adapter_name=name)
            self._peft.eval()
        try:
            self._peft.load_adapter(str(adapter_dir), adapter_name=name)
        except Exception:
            # A half-loaded adapter would break later requests: take out whatever got in.
            if name in self._peft.peft_config:
                self._peft.delete_adapter(name)
            if created:
                self._base = self._peft.unload()
                self._peft = None
            raise
