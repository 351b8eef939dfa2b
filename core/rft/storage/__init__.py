"""One storage layer for the SDK, the trainer, the inference server and dataset validation.

URLs: ``s3://bucket/key``, ``gs://bucket/key``, ``file:///abs/path`` and plain local paths.
Credentials come only from the environment (boto3's default chain: EKS IRSA or Pod Identity in
pods; Google application default credentials: GKE Workload Identity in pods); no function takes
a key. Clients are created on first use and cached per process. See docs/storage.md.
"""

from rft.storage.base import ObjectInfo
from rft.storage.errors import (
    AccessDenied,
    AlreadyExists,
    CredentialsError,
    DigestMismatch,
    NotFound,
    StorageError,
    UnsafeURL,
)
from rft.storage.objects import (
    Downloaded,
    create_bytes,
    delete,
    download_file,
    exists,
    iter_lines,
    list_objects,
    open_stream,
    read_bytes,
    reset_clients,
    sha256_digest,
    upload_file,
    write_bytes,
)
from rft.storage.urls import Location, check_http_url, check_url, parse_url

__all__ = [
    "AccessDenied",
    "AlreadyExists",
    "CredentialsError",
    "DigestMismatch",
    "Downloaded",
    "Location",
    "NotFound",
    "ObjectInfo",
    "StorageError",
    "UnsafeURL",
    "check_http_url",
    "check_url",
    "create_bytes",
    "delete",
    "download_file",
    "exists",
    "iter_lines",
    "list_objects",
    "open_stream",
    "parse_url",
    "read_bytes",
    "reset_clients",
    "sha256_digest",
    "upload_file",
    "write_bytes",
]
