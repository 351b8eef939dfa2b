"""The operator-at-scale benchmark's harness: its arithmetic, and a tiny run that yields every figure.

No timing is asserted: the run only has to produce all the figures.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pytest
from rft.contracts.trainer_config import TrainerResult, parse_termination_message
from rft_devcluster.kwok_stages import FAKE_TERMINATION_MESSAGE
from rft_operator.accelerators import AcceleratorMap
from rft_operator.config import OperatorConfig

from bench import __main__ as bench_main
from bench import operator_scale
from bench.common import format_table

METRICS_TEXT = """\
# HELP apiserver_request_total [STABLE] Counter of apiserver requests.
# TYPE apiserver_request_total counter
apiserver_request_total{code="201",component="apiserver",dry_run="",group="batch",resource="jobs",scope="resource",subresource="",verb="POST",version="v1"} 7
apiserver_request_total{code="409",component="apiserver",dry_run="",group="batch",resource="jobs",scope="resource",subresource="",verb="POST",version="v1"} 1
apiserver_request_total{code="200",component="apiserver",dry_run="",group="rft-operator.io",resource="reinforcementsteps",scope="resource",subresource="status",verb="PATCH",version="v1alpha1"} 3
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="pods",scope="namespace",subresource="",verb="LIST",version="v1"} 2
"""


def test_percentiles_interpolate_between_ranks() -> None:
    values = [float(v) for v in range(1, 101)]
    assert operator_scale.percentile(values, 50) == pytest.approx(50.5)
    assert operator_scale.percentile(values, 99) == pytest.approx(99.01)
    assert operator_scale.percentile([3.0], 95) == 3.0
    assert math.isnan(operator_scale.percentile([], 50))


def test_request_counts_sum_codes_and_name_subresources() -> None:
    counts = operator_scale.parse_request_counts(METRICS_TEXT)
    assert counts[("POST", "batch", "jobs")] == 8
    assert counts[("PATCH", "rft-operator.io", "reinforcementsteps/status")] == 3
    assert counts[("LIST", "", "pods")] == 2


def test_attribution_subtracts_own_requests_and_what_raw_jobs_cause() -> None:
    operator_phase = {
        "steps": 10,
        "requests": Counter(
            {
                ("POST", "rft-operator.io", "reinforcementsteps"): 10,  # the benchmark's creates
                ("POST", "batch", "jobs"): 10,
                ("POST", "", "events"): 40,  # 20 by the operator, 20 by the Job controller
                ("PUT", "batch", "jobs/status"): 35,  # not the operator's: left out
            }
        ),
        "own_requests": Counter({("POST", "rft-operator.io", "reinforcementsteps"): 10}),
    }
    raw_phase = {
        "jobs": 20,
        "requests": Counter(
            {("POST", "batch", "jobs"): 20, ("POST", "", "events"): 40, ("PUT", "batch", "jobs/status"): 80}
        ),
        "own_requests": Counter({("POST", "batch", "jobs"): 20}),
    }
    total, share = operator_scale.attribute(operator_phase, raw_phase)
    assert share == {("POST", "batch", "jobs"): 1.0, ("POST", "", "events"): 2.0}
    assert total[("PUT", "batch", "jobs/status")] == 3.5
    # With the Event objects counted, their reporter decides (the Job controller's vary).
    operator_phase["events_by_component"] = {"rft-operator": 30, "job-controller": 10}
    _, share = operator_scale.attribute(operator_phase, raw_phase)
    assert share[("POST", "", "events")] == 3.0


def test_raw_jobs_are_the_operators_jobs_without_owner() -> None:
    job = operator_scale.raw_job(3, OperatorConfig(trainer_image="img"), AcceleratorMap.load(None))
    assert job["metadata"]["namespace"] == operator_scale.RAW_NAMESPACE
    assert "ownerReferences" not in job["metadata"]
    annotations = job["spec"]["template"]["metadata"]["annotations"]
    assert isinstance(parse_termination_message(annotations[FAKE_TERMINATION_MESSAGE]), TrainerResult)
    assert job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_registered_in_the_bench_registry() -> None:
    assert bench_main.resolve(bench_main.BENCHMARKS["operator"]) is operator_scale.benchmark


@pytest.mark.cluster
@pytest.mark.slow
def test_tiny_run_yields_every_figure(tmp_path: Path) -> None:
    options = operator_scale.Options(
        steps=10, nodes=2, concurrency=4, workers=4, timeout=240, results_dir=tmp_path / "results"
    )
    rows, payload = operator_scale.run(options)
    table = format_table(rows)
    for metric in (
        "creation -> Job",
        "creation -> COMPLETED",
        "steps COMPLETED/s vs Jobs created/s",
        "API writes per step",
        "API requests per step",
        "operator CPU seconds",
        "operator peak RSS",
    ):
        assert metric in table
    op = payload["operator"]
    assert op["finished"]
    assert not op["failed_steps"]
    assert op["creation_to_job_seconds"]["count"] == 10
    assert op["creation_to_completed_seconds"]["count"] == 10
    for q in ("p50", "p95", "p99"):
        assert op["creation_to_job_seconds"][q] > 0
    assert op["cpu_seconds"] > 0
    assert op["rss_kib"]["peak"] > 0
    assert op["writes_per_step_by_resource"]["POST batch/jobs"] == pytest.approx(1.0)
    assert op["own_writes"], "the operator's own write counter was read"
    assert payload["raw"]["finished"]
    assert payload["raw"]["job_create_rate"] > 0
    assert payload["ratios"]["completed_vs_raw_create"] > 0
    assert payload["machine"]["cores"]
    assert (tmp_path / "results" / "operator_scale.json").exists()
