"""The module each pod program runs as (`python -m <module>`): the operator's builders put these in
the pods' commands, the local node maps images to them, and a test checks each one is a runnable
module of the package that ships in its image. A program that moves changes here, once.
"""

from __future__ import annotations

from typing import Final

TRAINER: Final = "rft_trainer"
"""The training Job (trainer image; `torchrun -m` for several GPUs)."""

DATASET_VALIDATOR: Final = "rft.pods.validate"
"""The Dataset's validation Job (trainer image)."""

MODEL_CHECK: Final = "rft.pods.check_model"
"""The base Model's check Job (serving-helpers image)."""

MODEL_FETCH: Final = "rft.pods.fetch"
"""The server pods' init container that copies the model from the bucket (serving-helpers image)."""

ADMIN_GUARD: Final = "rft.pods.admin_guard"
"""The server pods' init container that installs vLLM's admin middleware (serving-helpers image)."""

ADAPTER_SIDECAR: Final = "rft.pods.adapter_sidecar"
"""The server pods' adapter-loading sidecar (serving-helpers image)."""

TRAINING_SESSION: Final = "rft_trainer.session"
"""A TrainingSession's server: the Tinker API over the trainer core (trainer image)."""

ALL: Final = (
    TRAINER,
    DATASET_VALIDATOR,
    MODEL_CHECK,
    MODEL_FETCH,
    ADMIN_GUARD,
    ADAPTER_SIDECAR,
    TRAINING_SESSION,
)


def python_command(module: str, *args: str) -> list[str]:
    """`python -m <module> [args...]`: a pod program's command."""
    return ["python", "-m", module, *args]
