"""`python -m rft.pods.fetch URL DIR`: copy a base model or a committed checkpoint from the bucket to a directory.

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
from rft.contracts.model_check import FILES_DIGEST_ENV, PINNED_FILES_ENV, TERMINATION_MESSAGE_LIMIT
from rft.storage import StorageError
from rft.storage.checkpoints import FileRecord, fetch_checkpoint
from rft.storage.model_folder import fetch_pinned

_PINS = TypeAdapter(list[FileDigest])
DEFAULT_TERMINATION_LOG = "/dev/termination-log"


def pinned_records(text: str | None) -> list[FileRecord] | None:
    """The per-file pins from PINNED_FILES_ENV's JSON (None when absent)."""
    if not text:
        return None
    return [FileRecord(p.path, p.sha256, p.size) for p in _PINS.validate_json(text)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("url", help="s3://, gs://, file:// URL or local path of the model")
    parser.add_argument("dest", type=Path, help="directory to fill (created if missing)")
    parser.add_argument(
        "--termination-log",
        default=DEFAULT_TERMINATION_LOG,
        help="where the outcome goes as one JSON line (Kubernetes copies it into the pod's status; "
        "the operator's cold-start breakdown reads files, bytes and seconds from it)",
    )
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
        failed = {"event": "fetch_failed", "url": args.url, "error": str(exc)}
        print(json.dumps(failed), flush=True)
        print(f"rft.pods.fetch: {exc}", file=sys.stderr, flush=True)
        _write_termination_log(args.termination_log, failed)
        return 2
    fetched = {
        "event": "fetched",
        "url": args.url,
        "files": files,
        "bytes": size,
        "seconds": round(time.monotonic() - started, 3),
        "pinned": digest,
    }
    print(json.dumps({**fetched, "dest": str(args.dest)}), flush=True)
    _write_termination_log(args.termination_log, fetched)
    return 0


def _write_termination_log(path: str, outcome: dict[str, object]) -> None:
    text = json.dumps(outcome)
    try:
        Path(path).write_text(text[-TERMINATION_MESSAGE_LIMIT:])
    except OSError as exc:  # outside a pod (no /dev/termination-log): the stdout line says it all
        print(
            json.dumps({"event": "termination_log_unwritable", "path": path, "reason": str(exc)}), flush=True
        )


if __name__ == "__main__":
    sys.exit(main())
