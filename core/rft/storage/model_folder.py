"""A base model folder in the bucket: which files serve, whether they make a loadable model, and
the digest that pins them.

A base ``Model`` may point at a plain Hugging Face folder (``config.json``, ``*.safetensors``,
tokenizer files) or at a checkpoint committed by :func:`rft.storage.checkpoints.upload_tree`.
The model check Job (``python -m rft.pods.check_model``) reads the folder once, refuses what no server
could load, and reports every served file's sha256; the operator pins them in the Model's status.
Every pod that later fetches the folder (:func:`fetch_pinned`: the vLLM pod's init container, the
trainer) downloads exactly the pinned files and refuses any that differ: a file changed, added or
removed after the check.

Served files are the folder's top-level files except the commit marker, dot files and pickled
weights (``*.bin``, ``*.pt``, ...: unpickling runs code, and servers prefer safetensors anyway);
files in subfolders (e.g. ``original/``) are ignored and counted.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import struct
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rft.storage.base import ObjectInfo
from rft.storage.checkpoints import COMMIT_MARKER, FETCH_PARALLELISM, FileRecord, read_manifest
from rft.storage.errors import DigestMismatch, NotFound, StorageError
from rft.storage.lines import iter_chunks
from rft.storage.objects import download_file, list_objects, open_stream, read_bytes
from rft.storage.urls import Location, parse_url

CONFIG_FILE = "config.json"
SAFETENSORS_SUFFIX = ".safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
# Any one of these lets vLLM and transformers build the tokenizer.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "tiktoken.model")
MAX_FILES = 1024
MAX_CONFIG_BYTES = 4 * 1024 * 1024
MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors format's own limit
# Bytes per element of the safetensors dtypes whose size is a whole number of bytes.
DTYPE_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "F8_E8M0": 1,
    "U16": 2,
    "I16": 2,
    "F16": 2,
    "BF16": 2,
    "U32": 4,
    "I32": 4,
    "F32": 4,
    "U64": 8,
    "I64": 8,
    "F64": 8,
}

CheckFailure = Literal[
    "NotAModel", "NoWeights", "CorruptWeights", "NoTokenizer", "DigestMismatch", "TooManyFiles"
]


class InvalidModelError(Exception):
    """The folder is not a model a server could load; ``reason`` is a CamelCase condition reason."""

    def __init__(self, reason: CheckFailure, message: str) -> None:
        super().__init__(message)
        self.reason: CheckFailure = reason


@dataclass(frozen=True)
class CheckedModel:
    """What the check found: the pinned files and what they hold."""

    format: Literal["huggingface", "committed"]
    architecture: str
    model_type: str
    parameters: int
    dtype: str
    files: list[FileRecord]
    ignored: list[str] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(record.size for record in self.files)

    @property
    def digest(self) -> str:
        return files_digest(self.files)


def files_digest(records: Iterable[FileRecord]) -> str:
    """``sha256:<hex>`` over the sorted (path, sha256, size) of every file: one value pins them all."""
    canonical = sorted([r.path, r.sha256, r.size] for r in records)
    return "sha256:" + hashlib.sha256(json.dumps(canonical, separators=(",", ":")).encode()).hexdigest()


def folder_prefix(url: str) -> Location:
    location = parse_url(url)
    if not location.is_local and not location.key.strip("/"):
        raise StorageError(f"{url}: a model needs a prefix inside the bucket, not the bucket root")
    return location.as_prefix()


def relative_path(prefix: Location, info: ObjectInfo) -> str:
    return info.key[len(prefix.key) :].lstrip("/") if info.key.startswith(prefix.key) else info.key


def served_files(prefix: Location, listing: Sequence[ObjectInfo]) -> tuple[dict[str, ObjectInfo], list[str]]:
    """The files a server loads (relative path -> object) and the ignored ones' relative paths."""
    served: dict[str, ObjectInfo] = {}
    ignored: list[str] = []
    for info in listing:
        relative = relative_path(prefix, info)
        if not relative or relative == COMMIT_MARKER:
            continue
        if "/" in relative or relative.startswith(".") or relative.lower().endswith(PICKLE_SUFFIXES):
            ignored.append(relative)
        else:
            served[relative] = info
    return served, sorted(ignored)


