"""`python -m rft.fetch URL DIR`: copy a base model or a committed checkpoint from the bucket to a directory.

The init container of vLLM server pods runs it under the Deployment's ServiceAccount (workload
identity) so vLLM reads the base model from local disk. With the pins of the base Model's check
in the environment (`RFT_MODEL_FILES_DIGEST`, and `RFT_MODEL_PINNED_FILES` when the check listed
every file), exactly the pinned files are fetched and any that differ are refused
(`rft.storage.model_folder.fetch_pinned`); without them the folder must be a committed checkpoint,
verified against its manifest.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from rft.api.model import FileDigest
from rft.model_check import FILES_DIGEST_ENV, PINNED_FILES_ENV
from rft.storage import StorageError
from rft.storage.checkpoints import FileRecord, fetch_checkpoint
from rft.storage.model_folder import fetch_pinned

_PINS = TypeAdapter(list[FileDigest])


def pinned_records(text: str | None) -> list[FileRecord] | None:
    """The per-file pins from PINNED_FILES_ENV's JSON (None when absent)."""
    if not text:
        return None
    return [FileRecord(p.path, p.sha256, p.size) for p in _PINS.validate_json(text)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("url", help="s3://, gs://, file:// URL or local path of the model")
    parser.add_argument("dest", type=Path, help="directory to fill (created if missing)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    digest = os.environ.get(FILES_DIGEST_ENV)
    try:
        if digest:
            records = fetch_pinned(
                args.url, args.dest, digest, pinned_records(os.environ.get(PINNED_FILES_ENV))
            )
            files, size = len(records), sum(r.size for r in records)
        else:
            metadata = fetch_checkpoint(args.url, args.dest)
            files, size = len(metadata.get("files", [])), None
    except (StorageError, ValidationError) as exc:
        print(json.dumps({"event": "fetch_failed", "url": args.url, "error": str(exc)}), flush=True)
        print(f"rft.fetch: {exc}", file=sys.stderr, flush=True)
        return 2
    print(
        json.dumps(
            {
                "event": "fetched",
                "url": args.url,
                "dest": str(args.dest),
                "files": files,
                "bytes": size,
                "pinned": digest,
                "seconds": round(time.monotonic() - started, 3),
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
