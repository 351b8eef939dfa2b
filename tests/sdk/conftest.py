"""Fixtures for SDK and CLI tests: an isolated environment, SDK sessions on the local cluster, and a
stand-in OpenAI-compatible server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from rft.sdk.config import load_config
from rft.sdk.kube import KubeClient
from rft.sdk.session import Session
from rft_devcluster.handle import ClusterHandle

from tests.sdk.openai_stub import OpenAIStub, stub_handler

SDK_ENV = (
    "RFT_CONFIG",
    "RFT_NAMESPACE",
    "RFT_BUCKET",
    "RFT_SERVICE_ACCOUNT",
    "RFT_ENDPOINT_OVERRIDE",
    "KUBECONFIG",
    "KUBERNETES_SERVICE_HOST",
)


@pytest.fixture(autouse=True)
def isolated_sdk_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No RFT_* settings, no config file and no kubeconfig from the machine leak into a test.

    Returns the (absent) config file path that RFT_CONFIG points at.
    """
    for variable in SDK_ENV:
        monkeypatch.delenv(variable, raising=False)
    config_path = tmp_path / "rft-config.yaml"
    monkeypatch.setenv("RFT_CONFIG", str(config_path))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    return config_path


@pytest.fixture
def sdk_session(cluster: ClusterHandle, crds: None, namespace: str) -> Iterator[Session]:
    """A Session on the test's namespace of the local cluster (admin kubeconfig), CRDs installed."""
    config = load_config(namespace=namespace, kubeconfig=str(cluster.kubeconfig))
    client = KubeClient.from_config(config)
    try:
        yield Session(config, client)
    finally:
        client.api_client.close()  # type: ignore[no-untyped-call]


@pytest.fixture
def openai_stub() -> Iterator[OpenAIStub]:
    """The stand-in inference server (the real servers need model weights); stopped after the test."""
    recorded: list[tuple[str, dict[str, Any]]] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), stub_handler(recorded))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield OpenAIStub(port=server.server_address[1], requests=recorded)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
