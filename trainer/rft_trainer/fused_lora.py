"""LoRA linears as one autograd node: the adapter's update is accumulated into the base GEMM.

PEFT computes `base(x) + lora_B(lora_A(dropout(x))) * scaling`: besides the three matmuls, it
writes the [tokens, out] product of lora_B, scales it in another pass, and adds it in a third;
backward scales the [tokens, out] gradient again and adds two [tokens, in] input gradients. With
hidden sizes of a few hundred to a few thousand, each of those passes over memory costs about as
much as a matmul. `LoraLinear` accumulates `scaling (x A^T) B^T` into the base output inside the
GEMM (`addmm_`, beta 1), scales the rank-r product instead of the [tokens, out] one, and
accumulates the adapter's input gradient into the base's in the same way. Same numbers up to
float rounding, same saved tensors (x and x A^T), fewer passes.

`install` swaps the forward of every PEFT `lora.Linear` of a model; each call takes the fused path
only for what it computes exactly (one active vanilla adapter, no dropout in training, not merged,
no per-sample adapters, one dtype and no autocast) and otherwise runs PEFT's own forward.
"""

from __future__ import annotations

import types
from typing import Any

import torch
from peft.tuners.lora.layer import Linear as PeftLoraLinear


class LoraLinear(torch.autograd.Function):
    """y = x W^T + b + scaling (x A^T) B^T, with W and b frozen."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        lora_a: torch.Tensor,
        lora_b: torch.Tensor,
        scaling: float,
    ) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        xa = rows @ lora_a.t()
        out = torch.addmm(bias, rows, weight.t()) if bias is not None else rows @ weight.t()
        out.addmm_(xa, lora_b.t(), alpha=scaling)
        ctx.save_for_backward(rows, xa, weight, lora_a, lora_b)
        ctx.scaling = scaling
        ctx.x_shape = x.shape
        return out.view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(
        ctx: Any, grad_out: torch.Tensor
    ) -> tuple[torch.Tensor | None, None, None, torch.Tensor | None, torch.Tensor | None, None]:
        rows, xa, weight, lora_a, lora_b = ctx.saved_tensors
        g = grad_out.reshape(-1, grad_out.shape[-1])
        gb = (g @ lora_b).mul_(ctx.scaling)  # [tokens, r]: the scaled gradient w.r.t. x A^T
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = (g @ weight).addmm_(gb, lora_a).view(ctx.x_shape)
        grad_a = gb.t() @ rows if ctx.needs_input_grad[3] else None
        grad_b = (g.t() @ xa).mul_(ctx.scaling) if ctx.needs_input_grad[4] else None
        return grad_x, None, None, grad_a, grad_b, None


def _fused_forward(self: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
    adapters = self.active_adapters
    if (
        args
        or kwargs
        or self.disable_adapters
        or self.merged
        or len(adapters) != 1
        or adapters[0] not in self.lora_A
        or adapters[0] in self.lora_variant
        or (self.training and not isinstance(self.lora_dropout[adapters[0]], torch.nn.Identity))
        or not isinstance(self.base_layer, torch.nn.Linear)
        or self.base_layer.weight.requires_grad
        or x.dtype != self.lora_A[adapters[0]].weight.dtype
        or x.dtype != self.base_layer.weight.dtype
        or torch.is_autocast_enabled(x.device.type)  # mixed precision: PEFT's casts, autograd's own
    ):
        return self._peft_forward(x, *args, **kwargs)
    name = adapters[0]
    base = self.base_layer
    return LoraLinear.apply(
        x, base.weight, base.bias, self.lora_A[name].weight, self.lora_B[name].weight, self.scaling[name]
    )


def install(model: torch.nn.Module) -> int:
    """Give every PEFT LoRA linear of `model` the fused forward; returns how many (idempotent)."""
    count = 0
    for module in model.modules():
        if isinstance(module, PeftLoraLinear):
            if not hasattr(module, "_peft_forward"):
                module._peft_forward = module.forward  # type: ignore[assignment]
                module.forward = types.MethodType(_fused_forward, module)  # type: ignore[method-assign]
            count += 1
    return count
