"""Amazon S3 (and S3-compatible stores) through boto3's default credential chain.

Credentials come only from the environment the pod runs in: web identity (EKS IRSA:
``AWS_ROLE_ARN`` + ``AWS_WEB_IDENTITY_TOKEN_FILE``), EKS Pod Identity
(``AWS_CONTAINER_CREDENTIALS_FULL_URI``), or, on a developer's machine, their own profile. No
function here takes a key. boto3 itself honours ``AWS_ENDPOINT_URL``, ``AWS_ENDPOINT_URL_S3``,
``AWS_ENDPOINT_URL_STS`` and ``AWS_DEFAULT_REGION``.

Create-only writes use S3 conditional writes (``If-None-Match: *`` on PutObject and on
CompleteMultipartUpload), which AWS S3 supports since August 2024; an S3-compatible store that
ignores the header would silently overwrite, so use one that implements it.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import boto3
import botocore.exceptions
from botocore.config import Config

from rft.storage.base import ObjectInfo, TranslatingReader, buffered
from rft.storage.errors import (
    AccessDenied,
    AlreadyExists,
    CredentialsError,
    NotFound,
    StorageError,
)
from rft.storage.urls import Location

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# Files larger than this go up in parts (a single PutObject takes at most 5 GiB).
MULTIPART_THRESHOLD = 64 * 1024 * 1024
PART_BYTES = 64 * 1024 * 1024

# A new client is built when any of these change, so that tests and tools that switch endpoints
# or identities within one process never reuse a client bound to the old ones.
_CLIENT_ENV = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL_STS",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_ACCESS_KEY_ID",
)
_clients: dict[tuple[str | None, ...], S3Client] = {}
_clients_lock = threading.Lock()

_NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_EXISTS_CODES = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict"})
_DENIED_CODES = frozenset({"AccessDenied", "403", "AllAccessDisabled", "Forbidden"})
_CREDENTIAL_CODES = frozenset(
    {
        "InvalidAccessKeyId",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "SignatureDoesNotMatch",
        "InvalidIdentityToken",
        "IDPCommunicationError",
        "IDPRejectedClaim",
    }
)
_STS_OPERATIONS = frozenset({"AssumeRoleWithWebIdentity", "AssumeRole", "GetCallerIdentity"})


def client() -> S3Client:
    """The process's S3 client for the current environment, created on first use."""
    key = tuple(os.environ.get(name) for name in _CLIENT_ENV)
    with _clients_lock:
        cached = _clients.get(key)
        if cached is None:
            session = boto3.session.Session()
            cached = session.client(
                "s3",
                config=Config(
                    retries={"max_attempts": 5, "mode": "standard"},
                    connect_timeout=10,
                    read_timeout=120,
                ),
            )
            _clients[key] = cached
        return cached


def reset_clients() -> None:
    """Forget cached clients (after credentials were rotated by hand, or in tests)."""
    with _clients_lock:
        _clients.clear()


def translate_error(exc: Exception, location: Location, action: str) -> StorageError:
    """Turn a boto3/botocore exception into a StorageError that names the URL and the cause."""
    url = location.url
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        message = str(error.get("Message", "")) or code
        if exc.operation_name in _STS_OPERATIONS or code in _CREDENTIAL_CODES:
            return CredentialsError(
                f"cannot {action} {url}: S3 credentials were refused ({code}: {message}); check the "
                f"pod's web identity (AWS_ROLE_ARN={os.environ.get('AWS_ROLE_ARN', '<unset>')}) "
                "and the role's trust policy"
            )
        if code == "NoSuchBucket":
            return NotFound(f"cannot {action} {url}: bucket {location.bucket!r} does not exist")
        if code in _NOT_FOUND_CODES:
            return NotFound(f"cannot {action} {url}: no such object")
        if code in _EXISTS_CODES:
            return AlreadyExists(f"cannot {action} {url}: an object already exists there (never overwritten)")
        if code in _DENIED_CODES:
            return AccessDenied(
                f"cannot {action} {url}: access denied; the role "
                f"{os.environ.get('AWS_ROLE_ARN', '(from the default chain)')} needs permission on "
                f"s3://{location.bucket}/{location.key}"
            )
        return StorageError(f"cannot {action} {url}: S3 error {code}: {message}")
    if isinstance(
        exc,
        botocore.exceptions.NoCredentialsError
        | botocore.exceptions.PartialCredentialsError
        | botocore.exceptions.CredentialRetrievalError,
    ):
        return CredentialsError(
            f"cannot {action} {url}: no usable S3 credentials ({exc}); in a pod, the ServiceAccount "
            "needs the eks.amazonaws.com/role-arn annotation (IRSA) or an EKS Pod Identity association"
        )
    if isinstance(exc, botocore.exceptions.EndpointConnectionError | botocore.exceptions.ConnectionError):
        return StorageError(f"cannot {action} {url}: cannot reach the S3 endpoint ({exc})")
    token_file = os.environ.get("AWS_WEB_IDENTITY_TOKEN_FILE")
    if isinstance(exc, OSError) and token_file and exc.filename == token_file:
        return CredentialsError(
            f"cannot {action} {url}: cannot read the web identity token {token_file} ({exc.strerror}); "
            "is the ServiceAccount token projected into the pod?"
        )
    if isinstance(exc, botocore.exceptions.BotoCoreError | OSError):
        return StorageError(f"cannot {action} {url}: {exc}")
    return StorageError(f"cannot {action} {url}: {type(exc).__name__}: {exc}")


