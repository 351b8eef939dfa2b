"""The adapter canary: is the adapter a replica serves under a name the one that was trained?

The trainer computes the log-probabilities of a fixed, data-free token sequence under the new
adapter and records them with the checkpoint (`rft.api.model.AdapterCanary`). After loading the
adapter, and at every poll, the operator asks each replica for the same tokens' log-probabilities
under the adapter's served name (vLLM's `prompt_logprobs`) and compares. A replica that serves a
stale, swapped or half-loaded adapter under the right name answers different numbers.

The tolerance is on the mean absolute difference over the canary's tokens, per dtype. Measured
agreement between vLLM and the trainer (docs/serving.md): float32, max 3.8e-6 over 64 adapter
tokens; bfloat16 served against a float32 trainer, mean 3e-3. The tolerances leave a wide margin
over those. A checkpoint that moved less than the tolerance from the weights it started from
(`start_distance`) cannot be told apart from them: it is reported unverifiable, never verified.

Pure Python (no torch): the operator imports it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rft.api.model import AdapterCanary

CANARY_LENGTH = 32
# Mean absolute logprob difference allowed between a replica and the trainer, by dtype.
TOLERANCE: Mapping[str, float] = {"float32": 1e-3, "float16": 2e-2, "bfloat16": 5e-2}
_SEED = 0x52465443  # "RFTC": the same tokens for every checkpoint of a model


def canary_token_ids(
    vocab_size: int, excluded: Collection[int] = (), length: int = CANARY_LENGTH
) -> list[int]:
    """`length` token ids drawn from range(vocab_size) minus `excluded` (special tokens), the same
    for every call with the same arguments."""
    if length < 2:
        raise ValueError(f"length must be at least 2, got {length}")
    excluded_set = set(excluded)
    candidates = [i for i in range(vocab_size) if i not in excluded_set]
    if not candidates:
        raise ValueError(f"no token id to draw from (vocab_size={vocab_size}, {len(excluded_set)} excluded)")
    rng = random.Random(_SEED)  # noqa: S311 - a fixed sequence, not a secret
    return [rng.choice(candidates) for _ in range(length)]


def format_logprob(value: float) -> str:
    """A logprob as the API's decimal string (9 significant digits)."""
    return f"{value:.9g}"


def mean_abs_difference(a: Sequence[float], b: Sequence[float]) -> float:
    if len(a) != len(b) or not a:
        raise ValueError(f"cannot compare {len(a)} logprobs with {len(b)}")
    return sum(abs(x - y) for x, y in zip(a, b, strict=True)) / len(a)


def make_canary(
    token_ids: Sequence[int], logprobs: Sequence[float], start_logprobs: Sequence[float], dtype: str
) -> AdapterCanary:
    """The record of a checkpoint's canary: its logprobs and how far they are from the start's."""
    return AdapterCanary.model_validate(
        {
            "token_ids": list(token_ids),
            "logprobs": [format_logprob(x) for x in logprobs],
            "dtype": dtype,
            "start_distance": f"{mean_abs_difference(logprobs, start_logprobs):.6g}",
        }
    )


def request_body(served_name: str, canary: AdapterCanary) -> dict[str, Any]:
    """The `POST /v1/completions` body that asks a vLLM replica for the canary's logprobs.
    Requests with prompt_logprobs skip vLLM's prefix cache, so every token is recomputed."""
    return {
        "model": served_name,
        "prompt": list(canary.token_ids),
        "max_tokens": 1,
        "temperature": 0,
        "prompt_logprobs": 0,
    }


def served_logprobs(response: Mapping[str, Any], token_ids: Sequence[int]) -> list[float]:
    """The prompt tokens' logprobs from vLLM's completions response: `choices[0].prompt_logprobs`
    is None for the first token, then per token a map from token id (a string in JSON) to
    `{"logprob", "rank", "decoded_token"}` that always holds the prompt's own token.

    Raises ValueError when the response does not have them.
    """
    try:
        entries = response["choices"][0]["prompt_logprobs"]
    except (KeyError, IndexError, TypeError):
        raise ValueError("the response has no choices[0].prompt_logprobs") from None
    if not isinstance(entries, list) or len(entries) != len(token_ids):
        raise ValueError(
            f"prompt_logprobs has {len(entries) if isinstance(entries, list) else 'no'} entries for "
            f"{len(token_ids)} prompt tokens"
        )
    out = []
    for position, (entry, token) in enumerate(zip(entries[1:], token_ids[1:], strict=True), start=1):
        if not isinstance(entry, Mapping) or str(token) not in entry:
            raise ValueError(f"prompt_logprobs[{position}] lacks the prompt's token {token}")
        value = entry[str(token)]
        logprob = value.get("logprob") if isinstance(value, Mapping) else value
        if not isinstance(logprob, int | float) or math.isnan(logprob):
            raise ValueError(f"prompt_logprobs[{position}] is not a number: {logprob!r}")
        out.append(float(logprob))
    return out


@dataclass(frozen=True)
class CanaryCheck:
    """How a replica's canary logprobs compare with the checkpoint's."""

    mean_abs_difference: float
    tolerance: float
    verifiable: bool

    @property
    def matches(self) -> bool:
        return self.mean_abs_difference <= self.tolerance

    def describe(self) -> str:
        return (
            f"canary logprobs off by {self.mean_abs_difference:.3g} on average (tolerance {self.tolerance:g})"
        )


def check(canary: AdapterCanary, served: Sequence[float]) -> CanaryCheck:
    """Compare a replica's logprobs for the canary tokens with the checkpoint's."""
    expected = [float(x) for x in canary.logprobs]
    tolerance = TOLERANCE[canary.dtype]
    return CanaryCheck(
        mean_abs_difference=mean_abs_difference(expected, served),
        tolerance=tolerance,
        verifiable=float(canary.start_distance) > tolerance,
    )
