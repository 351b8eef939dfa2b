"""Shared fixtures: the local cluster (rft_devcluster), storage emulators, and installed CRDs."""

from __future__ import annotations

from pathlib import Path

import pytest
from rft_devcluster.handle import ClusterHandle

pytest_plugins = ["rft_devcluster.pytest_plugin", "rft_devcluster.pytest_fixtures_storage"]

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def crds(cluster: ClusterHandle) -> None:
    """The project's CRDs, installed from crds/ and Established."""
    cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(REPO / "crds"))
