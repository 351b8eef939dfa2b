"""The contract between the operator and the model check Job (`python -m rft.pods.check_model`).

The Job reads a base Model's folder once under the Model's ServiceAccount and writes a
`ModelCheckSummary` (JSON, under the 4096 bytes Kubernetes keeps) to its termination log; the
operator pins what it reports in the Model's status, and every pod that later fetches the folder
is given the pins (`PINNED_FILES_ENV`, `FILES_DIGEST_ENV`) and refuses files that differ.

Exit codes: `EXIT_OK`; `EXIT_INVALID` (not a loadable model: a retry will not help, the Job fails
at once); `EXIT_STORAGE` (the bucket could not be read: the Job retries).

This module imports neither the storage clients nor torch: the operator uses it.
"""

from __future__ import annotations

import json
from typing import Final, Literal

from pydantic import Field, ValidationError

from rft.api.common import ApiModel
from rft.api.model import FileDigest
from rft.contracts import exit_codes

EXIT_OK: Final = exit_codes.EXIT_OK
EXIT_INVALID: Final = exit_codes.EXIT_BAD_INPUT
EXIT_STORAGE: Final = exit_codes.EXIT_RETRYABLE
TERMINATION_MESSAGE_LIMIT: Final = exit_codes.TERMINATION_MESSAGE_LIMIT
CHECK_CONTAINER = "check"
FILES_DIGEST_ENV = "RFT_MODEL_FILES_DIGEST"
PINNED_FILES_ENV = "RFT_MODEL_PINNED_FILES"

CheckReason = Literal[
    "Checked",
    # the folder is not a loadable model (EXIT_INVALID)
    "NotAModel",
    "NoWeights",
    "CorruptWeights",
    "NoTokenizer",
    "DigestMismatch",
    "TooManyFiles",
    # the bucket could not be read (EXIT_STORAGE)
    "ModelNotFound",
    "AccessDenied",
    "CredentialsError",
    "StorageError",
    "InternalError",
]


class ModelCheckSummary(ApiModel):
    """What the model check reports through its termination message."""

    ok: bool
    reason: CheckReason
    message: str = Field(default="", max_length=1024)
    format: Literal["huggingface", "committed"] | None = None
    architecture: str | None = Field(default=None, max_length=128)
    model_type: str | None = Field(default=None, max_length=64)
    parameters: int | None = Field(default=None, ge=0)
    dtype: str | None = Field(default=None, max_length=16)
    file_count: int | None = Field(default=None, ge=0)
    total_bytes: int | None = Field(default=None, ge=0)
    files_digest: str | None = Field(default=None, pattern=r"^sha256:[0-9a-f]{64}$")
    files: list[FileDigest] | None = Field(
        default=None,
        description="Every served file with its sha256, when the list fits in the termination "
        "message; else only file_count and files_digest (which pins them all the same).",
    )
    ignored: int = Field(default=0, ge=0, description="Files not served (subfolders, dot files, pickles).")

    def termination_message(self) -> bytes:
        """The JSON document, under TERMINATION_MESSAGE_LIMIT bytes (the file list dropped if needed)."""
        for candidate in (self, self.model_copy(update={"files": None})):
            data = json.dumps(candidate.to_wire(), separators=(",", ":")).encode()
            if len(data) <= TERMINATION_MESSAGE_LIMIT:
                return data
        short = self.model_copy(update={"files": None, "message": self.message[:200]})
        return json.dumps(short.to_wire(), separators=(",", ":")).encode()

    @classmethod
    def parse(cls, text: str | None) -> ModelCheckSummary | None:
        """The summary in a termination message, or None when there is none or it is malformed."""
        if not text:
            return None
        try:
            return cls.model_validate(json.loads(text))
        except (ValueError, ValidationError):
            return None


def pinned_files_json(files: list[FileDigest]) -> str:
    """The pins as the fetching pod reads them from PINNED_FILES_ENV."""
    return json.dumps([f.to_wire() for f in files], separators=(",", ":"))
