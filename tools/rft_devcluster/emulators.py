"""Storage emulators on loopback for tests and the local demo: moto (S3 + STS) and a GCS emulator.

Both run as subprocesses, so that other processes (local pods, the trainer, the validator) reach
them as they would reach a real endpoint. Nothing here hands out static keys to workloads: the
environment built by :func:`irsa_environment` makes boto3 log in through
AssumeRoleWithWebIdentity, exactly as EKS IRSA does.

Run a GCS emulator by hand with ``python -m rft_devcluster.emulators gcs --port 9023``.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOOPBACK = "127.0.0.1"
DEFAULT_REGION = "us-east-1"
# moto's default account; the role need not exist for AssumeRoleWithWebIdentity in moto.
DEFAULT_ROLE_ARN = "arn:aws:iam::123456789012:role/rft-workload"

# Variables that would give a process credentials other than web identity; pods under IRSA
# have none of them, and neither do the environments built here.
STATIC_CREDENTIAL_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
)

# The emulator-side (admin) identity used only to create buckets; moto accepts any key pair.
_ADMIN_KEY = "emulator-admin"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Emulator:
    """A running emulator subprocess: its endpoint URL and how to stop it."""

    name: str
    endpoint: str
    process: subprocess.Popen[bytes]
    log_path: Path | None = None
    _stopped: bool = field(default=False, repr=False)

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the subprocess (kill it if it does not exit within ``timeout``)."""
        if self._stopped:
            return
        self._stopped = True
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)

    def __enter__(self) -> Emulator:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def _wait_until_ready(emulator: Emulator, probe: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if emulator.process.poll() is not None:
            log = emulator.log_path.read_text(errors="replace")[-2000:] if emulator.log_path else ""
            raise RuntimeError(f"{emulator.name} exited with code {emulator.process.returncode}: {log}")
        if probe():
            return
        time.sleep(0.1)
    emulator.stop()
    raise RuntimeError(f"{emulator.name} did not answer at {emulator.endpoint} within {timeout:.0f}s")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (loopback, built here)
            return bool(200 <= response.status < 500)
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except OSError:
        return False


def _spawn(
    args: list[str], log_dir: Path | None, name: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], Path | None]:
    log_path = None
    log = None
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"{name}.log"
        log = log_path.open("wb")
    try:
        process = subprocess.Popen(
            args,
            stdout=log if log is not None else subprocess.DEVNULL,
            stderr=subprocess.STDOUT if log is not None else subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    finally:
        if log is not None:
            log.close()
    return process, log_path


def start_moto_server(
    host: str = LOOPBACK, port: int | None = None, *, log_dir: Path | None = None, timeout: float = 60.0
) -> Emulator:
    """Start ``moto.server`` (S3, STS and the rest of AWS) on loopback; returns the running Emulator."""
    port = port or free_port(host)
    env = {key: value for key, value in os.environ.items() if key not in STATIC_CREDENTIAL_ENV}
    process, log_path = _spawn(
        [sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)], log_dir, "moto", env
    )
    emulator = Emulator("moto", f"http://{host}:{port}", process, log_path)
    _wait_until_ready(emulator, lambda: _http_ok(f"{emulator.endpoint}/moto-api/"), timeout)
    return emulator


def _admin_s3(endpoint: str, region: str) -> Any:
    import boto3  # noqa: PLC0415

    session = boto3.session.Session(
        aws_access_key_id=_ADMIN_KEY, aws_secret_access_key=_ADMIN_KEY, region_name=region
    )
    return session.client("s3", endpoint_url=endpoint)


def create_s3_bucket(endpoint: str, name: str, region: str = DEFAULT_REGION) -> str:
    """Create bucket ``name`` in the emulator (as its admin, not as a workload); returns ``s3://name``."""
    s3 = _admin_s3(endpoint, region)
    if region == "us-east-1":
        s3.create_bucket(Bucket=name)
    else:
        s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": region})
    return f"s3://{name}"


