"""The adapter canary: is the adapter a replica serves under a name the one that was trained?

The trainer computes the log-probabilities of a fixed, data-free token sequence under the new
adapter and records them with the checkpoint (`rft.api.model.AdapterCanary`). After loading the
adapter, and at every poll, the operator asks each replica for the same tokens' log-probabilities
under the adapter's served name (vLLM's `prompt_logprobs`) and compares. A replica that serves a
stale, swapped or half-loaded adapter under the right name answers different numbers.

The comparison is the mean relative difference over the canary's tokens, |a - b| / max(1, |a|):
the canary's tokens are unlikely ones (logprobs around -log(vocabulary)), where a low-precision
dtype's error grows with the magnitude. The tolerance is the coarser of the trainer's dtype and
the server's (the base Deployment's `--dtype`). Measured (docs/serving.md): float32 on both sides,
1.0e-6 absolute; a float32 trainer against vLLM serving bfloat16 (the local node's GPU pods),
0.059 absolute; another adapter under the same name, 2.06 absolute. A checkpoint that moved
less than the tolerance from the weights it started from (`start_distance`) cannot be told apart
from them: it is reported unverifiable, never verified.

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
# Mean relative logprob difference allowed between a replica and the trainer, by the coarser dtype:
# float32 measured 1.3e-7 (vLLM against the trainer on CPU); bfloat16 served against a float32
# trainer, about 1e-2.
TOLERANCE: Mapping[str, float] = {"float32": 1e-4, "float16": 1e-2, "bfloat16": 3e-2}
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


def mean_relative_difference(expected: Sequence[float], other: Sequence[float]) -> float:
    """The mean over tokens of |expected - other| / max(1, |expected|)."""
    if len(expected) != len(other) or not expected:
        raise ValueError(f"cannot compare {len(expected)} logprobs with {len(other)}")
    pairs = zip(expected, other, strict=True)
    return sum(abs(x - y) / max(1.0, abs(x)) for x, y in pairs) / len(expected)


def tolerance(canary: AdapterCanary, served_dtype: str) -> float:
    """The tolerance for a replica serving in `served_dtype`: the coarser dtype's."""
    return max(TOLERANCE[canary.dtype], TOLERANCE.get(served_dtype, TOLERANCE["bfloat16"]))


def make_canary(
    token_ids: Sequence[int], logprobs: Sequence[float], start_logprobs: Sequence[float], dtype: str
) -> AdapterCanary:
    """The record of a checkpoint's canary: its logprobs and how far they are from the start's."""
    return AdapterCanary.model_validate(
        {
            "token_ids": list(token_ids),
            "logprobs": [format_logprob(x) for x in logprobs],
            "dtype": dtype,
            "start_distance": f"{mean_relative_difference(logprobs, start_logprobs):.6g}",
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
            # The type, not the value: a pod's answer never reaches an object's status.
            raise ValueError(f"prompt_logprobs[{position}] is not a number ({type(logprob).__name__})")
        out.append(float(logprob))
    return out


@dataclass(frozen=True)
class CanaryCheck:
    """How a replica's canary logprobs compare with the checkpoint's."""

    difference: float
    tolerance: float
    verifiable: bool

    @property
    def matches(self) -> bool:
        return self.difference <= self.tolerance

    def describe(self) -> str:
        return f"canary logprobs off by {self.difference:.3g} (mean relative; tolerance {self.tolerance:g})"


def check(canary: AdapterCanary, served: Sequence[float], served_dtype: str) -> CanaryCheck:
    """Compare a replica's logprobs for the canary tokens (served in `served_dtype`) with the
    checkpoint's."""
    limit = tolerance(canary, served_dtype)
    return CanaryCheck(
        difference=mean_relative_difference([float(x) for x in canary.logprobs], served),
        tolerance=limit,
        verifiable=float(canary.start_distance) > limit,
    )
