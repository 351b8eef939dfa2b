"""Backend-parametrised fixtures; the emulator fixtures come from the root conftest's plugin
(rft_devcluster.pytest_fixtures_storage)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

BACKENDS = ("s3", "gs", "file")


@pytest.fixture(params=BACKENDS)
def bucket_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The root URL of a fresh, empty location on each backend: moto S3, the GCS emulator, a local dir."""
    if request.param == "s3":
        return str(request.getfixturevalue("s3_bucket").url)
    if request.param == "gs":
        return str(request.getfixturevalue("gcs_bucket").url)
    return f"file://{tmp_path_factory.mktemp('bucket')}"


@pytest.fixture
def url_in(bucket_url: str) -> Callable[[str], str]:
    """Build a URL for a key inside the test's bucket."""
    return lambda key: f"{bucket_url}/{key}"
