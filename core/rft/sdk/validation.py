"""Argument checks that raise errors naming the argument, before anything reaches the API server."""

from __future__ import annotations

from collections.abc import Iterable

import annotated_types
from pydantic import BaseModel, ValidationError
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticUndefined


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


def field_bounds(model: type[BaseModel], field: str) -> tuple[int, int]:
    """The inclusive bounds of integer field `field` of API model `model`, from its `Field`
    metadata: the SDK checks an argument against the same bounds the schema will (one source)."""
    low: int | None = None
    high: int | None = None
    for constraint in model.model_fields[field].metadata:
        if isinstance(constraint, annotated_types.Ge):
            low = int(constraint.ge)  # type: ignore[call-overload]
        elif isinstance(constraint, annotated_types.Gt):
            low = int(constraint.gt) + 1  # type: ignore[call-overload]
        elif isinstance(constraint, annotated_types.Le):
            high = int(constraint.le)  # type: ignore[call-overload]
        elif isinstance(constraint, annotated_types.Lt):
            high = int(constraint.lt) - 1  # type: ignore[call-overload]
    if low is None or high is None:
        raise LookupError(f"{model.__name__}.{field} has no lower and upper bound")
    return low, high


def field_default(model: type[BaseModel], field: str) -> object:
    """The default that API model `model` gives `field` (read at call time, never copied): an SDK
    argument left as None means this."""
    info = model.model_fields[field]
    if info.default is PydanticUndefined:
        raise LookupError(f"{model.__name__}.{field} has no default value")
    return info.default


def check_field_int(value: object, argument: str, model: type[BaseModel], field: str) -> int:
    """`check_int` within the bounds the API model gives `field`."""
    low, high = field_bounds(model, field)
    return check_int(value, argument, minimum=low, maximum=high)


def check_optional_field_int(value: object, argument: str, model: type[BaseModel], field: str) -> int | None:
    """Like `check_field_int`, but None passes through."""
    return None if value is None else check_field_int(value, argument, model, field)


def max_items(model: type[BaseModel], field: str) -> int:
    """The `max_length` the API model gives list or map field `field`."""
    for constraint in model.model_fields[field].metadata:
        if isinstance(constraint, annotated_types.MaxLen):
            return int(constraint.max_length)
    raise LookupError(f"{model.__name__}.{field} has no max_length")


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
