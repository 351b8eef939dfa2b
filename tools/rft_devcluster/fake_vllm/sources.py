"""Where model and adapter files come from: a local directory, or a storage URL fetched first."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

from rft.storage.errors import NotFound, StorageError

from rft_devcluster.fake_vllm.errors import bad_request, not_found


def is_storage_url(path: str) -> bool:
    """True for `s3://`, `gs://` and `file://` URLs (fetched and verified), False for plain paths."""
    return "://" in path


def fetch(url: str, local_dir: Path) -> Path:
    """Download the checkpoint at `url` into `local_dir`, verifying its commit marker and digests.

    Raises the storage layer's errors (`rft.storage.errors`) unchanged.
    """
    # The cloud storage clients are heavy and only URLs need them: import on first use.
    from rft.storage.checkpoints import fetch_checkpoint  # noqa: PLC0415

    local_dir.mkdir(parents=True, exist_ok=True)
    fetch_checkpoint(url, local_dir)
    return local_dir


def fetch_adapter(name: str, url: str, download_dir: Path) -> Path:
    """Fetch the adapter at `url` into a fresh directory under `download_dir`.

    Raises ApiError: 404 when nothing is committed at `url`, 400 for any other storage failure.
    Leaves nothing behind on failure.
    """
    target = download_dir / "adapters" / f"{name}-{uuid.uuid4().hex[:12]}"
    try:
        return fetch(url, target)
    except BaseException as error:
        shutil.rmtree(target, ignore_errors=True)
        if isinstance(error, NotFound):
            raise not_found(
                f"Loading lora {name} failed: No adapter found for {url} ({error})", "lora_path"
            ) from None
        if isinstance(error, StorageError | ValueError | OSError):
            raise bad_request(
                f"Loading lora {name} failed: cannot fetch {url}: {error}", "lora_path"
            ) from None
        raise
