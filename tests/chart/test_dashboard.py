"""The Grafana dashboard queries only metrics the operator exports (vLLM's: tests/vllm/test_vllm_metrics.py)."""

from __future__ import annotations

from prometheus_client import REGISTRY
from rft_operator.metrics import STATE

from tests.chart.dashboard import metric_names, queries

SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def _exported() -> set[str]:
    """The sample names the operator's registry can expose (labelled series appear only once
    used, so the names come from the families and their types)."""
    STATE.bind(queue_depth=lambda: 3, leading=lambda: True, step_phases=lambda: {"JOB_STATE_RUNNING": 2})
    names = set()
    for family in REGISTRY.collect():
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
    return names


def test_every_operator_metric_the_dashboard_queries_is_exported() -> None:
    wanted = metric_names("rft_")
    assert {"rft_workqueue_depth", "rft_leader", "rft_steps", "rft_reconciles_total"} <= wanted
    assert wanted - _exported() == set(), "the dashboard queries metrics the operator does not export"


def test_the_state_gauges_read_the_operator_state() -> None:
    STATE.bind(queue_depth=lambda: 7, leading=lambda: False, step_phases=lambda: {"JOB_STATE_RUNNING": 2})
    assert REGISTRY.get_sample_value("rft_workqueue_depth") == 7
    assert REGISTRY.get_sample_value("rft_leader") == 0
    assert REGISTRY.get_sample_value("rft_steps", {"phase": "JOB_STATE_RUNNING"}) == 2
    assert REGISTRY.get_sample_value("rft_steps", {"phase": "JOB_STATE_COMPLETED"}) == 0


def test_every_query_names_a_known_metric() -> None:
    assert all("rft_" in q or "vllm:" in q for q in queries())
    assert metric_names("vllm:"), "the serving row queries vLLM's metrics"
