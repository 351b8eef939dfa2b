"""The public object operations, dispatched on the URL's scheme to S3, GCS or the local disk."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from rft.storage.base import Backend, ObjectInfo
from rft.storage.errors import DigestMismatch, StorageError
from rft.storage.lines import iter_chunks, split_lines
from rft.storage.urls import Location, parse_url

_backends: dict[str, Backend] = {}


def backend_for(location: Location) -> Backend:
    """The backend serving ``location``'s scheme (imported on first use: GCS pulls in a lot)."""
    cached = _backends.get(location.scheme)
    if cached is not None:
        return cached
    backend: Backend
    if location.scheme == "s3":
        from rft.storage.s3 import S3Backend  # noqa: PLC0415

        backend = S3Backend()
    elif location.scheme == "gs":
        from rft.storage.gcs import GcsBackend  # noqa: PLC0415

        backend = GcsBackend()
    else:
        from rft.storage.local import LocalBackend  # noqa: PLC0415

        backend = LocalBackend()
    _backends[location.scheme] = backend
    return backend


def _object(url: str) -> tuple[Location, Backend]:
    location = parse_url(url)
    if not location.key or location.key.endswith("/"):
        raise StorageError(f"{url!r} names a prefix, not an object")
    return location, backend_for(location)


def read_bytes(url: str) -> bytes:
    """The whole content of one object. For large objects use :func:`open_stream`."""
    location, backend = _object(url)
    return backend.read_bytes(location)


def open_stream(url: str) -> AbstractContextManager[BinaryIO]:
    """A streaming binary reader over one object, closed when the ``with`` block ends."""
    location, backend = _object(url)
    return backend.open_stream(location)


def iter_lines(url: str, *, max_line_bytes: int | None = None) -> Iterator[bytes]:
    """The object's lines without line endings, streamed in bounded memory.

    With ``max_line_bytes``, a longer line is yielded cut to ``max_line_bytes + 1`` bytes (see
    :func:`rft.storage.lines.split_lines`).
    """
    with open_stream(url) as stream:
        yield from split_lines(iter_chunks(stream), max_line_bytes)


def write_bytes(url: str, data: bytes) -> None:
    """Put ``data`` at ``url``, replacing any object there. For scratch objects only."""
    location, backend = _object(url)
    backend.write_bytes(location, data, create_only=False)


def create_bytes(url: str, data: bytes) -> None:
    """Create the object at ``url``; raise :class:`AlreadyExists` if any object is there.

    Atomic on the server: S3 ``If-None-Match: *``, GCS ``if_generation_match=0``, local
    ``os.link``. Two concurrent creators: exactly one succeeds.
    """
    location, backend = _object(url)
    backend.write_bytes(location, data, create_only=True)


def upload_file(path: Path, url: str, *, create_only: bool = True) -> None:
    """Upload a local file to ``url``, streaming it (create-only unless told otherwise)."""
    location, backend = _object(url)
    backend.upload_file(location, Path(path), create_only=create_only)


def exists(url: str) -> bool:
    """Whether an object exists at ``url``."""
    location, backend = _object(url)
    return backend.exists(location)


def list_objects(prefix_url: str) -> list[ObjectInfo]:
    """Every object whose key starts with the prefix (end it with '/' to list one 'directory')."""
    location = parse_url(prefix_url)
    return backend_for(location).list_objects(location)


def delete(url: str) -> None:
    """Delete one object; deleting an absent object is not an error."""
    location, backend = _object(url)
    backend.delete(location)


@dataclass(frozen=True)
class Downloaded:
    """What :func:`download_file` wrote: where, its sha256 (hex) and its size."""

    path: Path
    sha256: str
    size: int


def sha256_digest(url: str) -> str:
    """``sha256:<hex>`` of the object's bytes, computed while streaming it."""
    digest = hashlib.sha256()
    with open_stream(url) as stream:
        for chunk in iter_chunks(stream):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


def download_file(url: str, path: Path, *, expected_sha256: str | None = None) -> Downloaded:
    """Stream one object into a local file, atomically (a temporary file renamed at the end).

    With ``expected_sha256`` (hex), a mismatch raises :class:`DigestMismatch` and leaves no file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as tmp, open_stream(url) as stream:
            for chunk in iter_chunks(stream):
                digest.update(chunk)
                size += len(chunk)
                tmp.write(chunk)
        actual = digest.hexdigest()
        if expected_sha256 is not None and actual != expected_sha256:
            raise DigestMismatch(
                f"{url}: content has sha256 {actual}, but {expected_sha256} was recorded for it"
            )
        os.replace(tmp_name, path)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return Downloaded(path, actual, size)


def reset_clients() -> None:
    """Forget every cached S3 and GCS client (in tests, or after credentials changed)."""
    from rft.storage import gcs, s3  # noqa: PLC0415

    s3.reset_clients()
    gcs.reset_clients()
