"""Conditions in the API conventions' shape, updated without losing lastTransitionTime."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from rft.api import Condition


def set_condition(
    conditions: list[Condition],
    type_: str,
    status: bool | None,
    reason: str,
    message: str,
    generation: int,
    now: datetime,
) -> list[Condition]:
    """A new list with condition `type_` set; lastTransitionTime changes only with the status."""
    wanted: Literal["True", "False", "Unknown"] = (
        "Unknown" if status is None else ("True" if status else "False")
    )
    out: list[Condition] = []
    found = False
    for cond in conditions:
        if cond.type != type_:
            out.append(cond)
            continue
        found = True
        changed = cond.status != wanted
        out.append(
            Condition(
                type=type_,
                status=wanted,
                reason=reason,
                message=message,
                last_transition_time=now
                if changed or cond.last_transition_time is None
                else cond.last_transition_time,
                observed_generation=generation,
            )
        )
    if not found:
        out.append(
            Condition(
                type=type_,
                status=wanted,
                reason=reason,
                message=message,
                last_transition_time=now,
                observed_generation=generation,
            )
        )
    return out


def get_condition(conditions: list[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)
