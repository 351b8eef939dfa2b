"""Numbers as decimal strings that parse back to exactly the value given."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest
from rft.sdk.decimals import decimal_string


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1e-4, "0.0001"),
        (1e-5, "1e-05"),
        (0.001, "0.001"),
        (3e-06, "3e-06"),
        (2.5, "2.5"),
        (1.0, "1.0"),
        (0.1 + 0.2, "0.30000000000000004"),
        (7, "7"),
        (Decimal("0.0001"), "0.0001"),
        ("1e-4", "1e-4"),
    ],
)
def test_spelling(value: object, text: str) -> None:
    assert decimal_string(value, "learning_rate") == text


@pytest.mark.parametrize("value", [1e-4, 3.3e-7, 0.1 + 0.2, 123456.789, 5e-324, 1.7976931348623157e308])
def test_floats_round_trip_exactly(value: float) -> None:
    assert float(decimal_string(value, "x")) == value


def test_signed_values_need_signed() -> None:
    assert decimal_string(-0.5, "reward_weights['fmt']", signed=True) == "-0.5"
    with pytest.raises(ValueError, match=r"kl_coefficient: -0.5 is not a non-negative decimal number"):
        decimal_string(-0.5, "kl_coefficient")


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (math.nan, ValueError, "learning_rate: must be a finite number"),
        (math.inf, ValueError, "learning_rate: must be a finite number"),
        (True, TypeError, "learning_rate: expected a number, got a bool"),
        ("fast", ValueError, "learning_rate: 'fast' is not a non-negative decimal number"),
        ([1], TypeError, "learning_rate: expected a number, got list"),
        (0.0, ValueError, "learning_rate: must be greater than 0"),
    ],
)
def test_bad_values_name_the_argument(value: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message.replace("(", r"\(")):
        decimal_string(value, "learning_rate", positive=True)