def put_s3_object(endpoint: str, bucket: str, key: str, data: bytes, region: str = DEFAULT_REGION) -> None:
    """Put an object as the emulator's admin (to stage test data without going through rft.storage)."""
    _admin_s3(endpoint, region).put_object(Bucket=bucket, Key=key, Body=data)


def web_identity_token(
    namespace: str = "default", service_account: str = "default", audience: str = "sts.amazonaws.com"
) -> str:
    """A JWT-shaped token like the one the kubelet projects for IRSA (unsigned: moto does not verify)."""

    def encode(part: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()

    now = int(time.time())
    header = {"alg": "RS256", "kid": "rft-dev", "typ": "JWT"}
    claims = {
        "aud": [audience],
        "iss": "https://oidc.rft-dev.local",
        "sub": f"system:serviceaccount:{namespace}:{service_account}",
        "iat": now,
        "exp": now + 3600,
    }
    signature = base64.urlsafe_b64encode(b"unsigned-dev-token").rstrip(b"=").decode()
    return f"{encode(header)}.{encode(claims)}.{signature}"


def irsa_environment(
    endpoint: str,
    token_dir: Path,
    *,
    role_arn: str = DEFAULT_ROLE_ARN,
    region: str = DEFAULT_REGION,
    namespace: str = "default",
    service_account: str = "default",
) -> dict[str, str]:
    """The AWS variables a pod gets under EKS IRSA, pointed at ``endpoint``; no static keys.

    Writes the projected token to ``token_dir/token``. Merge the result into an environment from
    which :data:`STATIC_CREDENTIAL_ENV` were removed (see :func:`pod_environment`).
    """
    token_dir.mkdir(parents=True, exist_ok=True)
    token_file = token_dir / "token"
    token_file.write_text(web_identity_token(namespace, service_account))
    return {
        "AWS_ROLE_ARN": role_arn,
        "AWS_WEB_IDENTITY_TOKEN_FILE": str(token_file),
        "AWS_ROLE_SESSION_NAME": f"{namespace}-{service_account}",
        "AWS_DEFAULT_REGION": region,
        "AWS_REGION": region,
        "AWS_ENDPOINT_URL": endpoint,
        # Keep a developer's ~/.aws and the instance metadata service out of the credential chain.
        "AWS_CONFIG_FILE": str(token_dir / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(token_dir / "no-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def pod_environment(base: dict[str, str], extra: dict[str, str]) -> dict[str, str]:
    """``base`` without any static AWS credential variable, plus ``extra``."""
    env = {key: value for key, value in base.items() if key not in STATIC_CREDENTIAL_ENV}
    env.update(extra)
    return env


def start_gcs_emulator(
    host: str = LOOPBACK, port: int | None = None, *, log_dir: Path | None = None, timeout: float = 60.0
) -> Emulator:
    """Start the GCS emulator (gcp-storage-emulator, in memory, with preconditions) on loopback."""
    port = port or free_port(host)
    process, log_path = _spawn(
        [sys.executable, "-m", "rft_devcluster.emulators", "gcs", "--host", host, "--port", str(port)],
        log_dir,
        "gcs",
    )
    emulator = Emulator("gcs-emulator", f"http://{host}:{port}", process, log_path)
    _wait_until_ready(emulator, lambda: _http_ok(f"{emulator.endpoint}/"), timeout)
    return emulator


def create_gcs_bucket(endpoint: str, name: str) -> str:
    """Create bucket ``name`` in the GCS emulator; returns ``gs://name``."""
    request = urllib.request.Request(  # noqa: S310 (loopback emulator URL built here)
        f"{endpoint}/storage/v1/b?project=rft-emulator",
        data=json.dumps({"name": name}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        if response.status != 200:
            raise RuntimeError(f"creating gs://{name} failed: HTTP {response.status}")
    return f"gs://{name}"


def gcs_environment(endpoint: str) -> dict[str, str]:
    """The variables that point google-cloud-storage at the emulator (anonymous credentials)."""
    return {"STORAGE_EMULATOR_HOST": endpoint, "GOOGLE_CLOUD_PROJECT": "rft-emulator"}


# --- the GCS emulator process -------------------------------------------------------------------


def _install_generation_preconditions() -> None:
    """Make gcp-storage-emulator honour ``ifGenerationMatch=0`` on uploads, as GCS does.

    The emulator ignores upload preconditions and would silently overwrite; GCS answers 412. The
    emulator serves one request at a time, so the check-then-write here is atomic, like the real
    service. Only ``0`` ("must not exist") is implemented: it is the only one rft.storage sends.
    """
    from http import HTTPStatus  # noqa: PLC0415

    from gcp_storage_emulator import server  # noqa: PLC0415
    from gcp_storage_emulator.exceptions import NotFound  # noqa: PLC0415
    from gcp_storage_emulator.handlers import objects  # noqa: PLC0415

    def object_exists(storage: Any, bucket: str, name: str | None) -> bool:
        if not name:
            return False
        try:
            storage.get_file_obj(bucket, name)
        except NotFound:
            return False
        return True

    def refuse(response: Any, bucket: str, name: str) -> None:
        response.status = HTTPStatus.PRECONDITION_FAILED
        message = f"At least one of the pre-conditions you specified did not hold. ({bucket}/{name})"
        response.json(
            {
                "error": {
                    "code": 412,
                    "message": message,
                    "errors": [{"reason": "conditionNotMet", "message": message}],
                }
            }
        )

    def wants_absent(request: Any) -> bool:
        return bool(request.query.get("ifGenerationMatch", [None])[0] == "0")

    original_insert = objects.insert
    original_partial = objects.upload_partial

    def insert(request: Any, response: Any, storage: Any, *args: Any, **kwargs: Any) -> Any:
        if wants_absent(request) and "upload_id" not in request.query:
            bucket = request.params["bucket_name"]
            name = (request.query.get("name") or [None])[0]
            if name is None and isinstance(request.data, dict):
                meta = request.data.get("meta", request.data)
                name = meta.get("name") if isinstance(meta, dict) else None
            if object_exists(storage, bucket, name):
                return refuse(response, bucket, str(name))
        return original_insert(request, response, storage, *args, **kwargs)

    def upload_partial(request: Any, response: Any, storage: Any, *args: Any, **kwargs: Any) -> Any:
        # The resumable session URL keeps the query of the POST that opened it.
        if wants_absent(request):
            try:
                obj = storage.get_resumable_file_obj(request.query["upload_id"][0])
            except NotFound:
                obj = None
            if obj is not None and object_exists(storage, obj["bucket"], obj["name"]):
                return refuse(response, obj["bucket"], obj["name"])
        return original_partial(request, response, storage, *args, **kwargs)

    objects.insert = insert
    objects.upload_partial = upload_partial
    for _pattern, handlers in server.HANDLERS:
        for method, handler in list(handlers.items()):
            if handler is original_insert:
                handlers[method] = insert
            elif handler is original_partial:
                handlers[method] = upload_partial


def run_gcs_emulator(host: str, port: int) -> None:
    """Serve the GCS emulator in this process until interrupted or terminated."""
    import signal  # noqa: PLC0415

    from gcp_storage_emulator.server import create_server  # noqa: PLC0415

    _install_generation_preconditions()
    emulator = create_server(host, port, in_memory=True)

    def stop(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    emulator.run()


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m rft_devcluster.emulators {gcs,moto} --host H --port P``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("kind", choices=["gcs", "moto"])
    parser.add_argument("--host", default=LOOPBACK)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    port = args.port or free_port(args.host)
    if args.kind == "gcs":
        print(f"STORAGE_EMULATOR_HOST=http://{args.host}:{port}", flush=True)
        run_gcs_emulator(args.host, port)
    else:
        os.execv(sys.executable, [sys.executable, "-m", "moto.server", "-H", args.host, "-p", str(port)])  # noqa: S606


if __name__ == "__main__":
    main()
