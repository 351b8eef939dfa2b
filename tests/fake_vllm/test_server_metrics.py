"""GET /metrics: vLLM's two load gauges, read by the operator through the adapter sidecar.

The same path as in a server pod: the fake vLLM, `rft.pods.adapter_sidecar` in front of it, and the
operator's reader (`rft_operator.adapters.server_metrics`, `rft_operator.autoscale`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from rft.pods.adapter_sidecar import make_handler
from rft.pods.admin_guard import token_sha256
from rft_devcluster.fake_vllm.config import ServerConfig
from rft_devcluster.fake_vllm.engine import Engine
from rft_devcluster.fake_vllm.testing import LOOPBACK, RunningServer, running_server
from rft_operator.adapters import server_metrics
from rft_operator.autoscale import requests_in_flight

BASE = "tiny"
TOKEN = "operator-token"


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path) -> Iterator[RunningServer]:
    config = ServerConfig(model=str(tiny_model_dir), served_model_names=(BASE,))
    with running_server(Engine.from_config(config)) as running:
        yield running


@pytest.fixture
def sidecar_port(server: RunningServer, tmp_path: Path) -> Iterator[int]:
    sidecar = ThreadingHTTPServer((LOOPBACK, 0), make_handler(server.base_url, tmp_path / "adapters", token_sha256(TOKEN)))
    thread = threading.Thread(target=sidecar.serve_forever, daemon=True)
    thread.start()
    try:
        yield sidecar.server_address[1]
    finally:
        sidecar.shutdown()
        sidecar.server_close()
        thread.join(10)


def gauges(text: str) -> dict[tuple[str, str], float]:
    return {
        (sample.name, sample.labels.get("model_name", "")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if family.type == "gauge"
    }


def test_idle_server_reports_zero_running_and_waiting(server: RunningServer, sidecar_port: int) -> None:
    direct = httpx.get(f"{server.base_url}/metrics", timeout=10)
    assert direct.status_code == 200
    assert direct.headers["content-type"].startswith("text/plain")
    assert gauges(direct.text) == {
        ("vllm:num_requests_running", BASE): 0.0,
        ("vllm:num_requests_waiting", BASE): 0.0,
    }
    through_sidecar = server_metrics(LOOPBACK, sidecar_port, token=TOKEN)
    assert requests_in_flight(through_sidecar) == 0


def test_concurrent_requests_show_as_one_running_and_the_rest_waiting(
    server: RunningServer, sidecar_port: int
) -> None:
    body = {"model": BASE, "prompt": "the cat", "max_tokens": 48, "temperature": 0, "ignore_eos": True}
    clients = 4
    seen: list[dict[tuple[str, str], float]] = []
    with ThreadPoolExecutor(max_workers=clients) as pool:
        answers = [
            pool.submit(httpx.post, f"{server.base_url}/v1/completions", json=body, timeout=120)
            for _ in range(clients)
        ]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(a.done() for a in answers):
            seen.append(gauges(server_metrics(LOOPBACK, sidecar_port, token=TOKEN)))
            if seen[-1][("vllm:num_requests_waiting", BASE)] >= 1:
                break
            time.sleep(0.01)
        busiest = seen[-1]
        assert all(a.result().status_code == 200 for a in answers)
    # One request at a time holds the model; the others wait for it, as in vLLM's scheduler.
    assert busiest[("vllm:num_requests_running", BASE)] == 1, seen[-5:]
    assert 1 <= busiest[("vllm:num_requests_waiting", BASE)] <= clients - 1, seen[-5:]
    assert requests_in_flight(server_metrics(LOOPBACK, sidecar_port, token=TOKEN)) == 0, "all answered"
