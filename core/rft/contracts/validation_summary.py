"""The contract between the operator and the dataset validation Job (`python -m rft.pods.validate`).

The Job writes a `ValidationSummary` (JSON, under the 4096 bytes Kubernetes keeps of a termination
message) to its termination log; the operator reads it into the Dataset's status. Both sides
import this module, so a field one writes is a field the other reads.

Exit codes: `EXIT_OK`; `EXIT_INVALID` (the dataset is bad: a retry will not help, the Job fails at
once); `EXIT_STORAGE` (the object could not be read: the Job retries).

This module imports neither the storage clients nor torch: the operator uses it.
"""

from __future__ import annotations

import json
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel

from rft.api.dataset import RowError
from rft.contracts import exit_codes

EXIT_OK: Final = exit_codes.EXIT_OK
EXIT_INVALID: Final = exit_codes.EXIT_BAD_INPUT
EXIT_STORAGE: Final = exit_codes.EXIT_RETRYABLE

# Why the object could not be validated at all (`error` says more).
ErrorKind = Literal["credentials", "access-denied", "not-found", "invalid-source", "storage", "internal"]

# The Dataset's Ready condition reason for each kind.
FAILURE_REASONS: dict[str, str] = {
    "credentials": "CredentialsError",
    "access-denied": "AccessDenied",
    "not-found": "SourceNotFound",
    "invalid-source": "InvalidSource",
    "storage": "StorageError",
    "internal": "InternalError",
}


class ValidationSummary(BaseModel):
    """What the validator reports (camelCase on the wire)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    ok: bool
    resolved_source: str | None = None
    rows: int | None = None
    valid_rows: int | None = None
    format: str | None = None
    min_samples: int | None = None
    max_samples: int | None = None
    reward_keys: list[str] = []
    bytes: int | None = None
    digest: str | None = None
    # The first malformed rows; `error_count` counts them all.
    errors: list[RowError] = []
    error_count: int | None = None
    errors_omitted: int | None = None
    error: str | None = None
    # An ErrorKind; read as any string, so that a newer validator's kind still reaches the status.
    error_kind: str | None = None

    def failure_reason(self) -> str:
        """The condition reason of a summary that could not read its object."""
        return FAILURE_REASONS.get(self.error_kind or "", "ValidationError")


def parse_summary(text: str | None) -> ValidationSummary | None:
    """The summary in a termination message, or None when there is none or it is not one."""
    if not text:
        return None
    try:
        return ValidationSummary.model_validate(json.loads(text))
    except (ValueError, ValidationError):
        return None