@dataclass(frozen=True)
class _Tensor:
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


def parse_safetensors_header(name: str, head: bytes, file_size: int) -> dict[str, _Tensor]:
    """The tensors a ``.safetensors`` file declares, checked against its size (``head`` holds at
    least the 8-byte length and the JSON header). Raises :class:`InvalidModelError` (CorruptWeights)."""
    if file_size < 8 or len(head) < 8:
        raise InvalidModelError(
            "CorruptWeights", f"{name}: {file_size} bytes, too short for a safetensors file"
        )
    (header_len,) = struct.unpack("<Q", head[:8])
    if header_len > MAX_HEADER_BYTES or 8 + header_len > file_size:
        raise InvalidModelError(
            "CorruptWeights",
            f"{name}: declares a {header_len}-byte header in a {file_size}-byte file (truncated or not safetensors)",
        )
    try:
        header = json.loads(head[8 : 8 + header_len])
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        tensors: dict[str, _Tensor] = {}
        for tensor_name, entry in header.items():
            if tensor_name == "__metadata__":
                continue
            dtype, shape, (begin, end) = entry["dtype"], tuple(entry["shape"]), entry["data_offsets"]
            if not all(isinstance(n, int) and n >= 0 for n in (*shape, begin, end)) or end < begin:
                raise ValueError(f"tensor {tensor_name!r}: bad shape or offsets")
            tensors[str(tensor_name)] = _Tensor(str(dtype), shape, begin, end)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise InvalidModelError("CorruptWeights", f"{name}: not a valid safetensors header ({exc})") from None
    data_bytes = file_size - 8 - header_len
    for tensor_name, tensor in tensors.items():
        width = DTYPE_BYTES.get(tensor.dtype)
        if width is not None and tensor.end - tensor.begin != math.prod(tensor.shape) * width:
            raise InvalidModelError(
                "CorruptWeights",
                f"{name}: tensor {tensor_name!r} ({tensor.dtype} {list(tensor.shape)}) spans "
                f"{tensor.end - tensor.begin} bytes, its shape needs {math.prod(tensor.shape) * width}",
            )
    needed = max((t.end for t in tensors.values()), default=0)
    if needed > data_bytes:
        raise InvalidModelError(
            "CorruptWeights",
            f"{name}: its tensors need {needed} bytes of data, the file holds {data_bytes} (truncated upload?)",
        )
    if not tensors:
        raise InvalidModelError("CorruptWeights", f"{name}: holds no tensors")
    return tensors


def _read_json(url: str, name: str, size: int, reason: CheckFailure) -> Any:
    if size > MAX_CONFIG_BYTES:
        raise InvalidModelError(reason, f"{name}: {size} bytes, too large for a JSON config file")
    try:
        return json.loads(read_bytes(url))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidModelError(reason, f"{name}: not valid JSON ({exc})") from None


def _config(prefix: Location, served: dict[str, ObjectInfo]) -> tuple[str, str]:
    info = served.get(CONFIG_FILE)
    if info is None:
        raise InvalidModelError(
            "NotAModel", f"{prefix.url} has no {CONFIG_FILE}: not a Hugging Face model folder"
        )
    config = _read_json(info.url, CONFIG_FILE, info.size, "NotAModel")
    architectures = config.get("architectures") if isinstance(config, dict) else None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if (
        not isinstance(architectures, list)
        or not architectures
        or not all(isinstance(a, str) and a for a in architectures)
    ):
        raise InvalidModelError(
            "NotAModel", f"{CONFIG_FILE}: 'architectures' must be a non-empty list of class names"
        )
    if not isinstance(model_type, str) or not model_type:
        raise InvalidModelError("NotAModel", f"{CONFIG_FILE}: 'model_type' must be a non-empty string")
    return str(architectures[0]), model_type


