"""A trainer pod played by kwok: the annotations that decide its outcome and the termination
messages the real trainer would write (used by the operator's tests and its scale benchmark)."""

from __future__ import annotations

from rft.contracts.trainer_config import TrainerFailure, TrainerResult

from rft_devcluster.kwok_stages import FAKE_DELAY, FAKE_EXIT_CODE, FAKE_TERMINATION_MESSAGE

DATASET_DIGEST = "sha256:" + "d" * 64
"""The digest a fake READY Dataset reports and a fake trainer result was trained on."""


def success_message(
    output: str = "s3://bucket-a/rft/models/out/", loss: str = "0.25", reward: str = "0.5"
) -> str:
    """A trainer result summary, as the trainer writes it to its termination log."""
    return TrainerResult.model_validate(
        {
            "outputLocation": output,
            "files": [{"path": "adapter_model.safetensors", "sha256": "e" * 64, "size": 1234}],
            "metrics": {"loss": loss, "mean_reward": reward},
            "datasetDigest": DATASET_DIGEST,
            "lora": {"rank": 16, "alpha": 32, "targetModules": ["q_proj", "v_proj"]},
            "training": {
                "learningRate": "1e-4",
                "maxContextLength": 8192,
                "batchSize": 32768,
                "epochs": 1,
                "lossMethod": "grpo",
            },
        }
    ).model_dump_json(by_alias=True)


def failure_message(reason: str, message: str) -> str:
    """A trainer failure summary, as the trainer writes it to its termination log."""
    return TrainerFailure.model_validate({"reason": reason, "message": message}).model_dump_json(
        by_alias=True
    )


def fake_pod(exit_code: int = 0, message: str | None = None, delay: str | None = None) -> dict[str, str]:
    """Annotations that make a kwok node play the trainer pod's part."""
    out = {FAKE_EXIT_CODE: str(exit_code)}
    if message is not None:
        out[FAKE_TERMINATION_MESSAGE] = message
    if delay is not None:
        out[FAKE_DELAY] = delay
    return out
