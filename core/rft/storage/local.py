"""The local file system, for development clusters and tests (``file:///abs/path`` or a plain path).

Writes go to a temporary file in the same directory first, so a reader never sees half a file.
Create-only writes then publish it with ``os.link``, which fails atomically when the name is taken
(the same guarantee as ``O_EXCL``, without exposing a partly written file).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from rft.storage.base import ObjectInfo
from rft.storage.errors import AccessDenied, AlreadyExists, NotFound, StorageError
from rft.storage.urls import Location

# Writes an object's content into the temporary file that then becomes the object.
_Filler = Callable[[BinaryIO], object]


def _translate(exc: OSError, location: Location, action: str) -> StorageError:
    url = location.url
    if isinstance(exc, FileNotFoundError | NotADirectoryError):
        return NotFound(f"cannot {action} {url}: no such file")
    if isinstance(exc, FileExistsError):
        return AlreadyExists(f"cannot {action} {url}: a file already exists there (never overwritten)")
    if isinstance(exc, PermissionError):
        return AccessDenied(f"cannot {action} {url}: permission denied")
    if isinstance(exc, IsADirectoryError):
        return StorageError(f"cannot {action} {url}: it is a directory, not a file")
    return StorageError(f"cannot {action} {url}: {exc.strerror or exc}")


class LocalBackend:
    """Files addressed by absolute path."""

    def read_bytes(self, location: Location) -> bytes:
        try:
            return Path(location.key).read_bytes()
        except OSError as exc:
            raise _translate(exc, location, "read") from exc

    @contextmanager
    def open_stream(self, location: Location) -> Iterator[BinaryIO]:
        try:
            stream = Path(location.key).open("rb")  # noqa: SIM115 (closed by the with below)
        except OSError as exc:
            raise _translate(exc, location, "read") from exc
        with stream:
            yield stream

    def write_bytes(self, location: Location, data: bytes, *, create_only: bool) -> None:
        self._publish(location, lambda tmp: tmp.write(data), create_only=create_only)

    def upload_file(self, location: Location, path: Path, *, create_only: bool) -> None:
        def copy(tmp: BinaryIO) -> None:
            with path.open("rb") as source:
                shutil.copyfileobj(source, tmp, 1024 * 1024)

        self._publish(location, copy, create_only=create_only)

    def _publish(self, location: Location, fill: _Filler, *, create_only: bool) -> None:
        action = "create" if create_only else "write"
        target = Path(location.key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        except OSError as exc:
            raise _translate(exc, location, action) from exc
        try:
            with os.fdopen(fd, "wb") as tmp:
                fill(tmp)
                tmp.flush()
                os.fsync(tmp.fileno())
            if create_only:
                os.link(tmp_name, target)
            else:
                os.replace(tmp_name, target)
        except OSError as exc:
            raise _translate(exc, location, action) from exc
        finally:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)

    def exists(self, location: Location) -> bool:
        return Path(location.key).is_file()

    def list_objects(self, prefix: Location) -> list[ObjectInfo]:
        """Regular files whose absolute path starts with the prefix (a directory when it ends in '/')."""
        text = prefix.key
        root = Path(text) if text.endswith("/") or Path(text).is_dir() else Path(text).parent
        if not root.is_dir():
            return []
        found = []
        for dirpath, _dirnames, filenames in os.walk(root):
            for filename in filenames:
                path = os.path.join(dirpath, filename)
                if path.startswith(text) and os.path.isfile(path) and not _is_temporary(filename):
                    found.append(ObjectInfo(f"file://{path}", path, os.path.getsize(path)))
        return sorted(found, key=lambda info: info.key)

    def delete(self, location: Location) -> None:
        try:
            Path(location.key).unlink(missing_ok=True)
        except OSError as exc:
            raise _translate(exc, location, "delete") from exc


def _is_temporary(filename: str) -> bool:
    return filename.startswith(".") and filename.endswith(".tmp")
