"""What every storage backend provides, and the small types the public functions return."""

from __future__ import annotations

import io
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from rft.storage.errors import StorageError
from rft.storage.urls import Location

READ_BUFFER_BYTES = 1024 * 1024


@dataclass(frozen=True)
class ObjectInfo:
    """One object found by :func:`rft.storage.list_objects`."""

    url: str
    key: str
    size: int


class Backend(Protocol):
    """One storage service (S3, GCS, the local file system), addressed by :class:`Location`."""

    def read_bytes(self, location: Location) -> bytes: ...

    def open_stream(self, location: Location) -> AbstractContextManager[BinaryIO]: ...

    def write_bytes(self, location: Location, data: bytes, *, create_only: bool) -> None: ...

    def upload_file(self, location: Location, path: Path, *, create_only: bool) -> None: ...

    def exists(self, location: Location) -> bool: ...

    def list_objects(self, prefix: Location) -> list[ObjectInfo]: ...

    def delete(self, location: Location) -> None: ...


class TranslatingReader(io.RawIOBase):
    """A raw binary stream over a client library's reader that turns its errors into StorageError.

    Wrapped in :class:`io.BufferedReader` by :func:`buffered`, it is a plain ``BinaryIO`` whatever
    the backend, and a failure halfway through a download names the URL instead of surfacing as
    a botocore or google-api-core exception.
    """

    def __init__(
        self,
        read: Callable[[int], bytes],
        close: Callable[[], None],
        translate: Callable[[Exception], StorageError],
    ) -> None:
        super().__init__()
        self._read = read
        self._close = close
        self._translate = translate

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        try:
            data = self._read(len(buffer))
        except StorageError:
            raise
        except Exception as exc:
            raise self._translate(exc) from exc
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            try:
                self._close()
            finally:
                super().close()


def buffered(raw: TranslatingReader) -> BinaryIO:
    """A buffered binary reader over ``raw``."""
    return io.BufferedReader(raw, READ_BUFFER_BYTES)
