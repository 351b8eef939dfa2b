"""Where the base model and the parent adapter come from: the user's storage, a local path, or
(only when explicitly allowed) the Hugging Face Hub."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rft.api.model import FileDigest
from rft.contracts.trainer_config import FailureReason
from rft.storage import DigestMismatch, NotFound, list_objects, parse_url
from rft.storage.checkpoints import FileRecord, fetch_checkpoint
from rft.storage.model_folder import fetch_pinned

from rft_trainer.errors import BadInputError

STORAGE_SCHEMES = ("s3://", "gs://", "file://")
# The in-step checkpoint's scratch prefix inside the output location (rft_trainer.resume).
RESUME_DIR = "_resume"


def is_storage_url(location: str) -> bool:
    """True for s3://, gs:// and file:// URLs (fetched with digest checks); False for plain paths."""
    return location.startswith(STORAGE_SCHEMES)


@dataclass(frozen=True)
class ModelSource:
    """A model directory ready for `from_pretrained`, and the lineage metadata found with it."""

    location: str
    local_files_only: bool
    metadata: dict[str, Any] = field(default_factory=dict)


def fetch_base_model(
    url: str,
    scratch: Path,
    *,
    allow_hub_download: bool,
    files_digest: str | None = None,
    pinned: Sequence[FileDigest] = (),
) -> ModelSource:
    """Fetch a base model from storage (verified: against the pins of the base Model's check when
    given, else against its commit manifest), use a local directory in place, or name a hub repo."""
    if is_storage_url(url):
        target = scratch / "base-model"
        if files_digest:
            records = [FileRecord(p.path, p.sha256, p.size) for p in pinned] or None
            try:
                fetch_pinned(url, target, files_digest, records)
            except (NotFound, DigestMismatch) as exc:
                raise BadInputError("ModelLoadFailed", f"base model at {url}: {exc}") from None
            return ModelSource(str(target), local_files_only=True)
        metadata = _fetch(url, target, "ModelLoadFailed", "base model")
        return ModelSource(str(target), local_files_only=True, metadata=metadata)
    if Path(url).is_dir():
        return ModelSource(url, local_files_only=True)
    if allow_hub_download:
        return ModelSource(url, local_files_only=False)
    raise BadInputError(
        "ModelLoadFailed",
        f"base model {url!r} is neither a storage URL nor a local directory, and downloads from the "
        "Hugging Face Hub are disabled (allowHubDownload: false)",
    )


def fetch_parent_adapter(url: str, scratch: Path, parent_name: str) -> tuple[Path, dict[str, Any]]:
    """Fetch the parent LoRA checkpoint (verified against its commit manifest) and its metadata."""
    target = scratch / "parent-adapter"
    if is_storage_url(url):
        return target, _fetch(url, target, "IncompatibleCheckpoint", f"parent checkpoint {parent_name!r}")
    path = Path(url)
    if not path.is_dir():
        raise BadInputError(
            "IncompatibleCheckpoint", f"parent checkpoint {parent_name!r}: {url} is not a directory"
        )
    return target, fetch_checkpoint(url, target)


def _fetch(url: str, target: Path, reason: FailureReason, what: str) -> dict[str, Any]:
    try:
        return fetch_checkpoint(url, target)
    except NotFound as exc:
        raise BadInputError(reason, f"{what} at {url} is not available: {exc}") from None
    except DigestMismatch as exc:
        raise BadInputError(reason, f"{what} at {url} failed its digest check: {exc}") from None


def output_is_free(url: str) -> bool:
    """True when nothing (committed or not) is stored under the output prefix yet, apart from the
    in-step checkpoint of an earlier pod of the same step (which this run continues from)."""
    return not [o for o in list_objects(url.rstrip("/") + "/") if not is_resume_object(url, o.url)]


def resume_prefix(output_url: str) -> str:
    """`<output>/_resume/`: the scratch prefix of the in-step checkpoint."""
    return parse_url(output_url).as_prefix().join(RESUME_DIR).as_prefix().url


def is_resume_object(output_url: str, object_url: str) -> bool:
    """Whether a listed object of the output prefix belongs to the in-step checkpoint."""
    return parse_url(object_url).url.startswith(resume_prefix(output_url))