class S3Backend:
    """S3 objects addressed as ``s3://bucket/key``."""

    def read_bytes(self, location: Location) -> bytes:
        try:
            response = client().get_object(Bucket=location.bucket, Key=location.key)
            return response["Body"].read()
        except Exception as exc:
            raise translate_error(exc, location, "read") from exc

    @contextmanager
    def open_stream(self, location: Location) -> Iterator[BinaryIO]:
        try:
            body = client().get_object(Bucket=location.bucket, Key=location.key)["Body"]
        except Exception as exc:
            raise translate_error(exc, location, "read") from exc
        stream = buffered(
            TranslatingReader(body.read, body.close, lambda exc: translate_error(exc, location, "read"))
        )
        try:
            yield stream
        finally:
            stream.close()

    def write_bytes(self, location: Location, data: bytes, *, create_only: bool) -> None:
        action = "create" if create_only else "write"
        extra: dict[str, Any] = {"IfNoneMatch": "*"} if create_only else {}
        try:
            client().put_object(Bucket=location.bucket, Key=location.key, Body=data, **extra)
        except Exception as exc:
            raise translate_error(exc, location, action) from exc

    def upload_file(self, location: Location, path: Path, *, create_only: bool) -> None:
        action = "create" if create_only else "write"
        extra: dict[str, Any] = {"IfNoneMatch": "*"} if create_only else {}
        try:
            if path.stat().st_size <= MULTIPART_THRESHOLD:
                with path.open("rb") as body:
                    client().put_object(Bucket=location.bucket, Key=location.key, Body=body, **extra)
            else:
                self._upload_parts(location, path, extra)
        except Exception as exc:
            raise translate_error(exc, location, action) from exc

    def _upload_parts(self, location: Location, path: Path, extra: dict[str, Any]) -> None:
        s3 = client()
        upload_id = s3.create_multipart_upload(Bucket=location.bucket, Key=location.key)["UploadId"]
        try:
            parts = []
            with path.open("rb") as source:
                number = 1
                while data := source.read(PART_BYTES):
                    etag = s3.upload_part(
                        Bucket=location.bucket,
                        Key=location.key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=data,
                    )["ETag"]
                    parts.append({"ETag": etag, "PartNumber": number})
                    number += 1
            # The condition is checked when the parts are assembled: a concurrent writer that
            # finished first makes this fail instead of being overwritten.
            s3.complete_multipart_upload(
                Bucket=location.bucket,
                Key=location.key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
                **extra,
            )
        except BaseException:
            # If the abort fails too, the bucket's lifecycle rule for incomplete multipart uploads
            # cleans up (see docs/storage.md).
            with contextlib.suppress(botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
                s3.abort_multipart_upload(Bucket=location.bucket, Key=location.key, UploadId=upload_id)
            raise

    def exists(self, location: Location) -> bool:
        try:
            client().head_object(Bucket=location.bucket, Key=location.key)
        except botocore.exceptions.ClientError as exc:
            # HEAD responses have no body: a missing key (or bucket) is a bare 404.
            if str(exc.response.get("Error", {}).get("Code", "")) in _NOT_FOUND_CODES:
                return False
            raise translate_error(exc, location, "look up") from exc
        except Exception as exc:
            raise translate_error(exc, location, "look up") from exc
        return True

    def list_objects(self, prefix: Location) -> list[ObjectInfo]:
        found: list[ObjectInfo] = []
        try:
            paginator = client().get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=prefix.bucket, Prefix=prefix.key):
                for item in page.get("Contents", []):
                    key = item["Key"]
                    found.append(ObjectInfo(f"s3://{prefix.bucket}/{key}", key, int(item["Size"])))
        except Exception as exc:
            raise translate_error(exc, prefix, "list") from exc
        return found

    def delete(self, location: Location) -> None:
        try:
            client().delete_object(Bucket=location.bucket, Key=location.key)
        except Exception as exc:
            raise translate_error(exc, location, "delete") from exc
