"""Checkpoints in the user's bucket: publish once, commit last, trust only what verifies.

Layout under a model's prefix ``<prefix>/models/<name>/``::

    adapter_model.safetensors, adapter_config.json, ...   the files (or a base model's HF files)
    metadata.json                                          metadata + {"files": [...]}
    _COMMITTED                                             the manifest, written last

Commit protocol: every object is created with create-only semantics, so nothing is ever
overwritten; the marker is created last and holds the sha256 of every file and of
``metadata.json``. A reader trusts a checkpoint only when the marker exists and every digest
matches.

Failures: an upload that fails with an exception deletes the objects it created. A hard crash
(killed pod, lost node) leaves objects without a marker: readers ignore them, publishing to the
same prefix again is refused (``AlreadyExists`` says the prefix holds an uncommitted upload), and
:func:`discard_uncommitted` removes them. Local destinations are assembled in a hidden sibling
directory (``.<name>.partial-*``) and renamed into place, so they never hold a partial upload.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from rft.storage.errors import AlreadyExists, DigestMismatch, NotFound, StorageError
from rft.storage.objects import create_bytes, download_file, exists, list_objects, read_bytes, upload_file
from rft.storage.objects import delete as delete_object
from rft.storage.urls import Location, parse_url

COMMIT_MARKER = "_COMMITTED"
METADATA_FILE = "metadata.json"
MANIFEST_FORMAT = "rft-checkpoint/v1"
_RESERVED = frozenset({COMMIT_MARKER, METADATA_FILE})
# Files fetched at once: object stores serve one stream per request, so a model's shards come
# several times faster side by side.
FETCH_PARALLELISM = 8


@dataclass(frozen=True)
class FileRecord:
    """One file of a checkpoint: its path relative to the checkpoint, hex sha256 and size."""

    path: str
    sha256: str
    size: int


def _prefix(url: str) -> Location:
    location = parse_url(url)
    if not location.is_local and not location.key.strip("/"):
        raise StorageError(f"{url}: a checkpoint needs a prefix inside the bucket, not the bucket root")
    return location.as_prefix()


def _local_files(local_dir: Path) -> list[tuple[str, Path]]:
    """Regular files under ``local_dir`` as (relative posix path, path), sorted; refuses reserved names."""
    if not local_dir.is_dir():
        raise StorageError(f"{local_dir}: not a directory")
    files: list[tuple[str, Path]] = []
    for path in sorted(local_dir.rglob("*")):
        if path.is_symlink():
            raise StorageError(f"{path}: symbolic links are not published; copy the file instead")
        if not path.is_file():
            continue
        relative = path.relative_to(local_dir).as_posix()
        if relative in _RESERVED:
            raise StorageError(
                f"{path}: {relative!r} is written by publish_checkpoint itself; remove it from {local_dir}"
            )
        files.append((relative, path))
    if not files:
        raise StorageError(f"{local_dir}: no files to publish")
    return files


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def _refuse_if_occupied(dest: Location) -> None:
    present = list_objects(dest.url)
    if not present:
        return
    marker_key = dest.join(COMMIT_MARKER).key
    if any(info.key == marker_key for info in present):
        raise AlreadyExists(
            f"{dest.url} already holds a committed checkpoint; checkpoints are never overwritten"
        )
    raise AlreadyExists(
        f"{dest.url} holds {len(present)} object(s) of an uncommitted upload (no {COMMIT_MARKER} marker), "
        f"e.g. {present[0].url}; publish under a new name, or remove them with "
        "rft.storage.checkpoints.discard_uncommitted() if you own that upload"
    )


def publish_checkpoint(local_dir: Path, dest_url: str, metadata: Mapping[str, Any]) -> list[FileRecord]:
    """Upload every file of ``local_dir`` to ``dest_url``, then ``metadata.json``, then the marker.

    Refuses with :class:`AlreadyExists` when anything is already under ``dest_url``. Every object
    is created with create-only semantics, so of two concurrent publishers to one prefix, one
    fails instead of mixing files. When an upload fails with an exception, the objects this call
    created are deleted again (they are ours: create-only); after a hard crash they stay, without
    a marker, until :func:`discard_uncommitted` removes them. A local destination is assembled in
    a hidden sibling directory and renamed into place, so it never holds a partial upload.
    Returns the records of the uploaded files.
    """
    if "files" in metadata:
        raise StorageError("metadata must not contain 'files': publish_checkpoint records them")
    local_dir = Path(local_dir)
    dest = _prefix(dest_url)
    files = _local_files(local_dir)
    records = [FileRecord(relative, _sha256_file(path), path.stat().st_size) for relative, path in files]
    try:
        document = {**metadata, "files": [asdict(record) for record in records]}
        metadata_bytes = json.dumps(document, indent=2, sort_keys=True).encode() + b"\n"
    except (TypeError, ValueError) as exc:
        raise StorageError(f"metadata for {dest.url} is not JSON-serialisable: {exc}") from exc
    manifest = {
        "format": MANIFEST_FORMAT,
        "files": [asdict(record) for record in records],
        "metadata": {"path": METADATA_FILE, "sha256": hashlib.sha256(metadata_bytes).hexdigest()},
    }
    manifest_bytes = json.dumps(manifest, indent=2).encode() + b"\n"
    _refuse_if_occupied(dest)
    if dest.is_local:
        _publish_local(files, Path(dest.key), metadata_bytes, manifest_bytes)
    else:
        _publish_objects(files, dest, metadata_bytes, manifest_bytes)
    return records


def _publish_objects(
    files: list[tuple[str, Path]], dest: Location, metadata_bytes: bytes, manifest_bytes: bytes
) -> None:
    created: list[str] = []
    marker = dest.join(COMMIT_MARKER).url
    try:
        for relative, path in files:
            url = dest.join(relative).url
            upload_file(path, url, create_only=True)
            created.append(url)
        create_bytes(dest.join(METADATA_FILE).url, metadata_bytes)
        created.append(dest.join(METADATA_FILE).url)
        create_bytes(marker, manifest_bytes)
    except Exception:
        # A failed marker write may still have landed (e.g. a timeout after the server wrote it):
        # then the checkpoint is committed and its files must stay.
        with contextlib.suppress(StorageError):
            if not exists(marker):
                for url in created:
                    delete_object(url)
        raise


def _publish_local(
    files: list[tuple[str, Path]], target: Path, metadata_bytes: bytes, manifest_bytes: bytes
) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        _publish_objects(files, parse_url(str(staging)).as_prefix(), metadata_bytes, manifest_bytes)
        if target.exists() and any(target.iterdir()):
            raise AlreadyExists(f"file://{target}/ was filled by someone else while publishing; not replaced")
        # Renaming onto an absent or empty directory is atomic; a non-empty one makes it fail.
        os.rename(staging, target)
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise AlreadyExists(f"file://{target}/ was filled by someone else while publishing") from exc
        raise StorageError(f"cannot publish to file://{target}/: {exc.strerror}") from exc
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def upload_tree(
    local_dir: Path, dest_url: str, metadata: Mapping[str, Any] | None = None
) -> list[FileRecord]:
    """Publish a directory (e.g. a base model's Hugging Face files) as a committed checkpoint."""
    return publish_checkpoint(local_dir, dest_url, dict(metadata or {}))


def is_committed(url: str) -> bool:
    """Whether the checkpoint at ``url`` has its commit marker (digests are checked on fetch)."""
    return exists(_prefix(url).join(COMMIT_MARKER).url)


def read_manifest(url: str) -> dict[str, Any]:
    """The commit marker's manifest; :class:`NotFound` when the checkpoint is not committed."""
    prefix = _prefix(url)
    marker = prefix.join(COMMIT_MARKER).url
    try:
        raw = read_bytes(marker)
    except NotFound as exc:
        raise NotFound(
            f"{prefix.url} is not a committed checkpoint: {COMMIT_MARKER} is missing (an upload that "
            "never finished, or not a checkpoint at all)"
        ) from exc
    try:
        manifest = json.loads(raw)
        files = manifest["files"]
        for entry in [*files, manifest["metadata"]]:
            _safe_relative(str(entry["path"]), marker)
            if not isinstance(entry["sha256"], str) or len(entry["sha256"]) != 64:
                raise ValueError(f"bad sha256 for {entry['path']!r}")
    except (ValueError, KeyError, TypeError) as exc:
        raise StorageError(f"{marker}: not a valid checkpoint manifest ({exc})") from exc
    if manifest.get("format") != MANIFEST_FORMAT:
        raise StorageError(f"{marker}: unknown manifest format {manifest.get('format')!r}")
    return dict(manifest)


def _safe_relative(path: str, source: str) -> str:
    pure = PurePosixPath(path)
    if pure.is_absolute() or not pure.parts or any(part in ("..", ".", "") for part in pure.parts):
        raise ValueError(f"unsafe file path {path!r} in {source}")
    return path


def fetch_checkpoint(url: str, local_dir: Path) -> dict[str, Any]:
    """Download the checkpoint at ``url`` into ``local_dir``, verify every file, return its metadata.

    Raises :class:`NotFound` when the commit marker is missing and :class:`DigestMismatch` when a
    file differs from the manifest (nothing unverified is left under its final name). A local
    directory without a marker is accepted as is (dev only: hand-made base model directories):
    its files are copied unverified and its ``metadata.json``, if any, is returned.
    """
    local_dir = Path(local_dir)
    prefix = _prefix(url)
    if prefix.is_local and not Path(prefix.key, COMMIT_MARKER).is_file():
        return _copy_unverified(Path(prefix.key), local_dir)
    manifest = read_manifest(url)
    _download_all(prefix, manifest["files"], local_dir)
    meta_entry = manifest["metadata"]
    metadata_bytes = read_bytes(prefix.join(meta_entry["path"]).url)
    actual = hashlib.sha256(metadata_bytes).hexdigest()
    if actual != meta_entry["sha256"]:
        raise DigestMismatch(
            f"{prefix.join(meta_entry['path']).url}: content has sha256 {actual}, but the manifest "
            f"recorded {meta_entry['sha256']}"
        )
    metadata: dict[str, Any] = json.loads(metadata_bytes)
    return metadata


def _download_all(prefix: Location, entries: list[dict[str, Any]], local_dir: Path) -> None:
    """Download and verify every file, FETCH_PARALLELISM at a time, largest first (a model's
    shards in parallel); the first failure cancels the files not started and is raised."""
    ordered = sorted(entries, key=lambda e: -int(e.get("size") or 0))
    workers = max(1, min(FETCH_PARALLELISM, len(ordered)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fetch") as pool:
        futures = [
            pool.submit(
                download_file,
                prefix.join(entry["path"]).url,
                local_dir / entry["path"],
                expected_sha256=entry["sha256"],
            )
            for entry in ordered
        ]
        try:
            for future in as_completed(futures):
                future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def _copy_unverified(source: Path, local_dir: Path) -> dict[str, Any]:
    if not source.is_dir():
        raise NotFound(f"{source}: no such checkpoint directory")
    if source.resolve() != local_dir.resolve():
        shutil.copytree(source, local_dir, dirs_exist_ok=True)
    metadata_path = source / METADATA_FILE
    if metadata_path.is_file():
        loaded: dict[str, Any] = json.loads(metadata_path.read_text())
        return loaded
    return {}


def discard_uncommitted(url: str) -> int:
    """Delete the objects of an upload that never committed; returns how many were deleted.

    Refuses (:class:`AlreadyExists`) when the checkpoint is committed: committed checkpoints are
    never deleted by this library.
    """
    prefix = _prefix(url)
    if is_committed(prefix.url):
        raise AlreadyExists(f"{prefix.url} is a committed checkpoint; refusing to delete it")
    present = list_objects(prefix.url)
    for info in present:
        delete_object(info.url)
    if prefix.is_local:
        _remove_empty_dirs(Path(prefix.key))
    return len(present)


def _remove_empty_dirs(root: Path) -> None:
    if not root.is_dir():
        return
    for dirpath, _dirs, _files in sorted(os.walk(root), key=lambda entry: -len(entry[0])):
        if not os.listdir(dirpath):
            os.rmdir(dirpath)
