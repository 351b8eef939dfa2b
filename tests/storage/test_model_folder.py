"""The base model check and pinned fetch (rft.storage.model_folder, python -m rft.pods.check_model):
what a loadable model folder is, the reason for each kind of broken one, and files changed after
the check refused by the fetch. Every test runs on each storage backend (local, S3, GCS)."""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from rft.contracts.model_check import (
    EXIT_INVALID,
    EXIT_OK,
    EXIT_STORAGE,
    TERMINATION_MESSAGE_LIMIT,
    ModelCheckSummary,
)
from rft.pods.check_model import run as run_check
from rft.storage import DigestMismatch, NotFound, delete, upload_file, write_bytes
from rft.storage.checkpoints import FileRecord, upload_tree
from rft.storage.model_folder import (
    InvalidModelError,
    check_model_folder,
    fetch_pinned,
    files_digest,
    parse_safetensors_header,
)
from safetensors.numpy import save_file

CONFIG = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 8}


def _shard(path: Path, names: list[str], seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    save_file({name: rng.standard_normal((4, 8)).astype(np.float32) for name in names}, str(path))


def hf_folder(root: Path, *, sharded: bool = False) -> Path:
    """A small Hugging Face folder: config, tokenizer, safetensors weights (one file or two shards
    with an index), plus files no server loads."""
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps(CONFIG))
    (root / "tokenizer.json").write_text('{"model": {"type": "BPE"}}')
    (root / "tokenizer_config.json").write_text("{}")
    if sharded:
        _shard(root / "model-00001-of-00002.safetensors", ["a.weight", "b.weight"], 1)
        _shard(root / "model-00002-of-00002.safetensors", ["c.weight"], 2)
        weight_map = {
            "a.weight": "model-00001-of-00002.safetensors",
            "b.weight": "model-00001-of-00002.safetensors",
            "c.weight": "model-00002-of-00002.safetensors",
        }
        (root / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    else:
        _shard(root / "model.safetensors", ["a.weight", "b.weight", "c.weight"])
    (root / ".gitattributes").write_text("*.safetensors filter=lfs\n")
    (root / "original").mkdir()
    (root / "original" / "consolidated.00.pth").write_bytes(b"pickle")
    return root


def upload_plain(local: Path, url: str) -> None:
    """Upload a folder file by file, as `aws s3 sync` or `gsutil cp -r` would: no commit marker."""
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        upload_file(path, f"{url}{path.relative_to(local).as_posix()}", create_only=True)


@pytest.fixture
def model_url(url_in: Callable[[str], str], tmp_path: Path) -> str:
    url = url_in("models/plain/")
    upload_plain(hf_folder(tmp_path / "hf", sharded=True), url)
    return url


def test_a_plain_folder_is_checked_and_every_served_file_pinned(model_url: str, tmp_path: Path) -> None:
    checked = check_model_folder(model_url)
    assert checked.format == "huggingface"
    assert (checked.architecture, checked.model_type, checked.dtype) == ("Qwen2ForCausalLM", "qwen2", "F32")
    assert checked.parameters == 3 * 4 * 8
    local = tmp_path / "hf"
    served = sorted(
        [
            "config.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "model.safetensors.index.json",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
        ]
    )
    assert [r.path for r in checked.files] == served
    for record in checked.files:
        data = (local / record.path).read_bytes()
        assert (record.sha256, record.size) == (hashlib.sha256(data).hexdigest(), len(data))
    assert sorted(checked.ignored) == [".gitattributes", "original/consolidated.00.pth"]
    assert checked.digest == files_digest(reversed(checked.files)), "the digest does not depend on order"


def test_a_committed_upload_is_checked_against_its_manifest(
    url_in: Callable[[str], str], tmp_path: Path
) -> None:
    url = url_in("models/committed/")
    upload_tree(hf_folder(tmp_path / "hf"), url)
    checked = check_model_folder(url)
    assert checked.format == "committed"
    assert "metadata.json" in [r.path for r in checked.files]


def test_a_committed_upload_whose_file_changed_is_refused(
    url_in: Callable[[str], str], tmp_path: Path
) -> None:
    url = url_in("models/committed/")
    upload_tree(hf_folder(tmp_path / "hf"), url)
    write_bytes(f"{url}tokenizer.json", b'{"model": {"type": "Unigram"}}')
    with pytest.raises(InvalidModelError, match=r"tokenizer\.json: content has sha256") as info:
        check_model_folder(url)
    assert info.value.reason == "DigestMismatch"


@pytest.mark.parametrize(
    ("breakage", "reason", "names"),
    [
        ("no config", "NotAModel", "no config.json"),
        ("config not json", "NotAModel", "config.json: not valid JSON"),
        ("no architectures", "NotAModel", "'architectures'"),
        ("no weights", "NoWeights", "no *.safetensors"),
        ("only pickled weights", "NoWeights", "pytorch_model.bin"),
        ("truncated shard", "CorruptWeights", "model-00002-of-00002.safetensors"),
        ("garbage shard", "CorruptWeights", "model-00001-of-00002.safetensors"),
        ("missing shard", "CorruptWeights", "missing from"),
        ("index names an absent tensor", "CorruptWeights", "'d.weight'"),
        ("no tokenizer", "NoTokenizer", "no tokenizer files"),
    ],
)
def test_a_broken_folder_fails_with_a_reason_naming_the_file(
    url_in: Callable[[str], str], tmp_path: Path, breakage: str, reason: str, names: str
) -> None:
    local = hf_folder(tmp_path / "hf", sharded=True)
    shard1, shard2 = local / "model-00001-of-00002.safetensors", local / "model-00002-of-00002.safetensors"
    index = local / "model.safetensors.index.json"
    if breakage == "no config":
        (local / "config.json").unlink()
    elif breakage == "config not json":
        (local / "config.json").write_text("{architectures: [")
    elif breakage == "no architectures":
        (local / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    elif breakage in ("no weights", "only pickled weights"):
        for path in (shard1, shard2, index):
            path.unlink()
        if breakage == "only pickled weights":
            (local / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    elif breakage == "truncated shard":
        shard2.write_bytes(shard2.read_bytes()[:-17])
    elif breakage == "garbage shard":
        shard1.write_bytes(struct.pack("<Q", 12) + b"not json at all")
    elif breakage == "missing shard":
        shard2.unlink()
    elif breakage == "index names an absent tensor":
        weight_map = json.loads(index.read_text())["weight_map"]
        index.write_text(json.dumps({"weight_map": {**weight_map, "d.weight": shard2.name}}))
    elif breakage == "no tokenizer":
        (local / "tokenizer.json").unlink()
    url = url_in("models/broken/")
    upload_plain(local, url)
    with pytest.raises(InvalidModelError) as info:
        check_model_folder(url)
    assert info.value.reason == reason
    assert names in str(info.value)


def test_an_empty_prefix_is_not_found(url_in: Callable[[str], str]) -> None:
    with pytest.raises(NotFound, match="no objects"):
        check_model_folder(url_in("models/nothing-here/"))


def test_safetensors_headers_are_checked_against_the_file_size() -> None:
    header = json.dumps({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}).encode()
    head = struct.pack("<Q", len(header)) + header
    assert set(parse_safetensors_header("w.safetensors", head, len(head) + 16)) == {"w"}
    with pytest.raises(InvalidModelError, match="need 16 bytes of data, the file holds 8"):
        parse_safetensors_header("w.safetensors", head, len(head) + 8)
    wrong = json.dumps({"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 16]}}).encode()
    with pytest.raises(InvalidModelError, match="its shape needs 24"):
        parse_safetensors_header("w.safetensors", struct.pack("<Q", len(wrong)) + wrong, 8 + len(wrong) + 16)
    with pytest.raises(InvalidModelError, match="declares a"):
        parse_safetensors_header("w.safetensors", struct.pack("<Q", 2**40), 1000)


def test_fetch_takes_exactly_the_pinned_files(model_url: str, tmp_path: Path) -> None:
    checked = check_model_folder(model_url)
    dest = tmp_path / "fetched"
    records = fetch_pinned(model_url, dest, checked.digest, checked.files)
    assert records == checked.files
    assert sorted(p.name for p in dest.iterdir()) == [r.path for r in checked.files]
    # Without the per-file list (a folder too large for the check's report): the digest alone.
    again = tmp_path / "digest-only"
    assert fetch_pinned(model_url, again, checked.digest) == checked.files


@pytest.mark.parametrize("per_file", [True, False], ids=["per-file pins", "digest only"])
def test_a_file_changed_after_the_check_is_refused_and_nothing_is_left(
    model_url: str, tmp_path: Path, per_file: bool
) -> None:
    checked = check_model_folder(model_url)
    # Same size, other bytes: only the digest tells.
    original = (tmp_path / "hf" / "tokenizer_config.json").read_bytes()
    delete(f"{model_url}tokenizer_config.json")
    write_bytes(f"{model_url}tokenizer_config.json", b"[]")
    assert len(original) == 2
    dest = tmp_path / "fetched"
    with pytest.raises(DigestMismatch) as info:
        fetch_pinned(model_url, dest, checked.digest, checked.files if per_file else None)
    if per_file:
        assert "tokenizer_config.json" in str(info.value)
    else:
        assert f"its Model pinned {checked.digest}" in str(info.value)
    assert not dest.exists() or not any(dest.iterdir()), "no unverified file is left behind"


def test_files_added_or_removed_after_the_check_are_refused(model_url: str, tmp_path: Path) -> None:
    checked = check_model_folder(model_url)
    write_bytes(f"{model_url}modeling_evil.py", b"import os")
    with pytest.raises(DigestMismatch, match=r"added: modeling_evil\.py"):
        fetch_pinned(model_url, tmp_path / "a", checked.digest, checked.files)
    with pytest.raises(DigestMismatch, match="a file was changed, added or removed"):
        fetch_pinned(model_url, tmp_path / "b", checked.digest)
    delete(f"{model_url}modeling_evil.py")
    delete(f"{model_url}tokenizer.json")
    with pytest.raises(DigestMismatch, match=r"missing: tokenizer\.json"):
        fetch_pinned(model_url, tmp_path / "c", checked.digest, checked.files)


def test_the_check_program_reports_through_its_termination_message(model_url: str, tmp_path: Path) -> None:
    log = tmp_path / "termination-log"
    assert run_check(model_url, str(log)) == EXIT_OK
    summary = ModelCheckSummary.parse(log.read_text())
    assert summary is not None
    assert summary.ok
    assert summary.reason == "Checked"
    checked = check_model_folder(model_url)
    assert summary.files_digest == checked.digest
    assert summary.file_count == 6
    assert [f.path for f in summary.files or []] == [r.path for r in checked.files]
    assert summary.ignored == 2
    delete(f"{model_url}config.json")
    assert run_check(model_url, str(log)) == EXIT_INVALID
    failed = ModelCheckSummary.parse(log.read_text())
    assert failed is not None
    assert (failed.ok, failed.reason) == (False, "NotAModel")
    assert run_check(f"{model_url}nothing/", str(log)) == EXIT_STORAGE
    missing = ModelCheckSummary.parse(log.read_text())
    assert missing is not None
    assert missing.reason == "ModelNotFound"


def test_a_summary_of_many_files_fits_the_termination_message() -> None:
    records = [
        FileRecord(f"model-{i:05d}-of-00200.safetensors", "ab" * 32, 5_000_000_000) for i in range(200)
    ]
    summary = ModelCheckSummary(
        ok=True,
        reason="Checked",
        message="200 files",
        file_count=200,
        files_digest=files_digest(records),
        files=[{"path": r.path, "sha256": r.sha256, "size": r.size} for r in records],
    )
    data = summary.termination_message()
    assert len(data) <= TERMINATION_MESSAGE_LIMIT
    parsed = ModelCheckSummary.parse(data.decode())
    assert parsed is not None
    assert parsed.files is None
    assert parsed.files_digest == files_digest(records)
