"""The model-fetch benchmark's harness: a quick run yields every figure (no timing is asserted)."""

from __future__ import annotations

import json
from pathlib import Path

from bench import __main__ as bench_main
from bench import model_fetch


def test_a_quick_run_measures_both_fetches_and_the_check(tmp_path: Path) -> None:
    rows = model_fetch.benchmark(quick=True, results_dir=tmp_path)
    assert [row.metric for row in rows] == [
        "pinned fetch MiB/s (8 streams vs 1)",
        "model check read+hash MiB/s",
        "16 GB model fetched at that rate (s)",
    ]
    assert float(rows[0].ours) > 0
    assert float(rows[0].peer) > 0
    assert rows[0].ratio.endswith("x")
    result = json.loads((tmp_path / "model_fetch.json").read_text())
    assert result["workload"] == {
        "shards": 2,
        "shard_mib": 16,
        "bytes": result["workload"]["bytes"],
        "files": 4,
    }
    assert result["workload"]["bytes"] > 32 * 2**20
    assert result["sixteen_gb_fetch_seconds_at_measured_rate"] > 0
    assert bench_main.BENCHMARKS["model_fetch"] == "bench.model_fetch:benchmark"
