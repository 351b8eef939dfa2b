"""pytest fixtures for tests that need the local cluster.

Register with ``pytest_plugins = ["rft_devcluster.pytest_plugin"]`` (or ``-p
rft_devcluster.pytest_plugin``). The session fixture ``cluster`` starts one cluster per test
session (control plane, kwok GPU nodes and the local node agent) and always stops it; it
never skips: if the binaries cannot be built, the fixture errors with the build script's
output. Set ``RFT_CLUSTER_STATE_DIR`` to reuse a cluster already started with
``python -m rft_devcluster up`` instead (it is then left running).
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest

from rft_devcluster.binaries import ensure_binaries
from rft_devcluster.controlplane import ClusterOptions, ControlPlane, LocalNodeOptions
from rft_devcluster.emulators import DEFAULT_REGION, Emulator
from rft_devcluster.handle import ClusterHandle
from rft_devcluster.kueue import Kueue

REUSE_ENV = "RFT_CLUSTER_STATE_DIR"


@contextlib.contextmanager
def _sigterm_raises_keyboard_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt so that fixture teardown (and the cluster's stop) runs."""
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def handler(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt("SIGTERM")

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory, moto_server: Emulator) -> Iterator[ClusterHandle]:
    """A running local cluster (admin access) shared by the whole test session.

    Pods of ServiceAccounts annotated with an IAM role get the session's moto server as their
    S3/STS endpoint (the local node emulates EKS's pod identity webhook).
    """
    reuse = os.environ.get(REUSE_ENV)
    if reuse:
        yield ClusterHandle.from_state_dir(Path(reuse))
        return
    bin_dir = ensure_binaries()
    state_dir = tmp_path_factory.mktemp("rft-devcluster")
    node = LocalNodeOptions(
        cpu="8",
        memory="32Gi",
        workload_identity_env=(
            ("AWS_ENDPOINT_URL", moto_server.endpoint),
            ("AWS_DEFAULT_REGION", DEFAULT_REGION),
            ("AWS_REGION", DEFAULT_REGION),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ),
    )
    options = ClusterOptions(gpu_nodes=2, local_node=node)
    with _sigterm_raises_keyboard_interrupt(), ControlPlane(state_dir, bin_dir, options) as handle:
        yield handle


@pytest.fixture(scope="module")
def kueue(cluster: ClusterHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kueue]:
    """Kueue's manager running against the session's cluster (tools/rft_devcluster/kueue.py),
    started by the first test of a module that asks for it (building it with
    tools/build-kueue.sh when missing) and stopped, its webhooks removed, when that module's tests
    end (a few seconds each way). Not for the whole session: a running Kueue suspends again every
    Job with a queue label that it did not admit, which the tests playing Kueue's part do
    (tests/operator/test_step_queue.py)."""
    with Kueue(cluster, tmp_path_factory.mktemp("kueue")) as running:
        yield running


@pytest.fixture
def namespace(cluster: ClusterHandle) -> Iterator[str]:
    """A fresh namespace (with its ``default`` ServiceAccount ready), deleted after the test."""
    name = cluster.create_namespace()
    try:
        yield name
    finally:
        cluster.delete_namespace(name)
