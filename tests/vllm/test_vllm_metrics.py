"""vLLM's real /metrics has every vllm: metric the chart's Grafana dashboard queries."""

from __future__ import annotations

import re
import urllib.request

import pytest

from tests.chart.dashboard import metric_names
from tests.vllm.conftest import SERVED_NAME, VllmServer

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


def test_the_dashboards_vllm_metrics_are_what_vllm_exports(vllm_server: VllmServer) -> None:
    # One request first: some series (histograms per model) appear once used.
    vllm_server.post(
        "/v1/completions", {"model": SERVED_NAME, "prompt": "hello", "max_tokens": 2, "temperature": 0}
    )
    with urllib.request.urlopen(vllm_server.url + "/metrics", timeout=60) as response:  # noqa: S310 - loopback
        text = response.read().decode()
    exported = set(re.findall(r"^(vllm:[A-Za-z0-9_:]+)[{ ]", text, flags=re.MULTILINE))
    wanted = metric_names("vllm:")
    assert wanted - exported == set(), f"vLLM exports {sorted(exported)}"
