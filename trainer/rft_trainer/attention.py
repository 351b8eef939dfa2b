"""Causal attention over packed rows, one SDPA call per packed sequence.

A packed row holds several sequences whose position_ids restart. transformers' `sdpa` builds a
[T, T] block-diagonal causal mask for such a row and computes every score of it before masking:
O(T^2) work for O(sum of L_i^2) useful scores, most of the attention time once rows hold several
sequences. `packed_sdpa` finds the sequence boundaries from position_ids and runs one causal SDPA
call per sequence (SDPA's causal CPU kernel skips the blocks above the diagonal), with no mask.

Registered with transformers' AttentionInterface under `PACKED_SDPA`, with a mask function that
builds no mask when there is nothing but causality and packing to express. Anything else (a
padding mask, a KV cache during generation) takes the standard sdpa path, so the same model can
still generate.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

PACKED_SDPA = "rft_packed_sdpa"


def sequence_starts(position_ids: torch.Tensor) -> list[int]:
    """Start offsets of the sequences of a packed row [T], plus T: where the position does not
    continue the previous one (it restarts, usually at 0)."""
    length = int(position_ids.shape[0])
    if length == 0:
        return [0]
    breaks = torch.nonzero(position_ids[1:] != position_ids[:-1] + 1).flatten() + 1
    return [0, *breaks.tolist(), length]


def packed_sdpa(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Causal attention per packed sequence; query [B, H, T, D], key/value [B, KV, T, D]."""
    position_ids = kwargs.get("position_ids")
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    length = query.shape[2]
    if (
        attention_mask is not None
        or position_ids is None
        or not causal
        or length != key.shape[2]
        or kwargs.get("cache") is not None
    ):
        return sdpa_attention_forward(
            module,
            query,
            key,
            value,
            attention_mask,
            dropout=dropout,
            scaling=scaling,
            is_causal=is_causal,
            **kwargs,
        )
    positions = position_ids[..., -length:].expand(query.shape[0], length)
    gqa = query.shape[1] != key.shape[1]
    dropout_p = dropout if module.training else 0.0
    rows = []
    for row in range(query.shape[0]):
        sizes = [end - start for start, end in itertools.pairwise(sequence_starts(positions[row]))]
        # split, not slicing: the backward of a split is one concatenation, while each slice's
        # backward would fill a zero tensor of the whole row
        q, k, v = (t if t.shape[0] == 1 else t[row : row + 1] for t in (query, key, value))
        parts = [
            torch.nn.functional.scaled_dot_product_attention(
                qs, ks, vs, dropout_p=dropout_p, is_causal=True, scale=scaling, enable_gqa=gqa
            )
            for qs, ks, vs in zip(
                torch.split(q, sizes, 2), torch.split(k, sizes, 2), torch.split(v, sizes, 2), strict=True
            )
        ]
        rows.append(parts[0] if len(parts) == 1 else torch.cat(parts, dim=2))
    out = rows[0] if len(rows) == 1 else torch.cat(rows, dim=0)
    return out.transpose(1, 2).contiguous(), None


def _packed_sdpa_mask(*args: Any, **kwargs: Any) -> torch.Tensor | None:
    # No padding mask and no cache offset: the attention function handles causality and packing
    # itself, so skip building the [T, T] mask. Otherwise build sdpa's mask (and sdpa runs).
    if (
        kwargs.get("attention_mask") is None
        and kwargs.get("q_length") == kwargs.get("kv_length")
        and not kwargs.get("kv_offset")
    ):
        return None
    return sdpa_mask(*args, **kwargs)


def register() -> str:
    """Register the packed attention with transformers (idempotent); returns its name."""
    AttentionInterface.register(PACKED_SDPA, packed_sdpa)
    AttentionMaskInterface.register(PACKED_SDPA, _packed_sdpa_mask)
    return PACKED_SDPA
