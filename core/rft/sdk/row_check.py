"""Checking rows locally with the validation Job's own row parser, before anything is uploaded."""

from __future__ import annotations

from collections.abc import Sequence

from rft.rows import RowError, parse_row, validate_lines
from rft.sdk.errors import DatasetValidationError
from rft.sdk.jsonl import NumberedRow, canonical_line

MAX_ERRORS_SHOWN = 10


def check_rows(rows: Sequence[NumberedRow]) -> None:
    """Raise DatasetValidationError ("line N: reason") for the first row the row format refuses."""
    for number, row in rows:
        try:
            parse_row(number, canonical_line(row))
        except RowError as error:
            raise DatasetValidationError(str(error)) from error


def check_dataset(content: bytes) -> None:
    """Raise DatasetValidationError when the whole dataset fails the checks the validation Job runs."""
    report = validate_lines(content.splitlines(), max_errors=MAX_ERRORS_SHOWN)
    if report.ok:
        return
    problems = [f"line {line}: {reason}" for line, reason in report.errors]
    if report.error_count > len(report.errors):
        problems.append(f"... and {report.error_count - len(report.errors)} more")
    raise DatasetValidationError("dataset rejected before upload: " + "; ".join(problems))
