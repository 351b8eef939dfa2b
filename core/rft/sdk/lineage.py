"""The chain of checkpoints behind a Model: parent after parent back to the first LoRA, then its base."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from rft.api.model import Model

MAX_CHAIN = 10_000


@dataclass(frozen=True)
class Lineage:
    """Checkpoints oldest first (the base model, if found, comes first), and what broke the chain."""

    models: list[Model]
    missing: str | None = None
    cycle: bool = False

    @property
    def checkpoints(self) -> list[Model]:
        """The LoRA checkpoints only, oldest first."""
        return [model for model in self.models if model.spec.kind == "lora"]


def lineage(name: str, get_model: Callable[[str], Model | None]) -> Lineage:
    """Follow `spec.parent` from `name`; `get_model` returns a Model by name or None.

    Raises LookupError when `name` itself does not exist. A missing parent or base ends the
    chain and is reported in `missing`; a loop in the parents ends it with `cycle` set.
    """
    first = get_model(name)
    if first is None:
        raise LookupError(f"model {name!r} not found")
    newest_first = [first]
    seen = {name}
    missing: str | None = None
    cycle = False
    current = first
    while current.spec.parent is not None and len(newest_first) < MAX_CHAIN:
        parent_name = current.spec.parent
        if parent_name in seen:
            cycle = True
            break
        parent = get_model(parent_name)
        if parent is None:
            missing = parent_name
            break
        seen.add(parent_name)
        newest_first.append(parent)
        current = parent
    oldest = newest_first[-1]
    if missing is None and not cycle and oldest.spec.kind == "lora" and oldest.spec.base_model:
        base = get_model(oldest.spec.base_model)
        if base is None:
            missing = oldest.spec.base_model
        else:
            newest_first.append(base)
    return Lineage(list(reversed(newest_first)), missing, cycle)


def metric(model: Model, key: str) -> float:
    """A metric from `spec.metrics` as a float (NaN when absent or not a number)."""
    text = model.spec.metrics.get(key)
    if text is None:
        return math.nan
    try:
        return float(text)
    except ValueError:
        return math.nan
