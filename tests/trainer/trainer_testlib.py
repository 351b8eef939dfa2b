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


def series_from_bucket(checkpoint_url: str, local_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Download a checkpoint's per-step TensorBoard event files and read them with TensorBoard's own
    reader: tag -> [(optimizer step, value)]."""
    from rft.storage import list_objects, read_bytes  # noqa: PLC0415
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: PLC0415

    prefix = checkpoint_url.rstrip("/") + "/metrics/"
    local_dir.mkdir(parents=True, exist_ok=True)
    events = [info for info in list_objects(prefix) if "tfevents" in info.url.rsplit("/", 1)[-1]]
    assert len(events) == 1, f"expected one event file under {prefix}: {[e.url for e in events]}"
    (local_dir / events[0].url.rsplit("/", 1)[-1]).write_bytes(read_bytes(events[0].url))
    accumulator = EventAccumulator(str(local_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {
        tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()["scalars"]
    }
