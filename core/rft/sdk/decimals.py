"""Numbers as the decimal strings the API stores (floats are discouraged in Kubernetes specs)."""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

from rft.api.common import DECIMAL_PATTERN, SIGNED_DECIMAL_PATTERN

_UNSIGNED = re.compile(DECIMAL_PATTERN)
_SIGNED = re.compile(SIGNED_DECIMAL_PATTERN)


def decimal_string(value: object, argument: str, *, signed: bool = False, positive: bool = False) -> str:
    """Spell `value` as a decimal string that parses back to exactly the same number.

    Floats use `repr`, the shortest string that round-trips (`1e-4` -> `"0.0001"`,
    `1e-05` -> `"1e-05"`); ints and `Decimal`s are spelled as is; strings must already be
    decimals. Negative numbers need `signed`; `positive` refuses zero. NaN, infinities and bools
    are refused. Errors name `argument`.
    """
    if isinstance(value, bool):
        raise TypeError(f"{argument}: expected a number, got a bool")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{argument}: must be a finite number, got {value!r}")
        text = repr(value)
    elif isinstance(value, int | Decimal):
        text = str(value)
    elif isinstance(value, str):
        text = value.strip()
    else:
        raise TypeError(f"{argument}: expected a number, got {type(value).__name__}")
    pattern = _SIGNED if signed else _UNSIGNED
    if not pattern.match(text):
        kind = "a decimal number" if signed else "a non-negative decimal number"
        raise ValueError(f"{argument}: {value!r} is not {kind}")
    if positive and decimal_value(text) == 0:
        raise ValueError(f"{argument}: must be greater than 0, got {value!r}")
    return text


def decimal_value(text: str) -> Decimal:
    """The exact value of a decimal string (for comparing `"1e-4"` with `"0.0001"`)."""
    try:
        return Decimal(text)
    except InvalidOperation as error:
        raise ValueError(f"{text!r} is not a decimal number") from error
