"""The session-API benchmark's harness: a quick run yields its figures (no timing is asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import __main__ as bench_main
from bench import session_api


@pytest.mark.slow
def test_a_quick_run_times_both_sides(tmp_path: Path) -> None:
    rows = session_api.benchmark(quick=True, results_dir=tmp_path)
    assert [row.metric for row in rows] == ["step latency ms (Tinker API / in-process core)"]
    assert float(rows[0].ours) > 0
    assert float(rows[0].peer) > 0
    assert rows[0].ratio.endswith("x")
    result = json.loads((tmp_path / "session_api.json").read_text())
    assert len(result["api_step_seconds"]) == len(result["core_step_seconds"]) == 2
    assert bench_main.resolve(bench_main.BENCHMARKS["session_api"]) is session_api.benchmark