def _hash_one(info: ObjectInfo, name: str) -> tuple[FileRecord, bytes]:
    """Stream one object: its record, and for safetensors files its first bytes up to the end of
    the header (the length prefix says how many)."""
    digest = hashlib.sha256()
    size = 0
    head = bytearray()
    keep_head = name.endswith(SAFETENSORS_SUFFIX)
    need: int | None = None
    with open_stream(info.url) as stream:
        for chunk in iter_chunks(stream):
            digest.update(chunk)
            size += len(chunk)
            if keep_head and (need is None or len(head) < need):
                head += chunk
                if need is None and len(head) >= 8:
                    need = 8 + min(struct.unpack("<Q", bytes(head[:8]))[0], MAX_HEADER_BYTES)
                if need is not None and len(head) > need:
                    del head[need:]
    return FileRecord(name, digest.hexdigest(), size), bytes(head)


def _hash_all(served: dict[str, ObjectInfo]) -> dict[str, tuple[FileRecord, bytes]]:
    ordered = sorted(served.items(), key=lambda item: -item[1].size)
    workers = max(1, min(FETCH_PARALLELISM, len(ordered)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="check") as pool:
        results = list(pool.map(lambda item: _hash_one(item[1], item[0]), ordered))
    return {record.path: (record, head) for record, head in results}


def _check_index(
    prefix: Location, served: dict[str, ObjectInfo], headers: dict[str, dict[str, _Tensor]]
) -> None:
    info = served.get(SAFETENSORS_INDEX)
    if info is None:
        return
    index = _read_json(info.url, SAFETENSORS_INDEX, info.size, "CorruptWeights")
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise InvalidModelError(
            "CorruptWeights", f"{SAFETENSORS_INDEX}: 'weight_map' must map tensor names to shards"
        )
    missing_shards = sorted({str(shard) for shard in weight_map.values()} - set(headers))
    if missing_shards:
        raise InvalidModelError(
            "CorruptWeights",
            f"{SAFETENSORS_INDEX} names shard(s) missing from {prefix.url}: {', '.join(missing_shards[:5])}"
            + (f" and {len(missing_shards) - 5} more" if len(missing_shards) > 5 else ""),
        )
    for tensor_name, shard in weight_map.items():
        if tensor_name not in headers[str(shard)]:
            raise InvalidModelError(
                "CorruptWeights", f"{SAFETENSORS_INDEX}: tensor {tensor_name!r} is not in its shard {shard}"
            )


def check_model_folder(url: str) -> CheckedModel:
    """Read the model folder at ``url`` once and say whether a server could load it.

    Raises :class:`InvalidModelError` for a folder that is not a loadable model (the reason names the
    file and what is wrong), :class:`NotFound` for an empty prefix, and other
    :class:`StorageError`\\ s when the bucket cannot be read.
    """
    prefix = folder_prefix(url)
    listing = list_objects(prefix.url)
    if not listing:
        raise NotFound(f"{prefix.url}: no objects under this prefix")
    served, ignored = served_files(prefix, listing)
    if len(served) > MAX_FILES:
        raise InvalidModelError(
            "TooManyFiles", f"{prefix.url}: {len(served)} files; a model folder may hold {MAX_FILES}"
        )
    architecture, model_type = _config(prefix, served)
    weights = sorted(name for name in served if name.endswith(SAFETENSORS_SUFFIX))
    if not weights:
        pickled = [name for name in ignored if name.lower().endswith(PICKLE_SUFFIXES) and "/" not in name]
        raise InvalidModelError(
            "NoWeights",
            f"{prefix.url}: no *.safetensors weights"
            + (
                f" (only pickled weights: {', '.join(pickled[:3])}; unpickling runs code, so they are not "
                "loaded: convert them to safetensors)"
                if pickled
                else ""
            ),
        )
    if not any(name in served for name in TOKENIZER_FILES):
        raise InvalidModelError(
            "NoTokenizer", f"{prefix.url}: no tokenizer files (one of {', '.join(TOKENIZER_FILES)})"
        )
    committed = any(relative_path(prefix, info) == COMMIT_MARKER for info in listing)
    hashed = _hash_all(served)
    if committed:
        _check_manifest(prefix, hashed)
    headers = {
        name: parse_safetensors_header(name, hashed[name][1], hashed[name][0].size) for name in weights
    }
    _check_index(prefix, served, headers)
    tensors = [t for header in headers.values() for t in header.values()]
    dtypes = Counter(t.dtype for t in tensors)
    return CheckedModel(
        format="committed" if committed else "huggingface",
        architecture=architecture,
        model_type=model_type,
        parameters=sum(math.prod(t.shape) for t in tensors),
        dtype=dtypes.most_common(1)[0][0],
        files=sorted((record for record, _ in hashed.values()), key=lambda r: r.path),
        ignored=ignored,
    )


def _check_manifest(prefix: Location, hashed: dict[str, tuple[FileRecord, bytes]]) -> None:
    """A committed checkpoint's files must still be the ones its commit manifest records."""
    manifest = read_manifest(prefix.url)
    for entry in manifest["files"]:
        path = str(entry["path"])
        if path not in hashed:
            continue  # in a subfolder or pickled: not served, so not pinned
        actual = hashed[path][0].sha256
        if actual != entry["sha256"]:
            raise InvalidModelError(
                "DigestMismatch",
                f"{path}: content has sha256 {actual}, but the commit manifest recorded {entry['sha256']}",
            )


def fetch_pinned(
    url: str, local_dir: Path, digest: str, pinned: Sequence[FileRecord] | None = None
) -> list[FileRecord]:
    """Download the served files of the model folder at ``url`` into ``local_dir`` and prove they
    are the ones its check pinned: together they must hash to ``digest`` (:func:`files_digest`),
    and with ``pinned`` (the per-file list, when the check could report it) each file must match
    its own pin, so that the error names it.

    Raises :class:`DigestMismatch` when a file changed, was added or removed since the check; the
    files this call wrote are removed again, so nothing unverified is left under its final name.
    """
    if pinned is not None and files_digest(pinned) != digest:
        raise DigestMismatch(f"the pinned file list does not hash to its digest {digest}")
    prefix = folder_prefix(url)
    served, _ = served_files(prefix, list_objects(prefix.url))
    if pinned is not None:
        _refuse_changed_listing(prefix, served, {record.path: record for record in pinned})
    expected = {record.path: record.sha256 for record in pinned or []}
    local_dir = Path(local_dir)
    ordered = sorted(served.items(), key=lambda item: -item[1].size)
    workers = max(1, min(FETCH_PARALLELISM, len(ordered)))
    written = [name for name, _ in ordered]
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fetch") as pool:
            downloads = list(
                pool.map(
                    lambda item: download_file(
                        item[1].url, local_dir / item[0], expected_sha256=expected.get(item[0])
                    ),
                    ordered,
                )
            )
        records = sorted(
            (
                FileRecord(name, done.sha256, done.size)
                for (name, _), done in zip(ordered, downloads, strict=True)
            ),
            key=lambda r: r.path,
        )
        actual = files_digest(records)
        if actual != digest:
            raise DigestMismatch(
                f"the files under {prefix.url} hash to {actual}, but its Model pinned {digest}: a file was "
                "changed, added or removed since the Model was checked"
            )
    except DigestMismatch as exc:
        _remove(local_dir, written)
        raise DigestMismatch(f"{exc}; refusing to load it") from None
    except BaseException:
        _remove(local_dir, written)
        raise
    return records


def _refuse_changed_listing(
    prefix: Location, served: dict[str, ObjectInfo], expected: dict[str, FileRecord]
) -> None:
    missing = sorted(set(expected) - set(served))
    added = sorted(set(served) - set(expected))
    resized = sorted(p for p in set(expected) & set(served) if served[p].size != expected[p].size)
    parts = [
        f"{label} {', '.join(paths[:5])}" + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
        for label, paths in (("missing:", missing), ("added:", added), ("size changed:", resized))
        if paths
    ]
    if parts:
        raise DigestMismatch(f"{prefix.url} changed since its Model was checked ({'; '.join(parts)})")


def _remove(local_dir: Path, names: Sequence[str]) -> None:
    for name in names:
        path = local_dir / name
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
