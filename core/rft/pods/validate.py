"""The dataset validation Job's entry point: ``python -m rft.pods.validate --source URL``.

Runs under the Dataset's ServiceAccount (workload identity reads the bucket; no Kubernetes API
access). Streams the object once, computing its sha256 while validating every row, prints JSON
log lines and a human summary, and writes a compact JSON summary (always under 4096 bytes, the
size Kubernetes keeps of a termination message) to the termination log::

    {"ok", "resolvedSource", "rows", "validRows", "format", "minSamples", "maxSamples", "rewardKeys",
     "bytes", "digest", "errors": [{"line", "message"}], "errorCount", "errorsOmitted"?}

plus ``"error"`` and ``"errorKind"`` when the object could not be read. ``errors`` holds the first
errors only; ``errorsOmitted`` (present when some were left out) says how many more there are.
A bad row never ends the run early or as a crash: it is an error of the summary (exit 1).

Exit codes: 0 the dataset is valid; 1 the dataset is bad (bad rows, too few or too many rows,
an unusable source URL, a prefix holding several ``.jsonl`` objects); 2 storage or credential
errors (missing object, access denied, no credentials, unreachable endpoint), bad command lines,
and internal errors (``errorKind: internal``, traceback on stderr).

Every option can also come from the environment: ``RFT_VALIDATE_SOURCE``, ``_FORMAT``,
``_MIN_ROWS``, ``_MAX_ROWS``, ``_MAX_LINE_BYTES``, ``_MAX_ERRORS``, ``_TERMINATION_LOG``
(command-line options win).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

from rft.contracts.exit_codes import TERMINATION_MESSAGE_LIMIT
from rft.contracts.validation_summary import EXIT_INVALID, EXIT_OK, EXIT_STORAGE, ErrorKind
from rft.rows import (
    DEFAULT_MAX_ERRORS,
    DEFAULT_MAX_LINE_BYTES,
    DEFAULT_MAX_ROWS,
    DEFAULT_MIN_ROWS,
    FORMATS,
    ValidationReport,
    validate_stream,
)
from rft.storage import (
    AccessDenied,
    CredentialsError,
    NotFound,
    StorageError,
    UnsafeURL,
    check_url,
    exists,
    list_objects,
    open_stream,
)

__all__ = ["EXIT_INVALID", "EXIT_OK", "EXIT_STORAGE", "main", "run"]

DEFAULT_TERMINATION_LOG = "/dev/termination-log"
_ENV_PREFIX = "RFT_VALIDATE_"
_MESSAGE_CHARS = 240  # each error message in the summary is cut to this many characters


class SourceError(Exception):
    """The source URL cannot name a dataset (exit 1, the Dataset's spec must change)."""


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(_ENV_PREFIX + name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        _usage_exit(f"{_ENV_PREFIX}{name}={value!r} is not an integer")


def _usage_exit(message: str) -> NoReturn:
    print(f"rft.pods.validate: {message}", file=sys.stderr)
    raise SystemExit(EXIT_STORAGE)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m rft.pods.validate", description="Validate a JSONL dataset of prompt groups in a bucket."
    )
    env = os.environ.get
    parser.add_argument(
        "--source",
        default=env(_ENV_PREFIX + "SOURCE"),
        help="s3://, gs:// or file:// URL of the .jsonl object, or of a prefix holding exactly one",
    )
    parser.add_argument("--format", default=env(_ENV_PREFIX + "FORMAT", "auto"), choices=["auto", *FORMATS])
    parser.add_argument("--min-rows", type=int, default=_env_int("MIN_ROWS", DEFAULT_MIN_ROWS))
    parser.add_argument("--max-rows", type=int, default=_env_int("MAX_ROWS", DEFAULT_MAX_ROWS))
    parser.add_argument(
        "--max-line-bytes", type=int, default=_env_int("MAX_LINE_BYTES", DEFAULT_MAX_LINE_BYTES)
    )
    parser.add_argument("--max-errors", type=int, default=_env_int("MAX_ERRORS", DEFAULT_MAX_ERRORS))
    parser.add_argument(
        "--termination-log",
        default=env(_ENV_PREFIX + "TERMINATION_LOG", DEFAULT_TERMINATION_LOG),
        help="where to write the JSON summary (Kubernetes reads it into the pod's status)",
    )
    return parser


def resolve_source(url: str) -> str:
    """The one object to validate: ``url`` itself, or the only ``.jsonl`` object under the prefix."""
    try:
        location = check_url(url, require_key=True)
    except UnsafeURL as exc:
        raise SourceError(str(exc)) from exc
    if not location.key.endswith("/") and exists(location.url):
        return location.url
    prefix = location.as_prefix()
    candidates = [info.url for info in list_objects(prefix.url) if info.key.endswith(".jsonl")]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise NotFound(f"{url}: no such object, and no .jsonl object under the prefix {prefix.url}")
    shown = ", ".join(candidates[:3]) + (", ..." if len(candidates) > 3 else "")
    raise SourceError(
        f"{url}: the prefix holds {len(candidates)} .jsonl objects ({shown}); a Dataset names exactly one"
    )


def summary_of(report: ValidationReport, resolved_source: str) -> dict[str, Any]:
    """The full (not yet size-limited) summary of a finished validation."""
    summary: dict[str, Any] = {
        "ok": report.ok,
        "resolvedSource": resolved_source,
        "rows": report.rows,
        "validRows": report.valid_rows,
        "format": report.format,
        "minSamples": report.min_samples,
        "maxSamples": report.max_samples,
        "rewardKeys": report.reward_keys,
        "bytes": report.bytes,
        "digest": report.digest,
        "errors": [{"line": line, "message": message} for line, message in report.errors],
        "errorCount": report.error_count,
    }
    if report.error_count > len(report.errors):
        summary["errorsOmitted"] = report.error_count - len(report.errors)
    return summary


def _encode(summary: dict[str, Any]) -> bytes:
    return json.dumps(summary, separators=(",", ":"), ensure_ascii=False).encode()


def _cut(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: max(chars - 3, 0)] + "..."


def compact_summary(summary: dict[str, Any], limit: int = TERMINATION_MESSAGE_LIMIT) -> bytes:
    """Encode ``summary`` in fewer than ``limit`` bytes, keeping the counts, digest and first errors.

    Error messages are cut to a few hundred characters, then errors are dropped from the end,
    then reward keys, and long strings are cut last; ``errorsOmitted``/``rewardKeysOmitted``
    say how many were left out.
    """
    summary = dict(summary)
    summary["errors"] = [
        {"line": error["line"], "message": _cut(str(error["message"]), _MESSAGE_CHARS)}
        for error in summary.get("errors", [])
    ]
    encoded = _encode(summary)
    errors = summary["errors"]
    while len(encoded) >= limit and errors:
        errors.pop()
        summary["errorsOmitted"] = int(summary.get("errorCount") or 0) - len(errors)
        encoded = _encode(summary)
    keys = list(summary.get("rewardKeys") or [])
    while len(encoded) >= limit and keys:
        keys.pop()
        summary["rewardKeys"] = keys
        summary["rewardKeysOmitted"] = summary.get("rewardKeysOmitted", 0) + 1
        encoded = _encode(summary)
    for field in ("error", "resolvedSource"):
        if len(encoded) >= limit and isinstance(summary.get(field), str):
            summary[field] = _cut(summary[field], 512)
            encoded = _encode(summary)
    if len(encoded) >= limit:  # only reachable with a tiny limit: keep the verdict at least
        encoded = _encode({"ok": summary.get("ok", False), "truncated": True})
    return encoded


def _log(stream: TextIO, event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}, ensure_ascii=False), file=stream, flush=True)


