"""`make demo LOOP=examples/agent_loop.py`: the tool-using agent loop on the local cluster, on vLLM.

Three steps of two-turn episodes around a tool call (16 prompts x 8 episodes), rows built by the
SDK's Trajectory helper from the sampler's token ids and logprobs, trained by real steps on the
local node. Checked: the reward rises, and every trained token is one the sampler produced:
each step's metrics (read back from the step's status by the loop) count exactly one drifted turn
per trajectory (the tool-calling turn, whose call markup the harness wrote), split none, and put
the trainer's logprobs of the trained tokens within 1e-3 of the sampler's; the trainer's own
tokenization of the rows trains exactly the carried ids.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rft.rows import parse_row
from rft_trainer.data import SampleTokenizer, tokenize_samples
from rft_trainer.dataset import score_groups
from transformers import AutoTokenizer

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.cluster, pytest.mark.localnode, pytest.mark.slow, pytest.mark.vllm]


def _trained_and_carried(
    rows: list[dict[str, Any]], model_dir: Path
) -> tuple[Any, list[list[int]], list[list[int]]]:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    groups = [parse_row(line, json.dumps(r)) for line, r in enumerate(rows, start=1)]
    tokenized = tokenize_samples(score_groups(groups, {}, "group").samples, SampleTokenizer(tokenizer, 512))
    trained = [[s.token_ids[p] for p in s.target_positions()] for s in tokenized.samples]
    carried = [
        [i for m in s["messages"] if m["role"] == "assistant" for i in m["token_ids"]]
        for r in rows
        for s in r["samples"]
    ]
    return tokenized, trained, carried


@pytest.mark.timeout(1500)
def test_the_agent_loop_raises_the_reward_training_only_sampled_tokens(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "demo"
    results = tmp_path / "agent.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "rft_devcluster.demo",
            "--loop",
            str(REPO / "examples" / "agent_loop.py"),
            "--state-dir",
            str(state),
        ],
        cwd=REPO,
        env={**os.environ, "AGENT_LOOP_RESULTS": str(results)},
        capture_output=True,
        text=True,
        check=False,
        timeout=1400,
    )
    output = result.stdout + result.stderr
    with capsys.disabled():
        print("\n" + "\n".join(line for line in result.stdout.splitlines() if not line.startswith("==>")))
    assert result.returncode == 0, output[-6000:]
    history = json.loads(results.read_text())
    steps = [h for h in history if h["output_model"]]
    assert [h["step"] for h in steps] == [1, 2, 3]

    # (a) the reward rises (the criterion of tests/trainer/test_trainer_learns_served.py)
    means = [float(h["mean_reward"]) for h in history]
    assert means[-1] > means[0] + 0.05, means

    # (b) every trained token is one the sampler produced
    for h in steps:
        metrics, rows = h["metrics"], h["rows"]
        trajectories = sum(len(r["samples"]) for r in rows)
        assert trajectories == 128
        # the step's own trainer: one drifted turn per trajectory (its tool-calling turn), no
        # trajectory split (a split one would count as two samples), its logprobs of the trained
        # tokens, in its context, the sampler's
        assert int(metrics["drifted_turns"]) == trajectories, metrics
        assert int(metrics["samples"]) == trajectories, metrics
        assert int(metrics["skipped_samples"]) == int(metrics["truncated_samples"]) == 0, metrics
        assert float(metrics["sampler_logp_abs_diff"]) < 1e-3, metrics
        # the trainer's tokenization of the same rows: exactly the carried ids, in order
        tokenized, trained, carried = _trained_and_carried(rows, state / "base-model")
        assert trained == carried
        assert {turn for _, _, turn in tokenized.drifted} == {0}
        assert tokenized.split == 0
