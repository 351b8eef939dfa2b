"""Helpers shared by the trainer tests (a plain module: the test folders are not packages)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rft.contracts.trainer_config import TrainerConfig

ConfigFactory = Callable[..., TrainerConfig]


def sha256_of(data: bytes) -> str:
    """The digest string a validated Dataset records."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def samples_row(prompt: str, completions: list[tuple[str, float]]) -> dict[str, Any]:
    """A row in the managed service's samples format."""
    return {
        "samples": [
            {
                "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": text}],
                "evals": {"score": reward},
            }
            for text, reward in completions
        ]
    }


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    """Rows as JSONL bytes."""
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def continuation_config(first: TrainerConfig, tmp_path: Path, **changes: Any) -> TrainerConfig:
    """`first`'s config for the step that continues its checkpoint (outputs under `tmp_path`)."""
    fields: dict[str, Any] = {
        "step_name": "step-2",
        "parent_adapter_url": first.output_url,
        "parent_model_name": first.output_model_name,
        "output_url": str(tmp_path / "out" / "model-2"),
        "output_model_name": "model-2",
        "termination_log": str(tmp_path / "termination-log-2"),
    }
    fields.update(changes)
    return first.model_copy(update=fields)
