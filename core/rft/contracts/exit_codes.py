"""What a pod program's exit code and termination message mean to the operator, for every pod.

The trainer, the dataset validator and the model check exit with one of these; the operator's
Jobs fail at once on `EXIT_BAD_INPUT` (`podFailurePolicy` FailJob: a retry will not help) and
retry on `EXIT_RETRYABLE` (storage or hardware trouble) up to the Job's backoff limit. Each
contract module names them in its own words (`trainer_config.EXIT_INFRASTRUCTURE`,
`validation_summary.EXIT_INVALID`, ...): those are these values, never copies.
"""

from __future__ import annotations

from typing import Final

EXIT_OK: Final = 0
"""The program did its work; its termination message is its report."""

EXIT_BAD_INPUT: Final = 1
"""The input is wrong (config, data, checkpoint, model folder): the Job fails at once."""

EXIT_RETRYABLE: Final = 2
"""Storage, credentials or hardware trouble: the Job retries."""

TERMINATION_MESSAGE_LIMIT: Final = 4096
"""Kubernetes keeps at most this many bytes of a container's termination message."""
