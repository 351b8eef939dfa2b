"""The Python SDK, shaped like the managed RFT service's (`from rft import LLM, Dataset`).

Attributes load lazily so that importing a submodule (errors, names) does not pull in the
Kubernetes and OpenAI clients.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rft.sdk.dataset import Dataset
    from rft.sdk.llm import LLM
    from rft.sdk.step import ReinforcementStep

__all__ = ["LLM", "Dataset", "ReinforcementStep"]

_EXPORTS = {
    "LLM": "rft.sdk.llm",
    "Dataset": "rft.sdk.dataset",
    "ReinforcementStep": "rft.sdk.step",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'rft.sdk' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
