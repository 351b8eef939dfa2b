"""Multi-turn rollouts from real vLLM, collected with the SDK's trajectory helper, trained by the
trainer: every trained token is one the sampler produced, re-tokenization drift is measured (and
reported exactly where the chat template's re-rendering differs), and the sampler's logprobs
agree with the trainer's on the tokens trained in the context the sampler saw.

Figures (pytest -s) are those docs/dataset-format.md states.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import openai
import pytest
import torch
from rft.api.model import LoraSettings
from rft.api.reinforcement_step import LossSettings
from rft.rows import parse_row
from rft.sdk.trajectory import Trajectory, row, with_token_ids
from rft_trainer.data import SampleTokenizer, tokenize_samples
from rft_trainer.dataset import score_groups
from rft_trainer.logprobs import CompletionLogprobs
from rft_trainer.loop import OptimSettings, Trainer
from rft_trainer.loss import LossParams
from rft_trainer.model import attach_new_adapter, load_base_model

from tests.vllm.conftest import SERVED_NAME, VllmServer

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

PROMPTS = ["Say something about the cat.", "Name two colours.", "Count to three."]
GROUP = 4
SAMPLING = {"temperature": 1.0, "top_p": 1.0}
TOLERANCE = 1e-3  # float32 on CPU, as tests/vllm/test_sampler_agreement.py


def _rollouts(server: VllmServer) -> list[dict[str, Any]]:
    """Two-turn episodes: the model answers, the user asks for more, the model answers again."""
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none")
    rows = []
    for p, prompt in enumerate(PROMPTS):
        samples = []
        for k in range(GROUP):
            trajectory = Trajectory([{"role": "user", "content": prompt}])
            for turn in range(2):
                request = with_token_ids(
                    {
                        "messages": trajectory.request_messages(),
                        "max_tokens": 12,
                        "seed": 100 * p + 10 * k + turn,
                        **SAMPLING,
                    }
                )
                reply = client.chat.completions.create(model=SERVED_NAME, **request)
                trajectory.add_choice(reply.choices[0])
                if turn == 0:
                    trajectory.add_user("Tell me more.")
            words = len(trajectory.messages[-1]["content"].split())
            samples.append(trajectory.sample({"score": float(words)}, sampling=SAMPLING))
        rows.append(row(samples))
    return rows


def test_multi_turn_rollouts_train_on_exactly_the_sampled_tokens(vllm_server: VllmServer) -> None:
    rows = _rollouts(vllm_server)
    model, tokenizer = load_base_model(str(vllm_server.model_dir), torch.device("cpu"))
    groups = [parse_row(line, json.dumps(r)) for line, r in enumerate(rows, start=1)]
    scored = score_groups(groups, {}, "group")
    tokenized = tokenize_samples(scored.samples, SampleTokenizer(tokenizer, 512))

    # every trained token is one the sampler produced, in the order it produced them
    carried = [
        [i for m in s["messages"] if m["role"] == "assistant" for i in m["token_ids"]]
        for r in rows
        for s in r["samples"]
    ]
    assert tokenized.skipped == 0
    assert tokenized.truncated == 0
    by_sample: list[list[int]] = []
    for sample in tokenized.samples:
        by_sample.append([sample.token_ids[p] for p in sample.target_positions()])
    assert [t for s in by_sample for t in s] == [t for s in carried for t in s]

    # drift, checked independently: a turn drifted iff re-tokenizing its text differs from its ids
    turns = [m for r in rows for s in r["samples"] for m in s["messages"] if m["role"] == "assistant"]
    eos = tokenizer.eos_token_id
    texts = [tokenizer(m["content"], add_special_tokens=False)["input_ids"] for m in turns]
    independent = sum(m["token_ids"] not in (ids, [*ids, eos]) for m, ids in zip(turns, texts, strict=True))
    assert len(tokenized.drifted) == independent

    # the sampler's logprobs against the trainer's, in the contexts the trainer trains them in
    scorer = CompletionLogprobs(model)
    differences = []
    for sample in tokenized.samples:
        positions = sample.target_positions()
        with torch.no_grad():
            logp = scorer(
                torch.tensor([sample.token_ids]),
                torch.arange(len(sample.token_ids)).unsqueeze(0),
                torch.tensor(positions),
            )
        assert sample.sampling_logprobs is not None
        differences += [
            abs(float(a) - b)
            for a, b in zip(logp, sample.sampling_logprobs, strict=True)
            if not math.isnan(b)
        ]
    print(
        f"{len(turns)} assistant turns in {sum(len(r['samples']) for r in rows)} two-turn trajectories: "
        f"{len(tokenized.drifted)} drifted on re-tokenization, {tokenized.split} trajectories split; "
        f"sampler vs trainer logprob |diff| over {len(differences)} tokens: max {max(differences):.2e}, "
        f"mean {sum(differences) / len(differences):.2e}"
    )
    report = os.environ.get("RFT_TRAJECTORY_EXAMPLE")
    if report:  # the example row docs/dataset-format.md shows
        Path(report).write_text(json.dumps(rows[0], indent=1))
    assert max(differences) < TOLERANCE

    # one training step on them: the sampler is the behaviour policy, nothing capped on-policy
    params = LossParams.from_settings(LossSettings(method="grpo", kl_coefficient="0"))
    settings = OptimSettings(
        learning_rate=1e-3,
        weight_decay=0.0,
        max_grad_norm=1.0,
        warmup_steps=0,
        gradient_accumulation_steps=1,
        epochs=1,
        batch_tokens=4096,
        max_context_length=512,
        seed=0,
    )
    policy = attach_new_adapter(
        model, LoraSettings(rank=4, alpha=8, target_modules=["q_proj", "v_proj"]), seed=0
    )
    metrics = (
        Trainer(policy, tokenized.samples, settings, params, torch.device("cpu"), new_adapter=True)
        .run()
        .steps[0]
        .metrics()
    )
    print({k: round(v, 6) for k, v in metrics.items() if k.startswith(("is_", "sampler_"))})
    assert metrics["sampler_logp_abs_diff"] < TOLERANCE
    assert metrics["is_capped_fraction"] == 0.0
