"""Reward combination and whole-dataset validation."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from rft.rows import (
    RewardError,
    RowError,
    combine_rewards,
    parse_row,
    validate_bytes,
    validate_lines,
)


def _row(scores: list[dict[str, float]], prompt: str = "p") -> bytes:
    return json.dumps(
        {"prompt": prompt, "completions": [f"c{i}" for i in range(len(scores))], "rewards": scores}
    ).encode()


def _scalar_row(n: int = 2, prompt: str = "p") -> bytes:
    return json.dumps(
        {"prompt": prompt, "completions": [f"c{i}" for i in range(n)], "rewards": [i / n for i in range(n)]}
    ).encode()


# --- combine_rewards -------------------------------------------------------------------------------


def test_single_reward_needs_no_weights() -> None:
    assert combine_rewards({"score": 0.7}) == 0.7
    assert combine_rewards({"score": 2}, {}) == 2.0


def test_several_rewards_without_weights_is_an_error_naming_the_keys() -> None:
    with pytest.raises(
        RewardError, match=r"rewards have 2 keys \(acc, fmt\); .* e\.g\. \{'acc': 1\.0, 'fmt': 1\.0\}"
    ):
        combine_rewards({"fmt": 1.0, "acc": 0.0})
    with pytest.raises(RewardError, match=r"rewards have 0 keys \(none\)"):
        combine_rewards({})


def test_weighted_sum() -> None:
    rewards = {"acc": 1.0, "fmt": 0.5, "len": -2.0}
    assert combine_rewards(rewards, {"acc": 2.0, "fmt": 0.5}) == pytest.approx(2.25)  # len has no weight
    assert combine_rewards(rewards, {"len": 1}) == -2.0


def test_weights_naming_missing_keys_are_refused() -> None:
    with pytest.raises(RewardError, match=r"missing from the rewards: bonus, speed \(rewards have: acc\)"):
        combine_rewards({"acc": 1.0}, {"acc": 1.0, "speed": 1.0, "bonus": 2.0})


@pytest.mark.parametrize("weight", [float("nan"), float("inf"), True, "1"])
def test_weights_must_be_finite_numbers(weight: Any) -> None:
    with pytest.raises(RewardError, match="reward weight for 'acc' must be a finite number"):
        combine_rewards({"acc": 1.0}, {"acc": weight})


def test_group_combined_rewards_names_the_line() -> None:
    group = parse_row(9, _row([{"acc": 1, "fmt": 0}, {"acc": 0, "fmt": 1}]))
    assert group.combined_rewards({"acc": 1.0, "fmt": 0.25}) == [1.0, 0.25]
    with pytest.raises(RowError, match=r"^line 9: rewards have 2 keys"):
        group.combined_rewards(None)


# --- validate_lines / validate_bytes ---------------------------------------------------------------


def test_good_dataset_report() -> None:
    lines = [_scalar_row(2), _scalar_row(4), _scalar_row(3)]
    data = b"\n".join(lines) + b"\n\n"
    report = validate_bytes(data)
    assert report.ok
    assert report.errors == []
    assert report.error_count == 0
    assert (report.rows, report.format, report.min_samples, report.max_samples) == (
        3,
        "prompt-completions",
        2,
        4,
    )
    assert report.reward_keys == ["score"]
    assert report.bytes == len(data)
    assert report.digest == "sha256:" + hashlib.sha256(data).hexdigest()


def test_validate_lines_has_no_digest_of_its_own() -> None:
    report = validate_lines([_scalar_row()] * 3)
    assert report.ok
    assert report.bytes is None
    assert report.digest is None


def test_errors_carry_line_numbers_and_counting_continues() -> None:
    lines = [_scalar_row(), b"{bad", _scalar_row(), b"[]", _scalar_row(), b'{"prompt": "p"}']
    report = validate_lines(lines)
    assert not report.ok
    assert report.rows == 6
    assert report.errors == [
        (2, "not valid JSON: Expecting property name enclosed in double quotes at column 2"),
        (4, "a row must be a JSON object, got an array"),
        (6, "missing 'completions'"),
    ]
    assert report.min_samples == 2  # from the good rows


def test_reward_keys_are_the_sorted_union() -> None:
    lines = [
        _row([{"b": 1}, {"b": 0}]),
        _row([{"a": 1, "c": 2}, {"a": 0, "c": 1}]),
        _row([{"b": 1}, {"b": 1}]),
    ]
    assert validate_lines(lines).reward_keys == ["a", "b", "c"]


def test_reward_weights_are_checked_on_every_row() -> None:
    lines = [
        _row([{"acc": 1, "fmt": 1}, {"acc": 0, "fmt": 1}]),
        _row([{"acc": 1}, {"acc": 0}]),
        _scalar_row(),
    ]
    report = validate_lines(lines, reward_weights={"acc": 1.0, "fmt": 0.1})
    assert report.errors == [
        (2, "reward weights name keys missing from the rewards: fmt (rewards have: acc)"),
        (3, "reward weights name keys missing from the rewards: acc, fmt (rewards have: score)"),
    ]


@pytest.mark.parametrize(
    ("rows", "min_rows", "expected"),
    [
        (0, 3, (0, "the dataset has no rows, only 1 blank line(s); at least 3 rows are required")),
        (2, 3, (0, "the dataset has 2 row(s); at least 3 are required")),
    ],
)
def test_too_few_rows(rows: int, min_rows: int, expected: tuple[int, str]) -> None:
    report = validate_lines([_scalar_row()] * rows + [b""], min_rows=min_rows)
    assert report.errors == [expected]
    assert not report.ok


def test_too_many_rows_names_the_first_row_over_the_limit() -> None:
    lines = [_scalar_row()] * 3 + [b"not even json"] * 4
    report = validate_lines(lines, max_rows=5, min_rows=1)
    assert report.rows == 7
    # Rows past the limit are counted but not parsed, so the bad JSON on lines 6-7 is not reported.
    assert report.errors == [
        (4, "not valid JSON: Expecting value at column 1"),
        (5, "not valid JSON: Expecting value at column 1"),
        (6, "row 6 is over the limit of 5 rows"),
    ]


def test_max_errors_keeps_the_first_and_counts_all() -> None:
    report = validate_lines([b"x"] * 50, max_errors=5)
    assert [line for line, _ in report.errors] == [1, 2, 3, 4, 5]
    assert report.error_count == 50


def test_oversized_line_is_reported_and_the_rest_still_validated() -> None:
    big = json.dumps({"prompt": "p" * 5000, "completions": ["a", "b"], "rewards": [0, 1]}).encode()
    data = b"\n".join([_scalar_row(), big, _scalar_row(), _scalar_row()])
    report = validate_bytes(data, max_line_bytes=1024)
    assert report.errors == [(2, "line is longer than the limit of 1024 bytes")]
    assert report.rows == 4
    assert report.bytes == len(data)


def test_mixed_formats_are_reported_against_the_first_good_row() -> None:
    samples = json.dumps(
        {
            "samples": [
                {
                    "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
                    "evals": {"s": 1},
                },
                {
                    "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "b"}],
                    "evals": {"s": 0},
                },
            ]
        }
    ).encode()
    report = validate_lines([b"{", samples, _scalar_row(), samples])
    assert report.format == "samples"
    assert report.errors[1] == (
        3,
        "row is in the prompt-completions format but line 2 is in the samples format; a dataset uses one format",
    )


def test_explicit_format_is_reported_even_without_good_rows() -> None:
    report = validate_lines([b"[]"], fmt="samples", min_rows=1)
    assert report.format == "samples"
    assert not report.ok
