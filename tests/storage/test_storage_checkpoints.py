"""Checkpoint publishing and fetching: create-only, commit marker last, digests verified."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rft import storage
from rft.storage import checkpoints
from rft.storage.checkpoints import (
    COMMIT_MARKER,
    discard_uncommitted,
    fetch_checkpoint,
    is_committed,
    publish_checkpoint,
    upload_tree,
)

ADAPTER_FILES = {
    "adapter_config.json": b'{"r": 8, "lora_alpha": 16}',
    "adapter_model.safetensors": bytes(range(256)) * 64,
    "tokenizer/tokenizer.json": b'{"model": "bpe"}',
}
METADATA = {"baseModel": "tiny-base", "lora": {"rank": 8}, "datasetDigest": "sha256:" + "a" * 64}


@pytest.fixture
def adapter_dir(tmp_path: Path) -> Path:
    root = tmp_path / "adapter"
    for name, data in ADAPTER_FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def test_publish_then_fetch_round_trip(bucket_url: str, adapter_dir: Path, tmp_path: Path) -> None:
    dest = f"{bucket_url}/ns/models/step-1"
    records = publish_checkpoint(adapter_dir, dest, METADATA)
    assert [r.path for r in records] == sorted(ADAPTER_FILES)
    assert {r.path: r.sha256 for r in records} == {
        name: hashlib.sha256(data).hexdigest() for name, data in ADAPTER_FILES.items()
    }
    assert is_committed(dest)
    marker = json.loads(storage.read_bytes(f"{dest}/{COMMIT_MARKER}"))
    assert [entry["path"] for entry in marker["files"]] == sorted(ADAPTER_FILES)

    out = tmp_path / "fetched"
    metadata = fetch_checkpoint(dest, out)
    assert metadata["baseModel"] == "tiny-base"
    assert metadata["files"] == [{"path": r.path, "sha256": r.sha256, "size": r.size} for r in records]
    for name, data in ADAPTER_FILES.items():
        assert (out / name).read_bytes() == data
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == sorted(
        ADAPTER_FILES
    )


def test_existing_checkpoint_is_never_overwritten(bucket_url: str, adapter_dir: Path, tmp_path: Path) -> None:
    dest = f"{bucket_url}/models/m"
    publish_checkpoint(adapter_dir, dest, METADATA)
    other = tmp_path / "other"
    other.mkdir()
    (other / "adapter_model.safetensors").write_bytes(b"different weights")
    with pytest.raises(storage.AlreadyExists, match="already holds a committed checkpoint"):
        publish_checkpoint(other, dest, {"x": 1})
    assert (
        storage.read_bytes(f"{dest}/adapter_model.safetensors") == ADAPTER_FILES["adapter_model.safetensors"]
    )


def test_a_sibling_prefix_does_not_block_publishing(bucket_url: str, adapter_dir: Path) -> None:
    publish_checkpoint(adapter_dir, f"{bucket_url}/models/m", METADATA)
    publish_checkpoint(adapter_dir, f"{bucket_url}/models/m2", METADATA)  # 'models/m' is not a prefix of it
    assert is_committed(f"{bucket_url}/models/m2")


def test_failed_upload_removes_what_it_created(
    bucket_url: str, adapter_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = f"{bucket_url}/models/failed"
    real_upload = storage.upload_file
    uploads: list[str] = []

    def upload_then_fail(path: Path, url: str, *, create_only: bool = True) -> None:
        if len(uploads) == 2:
            raise storage.StorageError(f"simulated failure while uploading {url}")
        uploads.append(url)
        real_upload(path, url, create_only=create_only)

    with monkeypatch.context() as patch:
        patch.setattr(checkpoints, "upload_file", upload_then_fail)
        with pytest.raises(storage.StorageError, match="simulated failure"):
            publish_checkpoint(adapter_dir, dest, METADATA)
    assert len(uploads) == 2
    assert storage.list_objects(dest + "/") == []
    publish_checkpoint(adapter_dir, dest, METADATA)
    assert fetch_checkpoint(dest, tmp_path / "out")["baseModel"] == "tiny-base"


def _publish_and_crash(dest: str, adapter_dir: Path, env: dict[str, str]) -> None:
    """Run publish_checkpoint in a child process that dies (os._exit) after two uploads."""
    script = f"""
