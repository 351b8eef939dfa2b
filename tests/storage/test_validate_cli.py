"""`python -m rft.pods.validate`, the dataset validation Job, against moto and the GCS emulator."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest
from rft import storage
from rft.contracts.validation_summary import FAILURE_REASONS, ErrorKind, ValidationSummary, parse_summary
from rft.pods import validate
from rft_devcluster.pytest_fixtures_storage import GcsBucket, S3Bucket


def _row(i: int, n: int = 2) -> dict[str, Any]:
    messages = [{"role": "user", "content": f"question {i}"}]
    return {
        "samples": [
            {
                "messages": [*messages, {"role": "assistant", "content": f"answer {j}"}],
                "evals": {"score": j / n},
            }
            for j in range(n)
        ]
    }


def _jsonl(rows: list[Any]) -> bytes:
    return b"".join(json.dumps(row).encode() + b"\n" for row in rows)


def _run_pod(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the validator as the Job's pod would: a separate process with only the pod environment."""
    return subprocess.run(
        [sys.executable, "-m", "rft.pods.validate", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_good_dataset_in_s3(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    data = _jsonl([_row(i, n=2 + i % 3) for i in range(10)])
    storage.create_bytes(f"{s3_bucket.url}/datasets/good.jsonl", data)
    log = tmp_path / "termination-log"
    result = _run_pod(
        ["--source", f"{s3_bucket.url}/datasets/good.jsonl", "--termination-log", str(log)],
        s3_bucket.pod_env(),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(log.read_bytes())
    assert summary == {
        "ok": True,
        "resolvedSource": f"{s3_bucket.url}/datasets/good.jsonl",
        "rows": 10,
        "validRows": 10,
        "format": "samples",
        "minSamples": 2,
        "maxSamples": 4,
        "rewardKeys": ["score"],
        "bytes": len(data),
        "digest": "sha256:" + hashlib.sha256(data).hexdigest(),
        "errors": [],
        "errorCount": 0,
    }
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [event["event"] for event in events] == ["validation_started", "validation_finished"]
    assert "VALID: " in result.stdout


def test_bad_dataset_exits_1_with_line_numbers(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    rows = [json.dumps(_row(0)), json.dumps(_row(1)), '{"samples": []}', json.dumps(_row(3)), "nope"]
    storage.create_bytes(f"{s3_bucket.url}/bad.jsonl", "\n".join(rows).encode())
    log = tmp_path / "termination-log"
    result = _run_pod(
        ["--source", f"{s3_bucket.url}/bad.jsonl", "--termination-log", str(log)], s3_bucket.pod_env()
    )
    assert result.returncode == 1
    summary = json.loads(log.read_bytes())
    assert summary["ok"] is False
    assert summary["rows"] == 5
    assert summary["errors"] == [
        {"line": 3, "message": "'samples' has 0 sample(s); a row is a prompt group and needs at least 2"},
        {"line": 5, "message": "not valid JSON: Expecting value at column 1"},
    ]
    row_errors = [json.loads(line) for line in result.stdout.splitlines() if '"row_error"' in line]
    assert [event["line"] for event in row_errors] == [3, 5]


def _main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any], str]:
    """Run the validator in this process (faster than a subprocess); returns code, summary, stdout."""
    log = Path(args[args.index("--termination-log") + 1])
    code = validate.main(args)
    summary = json.loads(log.read_bytes())
    _as_the_operator_reads_it(log.read_text(), summary)
    return code, summary, capsys.readouterr().out


def _as_the_operator_reads_it(text: str, summary: dict[str, Any]) -> None:
    """Every summary the validator writes is one the operator's contract reads, field for field."""
    read = parse_summary(text)
    assert read is not None, text
    assert read.model_dump(by_alias=True, exclude_defaults=True, mode="json") == {
        k: v for k, v in summary.items() if v not in (None, [])
    }


def test_each_error_kind_has_its_own_reason() -> None:
    """The Dataset's condition says what went wrong reading the object, not just ValidationError."""
    kinds = typing.get_args(ErrorKind)
    assert set(FAILURE_REASONS) == set(kinds)
    assert len(set(FAILURE_REASONS.values())) == len(kinds)
    for kind, reason in FAILURE_REASONS.items():
        summary = parse_summary(json.dumps({"ok": False, "error": "x", "errorKind": kind}))
        assert summary is not None
        assert summary.failure_reason() == reason
    assert ValidationSummary(ok=False, error="x", error_kind="from-a-newer-validator").failure_reason() == (
        "ValidationError"
    )


def test_summary_stays_under_4096_bytes_with_many_long_errors(
    s3_bucket: S3Bucket, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    long_role = "r" * 3000  # each error message quotes (a cut of) the bad role
    bad = {"samples": [{"messages": [{"role": long_role, "content": "x"}]}, {"messages": []}]}
    storage.create_bytes(f"{s3_bucket.url}/many-bad.jsonl", _jsonl([bad] * 500))
    log = tmp_path / "termination-log"
    code, summary, _out = _main(
        ["--source", f"{s3_bucket.url}/many-bad.jsonl", "--termination-log", str(log), "--max-errors", "100"],
        capsys,
    )
    assert code == 1
    assert len(log.read_bytes()) < 4096
    assert summary["errorCount"] == 500
    kept = [error["line"] for error in summary["errors"]]
    assert kept == list(range(1, len(kept) + 1))  # the first errors, in order
    assert len(kept) >= 5
    assert summary["errorsOmitted"] == 500 - len(kept)
    assert summary["rows"] == 500
    assert summary["digest"].startswith("sha256:")


def test_prefix_with_exactly_one_jsonl_is_resolved(
    s3_bucket: S3Bucket, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    storage.create_bytes(f"{s3_bucket.url}/ds/v1/README.txt", b"not data")
    storage.create_bytes(f"{s3_bucket.url}/ds/v1/rows.jsonl", _jsonl([_row(i) for i in range(3)]))
    storage.create_bytes(f"{s3_bucket.url}/ds/v10/other.jsonl", _jsonl([_row(i) for i in range(3)]))
    log = str(tmp_path / "log")
    code, summary, _out = _main(["--source", f"{s3_bucket.url}/ds/v1", "--termination-log", log], capsys)
    assert code == 0
    assert summary["resolvedSource"] == f"{s3_bucket.url}/ds/v1/rows.jsonl"  # v10 is not under v1/


def test_prefix_with_several_jsonl_is_a_bad_source(
    s3_bucket: S3Bucket, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("a", "b"):
        storage.create_bytes(f"{s3_bucket.url}/ds/{name}.jsonl", _jsonl([_row(1)] * 3))
    code, summary, _out = _main(
        ["--source", f"{s3_bucket.url}/ds/", "--termination-log", str(tmp_path / "l")], capsys
    )
    assert code == 1
    assert summary["errorKind"] == "invalid-source"
    assert "holds 2 .jsonl objects" in summary["error"]


def test_missing_object_exits_2(
    s3_bucket: S3Bucket, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, summary, out = _main(
        ["--source", f"{s3_bucket.url}/absent.jsonl", "--termination-log", str(tmp_path / "l")], capsys
    )
    assert code == 2
    assert summary["ok"] is False
    assert summary["errorKind"] == "not-found"
    assert f"{s3_bucket.url}/absent.jsonl" in summary["error"]
    assert "ERROR (not-found)" in out


def test_missing_credentials_exit_2_and_say_so(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    env = s3_bucket.pod_env()
    del env["AWS_ROLE_ARN"], env["AWS_WEB_IDENTITY_TOKEN_FILE"]
    log = tmp_path / "termination-log"
    result = _run_pod(["--source", f"{s3_bucket.url}/x.jsonl", "--termination-log", str(log)], env)
    assert result.returncode == 2
    summary = json.loads(log.read_bytes())
    _as_the_operator_reads_it(log.read_text(), summary)
    assert summary["errorKind"] == "credentials"
    assert "eks.amazonaws.com/role-arn" in summary["error"]


def test_unsafe_source_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, summary, _out = _main(
        ["--source", "http://169.254.169.254/x", "--termination-log", str(tmp_path / "l")], capsys
    )
    assert code == 1
    assert summary["errorKind"] == "invalid-source"
    assert "unknown scheme 'http'" in summary["error"]


def test_good_dataset_in_gcs_with_limits_from_the_environment(
    gcs_bucket: GcsBucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _jsonl([_row(i) for i in range(4)])
    storage.create_bytes(f"{gcs_bucket.url}/d.jsonl", data)
    monkeypatch.setenv("RFT_VALIDATE_SOURCE", f"{gcs_bucket.url}/d.jsonl")
    monkeypatch.setenv("RFT_VALIDATE_MIN_ROWS", "5")
    code, summary, _out = _main(["--termination-log", str(tmp_path / "l")], capsys)
    assert code == 1
    assert summary["errors"] == [{"line": 0, "message": "the dataset has 4 row(s); at least 5 are required"}]
    assert summary["digest"] == "sha256:" + hashlib.sha256(data).hexdigest()
    code, summary, _out = _main(["--min-rows", "4", "--termination-log", str(tmp_path / "l")], capsys)
    assert code == 0
    assert summary["rows"] == 4


def test_compact_summary_shrinks_in_order() -> None:
    summary = {
        "ok": False,
        "resolvedSource": "s3://b/" + "k" * 900,
        "rows": 1,
        "rewardKeys": [f"key-{i}-" + "x" * 60 for i in range(100)],
        "errors": [{"line": i, "message": "m" * 1000} for i in range(1, 30)],
        "errorCount": 29,
    }
    encoded = validate.compact_summary(summary)
    assert len(encoded) < 4096
    result = json.loads(encoded)
    assert result["errors"] == []
    assert result["errorsOmitted"] == 29
    assert 0 < len(result["rewardKeys"]) < 100
    assert result["rewardKeysOmitted"] == 100 - len(result["rewardKeys"])
    assert json.loads(validate.compact_summary(summary, limit=40)) == {"ok": False, "truncated": True}
    small = validate.compact_summary(
        {"ok": True, "errors": [{"line": 1, "message": "short"}], "errorCount": 1}
    )
    assert json.loads(small)["errors"] == [{"line": 1, "message": "short"}]


def test_an_unexpected_failure_still_writes_a_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "d.jsonl"
    source.write_bytes(_jsonl([_row(i) for i in range(3)]))

    def broken(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("bug in the validator")

    monkeypatch.setattr(validate, "validate_stream", broken)
    code, summary, _out = _main(["--source", str(source), "--termination-log", str(tmp_path / "l")], capsys)
    assert code == 2
    assert summary == {
        "ok": False,
        "resolvedSource": f"file://{source}",
        "error": "internal error: RuntimeError: bug in the validator",
        "errorKind": "internal",
        "errors": [],
    }
