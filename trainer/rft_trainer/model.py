"""Loading the base model and putting a trainable LoRA adapter on it (new or continued)."""

from __future__ import annotations

import importlib.util
import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from pydantic import ValidationError
from rft.api.model import LoraSettings, TrainingRecord
from rft.api.rules import check_warm_start
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from rft_trainer import attention
from rft_trainer.errors import BadInputError

ADAPTER_CONFIG = "adapter_config.json"


@contextmanager
def _quiet_peft() -> Iterator[None]:
    # PEFT probes a transformers attribute deprecated in v5; the warning is not actionable here.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def resolve_device(choice: str) -> torch.device:
    """'auto' picks CUDA when present; asking for CUDA without one is a clear error."""
    if choice == "cpu":
        return torch.device("cpu")
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise BadInputError("InvalidConfig", "device 'cuda' requested but no CUDA device is available")
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _dtype_for(device: torch.device) -> torch.dtype:
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def _attention_for(device: torch.device) -> str:
    # flash-attention reads packed-sequence boundaries from position_ids (varlen); elsewhere
    # (CPU, CUDA without flash-attn) one SDPA call per packed sequence, never a [T, T] mask.
    if device.type == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return attention.register()


def load_base_model(location: str, device: torch.device, *, local_files_only: bool = True) -> tuple[Any, Any]:
    """The causal LM (frozen, on `device`) and its tokenizer from a model directory (or hub id)."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, local_files_only=local_files_only)
        model: Any = AutoModelForCausalLM.from_pretrained(
            location,
            dtype=_dtype_for(device),
            attn_implementation=_attention_for(device),
            local_files_only=local_files_only,
        )
    except (OSError, ValueError) as exc:
        raise BadInputError("ModelLoadFailed", f"cannot load the base model from {location}: {exc}") from None
    if getattr(tokenizer, "chat_template", None) is None:
        raise BadInputError(
            "ModelLoadFailed", f"the base model's tokenizer at {location} has no chat template"
        )
    model.to(device)
    model.config.use_cache = False
    for param in model.parameters():
        param.requires_grad_(False)
    return model, tokenizer


def load_base_model_on_meta(location: str, device: torch.device) -> tuple[Any, Any]:
    """The causal LM's structure with no weights (every tensor on the meta device), in the dtype and
    attention `load_base_model` would give it, and its tokenizer, from a local model directory.

    For sharded training: the weights are read later, each rank only its shards
    (`sharding.load_sharded_base`), so no process ever holds the whole base model.
    """
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, local_files_only=True)
        config = AutoConfig.from_pretrained(location, local_files_only=True)
        with torch.device("meta"):
            model: Any = AutoModelForCausalLM.from_config(  # type: ignore[no-untyped-call]
                config, dtype=_dtype_for(device), attn_implementation=_attention_for(device)
            )
    except (OSError, ValueError) as exc:
        raise BadInputError("ModelLoadFailed", f"cannot load the base model from {location}: {exc}") from None
    if getattr(tokenizer, "chat_template", None) is None:
        raise BadInputError(
            "ModelLoadFailed", f"the base model's tokenizer at {location} has no chat template"
        )
    model.config.use_cache = False
    for param in model.parameters():
        param.requires_grad_(False)
    return model, tokenizer


@contextmanager
def adapter_materialized_on(model: Any, device: torch.device) -> Iterator[None]:
    """While attaching an adapter to a meta-device base: PEFT creates the LoRA weights (initialised
    from the seeded RNG, or filled from a checkpoint) and then moves them to the device and dtype of
    the base layer's weight, which would be the meta device, losing their values. Each block Linear
    of the base gets a real, empty stand-in weight of its dtype on `device` meanwhile (PEFT takes the
    shape from in_features/out_features), so the adapter comes out exactly as on a loaded base: the
    same random numbers in the same order, the same device and dtype casts. The meta weights are put
    back afterwards."""
    saved: list[tuple[torch.nn.Linear, torch.Tensor]] = []
    for layer in model.get_decoder().layers:
        for module in layer.modules():
            if isinstance(module, torch.nn.Linear) and module.weight.is_meta:
                saved.append((module, module.weight))
                module.weight = torch.nn.Parameter(
                    torch.empty(0, dtype=module.weight.dtype, device=device), requires_grad=False
                )
    try:
        yield
    finally:
        for module, weight in saved:
            module.weight = weight


def check_target_modules(model: Any, targets: list[str]) -> None:
    """Every target must name Linear layers of the transformer blocks (what vLLM can serve)."""
    excluded = {id(model.get_input_embeddings()), id(model.get_output_embeddings())}
    found: dict[str, int] = dict.fromkeys(targets, 0)
    outside: dict[str, str] = {}
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if leaf not in found:
            continue
        if isinstance(module, torch.nn.Linear) and id(module) not in excluded:
            found[leaf] += 1
        else:
            outside[leaf] = name
    for target in targets:
        if target in outside:
            raise BadInputError(
                "InvalidConfig",
                f"training.loraTargetModules: {target!r} ({outside[target]}) is not a Linear layer of the "
                "transformer blocks; adapters on embeddings or the output head cannot be served by vLLM",
            )
        if found[target] == 0:
            linears = sorted(
                {
                    n.rsplit(".", 1)[-1]
                    for n, m in model.named_modules()
                    if isinstance(m, torch.nn.Linear) and id(m) not in excluded
                }
            )
            raise BadInputError(
                "InvalidConfig",
                f"training.loraTargetModules: the base model has no Linear layer named {target!r}; "
                f"its block linears are {', '.join(linears)}",
            )


def attach_new_adapter(model: Any, lora: LoraSettings, seed: int) -> Any:
    """A fresh LoRA adapter (A random, B zero) on the block linears named in `lora`."""
    check_target_modules(model, lora.target_modules)
    config = LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        target_modules=list(lora.target_modules),
        lora_dropout=float(lora.dropout),
        bias="none",
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(seed)
    with _quiet_peft():
        return get_peft_model(model, config)


def read_adapter_config(adapter_dir: Path) -> dict[str, Any]:
    """The PEFT adapter_config.json of a checkpoint directory."""
    path = adapter_dir / ADAPTER_CONFIG
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInputError(
            "IncompatibleCheckpoint",
            f"the parent checkpoint has no {ADAPTER_CONFIG}: it is not a LoRA adapter",
        ) from None
    except json.JSONDecodeError as exc:
        raise BadInputError(
            "IncompatibleCheckpoint", f"the parent checkpoint's {ADAPTER_CONFIG} is not valid JSON: {exc}"
        ) from None
    if not isinstance(data, dict):
        raise BadInputError(
            "IncompatibleCheckpoint", f"the parent checkpoint's {ADAPTER_CONFIG} is not an object"
        )
    return data


def _as_module_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]  # PEFT also accepts a regex here; compared literally
    if isinstance(value, list | tuple | set):
        return sorted(str(v) for v in value)
    return []


def check_parent_compatible(
    adapter_config: dict[str, Any],
    parent_metadata: dict[str, Any] | None,
    expected: LoraSettings,
    base_model_name: str,
    parent_name: str,
    *,
    training: TrainingRecord,
) -> None:
    """Refuse to continue from a checkpoint of another shape or another base model, or against
    the warm-start rule (`rft.api.rules.check_warm_start`): the parent's lineage must record the
    learning rate, max context length and batch size that trained it, equal to `training`'s; a
    parent without that record is refused.
    """
    rank = adapter_config.get("r")
    parent_rank = rank if isinstance(rank, int) and not isinstance(rank, bool) else None
    warm_start = check_warm_start(
        parent_rank,
        _recorded_training(parent_metadata),
        lora_rank=expected.rank,
        learning_rate=training.learning_rate,
        max_context_length=training.max_context_length,
        batch_size=training.batch_size,
    )
    problems = []
    if any(m.field == "lora_rank" for m in warm_start.mismatches):
        problems.append(f"LoRA rank {rank} (this step: {expected.rank})")
    alpha = adapter_config.get("lora_alpha")
    if alpha != expected.alpha:
        problems.append(f"LoRA alpha {alpha} (this step: {expected.alpha})")
    targets = _as_module_list(adapter_config.get("target_modules"))
    if targets != sorted(expected.target_modules):
        problems.append(f"target modules {targets} (this step: {sorted(expected.target_modules)})")
    if adapter_config.get("modules_to_save"):
        problems.append(f"modules_to_save {adapter_config['modules_to_save']} (not supported)")
    base = _lineage_base_name(parent_metadata)
    if base is not None and base != base_model_name:
        problems.append(f"base model {base!r} (this step: {base_model_name!r})")
    problems.extend(
        f"{_LABELS[m.field]} {m.parent} (this step: {m.child})"
        for m in warm_start.mismatches
        if m.field != "lora_rank"  # reported first, with the adapter's shape
    )
    if warm_start.unrecorded:
        problems.append(
            "no record of the training parameters that trained it (its lineage has no 'training')"
        )
    if problems:
        raise BadInputError(
            "IncompatibleCheckpoint",
            f"cannot continue from checkpoint {parent_name!r}: it has "
            + "; ".join(problems)
            + ". A continuation must keep the base model, LoRA shape, learning rate, max context "
            "length and batch size of its parent.",
        )


_LABELS = {
    "lora_rank": "LoRA rank",
    "learning_rate": "learning rate",
    "max_context_length": "max context length",
    "batch_size": "batch size",
}


def _recorded_training(metadata: dict[str, Any] | None) -> TrainingRecord | None:
    """The training record of a checkpoint's lineage; None when absent or not a valid record."""
    recorded = (metadata or {}).get("training")
    if not isinstance(recorded, dict):
        return None
    try:
        return TrainingRecord.model_validate(recorded)
    except ValidationError:
        return None