def _write_termination_log(path: str, payload: bytes) -> None:
    try:
        Path(path).write_bytes(payload)
    except OSError as exc:
        _log(sys.stderr, "termination_log_unwritable", path=path, reason=str(exc))


def _human_summary(report: ValidationReport, source: str) -> str:
    verdict = "VALID" if report.ok else "INVALID"
    lines = [
        f"{verdict}: {source}",
        f"  rows {report.rows} ({report.valid_rows} valid), format {report.format or '-'}, samples per row "
        f"{report.min_samples if report.min_samples is not None else '-'}.."
        f"{report.max_samples if report.max_samples is not None else '-'}, "
        f"reward keys {', '.join(report.reward_keys) or '-'}",
        f"  {report.bytes} bytes, {report.digest}",
    ]
    if report.error_count:
        lines.append(f"  {report.error_count} error(s); the first:")
        lines.extend(f"    line {line}: {message}" for line, message in report.errors)
    return "\n".join(lines)


def _error_kind(exc: Exception) -> ErrorKind:
    if isinstance(exc, CredentialsError):
        return "credentials"
    if isinstance(exc, AccessDenied):
        return "access-denied"
    if isinstance(exc, NotFound):
        return "not-found"
    if isinstance(exc, SourceError):
        return "invalid-source"
    if isinstance(exc, StorageError):
        return "storage"
    return "internal"


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Validate ``args.source``; write the summary; return the exit code."""
    out = out or sys.stdout
    _log(out, "validation_started", source=args.source, format=args.format)
    resolved: str | None = None
    try:
        resolved = resolve_source(args.source)
        with open_stream(resolved) as stream:
            report = validate_stream(
                stream,
                fmt=args.format,
                min_rows=args.min_rows,
                max_rows=args.max_rows,
                max_line_bytes=args.max_line_bytes,
                max_errors=args.max_errors,
            )
    except Exception as exc:
        kind = _error_kind(exc)
        code = EXIT_INVALID if isinstance(exc, SourceError) else EXIT_STORAGE
        message = str(exc) if kind != "internal" else f"internal error: {type(exc).__name__}: {exc}"
        if kind == "internal":  # a bug: keep the traceback in the pod's log
            traceback.print_exc(file=sys.stderr)
        _log(out, "validation_error", errorKind=kind, error=message)
        print(f"ERROR ({kind}): {message}", file=out, flush=True)
        summary: dict[str, Any] = {
            "ok": False,
            "resolvedSource": resolved,
            "error": message,
            "errorKind": kind,
            "errors": [],
        }
        _write_termination_log(args.termination_log, compact_summary(summary))
        return code
    for line, message in report.errors:
        _log(out, "row_error", line=line, message=message)
    summary = summary_of(report, resolved)
    _log(out, "validation_finished", **{k: v for k, v in summary.items() if k != "errors"})
    print(_human_summary(report, resolved), file=out, flush=True)
    _write_termination_log(args.termination_log, compact_summary(summary))
    return EXIT_OK if report.ok else EXIT_INVALID


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line (and RFT_VALIDATE_* variables) and run the validation."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.source:
        _usage_exit("--source (or RFT_VALIDATE_SOURCE) is required")
    if args.min_rows < 1 or args.max_rows < args.min_rows or args.max_line_bytes < 1 or args.max_errors < 0:
        _usage_exit("need 1 <= --min-rows <= --max-rows, --max-line-bytes >= 1 and --max-errors >= 0")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
