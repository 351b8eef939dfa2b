"""The model check Job's entry point: ``python -m rft.pods.check_model --location URL``.

Runs under the base Model's ServiceAccount (workload identity reads the bucket; no Kubernetes API
access). Reads the folder once (:func:`rft.storage.model_folder.check_model_folder`: a Hugging
Face folder or a committed checkpoint, every served file hashed, safetensors headers and the shard
index checked against the files), prints JSON log lines and a human summary, and writes a
:class:`rft.contracts.model_check.ModelCheckSummary` to the termination log. Exit codes are that module's.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from rft.api.model import FileDigest
from rft.contracts.model_check import EXIT_INVALID, EXIT_OK, EXIT_STORAGE, CheckReason, ModelCheckSummary
from rft.storage import AccessDenied, CredentialsError, NotFound, StorageError
from rft.storage.model_folder import InvalidModelError, check_model_folder

DEFAULT_TERMINATION_LOG = "/dev/termination-log"


def _log(out: TextIO, event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}, ensure_ascii=False), file=out, flush=True)


def _storage_reason(exc: Exception) -> CheckReason:
    if isinstance(exc, NotFound):
        return "ModelNotFound"
    if isinstance(exc, AccessDenied):
        return "AccessDenied"
    if isinstance(exc, CredentialsError):
        return "CredentialsError"
    if isinstance(exc, StorageError):
        return "StorageError"
    return "InternalError"


def _gib(size: int) -> str:
    return f"{size / 2**30:.2f} GiB" if size >= 2**28 else f"{size / 2**20:.1f} MiB"


def run(location: str, termination_log: str, out: TextIO | None = None) -> int:
    """Check the folder at ``location``; write the summary; return the exit code."""
    out = out or sys.stdout
    started = time.monotonic()
    _log(out, "model_check_started", location=location)
    try:
        checked = check_model_folder(location)
    except InvalidModelError as exc:
        summary = ModelCheckSummary(ok=False, reason=exc.reason, message=str(exc)[:1024])
        code = EXIT_INVALID
    except Exception as exc:
        reason = _storage_reason(exc)
        if reason == "InternalError":  # a bug: keep the traceback in the pod's log
            traceback.print_exc(file=sys.stderr)
        message = str(exc) if reason != "InternalError" else f"internal error: {type(exc).__name__}: {exc}"
        summary = ModelCheckSummary(ok=False, reason=reason, message=message[:1024])
        code = EXIT_STORAGE
    else:
        files = [FileDigest(path=r.path, sha256=r.sha256, size=r.size) for r in checked.files]
        for record in files:
            _log(out, "model_file", **record.to_wire())
        summary = ModelCheckSummary(
            ok=True,
            reason="Checked",
            message=f"{len(files)} files, {_gib(checked.bytes)}, {checked.architecture} "
            f"({checked.parameters:,} parameters, {checked.dtype}), {checked.digest}",
            format=checked.format,
            architecture=checked.architecture[:128],
            model_type=checked.model_type[:64],
            parameters=checked.parameters,
            dtype=checked.dtype,
            file_count=len(files),
            total_bytes=checked.bytes,
            files_digest=checked.digest,
            files=files,
            ignored=len(checked.ignored),
        )
        code = EXIT_OK
    seconds = round(time.monotonic() - started, 3)
    _log(out, "model_check_finished", seconds=seconds, **summary.model_copy(update={"files": None}).to_wire())
    verdict = "LOADABLE" if summary.ok else f"NOT LOADABLE ({summary.reason})"
    print(f"{verdict}: {location}\n  {summary.message}", file=out, flush=True)
    try:
        Path(termination_log).write_bytes(summary.termination_message())
    except OSError as exc:
        _log(sys.stderr, "termination_log_unwritable", path=termination_log, reason=str(exc))
    return code


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rft.pods.check_model",
        description="Check that a bucket prefix holds a loadable model, and pin its files' digests.",
    )
    parser.add_argument("--location", required=True, help="s3://, gs://, file:// URL of the model folder")
    parser.add_argument(
        "--termination-log",
        default=DEFAULT_TERMINATION_LOG,
        help="where to write the JSON summary (Kubernetes reads it into the pod's status)",
    )
    args = parser.parse_args(argv)
    return run(args.location, args.termination_log)


if __name__ == "__main__":
    sys.exit(main())
