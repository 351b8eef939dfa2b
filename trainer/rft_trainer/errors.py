"""Failures the trainer reports, classified by who can fix them (this decides the exit code).

Storage and other infrastructure failures are not wrapped: `rft_trainer.main.classify` maps
`rft.storage.StorageError` and unexpected exceptions to exit code 2 (a retry may help).
"""

from __future__ import annotations

from rft.contracts.trainer_config import EXIT_BAD_INPUT, FailureReason


class TrainerError(Exception):
    """A failure with a machine-readable reason and the exit code that tells retry from give-up."""

    exit_code: int = EXIT_BAD_INPUT

    def __init__(self, reason: FailureReason, message: str) -> None:
        super().__init__(message)
        self.reason: FailureReason = reason
        self.message = message


class BadInputError(TrainerError):
    """Bad config, data or checkpoint: the same input fails again, so do not retry (exit 1)."""

    exit_code = EXIT_BAD_INPUT
