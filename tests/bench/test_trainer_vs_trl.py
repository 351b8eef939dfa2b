"""Smoke tests of the trainer-vs-TRL benchmark harness at tiny sizes. No timing is asserted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import __main__ as bench_main
from bench import trainer_vs_trl, workload
from bench.common import Row, format_table
from bench.workload import Rollout, WorkloadSpec

TINY = WorkloadSpec(
    layers=1,
    hidden_size=64,
    heads=2,
    kv_heads=1,
    intermediate_size=128,
    vocab_size=512,
    groups=4,
    group_size=4,
    prompt_words=(2, 5),
    completion_tokens=(2, 40),
    lora_rank=4,
    lora_alpha=8,
    optimizer_steps=2,
)


def test_flop_count_by_hand() -> None:
    spec = TINY
    sizes = trainer_vs_trl.model_sizes(spec)
    # q, o: 64x64; k, v: 64x32 (one kv head of 32); gate, up, down: 64x128
    assert sizes["block_linear"] == 2 * 64 * 64 + 2 * 64 * 32 + 3 * 64 * 128
    assert sizes["lora"] == 4 * ((64 + 64) * 2 + (64 + 32) * 2 + (64 + 128) * 3)
    assert sizes["head"] == 64 * 512
    rollouts = [Rollout(0, [1, 2, 3], [4, 5], 1.0)]
    counts = trainer_vs_trl.count(spec, rollouts)
    assert (counts.tokens, counts.completion_tokens) == (5, 2)
    expected = 5 * (4 * sizes["block_linear"] + 6 * sizes["lora"]) + 2 * 4 * sizes["head"] + 6 * 25 * 64
    assert counts.flops == expected


def test_plan_matches_optimizer_steps(tmp_path: Path) -> None:
    workload.prepare(TINY, tmp_path)
    spec, prompts, rollouts = workload.load(tmp_path)
    assert spec == TINY
    assert len(prompts) == TINY.groups
    assert len(rollouts) == TINY.samples
    assert all(r.completion_ids[-1] == rollouts[0].completion_ids[-1] for r in rollouts)  # end-of-turn
    plan = trainer_vs_trl.plan_ours(spec, rollouts, batch_tokens=64)
    assert plan.optimizer_steps == TINY.optimizer_steps
    assert plan.batch_tokens >= max(r.length for r in rollouts)


@pytest.mark.slow
def test_harness_runs_and_losses_match(tmp_path: Path) -> None:
    results = tmp_path / "results"
    options = trainer_vs_trl.Options(
        spec=TINY, repetitions=1, batch_tokens=64, work_dir=tmp_path / "work", results_dir=results
    )
    rows, payload = trainer_vs_trl.run(options)

    equivalence = payload["equivalence"]
    assert equivalence["passed"], equivalence
    assert equivalence["ours"]["loss_rel_diff"] <= trainer_vs_trl.LOSS_RTOL
    assert equivalence["ours"]["grad_rel_diff"] <= trainer_vs_trl.GRAD_RTOL
    for side in trainer_vs_trl.SIDES:
        (run,) = payload["runs"][side]
        assert run["optimizer_steps"] == TINY.optimizer_steps
        assert run["peak_rss_kib"] >= run["baseline_rss_kib"] > 0
    # the peer makes the same update as ours: every micro-batch's ratio against old-policy
    # logprobs; on-policy TRL takes the ratio to be 1 (no old logprobs at all)
    micro_batches = TINY.samples // TINY.group_size
    assert payload["runs"]["trl"][0]["old_logprob_batches"] == micro_batches
    assert payload["runs"]["trl-on-policy"][0]["old_logprob_batches"] == 0
    assert payload["runs"]["ours"][0]["reference_seconds"] > 0
    stored = json.loads((results / "trainer_vs_trl.json").read_text())
    assert stored["ratios"].keys() == {"trl", "trl-on-policy"}
    assert stored["ratios"]["trl"].keys() == {
        "tokens_per_second",
        "loop_tokens_per_second",
        "cpu_seconds",
        "peak_rss",
        "training_rss",
    }
    assert len(stored["ratios"]["trl"]["tokens_per_second"]["values"]) == 1
    assert stored["machine"]["cores"] >= 1
    assert {r.metric for r in rows} >= {"trained tokens/s", "loss, first batch", "RSS added by training, MiB"}
    assert "trained tokens/s vs TRL on-policy" in format_table(rows)


def fake_benchmark(quick: bool) -> list[Row]:
    return [Row("fake", "speed", "2", "1", "2.00x", ">= 1x", True, "quick" if quick else "")]


def test_registry_and_table(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert "trainer_vs_trl" in bench_main.BENCHMARKS
    assert bench_main.resolve(bench_main.BENCHMARKS["trainer_vs_trl"]) is trainer_vs_trl.benchmark

    monkeypatch.setitem(bench_main.BENCHMARKS, "fake", f"{__name__}:fake_benchmark")
    assert bench_main.main(["fake", "--quick"]) == 0
    out = capsys.readouterr().out
    assert "machine:" in out
    assert "cores" in out
    assert "2.00x" in out
    assert "quick" in out
