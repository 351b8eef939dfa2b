"""Argument checks that raise errors naming the argument, before anything reaches the API server."""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import ValidationError
from pydantic.alias_generators import to_camel


def check_int(value: object, argument: str, *, minimum: int, maximum: int) -> int:
    """`value` as an int within [minimum, maximum]; bools and floats are refused."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{argument}: expected an integer, got {type(value).__name__} {value!r}")
    if not minimum <= value <= maximum:
        raise ValueError(f"{argument}: must be between {minimum} and {maximum}, got {value}")
    return value


def check_optional_int(value: object, argument: str, *, minimum: int, maximum: int) -> int | None:
    """Like `check_int`, but None passes through."""
    return None if value is None else check_int(value, argument, minimum=minimum, maximum=maximum)


def check_choice(value: object, argument: str, choices: Iterable[str]) -> str:
    """`value` if it is one of `choices`, else a ValueError listing them."""
    allowed = tuple(choices)
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{argument}: must be one of {', '.join(allowed)}; got {value!r}")
    return value


def check_bool(value: object, argument: str) -> bool:
    """`value` if it is a bool."""
    if not isinstance(value, bool):
        raise TypeError(f"{argument}: expected True or False, got {type(value).__name__} {value!r}")
    return value


def check_positive_number(value: object, argument: str) -> float:
    """`value` as a float > 0 (timeouts, poll intervals)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{argument}: expected a number of seconds, got {type(value).__name__}")
    if not value > 0:
        raise ValueError(f"{argument}: must be greater than 0, got {value}")
    return float(value)


def explain_validation_error(error: ValidationError, arguments: dict[str, str], subject: str) -> ValueError:
    """Turn a Pydantic error on a spec into a ValueError naming the SDK argument for each field.

    `arguments` maps a dotted wire path (`accelerator.count`) to the argument that set it; error
    locations are matched in camelCase whichever spelling the input used.
    """
    problems = []
    for item in error.errors():
        path = ".".join(to_camel(part) if isinstance(part, str) else str(part) for part in item["loc"])
        argument = arguments.get(path, f"{subject}.{path}")
        problems.append(f"{argument}: {item['msg']}")
    return ValueError("; ".join(problems))
