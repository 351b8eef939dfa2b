"""`python -m rft.fetch URL DIR`: copy a committed model or adapter from the bucket to a directory.

The init container of vLLM server pods runs it under the Deployment's ServiceAccount (workload
identity) so vLLM reads the base model from local disk. Digests are verified against the
checkpoint's manifest; a checkpoint without a commit marker is refused.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rft.storage import StorageError
from rft.storage.checkpoints import fetch_checkpoint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("url", help="s3://, gs://, file:// URL or local path of the checkpoint")
    parser.add_argument("dest", type=Path, help="directory to fill (created if missing)")
    args = parser.parse_args(argv)
    try:
        metadata = fetch_checkpoint(args.url, args.dest)
    except StorageError as exc:
        print(json.dumps({"event": "fetch_failed", "url": args.url, "error": str(exc)}), flush=True)
        return 2
    files = metadata.get("files", [])
    print(
        json.dumps({"event": "fetched", "url": args.url, "dest": str(args.dest), "files": len(files)}),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
