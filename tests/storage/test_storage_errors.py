"""How client-library exceptions become StorageErrors that name the URL and the cause."""

from __future__ import annotations

from typing import Any

import botocore.exceptions
import google.api_core.exceptions as gexc
import google.auth.exceptions
import pytest
from rft import storage
from rft.storage import gcs, s3
from rft.storage.urls import parse_url

S3_URL = "s3://bucket/datasets/d.jsonl"
GS_URL = "gs://bucket/datasets/d.jsonl"


def _client_error(
    code: str, operation: str = "GetObject", status: int = 400
) -> botocore.exceptions.ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": f"{code} happened"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return botocore.exceptions.ClientError(response, operation)


def _google(cls: Any, message: str) -> Exception:
    """An exception of a google library class (their constructors are untyped)."""
    error: Exception = cls(message)
    return error


@pytest.mark.parametrize(
    ("exc", "expected", "text"),
    [
        (_client_error("NoSuchKey", status=404), storage.NotFound, "no such object"),
        (_client_error("404", "HeadObject", 404), storage.NotFound, "no such object"),
        (_client_error("NoSuchBucket", status=404), storage.NotFound, "bucket 'bucket' does not exist"),
        (_client_error("PreconditionFailed", "PutObject", 412), storage.AlreadyExists, "never overwritten"),
        (
            _client_error("ConditionalRequestConflict", "PutObject", 409),
            storage.AlreadyExists,
            "already exists",
        ),
        (
            _client_error("AccessDenied", status=403),
            storage.AccessDenied,
            "needs permission on s3://bucket/datasets",
        ),
        (_client_error("ExpiredToken", status=400), storage.CredentialsError, "credentials were refused"),
        (
            _client_error("InvalidIdentityToken", "AssumeRoleWithWebIdentity"),
            storage.CredentialsError,
            "trust policy",
        ),
        (_client_error("SlowDown", status=503), storage.StorageError, "S3 error SlowDown"),
        (botocore.exceptions.NoCredentialsError(), storage.CredentialsError, "eks.amazonaws.com/role-arn"),
        (
            botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
            storage.StorageError,
            "cannot reach the S3 endpoint",
        ),
    ],
)
def test_s3_errors(exc: Exception, expected: type[storage.StorageError], text: str) -> None:
    error = s3.translate_error(exc, parse_url(S3_URL), "read")
    assert type(error) is expected
    assert text in str(error)
    assert S3_URL in str(error)


@pytest.mark.parametrize(
    ("exc", "action", "expected", "text"),
    [
        (_google(gexc.NotFound, "gone"), "read", storage.NotFound, "no such object or bucket"),
        (_google(gexc.PreconditionFailed, "exists"), "create", storage.AlreadyExists, "never overwritten"),
        (
            _google(gexc.PreconditionFailed, "changed"),
            "read",
            storage.StorageError,
            "replaced while being read",
        ),
        (_google(gexc.Forbidden, "no"), "read", storage.AccessDenied, "needs a role on gs://bucket"),
        (
            _google(gexc.Unauthorized, "bad token"),
            "read",
            storage.CredentialsError,
            "refused the credentials",
        ),
        (
            _google(google.auth.exceptions.DefaultCredentialsError, "none found"),
            "read",
            storage.CredentialsError,
            "iam.gke.io/gcp-service-account",
        ),
        (_google(gexc.ServiceUnavailable, "busy"), "read", storage.StorageError, "GCS error 503"),
    ],
)
def test_gcs_errors(exc: Exception, action: str, expected: type[storage.StorageError], text: str) -> None:
    error = gcs.translate_error(exc, parse_url(GS_URL), action)
    assert type(error) is expected
    assert text in str(error)
    assert GS_URL in str(error)