def _lineage_base_name(metadata: dict[str, Any] | None) -> str | None:
    if not metadata:
        return None
    base = metadata.get("baseModel")
    if isinstance(base, dict) and isinstance(base.get("name"), str):
        return str(base["name"])
    return None


def attach_parent_adapter(model: Any, adapter_dir: Path, parent_name: str) -> Any:
    """Load a parent adapter trainable (without is_trainable=True PEFT silently freezes it)."""
    try:
        with _quiet_peft():
            peft_model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=True)
    except (RuntimeError, ValueError, KeyError) as exc:
        raise BadInputError(
            "IncompatibleCheckpoint",
            f"cannot load checkpoint {parent_name!r} onto the base model (a different base model?): "
            + str(exc).splitlines()[0][:500],
        ) from None
    if trainable_parameter_count(peft_model) == 0:
        raise BadInputError(
            "IncompatibleCheckpoint", f"checkpoint {parent_name!r} loaded with no trainable parameters"
        )
    return peft_model


def enable_gradient_checkpointing(peft_model: Any) -> None:
    """Recompute block activations in backward: non-reentrant (works under DDP), and with input
    gradients enabled so that checkpointed blocks see a tensor requiring grad (PEFT freezes the
    embeddings, and without this no gradient would reach the adapters)."""
    peft_model.enable_input_require_grads()
    model = peft_model.get_base_model()
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5 renamed it
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def trainable_parameter_count(model: torch.nn.Module) -> int:
    """Number of parameters that receive gradients."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
