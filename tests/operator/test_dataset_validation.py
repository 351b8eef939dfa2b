"""Dataset validation Jobs on the local node: real `python -m rft.pods.validate` pods reading moto S3
through the emulated IRSA webhook, reported by the operator in the Dataset's status."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import pytest
from rft_devcluster.emulators import Emulator, put_s3_object
from rft_devcluster.pytest_fixtures_storage import S3Bucket

from tests.operator.conftest import WORKLOAD, Objects, OperatorProcess

pytestmark = [pytest.mark.cluster, pytest.mark.localnode]

ROLE = "arn:aws:iam::123456789012:role/rft-dataset-reader"


def good_row(i: int) -> dict[str, Any]:
    prompt = [{"role": "user", "content": f"question {i}"}]
    return {
        "samples": [
            {"messages": [*prompt, {"role": "assistant", "content": "yes"}], "evals": {"score": 0.25}},
            {"messages": [*prompt, {"role": "assistant", "content": "no"}], "evals": {"score": 1.0}},
        ]
    }


SAMPLE = good_row(0)["samples"]


def with_bad_line(bad: str, rows: int = 5, at: int = 2) -> bytes:
    lines = [json.dumps(good_row(i)) for i in range(rows)]
    lines[at] = bad
    return ("\n".join(lines) + "\n").encode()


BAD: list[tuple[str, bytes, dict[str, Any], str]] = [
    ("not-json", with_bad_line('{"samples": ['), {}, "line 3: not valid JSON"),
    ("missing-samples", with_bad_line(json.dumps({"rows": []})), {}, "line 3: missing 'samples'"),
    (
        "one-sample",
        with_bad_line(json.dumps({"samples": SAMPLE[:1]})),
        {},
        "line 3: 'samples' has 1 sample(s)",
    ),
    (
        "missing-evals",
        with_bad_line(json.dumps({"samples": [{"messages": SAMPLE[0]["messages"]}, SAMPLE[1]]})),
        {},
        "line 3: samples[0] has no 'evals'",
    ),
    (
        "non-numeric-reward",
        with_bad_line(json.dumps({"samples": [{**SAMPLE[0], "evals": {"score": "high"}}, SAMPLE[1]]})),
        {},
        "line 3: samples[0].evals.score must be a number",
    ),
    (
        "nan-reward",
        with_bad_line(json.dumps({"samples": [{**SAMPLE[0], "evals": {"score": float("nan")}}, SAMPLE[1]]})),
        {},
        "line 3: samples[0].evals.score is NaN, which is not allowed",
    ),
    (
        "empty-messages",
        with_bad_line(json.dumps({"samples": [{"messages": [], "evals": {"score": 1}}, SAMPLE[1]]})),
        {},
        "line 3: samples[0].messages is empty",
    ),
    (
        "wrong-role",
        with_bad_line(
            json.dumps(
                {
                    "samples": [
                        {
                            "messages": [
                                {"role": "robot", "content": "x"},
                                {"role": "assistant", "content": "y"},
                            ],
                            "evals": {"score": 1},
                        },
                        SAMPLE[1],
                    ]
                }
            )
        ),
        {},
        "line 3: samples[0].messages[0].role is 'robot'",
    ),
    (
        "mixed-formats",
        with_bad_line(json.dumps({"prompt": "x", "completions": ["a", "b"], "rewards": [0.1, 0.2]})),
        {},
        "line 3: row is in the prompt-completions format but line 1 is in the samples format",
    ),
    (
        "too-few-rows",
        "\n".join(json.dumps(good_row(i)) for i in range(2)).encode(),
        {},
        "the dataset has 2 row(s); at least 3 are required",
    ),
    (
        "oversized-line",
        with_bad_line(json.dumps({"samples": ["x" * 3000]})),
        {"limits": {"maxLineBytes": 1024}},
        "line 3: line is longer than the limit of 1024 bytes",
    ),
    (
        # More malformed rows than the summary keeps: the condition counts them all.
        "many-bad-rows",
        b"".join(b'{"samples": [\n' for _ in range(60)) + (json.dumps(good_row(0)) + "\n").encode(),
        {},
        "line 1: not valid JSON",
    ),
]


def reader_account(objects: Objects) -> None:
    objects.core.create_namespaced_service_account(
        objects.namespace,
        {"metadata": {"name": "reader", "labels": WORKLOAD, "annotations": {"eks.amazonaws.com/role-arn": ROLE}}},
    )


def wait_dataset(objects: Objects, name: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    obj: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        obj = objects.get("datasets", name)
        if obj and obj.get("status", {}).get("phase") in ("READY", "FAILED"):
            return obj
        time.sleep(0.5)
    raise AssertionError(f"dataset {name} not validated in {timeout}s: {(obj or {}).get('status')}")


def test_a_good_dataset_becomes_ready_with_counts_and_digest(
    operator: OperatorProcess, objects: Objects, moto_server: Emulator, s3_bucket: S3Bucket
) -> None:
    reader_account(objects)
    data = "".join(json.dumps(good_row(i)) + "\n" for i in range(12)).encode()
    put_s3_object(moto_server.endpoint, s3_bucket.name, "rft/datasets/good.jsonl", data)
    objects.create(
        "datasets",
        "Dataset",
        "good",
        {"source": f"s3://{s3_bucket.name}/rft/datasets/", "serviceAccountName": "reader"},
    )
    ready = wait_dataset(objects, "good")
    status = ready["status"]
    assert status["phase"] == "READY", status
    assert status["rows"] == 12
    assert status["format"] == "samples"
    assert status["minSamplesPerRow"] == status["maxSamplesPerRow"] == 2
    assert status["rewardKeys"] == ["score"]
    assert status["bytes"] == len(data)
    assert status["digest"] == "sha256:" + hashlib.sha256(data).hexdigest()
    assert status["resolvedSource"] == f"s3://{s3_bucket.name}/rft/datasets/good.jsonl"
    assert next(c for c in status["conditions"] if c["type"] == "Ready")["status"] == "True"


@pytest.mark.parametrize(("name", "data", "spec", "expected"), BAD, ids=[case[0] for case in BAD])
def test_a_bad_dataset_fails_with_the_line_and_reason(
    operator: OperatorProcess,
    objects: Objects,
    moto_server: Emulator,
    s3_bucket: S3Bucket,
    name: str,
    data: bytes,
    spec: dict[str, Any],
    expected: str,
) -> None:
    reader_account(objects)
    put_s3_object(moto_server.endpoint, s3_bucket.name, f"rft/datasets/{name}.jsonl", data)
    objects.create(
        "datasets",
        "Dataset",
        name,
        {
            "source": f"s3://{s3_bucket.name}/rft/datasets/{name}.jsonl",
            "serviceAccountName": "reader",
            **spec,
        },
    )
    failed = wait_dataset(objects, name)
    status = failed["status"]
    assert status["phase"] == "FAILED", status
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False"
    assert expected in ready["message"]
    if name == "many-bad-rows":
        kept = len(status["errors"])
        assert 1 <= kept <= 20
        assert [e["line"] for e in status["errors"]] == list(range(1, kept + 1))
        assert f"(60 malformed rows in all; the first {kept} in status.errors)" in ready["message"], ready


def test_no_credentials_is_a_clear_failure_not_a_bad_dataset(
    operator: OperatorProcess, objects: Objects, moto_server: Emulator, s3_bucket: S3Bucket
) -> None:
    """The default ServiceAccount has no role: the validator says so instead of blaming the rows."""
    data = "".join(json.dumps(good_row(i)) + "\n" for i in range(3)).encode()
    put_s3_object(moto_server.endpoint, s3_bucket.name, "rft/datasets/nocreds.jsonl", data)
    objects.create(
        "datasets", "Dataset", "nocreds", {"source": f"s3://{s3_bucket.name}/rft/datasets/nocreds.jsonl"}
    )
    failed = wait_dataset(objects, "nocreds", timeout=180)
    ready = next(c for c in failed["status"]["conditions"] if c["type"] == "Ready")
    assert failed["status"]["phase"] == "FAILED"
    assert ready["reason"] == "CredentialsError"
    assert "credential" in ready["message"].lower()
