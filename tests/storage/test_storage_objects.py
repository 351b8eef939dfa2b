"""Object operations against real protocol servers: moto (S3), the GCS emulator, the local disk."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from rft import storage
from rft.storage import s3 as s3_backend
from rft_devcluster.pytest_fixtures_storage import GcsBucket, S3Bucket

UrlIn = Callable[[str], str]


def test_create_bytes_never_overwrites(url_in: UrlIn) -> None:
    url = url_in("datasets/a.jsonl")
    storage.create_bytes(url, b"first")
    with pytest.raises(storage.AlreadyExists, match="already exists"):
        storage.create_bytes(url, b"second")
    assert storage.read_bytes(url) == b"first"


def test_upload_file_create_only_never_overwrites(url_in: UrlIn, tmp_path: Path) -> None:
    first, second = tmp_path / "one", tmp_path / "two"
    first.write_bytes(b"one" * 1000)
    second.write_bytes(b"two")
    url = url_in("models/m/weights.bin")
    storage.upload_file(first, url)
    with pytest.raises(storage.AlreadyExists):
        storage.upload_file(second, url)
    assert storage.read_bytes(url) == b"one" * 1000
    storage.upload_file(second, url, create_only=False)
    assert storage.read_bytes(url) == b"two"


def test_write_bytes_replaces(url_in: UrlIn) -> None:
    url = url_in("scratch/x")
    storage.write_bytes(url, b"old")
    storage.write_bytes(url, b"new")
    assert storage.read_bytes(url) == b"new"


def test_read_stream_lines_and_digest(url_in: UrlIn) -> None:
    data = b"".join(f'{{"row": {i}}}\r\n'.encode() for i in range(5000)) + b"last line without newline"
    url = url_in("data/rows.jsonl")
    storage.create_bytes(url, data)
    assert storage.read_bytes(url) == data
    with storage.open_stream(url) as stream:
        assert stream.read(7) == b'{"row":'
        assert stream.read() == data[7:]
    lines = list(storage.iter_lines(url))
    assert len(lines) == 5001
    assert lines[0] == b'{"row": 0}'
    assert lines[4999] == b'{"row": 4999}'
    assert lines[-1] == b"last line without newline"
    assert storage.sha256_digest(url) == "sha256:" + hashlib.sha256(data).hexdigest()


def test_exists_list_and_delete(url_in: UrlIn) -> None:
    for key in ("p/a.jsonl", "p/sub/b.bin", "p2/c"):
        storage.create_bytes(url_in(key), key.encode())
    assert storage.exists(url_in("p/a.jsonl"))
    assert not storage.exists(url_in("p/missing"))
    listed = storage.list_objects(url_in("p/"))
    assert sorted(info.url for info in listed) == [url_in("p/a.jsonl"), url_in("p/sub/b.bin")]
    assert {info.url: info.size for info in listed}[url_in("p/sub/b.bin")] == len(b"p/sub/b.bin")
    storage.delete(url_in("p/a.jsonl"))
    storage.delete(url_in("p/a.jsonl"))  # deleting an absent object is not an error
    assert not storage.exists(url_in("p/a.jsonl"))
    assert [info.url for info in storage.list_objects(url_in("p/"))] == [url_in("p/sub/b.bin")]


def test_missing_object_is_not_found_with_its_url(url_in: UrlIn) -> None:
    url = url_in("nothing/here.jsonl")
    with pytest.raises(storage.NotFound) as excinfo:
        storage.read_bytes(url)
    assert url in str(excinfo.value)
    with pytest.raises(storage.NotFound), storage.open_stream(url):
        pass


def test_download_file_verifies_digest(url_in: UrlIn, tmp_path: Path) -> None:
    url = url_in("blob")
    storage.create_bytes(url, b"payload")
    good = storage.download_file(
        url, tmp_path / "good", expected_sha256=hashlib.sha256(b"payload").hexdigest()
    )
    assert good.path.read_bytes() == b"payload"
    assert good.size == 7
    with pytest.raises(storage.DigestMismatch, match="sha256"):
        storage.download_file(url, tmp_path / "bad", expected_sha256="0" * 64)
    assert not (tmp_path / "bad").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["good"]  # no temporary file left behind


def test_prefix_urls_are_not_objects(bucket_url: str) -> None:
    with pytest.raises(storage.StorageError, match="prefix"):
        storage.read_bytes(bucket_url + "/models/")


@pytest.mark.parametrize("backend", ["gs", "file"])
def test_concurrent_creators_exactly_one_wins(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Create-only is atomic on the server: of racing writers exactly one succeeds.

    Not run against moto, whose threaded server checks If-None-Match and writes without a lock
    (AWS S3 itself is atomic here); test_create_bytes_never_overwrites covers moto sequentially.
    """
    root = request.getfixturevalue("gcs_bucket").url if backend == "gs" else f"file://{tmp_path}"
    url = f"{root}/race/object"
    outcomes: list[str] = []
    barrier = threading.Barrier(6)

    def create(index: int) -> None:
        barrier.wait()
        try:
            storage.create_bytes(url, f"writer {index}".encode())
            outcomes.append(f"won {index}")
        except storage.AlreadyExists:
            outcomes.append("refused")

    threads = [threading.Thread(target=create, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [o for o in outcomes if o.startswith("won")]
    assert len(winners) == 1
    assert outcomes.count("refused") == 5
    assert storage.read_bytes(url) == f"writer {winners[0].split()[1]}".encode()


def test_s3_multipart_upload_is_create_only_and_cleans_up(
    s3_bucket: S3Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # S3's smallest part is 5 MiB: shrink the thresholds so a 11 MiB file goes up in 3 parts.
    monkeypatch.setattr(s3_backend, "MULTIPART_THRESHOLD", 5 * 1024 * 1024)
    monkeypatch.setattr(s3_backend, "PART_BYTES", 5 * 1024 * 1024)
    big = tmp_path / "shard.safetensors"
    big.write_bytes(os.urandom(11 * 1024 * 1024))
    url = f"{s3_bucket.url}/models/base/shard.safetensors"
    storage.upload_file(big, url)
    with pytest.raises(storage.AlreadyExists):
        storage.upload_file(big, url)
    assert storage.sha256_digest(url) == "sha256:" + hashlib.sha256(big.read_bytes()).hexdigest()
    pending = s3_backend.client().list_multipart_uploads(Bucket=s3_bucket.name)
    assert pending.get("Uploads", []) == []  # the refused upload was aborted, not left to bill


def test_missing_bucket_is_named(s3_bucket: S3Bucket) -> None:
    with pytest.raises(storage.NotFound, match="no-such-bucket-rft"):
        storage.read_bytes("s3://no-such-bucket-rft/key")


def test_gcs_resumable_upload_is_create_only(gcs_bucket: GcsBucket, tmp_path: Path) -> None:
    """Files over 8 MiB take google-cloud-storage's resumable path; the precondition still holds."""
    big = tmp_path / "model.safetensors"
    big.write_bytes(os.urandom(9 * 1024 * 1024))
    url = f"{gcs_bucket.url}/models/base/model.safetensors"
    storage.upload_file(big, url)
    other = tmp_path / "other"
    other.write_bytes(os.urandom(9 * 1024 * 1024))
    with pytest.raises(storage.AlreadyExists):
        storage.upload_file(other, url)
    assert storage.sha256_digest(url) == "sha256:" + hashlib.sha256(big.read_bytes()).hexdigest()
