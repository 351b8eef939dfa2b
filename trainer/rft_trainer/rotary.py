"""Rotary position embeddings as one autograd node per tensor.

transformers applies RoPE as `q * cos + rotate_half(q) * sin` with `rotate_half(x) = cat(-x2, x1)`:
forward writes a negated half, a concatenation and three products; backward fills zero tensors
for the two slices and copies into them, negates, concatenates and adds. `RotaryEmbedding` writes
each half of the output in two fused passes (`mul`, `addcmul_`) and its gradient the same way.

`install` patches the `apply_rotary_pos_emb` of the model's own modeling module (Llama, Qwen2,
Qwen3, Mistral and most decoders share this form), but only after checking on random inputs that
the fused version returns the module's own numbers: a model whose rotary differs (partial or
interleaved rotation) keeps its own function.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import torch

_PATCHED = "_rft_original_apply_rotary_pos_emb"


class RotaryEmbedding(torch.autograd.Function):
    """x * cos + rotate_half(x) * sin for x [..., D] (cos/sin broadcastable to x, no gradient)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        x1, x2 = x[..., :half], x[..., half:]
        shape = torch.broadcast_shapes(x.shape, cos.shape)  # type: ignore[no-untyped-call]
        out = torch.empty(shape, dtype=x.dtype, device=x.device)
        torch.mul(x1, cos[..., :half], out=out[..., :half]).addcmul_(x2, sin[..., :half], value=-1)
        torch.mul(x2, cos[..., half:], out=out[..., half:]).addcmul_(x1, sin[..., half:])
        ctx.save_for_backward(cos, sin)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        cos, sin = ctx.saved_tensors
        half = grad.shape[-1] // 2
        g1, g2 = grad[..., :half], grad[..., half:]
        out = torch.empty_like(grad)
        # the transpose of rotate_half maps [y1, y2] to [y2, -y1]
        torch.mul(g1, cos[..., :half], out=out[..., :half]).addcmul_(g2, sin[..., half:])
        torch.mul(g2, cos[..., half:], out=out[..., half:]).addcmul_(g1, sin[..., :half], value=-1)
        return out, None, None


def apply_rotary_pos_emb(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, unsqueeze_dim: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """The transformers signature, fused."""
    cos = cos.unsqueeze(unsqueeze_dim)
    sin = sin.unsqueeze(unsqueeze_dim)
    return RotaryEmbedding.apply(q, cos, sin), RotaryEmbedding.apply(k, cos, sin)


def _fused_instead_of(original: Callable[..., Any]) -> Callable[..., Any]:
    def apply(
        q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, unsqueeze_dim: int = 1
    ) -> Any:
        if not q.dtype == k.dtype == cos.dtype == sin.dtype:  # type promotion: the original's rules
            return original(q, k, cos, sin, unsqueeze_dim)
        return apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim)

    return apply


def _same_numbers(original: Callable[..., Any]) -> bool:
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(2, 4, 7, 16, generator=generator, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 2, 7, 16, generator=generator, dtype=torch.float64, requires_grad=True)
    angles = torch.randn(2, 7, 16, generator=generator, dtype=torch.float64)
    cos, sin = angles.cos(), angles.sin()
    weights = torch.randn(2, 4, 7, 16, generator=generator, dtype=torch.float64)
    results = []
    for fn in (original, apply_rotary_pos_emb):
        try:
            q_out, k_out = fn(q, k, cos, sin)
        except Exception:  # another signature: not the form this module replaces
            return False
        grads = torch.autograd.grad((q_out * weights).sum() + k_out.sum(), (q, k))
        results.append((q_out.detach(), k_out.detach(), *grads))
    return all(a.shape == b.shape and torch.allclose(a, b, atol=1e-12) for a, b in zip(*results, strict=True))


def install(model: Any) -> bool:
    """Use the fused rotary in the modeling module of `model` (a transformers model) when it
    computes the same numbers; returns whether it is in use."""
    module = sys.modules.get(type(model).__module__)
    original = getattr(module, "apply_rotary_pos_emb", None)
    if module is None or original is None:
        return False
    if getattr(module, _PATCHED, None) is not None:
        return True
    if not _same_numbers(original):
        return False
    setattr(module, _PATCHED, original)
    module.apply_rotary_pos_emb = _fused_instead_of(original)  # type: ignore[attr-defined]
    return True
