"""Datasets in memory: content-addressed ids, constructors, local row checks, row access."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from rft import Dataset
from rft.sdk.errors import DatasetValidationError
from rft.sdk.jsonl import canonical_jsonl, content_id


def _row(prompt: str, scores: tuple[float, ...] = (1.0, 0.0)) -> dict[str, Any]:
    return {
        "samples": [
            {
                "messages": [
                    {"role": "user", "content": prompt},
                    {"role": "assistant", "content": f"answer {index}"},
                ],
                "evals": {"score": score},
            }
            for index, score in enumerate(scores)
        ]
    }


ROWS = [_row("2+2?"), _row("capital of France?", (0.2, 0.9, 0.5)), _row("ünïcode ✓")]


def test_same_rows_give_the_same_id_from_list_string_and_file(tmp_path: Path) -> None:
    from_list = Dataset.from_list(ROWS)
    # Different key order, spacing and a blank line: the same content.
    text = "\n".join(json.dumps(row, indent=None, sort_keys=False, ensure_ascii=True) for row in ROWS)
    text = text.replace("\n", "\n\n", 1) + "\n"
    from_string = Dataset.from_string(text)
    path = tmp_path / "rows.jsonl"
    path.write_text(text, encoding="utf-8")
    from_file = Dataset.from_file(path)
    assert from_list.id == from_string.id == from_file.id
    assert from_list.id.startswith("dataset-")
    assert len(from_list.id) == len("dataset-") + 32


def test_id_is_the_hash_of_the_canonical_bytes() -> None:
    dataset = Dataset.from_list(ROWS)
    assert dataset.id == content_id(canonical_jsonl(ROWS))
    assert canonical_jsonl(ROWS).decode().count("\n") == len(ROWS)
    assert "ünïcode ✓" in canonical_jsonl(ROWS).decode()


def test_different_rows_give_a_different_id() -> None:
    assert Dataset.from_list(ROWS).id != Dataset.from_list([*ROWS[:2], _row("other")]).id
    assert Dataset.from_list(ROWS).id != Dataset.from_list(list(reversed(ROWS))).id


def test_rows_are_accessible() -> None:
    dataset = Dataset.from_list(ROWS)
    assert len(dataset) == 3
    assert dataset.head(2) == ROWS[:2]
    assert dataset.head(10) == ROWS
    assert list(dataset) == ROWS
    assert dataset.url is None
    assert dataset.name == f"accounts/default/datasets/{dataset.id}"


def test_namespace_setting_is_used() -> None:
    assert Dataset.from_list(ROWS, namespace="team-a").name.startswith("accounts/team-a/datasets/")


def test_invalid_json_names_the_line() -> None:
    text = json.dumps(ROWS[0]) + "\n\n" + '{"samples": [\n'
    with pytest.raises(DatasetValidationError, match=r"^line 3: invalid JSON"):
        Dataset.from_string(text)


def test_non_object_row_names_the_line() -> None:
    with pytest.raises(DatasetValidationError, match=r"^line 2: expected a JSON object, got list"):
        Dataset.from_list([ROWS[0], [1, 2]])  # type: ignore[list-item]


def test_row_format_errors_name_the_line() -> None:
    one_sample = {"samples": ROWS[0]["samples"][:1]}
    with pytest.raises(DatasetValidationError, match=r"^line 2: ") as error:
        Dataset.from_list([ROWS[0], one_sample, ROWS[1]])
    assert "sample" in str(error.value)


def test_values_json_cannot_hold_are_refused_with_the_line() -> None:
    with pytest.raises(DatasetValidationError, match=r"^line 1: not JSON-serialisable"):
        Dataset.from_list([{"samples": float("nan")}])


def test_constructor_argument_errors() -> None:
    with pytest.raises(TypeError, match=r"rows: expected a list of row dicts"):
        Dataset.from_list("not rows")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"jsonl: expected a string"):
        Dataset.from_string(b"{}")  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match=r"path: no such file"):
        Dataset.from_file("/nonexistent/rows.jsonl")
    with pytest.raises(ValueError, match=r"^n: must be between 0"):
        Dataset.from_list(ROWS).head(-1)


def test_from_file_rejects_non_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"a": "\xe9"}\n')
    with pytest.raises(DatasetValidationError, match=r"is not UTF-8 text"):
        Dataset.from_file(path)


def test_from_url_points_at_an_object_in_place() -> None:
    dataset = Dataset.from_url("s3://my-bucket/data/train.jsonl")
    assert dataset.url == "s3://my-bucket/data/train.jsonl"
    assert dataset.id == Dataset.from_url("s3://my-bucket/data/train.jsonl").id
    assert dataset.id != Dataset.from_url("s3://my-bucket/data/other.jsonl").id
    assert Dataset.from_url("gs://my-bucket/x.jsonl", id="my-data").id == "my-data"


@pytest.mark.parametrize(
    ("url", "kwargs", "message"),
    [
        ("ftp://host/x.jsonl", {}, "url: "),
        ("s3://my-bucket/x.jsonl", {"id": "Bad_Id"}, "id: 'Bad_Id' is not a valid name"),
    ],
)
def test_from_url_argument_errors(url: str, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Dataset.from_url(url, **kwargs)


def test_from_url_reads_rows_in_place(tmp_path: Path) -> None:
    path = tmp_path / "existing.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in ROWS), encoding="utf-8")
    dataset = Dataset.from_url(f"file://{path}")
    assert dataset.head(1) == ROWS[:1]
    assert list(dataset) == ROWS
    assert len(dataset) == 3
