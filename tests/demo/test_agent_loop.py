"""`make demo LOOP=examples/agent_loop.py`: the tool-using agent loop on the local cluster, on vLLM.

Three steps of two-turn episodes around a tool call (16 prompts x 8 episodes), rows built by the
SDK's Trajectory helper from the sampler's token ids and logprobs, trained by real steps on the
local node. Checked: the reward rises, and every trained token is one the sampler produced: the
trainer's tokenization of each step's rows trains exactly the carried ids, in order; each step's
own trainer (its metrics, read back from the step's status by the loop) counts the same drifted
turns (every tool-calling turn, whose call markup the harness wrote, plus the turns whose ids do
not re-tokenize from their text: non-word tokens the adapters come to sample) and splits the same
trajectories; and in the trainer's contexts the base model gives the sampled tokens the sampler's
logprobs (step 1, whose rows the base model sampled), as does step 1's own trainer (its
`sampler_logp_abs_diff`: the synced rows' `tools` render as vLLM rendered them,
tests/trainer/test_trainer_tools_order.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from rft.rows import parse_row
from rft_trainer.data import SampleTokenizer, tokenize_samples
from rft_trainer.dataset import score_groups
from rft_trainer.logprobs import CompletionLogprobs
from rft_trainer.model import load_base_model
from transformers import AutoTokenizer

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.cluster, pytest.mark.localnode, pytest.mark.slow, pytest.mark.vllm]


def _answers_not_retokenizing(rows: list[dict[str, Any]], model_dir: Path) -> list[tuple[int, str]]:
    """The samples whose answer turn's ids are not its text's tokens (with or without end-of-turn)."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    out = []
    for line, r in enumerate(rows, start=1):
        for k, sample in enumerate(r["samples"]):
            answer = sample["messages"][-1]
            ids = tokenizer(answer["content"], add_special_tokens=False)["input_ids"]
            if answer["token_ids"] not in (ids, [*ids, tokenizer.eos_token_id]):
                out.append((line, f"samples[{k}]"))
    return out


def _base_logprob_gaps(rows: list[dict[str, Any]], model_dir: Path) -> list[float]:
    """|the base model's logprob - the sampler's| of each trained token, in the trainer's context."""
    model, tokenizer = load_base_model(str(model_dir), torch.device("cpu"))
    groups = [parse_row(line, json.dumps(r)) for line, r in enumerate(rows, start=1)]
    tokenized = tokenize_samples(score_groups(groups, {}, "group").samples, SampleTokenizer(tokenizer, 512))
    scorer = CompletionLogprobs(model)
    gaps = []
    for sample in tokenized.samples:
        assert sample.sampling_logprobs is not None
        with torch.no_grad():
            logp = scorer(
                torch.tensor([sample.token_ids]),
                torch.arange(len(sample.token_ids)).unsqueeze(0),
                torch.tensor(sample.target_positions()),
            )
        gaps += [abs(float(a) - b) for a, b in zip(logp, sample.sampling_logprobs, strict=True)]
    return gaps


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
    model_dir = state / "base-model"
    for h in steps:
        metrics, rows = h["metrics"], h["rows"]
        trajectories = sum(len(r["samples"]) for r in rows)
        assert trajectories == 128
        tokenized, trained, carried = _trained_and_carried(rows, model_dir)
        # the trainer's tokenization of the rows: exactly the carried ids, in order
        assert [t for s in trained for t in s] == [t for s in carried for t in s]
        assert tokenized.skipped == tokenized.truncated == 0
        # drift: every tool-calling turn, and the turns whose ids are not their text's tokens
        drifted = set(tokenized.drifted)
        assert {(line, where) for line, where, turn in drifted if turn == 0} == {
            (line, f"samples[{k}]") for line, r in enumerate(rows, start=1) for k in range(len(r["samples"]))
        }
        assert {(line, where) for line, where, turn in drifted if turn == 1} == set(
            _answers_not_retokenizing(rows, model_dir)
        )
        # the step's own trainer saw the same: its drifted turns, and one sample per part
        assert int(metrics["drifted_turns"]) == len(drifted), metrics
        assert int(metrics["samples"]) == trajectories + tokenized.split, metrics
        assert int(metrics["skipped_samples"]) == int(metrics["truncated_samples"]) == 0, metrics
    gaps = _base_logprob_gaps(steps[0]["rows"], model_dir)
    print(f"step 1: base model vs sampler logprobs over {len(gaps)} trained tokens: max {max(gaps):.1e}")
    assert max(gaps) < 1e-3
    assert float(steps[0]["metrics"]["sampler_logp_abs_diff"]) < 1e-3, steps[0]["metrics"]
