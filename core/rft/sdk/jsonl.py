"""Dataset content: parsing JSONL with line numbers, canonical bytes, content-addressed ids."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from rft.sdk.errors import DatasetValidationError

ID_PREFIX = "dataset-"
ID_HEX_CHARS = 32

Row = dict[str, Any]
NumberedRow = tuple[int, Row]


def parse_jsonl(text: str) -> list[NumberedRow]:
    """Each non-blank line parsed as a JSON object, with its 1-based line number.

    Raises DatasetValidationError naming the line of invalid JSON or of a value that is not an object.
    """
    rows: list[NumberedRow] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            raise DatasetValidationError(
                f"line {number}: invalid JSON: {error.msg} (column {error.colno})"
            ) from error
        rows.append((number, _object_row(value, number)))
    return rows


def number_rows(rows: Iterable[Mapping[str, Any]]) -> list[NumberedRow]:
    """Rows from a list, numbered from 1 like the lines they will become."""
    return [(number, _object_row(row, number)) for number, row in enumerate(rows, start=1)]


def _object_row(value: object, number: int) -> Row:
    if not isinstance(value, Mapping):
        raise DatasetValidationError(f"line {number}: expected a JSON object, got {type(value).__name__}")
    try:
        # Round-trip through JSON: refuses values JSON cannot hold (NaN, sets, objects) with the line number.
        return dict(json.loads(json.dumps(value, allow_nan=False)))
    except (TypeError, ValueError) as error:
        raise DatasetValidationError(f"line {number}: not JSON-serialisable: {error}") from error


# Values whose key order is content: chat templates print a row's tool schemas with `tojson`, which
# keeps their order, so sorting them would train in a prompt the sampler never rendered.
ORDERED_KEYS = frozenset({"tools"})


def canonical_line(row: Row) -> str:
    """One row as canonical JSON: sorted keys (except inside `tools`), no spaces, UTF-8 kept as is."""
    return json.dumps(_sorted(row), separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _sorted(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: value[k] if k in ORDERED_KEYS else _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(item) for item in value]
    return value


def canonical_jsonl(rows: Iterable[Row]) -> bytes:
    """The bytes uploaded for `rows`: one canonical line each, each ending in a newline."""
    return "".join(canonical_line(row) + "\n" for row in rows).encode("utf-8")


def content_id(data: bytes) -> str:
    """A Dataset name derived from the content: `dataset-` and 32 hex digits of its sha256.

    The same rows give the same id whichever way they were built (list, string, file), so
    syncing them twice finds the first upload.
    """
    return ID_PREFIX + hashlib.sha256(data).hexdigest()[:ID_HEX_CHARS]