import os
from pathlib import Path
from rft.storage import checkpoints
real = checkpoints.upload_file
done = []
def upload(path, url, *, create_only=True):
    if len(done) == 2:
        os._exit(137)  # like a pod killed mid-upload: no exception handler runs
    real(path, url, create_only=create_only)
    done.append(url)
checkpoints.upload_file = upload
checkpoints.publish_checkpoint(Path({str(adapter_dir)!r}), {dest!r}, {{"x": 1}})
"""
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 137, result.stderr


@pytest.mark.parametrize("backend", ["s3", "gs"])
def test_hard_crash_leaves_an_untrusted_partial_upload(
    backend: str, request: pytest.FixtureRequest, adapter_dir: Path, tmp_path: Path
) -> None:
    bucket = request.getfixturevalue("s3_bucket" if backend == "s3" else "gcs_bucket")
    dest = f"{bucket.url}/models/crashed"
    _publish_and_crash(dest, adapter_dir, bucket.pod_env())

    assert len(storage.list_objects(dest + "/")) == 2  # two files made it, no metadata, no marker
    assert not is_committed(dest)
    with pytest.raises(storage.NotFound, match=f"{COMMIT_MARKER} is missing"):
        fetch_checkpoint(dest, tmp_path / "out")
    with pytest.raises(storage.AlreadyExists, match="uncommitted upload") as excinfo:
        publish_checkpoint(adapter_dir, dest, METADATA)
    assert "discard_uncommitted" in str(excinfo.value)

    assert discard_uncommitted(dest) == 2
    assert storage.list_objects(dest + "/") == []
    publish_checkpoint(adapter_dir, dest, METADATA)
    assert fetch_checkpoint(dest, tmp_path / "out")["baseModel"] == "tiny-base"


def test_local_hard_crash_leaves_nothing_at_the_destination(adapter_dir: Path, tmp_path: Path) -> None:
    models = tmp_path / "bucket" / "models"
    dest = f"file://{models}/crashed"
    _publish_and_crash(dest, adapter_dir, dict(os.environ))
    assert not (models / "crashed").exists()
    leftovers = [p.name for p in models.iterdir()]
    assert len(leftovers) == 1
    assert leftovers[0].startswith(".crashed.partial-")  # hidden staging dir, safe to delete
    with pytest.raises(storage.NotFound):
        fetch_checkpoint(dest, tmp_path / "out")
    publish_checkpoint(adapter_dir, dest, METADATA)
    assert is_committed(dest)


def test_discard_refuses_committed_checkpoints(bucket_url: str, adapter_dir: Path) -> None:
    dest = f"{bucket_url}/models/keep"
    publish_checkpoint(adapter_dir, dest, METADATA)
    with pytest.raises(storage.AlreadyExists, match="committed"):
        discard_uncommitted(dest)
    assert is_committed(dest)


def test_tampered_file_is_refused(bucket_url: str, adapter_dir: Path, tmp_path: Path) -> None:
    dest = f"{bucket_url}/models/tampered"
    publish_checkpoint(adapter_dir, dest, METADATA)
    storage.write_bytes(f"{dest}/adapter_model.safetensors", b"poisoned weights")
    out = tmp_path / "out"
    with pytest.raises(storage.DigestMismatch, match=r"adapter_model\.safetensors"):
        fetch_checkpoint(dest, out)
    assert not (out / "adapter_model.safetensors").exists()  # nothing unverified under its real name


def test_tampered_metadata_is_refused(bucket_url: str, adapter_dir: Path, tmp_path: Path) -> None:
    dest = f"{bucket_url}/models/tampered-meta"
    publish_checkpoint(adapter_dir, dest, METADATA)
    storage.write_bytes(f"{dest}/metadata.json", json.dumps({**METADATA, "baseModel": "evil"}).encode())
    with pytest.raises(storage.DigestMismatch, match=r"metadata\.json"):
        fetch_checkpoint(dest, tmp_path / "out")


def test_manifest_paths_cannot_escape_the_target(bucket_url: str, tmp_path: Path) -> None:
    dest = f"{bucket_url}/models/evil"
    manifest = {
        "format": checkpoints.MANIFEST_FORMAT,
        "files": [{"path": "../../escape", "sha256": "0" * 64, "size": 1}],
        "metadata": {"path": "metadata.json", "sha256": "0" * 64},
    }
    storage.create_bytes(f"{dest}/{COMMIT_MARKER}", json.dumps(manifest).encode())
    with pytest.raises(storage.StorageError, match="unsafe file path"):
        fetch_checkpoint(dest, tmp_path / "out" / "inner")
    assert not (tmp_path / "escape").exists()


def test_reserved_names_and_files_key_are_refused(bucket_url: str, adapter_dir: Path) -> None:
    with pytest.raises(storage.StorageError, match="'files'"):
        publish_checkpoint(adapter_dir, f"{bucket_url}/models/a", {"files": []})
    (adapter_dir / COMMIT_MARKER).write_text("forged")
    with pytest.raises(storage.StorageError, match="written by publish_checkpoint"):
        publish_checkpoint(adapter_dir, f"{bucket_url}/models/b", METADATA)
    assert storage.list_objects(f"{bucket_url}/models/") == []


def test_upload_tree_publishes_a_base_model(bucket_url: str, adapter_dir: Path, tmp_path: Path) -> None:
    records = upload_tree(adapter_dir, f"{bucket_url}/models/base")
    assert len(records) == len(ADAPTER_FILES)
    assert (
        fetch_checkpoint(f"{bucket_url}/models/base", tmp_path / "base")["files"][0]["path"]
        == records[0].path
    )


def test_local_directory_without_marker_is_accepted_as_is(adapter_dir: Path, tmp_path: Path) -> None:
    (adapter_dir / "metadata.json").write_text('{"kind": "base"}')
    out = tmp_path / "copy"
    assert fetch_checkpoint(str(adapter_dir), out) == {"kind": "base"}
    assert (out / "adapter_model.safetensors").read_bytes() == ADAPTER_FILES["adapter_model.safetensors"]
    assert fetch_checkpoint(str(adapter_dir), adapter_dir) == {"kind": "base"}  # in place: nothing copied


@pytest.mark.parametrize("backend", ["s3", "gs"])
def test_bucket_prefix_without_marker_is_refused(
    backend: str, request: pytest.FixtureRequest, adapter_dir: Path, tmp_path: Path
) -> None:
    root = request.getfixturevalue("s3_bucket" if backend == "s3" else "gcs_bucket").url
    for name, data in ADAPTER_FILES.items():
        storage.create_bytes(f"{root}/models/hand-made/{name}", data)
    with pytest.raises(storage.NotFound, match="not a committed checkpoint"):
        fetch_checkpoint(f"{root}/models/hand-made", tmp_path / "out")


def test_a_sharded_model_is_fetched_whole_and_a_bad_shard_fails_the_fetch(
    bucket_url: str, tmp_path: Path
) -> None:
    """Files come FETCH_PARALLELISM at a time; every one is verified; a tampered one among them
    fails the fetch and leaves nothing under its name, nor a temporary file."""
    model = tmp_path / "model"
    shards = {f"model-{i:05d}-of-00012.safetensors": os.urandom(50_000 + i) for i in range(12)}
    for name, data in {**shards, "config.json": b'{"model_type": "qwen2"}'}.items():
        (model / name).parent.mkdir(parents=True, exist_ok=True)
        (model / name).write_bytes(data)
    dest = f"{bucket_url}/models/sharded"
    upload_tree(model, dest)
    out = tmp_path / "fetched"
    fetch_checkpoint(dest, out)
    assert {p.name: p.read_bytes() for p in out.glob("*.safetensors")} == shards
    assert checkpoints.FETCH_PARALLELISM > 1

    storage.write_bytes(f"{dest}/model-00007-of-00012.safetensors", b"poisoned")
    again = tmp_path / "again"
    with pytest.raises(storage.DigestMismatch, match=r"model-00007-of-00012"):
        fetch_checkpoint(dest, again)
    assert not (again / "model-00007-of-00012.safetensors").exists()
    assert not [p for p in again.rglob("*") if p.name.endswith(".tmp")]
