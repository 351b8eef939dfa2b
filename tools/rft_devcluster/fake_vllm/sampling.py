"""Sampling parameters and the choice of the next token (pure torch, no model)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import torch

# Below this temperature sampling is greedy, as in vLLM.
GREEDY_TEMPERATURE = 1e-5


@dataclass(frozen=True)
class SamplingParams:
    """How to sample one prompt's completions; validated by the request models.

    `logprobs` is None for no logprobs, or the number of alternatives to report per position
    (0 reports only the sampled token's logprob).
    """

    n: int = 1
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    logprobs: int | None = None
    skip_special_tokens: bool = True

    @property
    def greedy(self) -> bool:
        """True when the most likely token is always taken."""
        return self.temperature < GREEDY_TEMPERATURE


def make_generator(seed: int | None, device: torch.device) -> torch.Generator:
    """A random generator owned by one request: seeded requests are reproducible on their own."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed if seed is not None else secrets.randbits(63))
    return generator


def processed_logits(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """The logits [rows, vocab] that sampling draws from: divided by the temperature, with tokens
    outside top-k and top-p set to -inf. Greedy sampling uses the logits unchanged."""
    if params.greedy:
        return logits.float()
    scaled = logits.float() / params.temperature
    if 0 < params.top_k < scaled.shape[-1]:
        kth = torch.topk(scaled, params.top_k, dim=-1).values[:, -1:]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    if params.top_p < 1.0:
        scaled = _top_p_filter(scaled, params.top_p)
    return scaled


def next_tokens(processed: torch.Tensor, params: SamplingParams, generator: torch.Generator) -> torch.Tensor:
    """Choose one token per row of `processed` (from `processed_logits`): the most likely one when
    greedy, else a draw from its softmax. Returns a [rows] tensor of token ids."""
    if params.greedy:
        return processed.argmax(dim=-1)
    probs = torch.softmax(processed, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


def _top_p_filter(scaled: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probability reaches `top_p`."""
    sorted_logits, order = torch.sort(scaled, dim=-1, descending=True)
    cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
    # Drop a token when the tokens before it already reach top_p; the first token always stays.
    drop_sorted = (cumulative - torch.softmax(sorted_logits, dim=-1)) >= top_p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return scaled.masked_fill(drop, float("-inf"))


def token_logprobs(logits: torch.Tensor) -> torch.Tensor:
    """Log-probabilities [rows, vocab] of raw or processed logits.

    Of the raw logits they are the model's own distribution, what vLLM returns by default
    (`--logprobs-mode raw_logprobs`) and what a trainer recomputes from the policy. Of the
    processed logits they are the distribution tokens were actually drawn from.
    """
    return torch.log_softmax(logits.float(), dim=-1)
