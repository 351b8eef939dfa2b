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

Loading: each rank still loads the whole base model before it is sharded, so the base must fit in
one process's memory while loading (host memory on CPU; on CUDA, the GPU). Loading bases larger
than one GPU needs meta-device initialisation and a rank-0 broadcast (not done here).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
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
