"""rft-operator's shared Python package: the API models (`rft.api`), storage, row format, SDK, CLI.

`from rft import LLM, Dataset, ReinforcementStep` loads the SDK on first use only, so the
operator and the trainer can `import rft.api` without the SDK's dependencies.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rft.sdk.dataset import Dataset
    from rft.sdk.llm import LLM
    from rft.sdk.step import ReinforcementStep

__all__ = ["LLM", "Dataset", "ReinforcementStep"]

_SDK_EXPORTS = frozenset(__all__)


def __getattr__(name: str) -> Any:
    if name in _SDK_EXPORTS:
        return getattr(importlib.import_module("rft.sdk"), name)
    raise AttributeError(f"module 'rft' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
