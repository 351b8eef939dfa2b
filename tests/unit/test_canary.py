"""The adapter canary's pure parts: the tokens, the record, vLLM's answer, the verdict."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError
from rft.api.model import AdapterCanary
from rft.canary import (
    CANARY_LENGTH,
    TOLERANCE,
    canary_token_ids,
    check,
    make_canary,
    mean_relative_difference,
    request_body,
    served_logprobs,
)


def test_the_tokens_are_fixed_and_skip_excluded_ids() -> None:
    tokens = canary_token_ids(1000, excluded={0, 1, 2})
    assert tokens == canary_token_ids(1000, excluded={0, 1, 2})
    assert len(tokens) == CANARY_LENGTH
    assert all(3 <= t < 1000 for t in tokens)
    assert len(set(tokens)) > CANARY_LENGTH // 2
    assert canary_token_ids(2, excluded={0}) == [1] * CANARY_LENGTH
    with pytest.raises(ValueError, match="no token id"):
        canary_token_ids(2, excluded={0, 1})


def _canary(logprobs: list[float], start: list[float], dtype: str = "float32") -> AdapterCanary:
    return make_canary(list(range(1, len(logprobs) + 2)), logprobs, start, dtype)


def test_the_record_carries_decimal_strings_and_the_distance_moved() -> None:
    canary = _canary([-1.5, -2.25, -0.125], [-1.0, -2.25, -0.625])
    assert canary.logprobs == ["-1.5", "-2.25", "-0.125"]
    assert canary.start_distance == "0.277778"  # (0.5/1.5 + 0 + 0.5/1) / 3
    assert AdapterCanary.model_validate(canary.to_wire()) == canary


def test_a_record_needs_one_logprob_per_token_after_the_first() -> None:
    with pytest.raises(ValidationError, match="2 values for 2 tokens"):
        AdapterCanary.model_validate(
            {"tokenIds": [1, 2], "logprobs": ["-1", "-2"], "dtype": "float32", "startDistance": "0.1"}
        )
    with pytest.raises(ValidationError, match="logprobs"):
        AdapterCanary.model_validate(
            {"tokenIds": [1, 2], "logprobs": ["nan"], "dtype": "float32", "startDistance": "0.1"}
        )


def _vllm_answer(token_ids: list[int], logprobs: list[float]) -> dict[str, Any]:
    """The shape of vLLM 0.32's completions answer with prompt_logprobs=0 (a token id key per entry)."""
    entries: list[Any] = [None]
    entries += [
        {str(t): {"logprob": lp, "rank": 3, "decoded_token": "x"}}
        for t, lp in zip(token_ids[1:], logprobs, strict=True)
    ]
    return {"choices": [{"index": 0, "text": "y", "prompt_logprobs": entries}]}


def test_the_replicas_logprobs_are_read_from_vllms_prompt_logprobs() -> None:
    canary = _canary([-1.5, -2.25, -0.125], [0, 0, 0])
    body = request_body("step-3", canary)
    assert body == {
        "model": "step-3",
        "prompt": [1, 2, 3, 4],
        "max_tokens": 1,
        "temperature": 0,
        "prompt_logprobs": 0,
    }
    assert served_logprobs(_vllm_answer([1, 2, 3, 4], [-1.5, -2.0, -0.1]), canary.token_ids) == [
        -1.5,
        -2.0,
        -0.1,
    ]


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ({"choices": []}, "no choices"),
        ({"choices": [{"prompt_logprobs": None}]}, "no entries"),
        ({"choices": [{"prompt_logprobs": [None, {"2": {"logprob": -1}}]}]}, "2 entries for 4"),
        (_vllm_answer([1, 9, 3, 4], [-1, -1, -1]), r"prompt_logprobs\[1\] lacks the prompt's token 2"),
        (
            {"choices": [{"prompt_logprobs": [None, {"2": {"logprob": "x"}}, {"3": -1}, {"4": -1}]}]},
            r"prompt_logprobs\[1\] is not a number",
        ),
    ],
    ids=["no-choice", "none", "short", "other-token", "not-a-number"],
)
def test_a_malformed_answer_is_an_error_naming_the_problem(answer: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        served_logprobs(answer, [1, 2, 3, 4])


def test_the_verdict_uses_the_coarser_dtypes_tolerance_and_knows_when_it_cannot_tell() -> None:
    canary = _canary([-1.0, -2.0], [-1.5, -2.5])  # moved 0.375 (relative): verifiable in every dtype
    assert check(canary, [-1.0, -2.0], "float32").matches
    assert check(canary, [-1.00005, -2.00005], "float32").matches
    off = check(canary, [-1.1, -2.1], "float32")
    assert not off.matches
    assert off.verifiable
    assert off.describe() == "canary logprobs off by 0.075 (mean relative; tolerance 0.0001)"
    # A float32 checkpoint served in bfloat16 (a GPU Deployment) is held to bfloat16's tolerance.
    assert check(canary, [-1.02, -2.02], "bfloat16").matches
    assert not check(canary, [-1.02, -2.02], "float32").matches
    assert check(_canary([-1.0, -2.0], [-1.5, -2.5], "bfloat16"), [-1.02, -2.02], "float32").matches
    assert TOLERANCE["float32"] < TOLERANCE["float16"] < TOLERANCE["bfloat16"]
    still = _canary([-1.0, -2.0], [-1.00002, -2.00002])  # moved less than the tolerance
    assert not check(still, [-1.0, -2.0], "float32").verifiable


def test_the_difference_is_relative_to_the_logprobs_magnitude() -> None:
    """Unlikely tokens (logprob -10) may differ by 0.1 in bfloat16; likely ones (-0.1) by 0.01."""
    assert mean_relative_difference([-10.0, -0.1], [-10.1, -0.11]) == pytest.approx((0.01 + 0.01) / 2)
