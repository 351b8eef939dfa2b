"""Sharded training with more than one rank: FSDP2 (`torch.distributed.fsdp.fully_shard`) shards
the frozen base weights; the LoRA tensors stay whole on every rank.

What is sharded:
- Every decoder layer is its own FSDP2 unit, then the scorer (embeddings, final norm, output head)
  is the root unit. Each rank keeps 1/world_size of every frozen base weight; a unit's weights are
  all-gathered just before its forward (and again before its backward) and freed after it, so at
  most a layer or two is whole at a time.
- The LoRA parameters are left out (`ignored_params`) and so replicated, with their AdamW state.
  They are 0.1-1% of the parameters (rank 16 on an 8B model: 42M of 8B), so sharding them would
  save little; kept whole, they stay plain float32 tensors while a GPU base is bfloat16 (FSDP2
  all-gathers one dtype per unit), and PEFT's save, gradient clipping, the optimizer and the in-step
  checkpoint work on them unchanged. Their gradients are all-reduced here after each optimizer
  step's micro-batches (one flat all-reduce, averaged as DistributedDataParallel does).

The base weights get no gradients (frozen), so FSDP2 reduces nothing for them. Every forward of a
sharded unit is a collective: all ranks must run the same number of forwards (the loop pads a
rank's short share with a weight-0 repeat of a batch) and the canary is computed on every rank.

Loading (`load_sharded_base`): the model is built on the meta device (no memory), the adapter
attached (its LoRA weights real and initialised as on a loaded base), the frozen base sharded, and
only then does each rank allocate its shards and read them from the model's safetensors files with
`torch.distributed.checkpoint` (`HuggingFaceStorageReader`: each rank reads just the slices of each
tensor it holds), so no process ever holds the whole base. Non-persistent buffers (the rotary
frequencies) are recomputed by the model's own initialisation. A model directory without
safetensors files (or `RFT_TRAINER_WHOLE_LOAD=1`) takes the older path: every rank loads the whole
base with `from_pretrained`, then shards it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint.hf_storage import HuggingFaceStorageReader
from torch.distributed.checkpoint.state_dict_loader import load as dcp_load
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard

from rft_trainer.logprobs import hf_model


def decoder_layers(policy: Any) -> Sequence[torch.nn.Module]:
    """The transformer blocks of a (PEFT-wrapped) causal LM."""
    layers = getattr(hf_model(policy).get_decoder(), "layers", None)
    if layers is None:
        raise TypeError(f"{type(hf_model(policy)).__name__}: no decoder .layers to shard")
    return list(layers)


def shard_frozen_base(
    scorer: torch.nn.Module, policy: Any, device: torch.device, world_size: int
) -> FSDPModule:
    """Shard `policy`'s frozen weights over all ranks, with `scorer` (which calls `policy`) as root."""
    mesh = init_device_mesh(device.type, (world_size,))
    trainable = {p for p in policy.parameters() if p.requires_grad}
    for layer in decoder_layers(policy):
        fully_shard(layer, mesh=mesh, ignored_params=trainable & set(layer.parameters()))
    return fully_shard(scorer, mesh=mesh, ignored_params=trainable)


WHOLE_LOAD_ENV = "RFT_TRAINER_WHOLE_LOAD"


def loads_sharded(location: str, world_size: int) -> bool:
    """Whether the ranks read only their shards of the base (`load_sharded_base`): with more than one
    rank, a local model directory with safetensors files, and no `RFT_TRAINER_WHOLE_LOAD=1`."""
    if world_size <= 1 or os.environ.get(WHOLE_LOAD_ENV, "") == "1":
        return False
    directory = Path(location)
    return directory.is_dir() and any(directory.glob("*.safetensors"))


def _checkpoint_names(hf: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The frozen tensors of `hf` (a transformers model, perhaps holding PEFT LoRA layers) under the
    names its safetensors files use: PEFT's `.base_layer` removed, adapters left out, a tied weight
    once (under the name it is saved with, the input embedding's), non-persistent buffers left out."""
    out: dict[str, torch.Tensor] = {}
    for name, param in hf.named_parameters():  # deduplicated: a tied head appears once
        if not param.requires_grad:
            out[name.replace(".base_layer.", ".")] = param
    non_persistent = set(_non_persistent_buffers(hf))
    for name, buffer in hf.named_buffers():
        if name not in non_persistent:
            out[name.replace(".base_layer.", ".")] = buffer
    return out


def _non_persistent_buffers(module: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """{qualified name: owning module} of the buffers a state dict leaves out."""
    out = {}
    for prefix, owner in module.named_modules():
        for name in owner._non_persistent_buffers_set:
            if getattr(owner, name, None) is not None:
                out[f"{prefix}.{name}" if prefix else name] = owner
    return out


def load_sharded_base(root: torch.nn.Module, policy: Any, location: str, device: torch.device) -> None:
    """Give the meta-device tensors of `root` (sharded by `shard_frozen_base`) their storage on
    `device` and fill this rank's shards of the base weights from the safetensors files at
    `location`, reading only those slices (a collective: every rank calls it)."""
    for module in root.modules():
        tensors = [*module.parameters(recurse=False), *module.buffers(recurse=False)]
        if any(t.is_meta for t in tensors):
            module.to_empty(device=device, recurse=False)
    hf = hf_model(policy)
    with torch.no_grad():
        for owner in set(_non_persistent_buffers(hf).values()):
            hf._init_weights(owner)  # e.g. the rotary frequencies, as from_pretrained computes them
    state = _checkpoint_names(hf)
    dcp_load(state, storage_reader=HuggingFaceStorageReader(location))
    meta = [name for name, t in root.state_dict().items() if t.is_meta]
    if meta:
        raise RuntimeError(f"still on the meta device after loading: {', '.join(meta[:5])}")


@contextmanager
def whole_root(module: torch.nn.Module) -> Iterator[None]:
    """The root unit's weights gathered (all ranks), for forwards that bypass the root's forward
    (the canary); the decoder layers still gather themselves."""
    if not isinstance(module, FSDPModule):
        yield
        return
    module.unshard()
    try:
        yield
    finally:
        module.reshard()


def all_reduce_replicated_grads(params: Sequence[torch.nn.Parameter], world_size: int) -> None:
    """Average the replicated (LoRA) gradients over the ranks, in one flat all-reduce."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    flat /= world_size
    offset = 0
    for param, grad in zip(params, grads, strict=True):
        n = grad.numel()
        param.grad = flat[offset : offset + n].view_as(grad).clone()
        offset += n


def resident_bytes(module: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict[str, int]:
    """Bytes this rank holds for parameters (local shards of sharded ones), gradients and optimizer
    state, as allocated by torch (not the process's whole memory)."""

    def local(t: torch.Tensor) -> torch.Tensor:
        to_local = getattr(t, "to_local", None)
        return to_local() if callable(to_local) else t

    params = list(module.parameters())
    out = {
        "frozen_parameters": sum(
            local(p).numel() * local(p).element_size() for p in params if not p.requires_grad
        ),
        "trainable_parameters": sum(
            local(p).numel() * local(p).element_size() for p in params if p.requires_grad
        ),
        "gradients": sum(
            local(p.grad).numel() * local(p.grad).element_size() for p in params if p.grad is not None
        ),
        "optimizer_state": 0,
    }
    if optimizer is not None:
        for state in optimizer.state.values():
            for value in state.values():
                if isinstance(value, torch.Tensor):
                    out["optimizer_state"] += local(value).numel() * local(value).element_size()
    return out
