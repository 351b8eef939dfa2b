"""Validating a whole dataset in one streaming pass, in bounded memory."""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO

from rft.rows.model import PromptGroup, RowError
from rft.rows.parse import DEFAULT_MAX_LINE_BYTES, scan_rows
from rft.storage.lines import DigestingChunks, split_lines

DEFAULT_MIN_ROWS = 3
DEFAULT_MAX_ROWS = 3_000_000
DEFAULT_MAX_ERRORS = 20
# Distinct reward keys are collected for the report; a bound keeps memory flat on hostile input.
MAX_REWARD_KEYS = 256


@dataclass
class ValidationReport:
    """What one pass over a dataset found. ``bytes``/``digest`` are set when raw bytes were seen."""

    rows: int = 0
    valid_rows: int = 0  # rows that parsed and passed every check
    format: str | None = None
    min_samples: int | None = None
    max_samples: int | None = None
    reward_keys: list[str] = field(default_factory=list)
    bytes: int | None = None
    digest: str | None = None
    errors: list[tuple[int, str]] = field(default_factory=list)
    error_count: int = 0
    ok: bool = False


class _Collector:
    """Accumulates counts and the first errors while rows stream past."""

    def __init__(self, max_errors: int, reward_weights: Mapping[str, float] | None) -> None:
        self.report = ValidationReport()
        self.keys: set[str] = set()
        self._max_errors = max_errors
        self._weights = reward_weights

    def error(self, line: int, reason: str) -> None:
        self.report.error_count += 1
        if len(self.report.errors) < self._max_errors:
            self.report.errors.append((line, reason))

    def group(self, group: PromptGroup) -> None:
        report = self.report
        if self._weights:
            try:
                group.combined_rewards(self._weights)
            except RowError as exc:
                self.error(exc.line, exc.reason)
                return
        report.format = report.format or group.format
        count = len(group.completions)
        report.min_samples = count if report.min_samples is None else min(report.min_samples, count)
        report.max_samples = count if report.max_samples is None else max(report.max_samples, count)
        new_keys = set(group.completions[0].rewards) - self.keys
        if new_keys and len(self.keys) + len(new_keys) > MAX_REWARD_KEYS:
            self.error(group.line, f"more than {MAX_REWARD_KEYS} distinct reward keys in the dataset")
            return
        self.keys |= new_keys
        report.valid_rows += 1


def validate_lines(
    lines: Iterable[bytes | str],
    *,
    fmt: str = "auto",
    min_rows: int = DEFAULT_MIN_ROWS,
    max_rows: int = DEFAULT_MAX_ROWS,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    max_errors: int = DEFAULT_MAX_ERRORS,
    reward_weights: Mapping[str, float] | None = None,
) -> ValidationReport:
    """Validate JSONL lines (endings stripped) in one pass; keeps only counts and the first errors.

    Rows beyond ``max_rows`` are counted but not parsed. With ``reward_weights``, every row must
    also have the weighted reward keys. ``bytes`` and ``digest`` stay None here: use
    :func:`validate_stream` or :func:`validate_bytes` to have them computed from the raw bytes.
    """
    collector = _Collector(max_errors, reward_weights)
    report = collector.report
    rows = 0
    lines_seen = 0

    def counted(raw_lines: Iterable[bytes | str]) -> Iterable[bytes | str]:
        nonlocal rows, lines_seen
        for number, raw in enumerate(raw_lines, start=1):
            lines_seen = number
            if raw.strip():
                rows += 1
                if rows > max_rows:
                    if rows == max_rows + 1:
                        collector.error(number, f"row {rows} is over the limit of {max_rows} rows")
                    yield b""  # keeps line numbers right without parsing rows past the limit
                    continue
            yield raw

    for item in scan_rows(counted(lines), fmt=fmt, max_line_bytes=max_line_bytes):
        if isinstance(item, RowError):
            collector.error(item.line, item.reason)
        else:
            collector.group(item)
    report.rows = rows
    if rows == 0 and lines_seen:
        collector.error(
            0,
            f"the dataset has no rows, only {lines_seen} blank line(s); at least {min_rows} rows are required",
        )
    elif rows == 0:
        collector.error(0, f"the dataset is empty; at least {min_rows} rows are required")
    elif rows < min_rows:
        collector.error(0, f"the dataset has {rows} row(s); at least {min_rows} are required")
    if report.format is None and fmt != "auto":
        report.format = fmt
    report.reward_keys = sorted(collector.keys)
    report.ok = report.error_count == 0
    return report


def validate_stream(
    stream: BinaryIO,
    *,
    fmt: str = "auto",
    min_rows: int = DEFAULT_MIN_ROWS,
    max_rows: int = DEFAULT_MAX_ROWS,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    max_errors: int = DEFAULT_MAX_ERRORS,
    reward_weights: Mapping[str, float] | None = None,
) -> ValidationReport:
    """Validate a binary stream once, also counting its bytes and computing its sha256 digest."""
    chunks = DigestingChunks(stream)
    report = validate_lines(
        split_lines(chunks, max_line_bytes),
        fmt=fmt,
        min_rows=min_rows,
        max_rows=max_rows,
        max_line_bytes=max_line_bytes,
        max_errors=max_errors,
        reward_weights=reward_weights,
    )
    report.bytes = chunks.bytes
    report.digest = chunks.digest
    return report


def validate_bytes(
    data: bytes,
    *,
    fmt: str = "auto",
    min_rows: int = DEFAULT_MIN_ROWS,
    max_rows: int = DEFAULT_MAX_ROWS,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    max_errors: int = DEFAULT_MAX_ERRORS,
    reward_weights: Mapping[str, float] | None = None,
) -> ValidationReport:
    """Validate an in-memory JSONL document (with its byte count and digest)."""
    return validate_stream(
        io.BytesIO(data),
        fmt=fmt,
        min_rows=min_rows,
        max_rows=max_rows,
        max_line_bytes=max_line_bytes,
        max_errors=max_errors,
        reward_weights=reward_weights,
    )
