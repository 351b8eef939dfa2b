"""Pytest fixtures for storage emulators: session-scoped servers, function-scoped buckets.

Register as a plugin in the root ``tests/conftest.py`` (``pytest_plugins = [...]``), or import the
fixtures by name into a conftest.

- ``moto_server``: moto (S3 + STS) on loopback, one per session.
- ``gcs_emulator``: the GCS emulator on loopback, one per session.
- ``s3_bucket``: a fresh bucket, with this process's environment switched to IRSA-style web
  identity against moto (no static keys); yields an :class:`S3Bucket`.
- ``gcs_bucket``: a fresh bucket, with ``STORAGE_EMULATOR_HOST`` set; yields a :class:`GcsBucket`.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from rft_devcluster import emulators

_counter = itertools.count()


def _bucket_name(prefix: str) -> str:
    return f"{prefix}-{next(_counter)}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class S3Bucket:
    """A bucket in moto and the pod environment (IRSA web identity) that reaches it."""

    name: str
    url: str
    endpoint: str
    env: dict[str, str]

    def pod_env(self) -> dict[str, str]:
        """A full environment for a subprocess: this process's, without static keys, plus IRSA."""
        return emulators.pod_environment(dict(os.environ), self.env)


@dataclass(frozen=True)
class GcsBucket:
    """A bucket in the GCS emulator and the environment that reaches it."""

    name: str
    url: str
    endpoint: str
    env: dict[str, str]

    def pod_env(self) -> dict[str, str]:
        """A full environment for a subprocess that reaches the emulator."""
        return {**os.environ, **self.env}


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[emulators.Emulator]:
    """moto in server mode on a free loopback port, for the whole session."""
    server = emulators.start_moto_server(log_dir=tmp_path_factory.mktemp("moto-log"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[emulators.Emulator]:
    """The GCS emulator on a free loopback port, for the whole session."""
    server = emulators.start_gcs_emulator(log_dir=tmp_path_factory.mktemp("gcs-log"))
    try:
        yield server
    finally:
        server.stop()


def _reset_storage_clients() -> None:
    from rft.storage import reset_clients  # noqa: PLC0415

    reset_clients()


@pytest.fixture
def s3_bucket(
    moto_server: emulators.Emulator,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[S3Bucket]:
    """A fresh S3 bucket; this process's environment is an IRSA pod's (web identity, no static keys)."""
    name = _bucket_name("rft-test")
    emulators.create_s3_bucket(moto_server.endpoint, name)
    env = emulators.irsa_environment(moto_server.endpoint, tmp_path_factory.mktemp("irsa"))
    for variable in emulators.STATIC_CREDENTIAL_ENV:
        monkeypatch.delenv(variable, raising=False)
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    _reset_storage_clients()
    yield S3Bucket(name, f"s3://{name}", moto_server.endpoint, env)
    _reset_storage_clients()


@pytest.fixture
def gcs_bucket(gcs_emulator: emulators.Emulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[GcsBucket]:
    """A fresh GCS bucket; this process's environment points google-cloud-storage at the emulator."""
    name = _bucket_name("rft-test")
    emulators.create_gcs_bucket(gcs_emulator.endpoint, name)
    env = emulators.gcs_environment(gcs_emulator.endpoint)
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    _reset_storage_clients()
    yield GcsBucket(name, f"gs://{name}", gcs_emulator.endpoint, env)
    _reset_storage_clients()
