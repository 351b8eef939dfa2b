"""Google Cloud Storage through application default credentials.

In a GKE pod, application default credentials are the Kubernetes ServiceAccount's Workload
Identity (the ``iam.gke.io/gcp-service-account`` annotation); on a developer's machine, their
``gcloud auth application-default login``. With ``STORAGE_EMULATOR_HOST`` set, the client talks to
that emulator anonymously. No function here takes a key.

Create-only writes use ``if_generation_match=0``: GCS refuses the write when any live generation
of the object exists, atomically on the server.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import google.api_core.exceptions as gexc
import google.auth.exceptions
import requests.exceptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage as gcs

from rft.storage.base import ObjectInfo, TranslatingReader, buffered
from rft.storage.errors import (
    AccessDenied,
    AlreadyExists,
    CredentialsError,
    NotFound,
    StorageError,
)
from rft.storage.urls import Location

_CLIENT_ENV = ("STORAGE_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT")
# Each ranged GET of a streaming read fetches this much (one request per chunk).
_READ_CHUNK_BYTES = 8 * 1024 * 1024
_clients: dict[tuple[str | None, ...], Any] = {}
_clients_lock = threading.Lock()


def client() -> Any:
    """The process's GCS client for the current environment, created on first use."""
    key = tuple(os.environ.get(name) for name in _CLIENT_ENV)
    with _clients_lock:
        cached = _clients.get(key)
        if cached is None:
            # Object operations need no project; passing None keeps the client from failing
            # when none can be inferred (pods often have no GOOGLE_CLOUD_PROJECT).
            project = os.environ.get("GOOGLE_CLOUD_PROJECT")
            if os.environ.get("STORAGE_EMULATOR_HOST"):
                cached = gcs.Client(project=project or "rft-emulator", credentials=AnonymousCredentials())  # type: ignore[no-untyped-call]
            else:
                cached = gcs.Client(project=project)
            _clients[key] = cached
        return cached


def reset_clients() -> None:
    """Forget cached clients (in tests, or after credentials changed)."""
    with _clients_lock:
        _clients.clear()


def translate_error(exc: Exception, location: Location, action: str) -> StorageError:
    """Turn a google-cloud-storage exception into a StorageError naming the URL and the cause."""
    url = location.url
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, gexc.PreconditionFailed) and action == "read":
        return StorageError(f"cannot read {url}: the object was replaced while being read; read it again")
    if isinstance(exc, gexc.PreconditionFailed):
        return AlreadyExists(f"cannot {action} {url}: an object already exists there (never overwritten)")
    if isinstance(exc, gexc.NotFound):
        return NotFound(f"cannot {action} {url}: no such object or bucket")
    if isinstance(exc, gexc.Unauthorized):
        return CredentialsError(f"cannot {action} {url}: GCS refused the credentials ({exc.message})")
    if isinstance(exc, gexc.Forbidden):
        return AccessDenied(
            f"cannot {action} {url}: access denied; the Google service account of this workload "
            f"needs a role on gs://{location.bucket} ({exc.message})"
        )
    if isinstance(exc, google.auth.exceptions.DefaultCredentialsError | google.auth.exceptions.RefreshError):
        return CredentialsError(
            f"cannot {action} {url}: no usable Google credentials ({exc}); in GKE the ServiceAccount "
            "needs the iam.gke.io/gcp-service-account annotation (Workload Identity)"
        )
    if isinstance(exc, gexc.GoogleAPICallError):
        return StorageError(f"cannot {action} {url}: GCS error {exc.code}: {exc.message}")
    if isinstance(exc, requests.exceptions.RequestException):
        return StorageError(f"cannot {action} {url}: cannot reach GCS ({exc})")
    return StorageError(f"cannot {action} {url}: {type(exc).__name__}: {exc}")


def _blob(location: Location) -> Any:
    return client().bucket(location.bucket).blob(location.key)


class GcsBackend:
    """GCS objects addressed as ``gs://bucket/key``."""

    def read_bytes(self, location: Location) -> bytes:
        try:
            data: bytes = _blob(location).download_as_bytes()
        except Exception as exc:
            raise translate_error(exc, location, "read") from exc
        return data

    @contextmanager
    def open_stream(self, location: Location) -> Iterator[BinaryIO]:
        blob = _blob(location)
        try:
            # Fetch the metadata first: a missing object fails here, and the reader is pinned to
            # this generation so that a concurrent rewrite cannot splice two versions together.
            blob.reload()
            reader = blob.open("rb", chunk_size=_READ_CHUNK_BYTES, if_generation_match=blob.generation)
        except Exception as exc:
            raise translate_error(exc, location, "read") from exc
        stream = buffered(
            TranslatingReader(reader.read, reader.close, lambda exc: translate_error(exc, location, "read"))
        )
        try:
            yield stream
        finally:
            stream.close()

    def write_bytes(self, location: Location, data: bytes, *, create_only: bool) -> None:
        action = "create" if create_only else "write"
        try:
            if create_only:
                _blob(location).upload_from_string(data, if_generation_match=0)
            else:
                _blob(location).upload_from_string(data)
        except Exception as exc:
            raise translate_error(exc, location, action) from exc

    def upload_file(self, location: Location, path: Path, *, create_only: bool) -> None:
        action = "create" if create_only else "write"
        try:
            if create_only:
                _blob(location).upload_from_filename(str(path), if_generation_match=0)
            else:
                _blob(location).upload_from_filename(str(path))
        except Exception as exc:
            raise translate_error(exc, location, action) from exc

    def exists(self, location: Location) -> bool:
        try:
            return bool(_blob(location).exists())
        except Exception as exc:
            raise translate_error(exc, location, "look up") from exc

    def list_objects(self, prefix: Location) -> list[ObjectInfo]:
        try:
            return [
                ObjectInfo(f"gs://{prefix.bucket}/{blob.name}", blob.name, int(blob.size or 0))
                for blob in client().list_blobs(prefix.bucket, prefix=prefix.key or None)
            ]
        except Exception as exc:
            raise translate_error(exc, prefix, "list") from exc

    def delete(self, location: Location) -> None:
        try:
            _blob(location).delete()
        except gexc.NotFound:
            return
        except Exception as exc:
            raise translate_error(exc, location, "delete") from exc
