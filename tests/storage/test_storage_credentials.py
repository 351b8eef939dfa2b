"""Credentials come from the pod's environment only: IRSA web identity against moto's STS."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, ClassVar

import boto3
import pytest
from rft import storage
from rft.storage import s3 as s3_backend
from rft_devcluster import emulators
from rft_devcluster.pytest_fixtures_storage import S3Bucket

ASSUMED_ROLE_ARN_PREFIX = "arn:aws:sts::123456789012:assumed-role/rft-workload/"


def test_irsa_environment_has_no_static_keys(s3_bucket: S3Bucket) -> None:
    assert not any(name in os.environ for name in emulators.STATIC_CREDENTIAL_ENV)
    assert os.environ["AWS_ROLE_ARN"] == emulators.DEFAULT_ROLE_ARN
    token = Path(os.environ["AWS_WEB_IDENTITY_TOKEN_FILE"]).read_text()
    header, claims, _signature = token.split(".")
    assert json.loads(_b64(claims))["sub"] == "system:serviceaccount:default:default"
    assert json.loads(_b64(header))["alg"] == "RS256"


def _b64(part: str) -> bytes:
    import base64  # noqa: PLC0415

    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def test_storage_client_logs_in_with_web_identity(s3_bucket: S3Bucket) -> None:
    storage.create_bytes(f"{s3_bucket.url}/probe", b"x")
    client: Any = s3_backend.client()
    credentials = client._request_signer._credentials  # what the client rft.storage used signs with
    assert credentials.method == "assume-role-with-web-identity"
    frozen = credentials.get_frozen_credentials()
    assert frozen.token  # temporary credentials carry a session token; static keys would not
    identity = boto3.session.Session().client("sts").get_caller_identity()
    assert identity["Arn"].startswith(ASSUMED_ROLE_ARN_PREFIX)


def test_a_pod_process_reads_with_only_its_environment(s3_bucket: S3Bucket) -> None:
    """A separate process, given only the pod environment, reads through web identity."""
    storage.create_bytes(f"{s3_bucket.url}/datasets/d.jsonl", b"hello from the bucket")
    script = (
        "import json, boto3, os\n"
        "from rft import storage\n"
        "from rft.storage import s3\n"
        f"data = storage.read_bytes('{s3_bucket.url}/datasets/d.jsonl')\n"
        "creds = s3.client()._request_signer._credentials\n"
        "arn = boto3.session.Session().client('sts').get_caller_identity()['Arn']\n"
        "keys = [k for k in os.environ if k in ('AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY')]\n"
        "print(json.dumps({'data': data.decode(), 'method': creds.method, 'arn': arn, 'keys': keys}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=s3_bucket.pod_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen == {
        "data": "hello from the bucket",
        "method": "assume-role-with-web-identity",
        "arn": seen["arn"],
        "keys": [],
    }
    assert seen["arn"].startswith(ASSUMED_ROLE_ARN_PREFIX)


def test_no_credentials_is_a_credentials_error(s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ROLE_ARN")
    monkeypatch.delenv("AWS_WEB_IDENTITY_TOKEN_FILE")
    storage.reset_clients()
    with pytest.raises(storage.CredentialsError, match="no usable S3 credentials") as excinfo:
        storage.read_bytes(f"{s3_bucket.url}/anything")
    assert f"{s3_bucket.url}/anything" in str(excinfo.value)


def test_unreadable_token_file_is_a_credentials_error(
    s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(tmp_path / "no-token-here"))
    storage.reset_clients()
    with pytest.raises(storage.CredentialsError):
        storage.read_bytes(f"{s3_bucket.url}/anything")


def test_clients_follow_environment_changes(s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch) -> None:
    first = s3_backend.client()
    assert s3_backend.client() is first  # cached per process
    monkeypatch.setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/another-role")
    second = s3_backend.client()
    assert second is not first
    storage.create_bytes(f"{s3_bucket.url}/as-another-role", b"x")
    identity = boto3.session.Session().client("sts").get_caller_identity()
    assert "assumed-role/another-role/" in identity["Arn"]


def test_service_specific_endpoints_are_honoured(
    s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_bucket.endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", s3_bucket.endpoint)
    storage.reset_clients()
    storage.create_bytes(f"{s3_bucket.url}/via-service-endpoints", b"ok")
    assert storage.read_bytes(f"{s3_bucket.url}/via-service-endpoints") == b"ok"
    client: Any = s3_backend.client()
    assert client.meta.endpoint_url == s3_bucket.endpoint
    assert client._request_signer._credentials.method == "assume-role-with-web-identity"


class _PodIdentityAgent(http.server.BaseHTTPRequestHandler):
    """The EKS Pod Identity agent's credentials endpoint, as the container provider calls it."""

    expected_token = ""
    seen_tokens: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.seen_tokens.append(self.headers.get("Authorization", ""))
        if self.headers.get("Authorization") != self.expected_token:
            self.send_response(401)
            self.end_headers()
            return
        body = json.dumps(
            {
                "AccessKeyId": "ASIAPODIDENTITY",
                "SecretAccessKey": "pod-identity-secret",
                "Token": "pod-identity-session",
                "Expiration": "2099-01-01T00:00:00Z",
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: Any) -> None:
        pass


def test_eks_pod_identity_credentials(
    s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With Pod Identity the pod gets an agent URL and a token file: temporary keys, never static ones."""
    token_file = tmp_path / "eks-pod-identity-token"
    token_file.write_text("pod-identity-jwt")
    _PodIdentityAgent.expected_token = "pod-identity-jwt"
    agent = http.server.HTTPServer(("127.0.0.1", 0), _PodIdentityAgent)
    thread = threading.Thread(target=agent.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.delenv("AWS_ROLE_ARN")
        monkeypatch.delenv("AWS_WEB_IDENTITY_TOKEN_FILE")
        monkeypatch.setenv(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI", f"http://127.0.0.1:{agent.server_port}/v1/credentials"
        )
        monkeypatch.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", str(token_file))
        storage.reset_clients()
        storage.create_bytes(f"{s3_bucket.url}/via-pod-identity", b"ok")
        client: Any = s3_backend.client()
        credentials = client._request_signer._credentials
        assert credentials.method == "container-role"
        assert credentials.get_frozen_credentials().access_key == "ASIAPODIDENTITY"
        assert _PodIdentityAgent.seen_tokens[-1] == "pod-identity-jwt"
        assert not any(name in os.environ for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"))
    finally:
        agent.shutdown()
        agent.server_close()
        thread.join(timeout=5)
