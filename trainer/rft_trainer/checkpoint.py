"""Writing the trained adapter with its lineage, and the run's summary for the operator.

The adapter (adapter_model.safetensors + adapter_config.json) is saved to scratch and published
with `rft.storage.checkpoints.publish_checkpoint`: create-only objects, metadata.json, and the
commit marker last, so a reader never sees half a checkpoint and nothing is ever overwritten.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from rft.api.model import FileDigest
from rft.contracts.trainer_config import (
    TERMINATION_MESSAGE_LIMIT,
    FailureReason,
    TrainerConfig,
    TrainerFailure,
    TrainerResult,
)
from rft.storage.checkpoints import publish_checkpoint

METADATA_FORMAT = "rft-operator/lora-adapter/v1"
REQUIRED_METRICS = ("loss", "mean_reward")
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")


def save_adapter(peft_model: Any, out_dir: Path, base_model_name: str) -> Path:
    """Save only the adapter weights and config (no model card) to `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    # Embedding layers are never adapted (block linears only); saying so also stops PEFT from
    # looking the base model up on the Hub.
    peft_model.save_pretrained(str(out_dir), safe_serialization=True, save_embedding_layers=False)
    for path in out_dir.iterdir():
        if path.name not in ADAPTER_FILES:
            path.unlink()  # PEFT also writes a README.md model card
    missing = [name for name in ADAPTER_FILES if not (out_dir / name).is_file()]
    if missing:
        raise RuntimeError(f"PEFT did not write {', '.join(missing)} to {out_dir}")
    # Lineage by name, not the scratch path the base model happened to be loaded from.
    config_path = out_dir / "adapter_config.json"
    adapter_config = json.loads(config_path.read_text(encoding="utf-8"))
    adapter_config["base_model_name_or_path"] = base_model_name
    config_path.write_text(json.dumps(adapter_config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out_dir


def _versions() -> dict[str, str]:
    found = {}
    for package in ("torch", "transformers", "peft", "rft-operator"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found


def build_metadata(
    config: TrainerConfig,
    *,
    dataset_digest: str,
    dataset_rows: int,
    dataset_samples: int,
    metrics: dict[str, str],
    trainable_parameters: int,
) -> dict[str, Any]:
    """The lineage written as metadata.json beside the adapter (publish adds the file digests)."""
    parent = (
        {"name": config.parent_model_name, "location": config.parent_adapter_url}
        if config.parent_adapter_url
        else None
    )
    return {
        "format": METADATA_FORMAT,
        "kind": "lora",
        "name": config.output_model_name,
        "namespace": config.namespace,
        "createdAt": datetime.now(UTC).isoformat(timespec="seconds"),
        "baseModel": {"name": config.base_model_name, "location": config.base_model_url},
        "parent": parent,
        "lora": config.lora_settings().to_wire(),
        "training": config.training_record().to_wire(),
        "trainingParameters": config.training.to_wire(),
        "loss": config.loss.to_wire(),
        "rewardWeights": dict(config.reward_weights),
        "dataset": {
            "location": config.dataset_url,
            "digest": dataset_digest,
            "rows": dataset_rows,
            "samples": dataset_samples,
        },
        "metrics": metrics,
        "trainableParameters": trainable_parameters,
        "software": _versions(),
    }


def publish(adapter_dir: Path, output_url: str, metadata: dict[str, Any]) -> list[FileDigest]:
    """Publish the adapter and its metadata create-only; returns the files' digests."""
    records = publish_checkpoint(adapter_dir, output_url, metadata)
    return [FileDigest(path=r.path, sha256=r.sha256, size=r.size) for r in records]


def result_message(result: TrainerResult) -> str:
    """The termination message; metrics beyond loss and mean_reward, then the canary, are dropped
    if it would not fit."""
    text = json.dumps(result.to_wire(), sort_keys=True, separators=(",", ":"))
    if len(text.encode()) < TERMINATION_MESSAGE_LIMIT:
        return text
    essential = {k: v for k, v in result.metrics.items() if k in REQUIRED_METRICS}
    trimmed = result.model_copy(update={"metrics": essential})
    text = json.dumps(trimmed.to_wire(), sort_keys=True, separators=(",", ":"))
    if len(text.encode()) < TERMINATION_MESSAGE_LIMIT:
        return text
    # Without its canary the checkpoint is served unverified (the Deployment says so).
    return json.dumps(
        trimmed.model_copy(update={"canary": None}).to_wire(), sort_keys=True, separators=(",", ":")
    )


MAX_FAILURE_MESSAGE = 3072


def make_failure(reason: FailureReason, message: str) -> TrainerFailure:
    """A failure summary, with an over-long message cut (the end is usually the least useful part)."""
    if len(message) > MAX_FAILURE_MESSAGE:
        message = message[: MAX_FAILURE_MESSAGE - 3] + "..."
    return TrainerFailure(reason=reason, message=message)


def failure_message(failure: TrainerFailure) -> str:
    """The termination message of a failure, its message cut to fit the limit."""
    text = json.dumps(failure.to_wire(), sort_keys=True, separators=(",", ":"))
    while len(text.encode()) >= TERMINATION_MESSAGE_LIMIT:
        failure = failure.model_copy(
            update={"message": failure.message[: len(failure.message) * 3 // 4] + "..."}
        )
        text = json.dumps(failure.to_wire(), sort_keys=True, separators=(",", ":"))
    return text


def write_termination_log(path: str, message: str) -> None:
    """Write the summary where Kubernetes reads the termination message (best effort outside a pod)."""
    try:
        Path(path).write_text(message, encoding="utf-8")
    except OSError as exc:
        print(f"[rft-trainer] cannot write the termination log {path}: {exc.strerror}", file=sys.stderr)
