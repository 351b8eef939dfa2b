"""Multi-turn (agent) rows: rendered with the model's own chat template, only assistant turns
trained, the sampler's token ids trained as carried, and drift between them and the template's
re-rendering reported by line (and split where a turn's context drifted)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from rft.api.model import LoraSettings
from rft.api.reinforcement_step import LossSettings
from rft.contracts.trainer_config import TrainerResult, parse_termination_message
from rft.rows import parse_row
from rft_trainer.data import Sample, SampleTokenizer, TokenizedDataset, tokenize_samples
from rft_trainer.dataset import score_groups
from rft_trainer.errors import BadInputError
from rft_trainer.logprobs import CompletionLogprobs
from rft_trainer.loop import OptimSettings, Trainer
from rft_trainer.loss import LossParams
from rft_trainer.main import main
from rft_trainer.model import attach_new_adapter, load_base_model
from transformers import AutoTokenizer

CPU = torch.device("cpu")
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "calc",
            "description": "Evaluate an arithmetic expression.",
            "parameters": {"type": "object", "properties": {"expr": {"type": "string"}}},
        },
    }
]
PROMPT = [{"role": "system", "content": "Use the tool."}, {"role": "user", "content": "what is 2+3?"}]


def _call(call_id: str, expr: str) -> dict[str, Any]:
    arguments = json.dumps({"expr": expr})
    return {"id": call_id, "type": "function", "function": {"name": "calc", "arguments": arguments}}


def _trajectory(answer: str, expr: str = "2+3", result: str = "5") -> list[dict[str, Any]]:
    return [
        {"role": "assistant", "content": "", "tool_calls": [_call("c1", expr)]},
        {"role": "tool", "tool_call_id": "c1", "content": result},
        {"role": "user", "content": "and the answer?"},
        {"role": "assistant", "content": answer},
    ]


def _row(*samples: list[dict[str, Any]], rewards: tuple[float, ...] = (1.0, 0.0)) -> dict[str, Any]:
    return {
        "tools": TOOLS,
        "samples": [
            {"messages": [*PROMPT, *turns], "prompt_messages": len(PROMPT), "evals": {"score": reward}}
            for turns, reward in zip(samples, rewards, strict=True)
        ],
    }


def _tokenize(tokenizer: Any, *rows: dict[str, Any], limit: int = 512) -> TokenizedDataset:
    groups = [parse_row(line, json.dumps(row)) for line, row in enumerate(rows, start=1)]
    scored = score_groups(groups, {}, "group")
    return tokenize_samples(scored.samples, SampleTokenizer(tokenizer, limit))


def _spans(tokenizer: Any, sample: Sample) -> list[str]:
    """The trained tokens, decoded, one string per contiguous run."""
    spans: list[list[int]] = []
    previous = -2
    for position in sample.target_positions():
        if position != previous + 1:
            spans.append([])
        spans[-1].append(sample.token_ids[position])
        previous = position
    return [tokenizer.decode(span) for span in spans]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Any:
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_a_tool_call_row_is_tokenized_exactly_as_the_template_renders_it(tokenizer: Any) -> None:
    out = _tokenize(tokenizer, _row(_trajectory("five"), _trajectory("six")))
    assert len(out.samples) == 2
    assert out.drifted == []
    assert out.split == 0
    conversation = [*PROMPT, *_trajectory("five")]
    for message in conversation:  # the template takes tool call arguments as objects
        for call in message.get("tool_calls", []):
            call["function"]["arguments"] = json.loads(call["function"]["arguments"])
    rendered = tokenizer.apply_chat_template(conversation, tools=TOOLS, tokenize=False)
    assert "<tools>" in rendered
    assert "<tool_call>" in rendered
    whole = tokenizer(rendered, add_special_tokens=False)["input_ids"]
    ids = out.samples[0].token_ids
    # the sequence is the rendering up to the last end-of-turn token (the newline after it is
    # template text the model never produced)
    assert ids == whole[: len(ids)]
    assert tokenizer.decode(whole[len(ids) :]) == "\n"


def test_only_assistant_turns_are_trained(tokenizer: Any) -> None:
    sample = _tokenize(tokenizer, _row(_trajectory("five"), _trajectory("six"))).samples[0]
    # hand-checked against the tiny model's template (rft_devcluster.tiny.CHAT_TEMPLATE)
    assert _spans(tokenizer, sample) == [
        '<tool_call>\n{"name": "calc", "arguments": {"expr": "2+3"}}\n</tool_call><|im_end|>',
        "five<|im_end|>",
    ]
    masked = [t for p, t in enumerate(sample.token_ids) if p not in set(sample.target_positions())]
    text = tokenizer.decode(masked)
    assert text.startswith("<|im_start|>system\nUse the tool.\n\n# Tools\n<tools>")
    assert text.endswith(
        "<|im_start|>assistant\n\n<|im_start|>tool\n5<|im_end|>\n<|im_start|>user\nand the answer?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert sample.sampling_logprobs is not None
    assert all(map(math.isnan, sample.sampling_logprobs))


def _with_tokens(
    tokenizer: Any, turns: list[dict[str, Any]], logprobs: list[list[float]] | None = None
) -> None:
    """Give each assistant turn of `turns` the template's own tokens for it, as a sampler would."""
    sample = _tokenize(tokenizer, _row(turns, turns)).samples[0]
    positions = sample.target_positions()
    runs: list[list[int]] = [[]]
    for k, position in enumerate(positions):
        if k and position != positions[k - 1] + 1:
            runs.append([])
        runs[-1].append(sample.token_ids[position])
    assistant = [m for m in turns if m["role"] == "assistant"]
    for n, (message, ids) in enumerate(zip(assistant, runs, strict=True)):
        message["token_ids"] = ids
        if logprobs is not None:
            message["logprobs"] = logprobs[n][: len(ids)]


def test_rows_with_the_samplers_tokens_train_the_same_sequence_when_nothing_drifted(tokenizer: Any) -> None:
    text = _tokenize(tokenizer, _row(_trajectory("five"), _trajectory("six")))
    exact_turns = [_trajectory("five"), _trajectory("six")]
    for turns in exact_turns:
        _with_tokens(tokenizer, turns, logprobs=[[-0.25] * 64, [-0.5] * 64])
    exact = _tokenize(tokenizer, _row(*exact_turns))
    assert exact.drifted == []
    assert exact.split == 0
    for a, b in zip(text.samples, exact.samples, strict=True):
        assert (a.token_ids, a.targets) == (b.token_ids, b.targets)
    n_call = len(exact_turns[0][0]["token_ids"])
    assert exact.samples[0].sampling_logprobs == [-0.25] * n_call + [-0.5] * (
        exact.samples[0].completion_len - n_call
    )


def test_drifted_token_ids_are_reported_by_line_and_trained_as_carried(tokenizer: Any) -> None:
    good = _trajectory("five")
    _with_tokens(tokenizer, good)
    drifted = _trajectory("five")
    _with_tokens(tokenizer, drifted)
    # The same text, spelled with other tokens (one token per character): what a sampler that
    # did not produce the template's canonical tokenization gives.
    spelled = [tokenizer.convert_tokens_to_ids(c) for c in "five"]
    assert tokenizer.decode(spelled) == "five"
    assert drifted[3]["token_ids"][:-1] != spelled
    assert None not in spelled
    assert len(spelled) > 1
    drifted[3]["token_ids"] = [*spelled, tokenizer.eos_token_id]
    clean_row = _row(good, good)
    drift_row = _row(good, drifted)
    out = _tokenize(tokenizer, clean_row, drift_row)
    assert out.drifted == [(2, "samples[1]", 1)]  # line 2, its second sample, assistant turn 1
    assert out.split == 0  # the last turn drifted: no later context depends on it
    trained = out.samples[3]
    assert [trained.token_ids[p] for p in trained.target_positions()][-len(spelled) - 1 :] == [
        *spelled,
        tokenizer.eos_token_id,
    ]


def test_a_drifted_turn_splits_the_trajectory_in_the_contexts_the_sampler_saw(tokenizer: Any) -> None:
    turns = _trajectory("five")
    _with_tokens(tokenizer, turns)
    # the tool call turn sampled with an extra space the tool parser dropped: the template's
    # rendering of turn 2's context no longer starts with the sampler's tokens
    call_ids = turns[0]["token_ids"]
    turns[0]["token_ids"] = [*tokenizer(" ", add_special_tokens=False)["input_ids"], *call_ids]
    out = _tokenize(tokenizer, _row(turns, _trajectory("six")))
    assert out.drifted == [(1, "samples[0]", 0)]
    assert out.split == 1
    first, second = out.samples[0], out.samples[1]
    assert first.line == second.line == 1
    assert first.advantage == second.advantage
    assert [first.token_ids[p] for p in first.target_positions()] == turns[0]["token_ids"]
    context = [*PROMPT, *_trajectory("five")][:5]
    for message in context:
        for call in message.get("tool_calls", []):
            call["function"]["arguments"] = json.loads(call["function"]["arguments"])
    rendered = tokenizer.apply_chat_template(context, tools=TOOLS, tokenize=False, add_generation_prompt=True)
    assert second.token_ids[: second.prompt_len] == tokenizer(rendered, add_special_tokens=False)["input_ids"]
    assert _spans(tokenizer, second) == ["five<|im_end|>"]


def _settings() -> OptimSettings:
    return OptimSettings(
        learning_rate=1e-2,
        weight_decay=0.0,
        max_grad_norm=0.0,
        warmup_steps=0,
        gradient_accumulation_steps=1,
        epochs=1,
        batch_tokens=4096,
        max_context_length=512,
        seed=0,
    )


def test_token_exact_rows_give_the_same_loss_as_text_rows(tiny_model_dir: Path) -> None:
    """With the sampler's tokens equal to the template's and its logprobs the policy's own, the
    token-exact rows give the text rows' loss, gradient and update."""
    params = LossParams.from_settings(
        LossSettings(method="grpo", kl_coefficient="0", off_policy_correction="none")
    )
    lora = LoraSettings(rank=4, alpha=8, target_modules=["q_proj", "v_proj"])
    results = []
    for token_exact in (False, True):
        model, tokenizer = load_base_model(str(tiny_model_dir), CPU)
        policy = attach_new_adapter(model, lora, seed=0)
        rows = [_row(_trajectory("five"), _trajectory("six"), rewards=(1.0, 0.0))]
        samples = _tokenize(tokenizer, *rows).samples
        if token_exact:
            scorer = CompletionLogprobs(policy)
            for turns, sample in zip((rows[0]["samples"][0], rows[0]["samples"][1]), samples, strict=True):
                batch_ids = torch.tensor([sample.token_ids])
                with torch.no_grad():
                    lps = scorer(
                        batch_ids,
                        torch.arange(len(sample.token_ids)).unsqueeze(0),
                        torch.tensor(sample.target_positions()),
                    )
                messages = turns["messages"][len(PROMPT) :]
                _with_tokens(tokenizer, messages)
                n_call = len(messages[0]["token_ids"])
                messages[0]["logprobs"] = [float(x) for x in lps[:n_call]]
                messages[3]["logprobs"] = [float(x) for x in lps[n_call:]]
            samples = _tokenize(tokenizer, *rows).samples
            assert all(s.sampling_logprobs and not any(map(math.isnan, s.sampling_logprobs)) for s in samples)
        outcome = Trainer(policy, samples, _settings(), params, CPU, new_adapter=True).run()
        results.append(
            (outcome.steps[0], {n: p.detach().clone() for n, p in policy.named_parameters() if "lora_B" in n})
        )
    (text_step, text_weights), (exact_step, exact_weights) = results
    assert exact_step.loss == pytest.approx(text_step.loss, abs=1e-6)
    assert exact_step.grad_norm == pytest.approx(text_step.grad_norm, rel=1e-4)
    assert text_step.grad_norm > 0
    for name, weight in text_weights.items():
        assert torch.allclose(weight, exact_weights[name], atol=1e-6), name


def test_a_token_id_beyond_the_models_vocabulary_is_refused_by_line(tokenizer: Any) -> None:
    turns = _trajectory("five")
    _with_tokens(tokenizer, turns)
    turns[3]["token_ids"] = [*turns[3]["token_ids"][:-1], 4096, tokenizer.eos_token_id]
    groups = [parse_row(5, json.dumps(_row(_trajectory("six"), turns)))]
    raw = score_groups(groups, {}, "group").samples
    with pytest.raises(
        BadInputError, match=r"line 5: samples\[1\]: assistant turn 1 has token id 4096, beyond"
    ):
        tokenize_samples(raw, SampleTokenizer(tokenizer, 512, vocab_size=512))
    assert len(tokenize_samples(raw, SampleTokenizer(tokenizer, 512, vocab_size=8192)).samples) == 2


def test_the_trainer_trains_trajectory_rows_end_to_end_and_reports_drift(
    tokenizer: Any, make_config: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exact = _trajectory("five")
    _with_tokens(tokenizer, exact, logprobs=[[-0.25] * 64, [-0.5] * 64])
    drifted = _trajectory("six")
    _with_tokens(tokenizer, drifted, logprobs=[[-0.25] * 64, [-0.5] * 64])
    drifted[3]["token_ids"] = [*(tokenizer.convert_tokens_to_ids(c) for c in "six"), tokenizer.eos_token_id]
    drifted[3]["logprobs"] = [-0.5] * 4
    rows = [_row(_trajectory("five"), _trajectory("six")), _row(exact, drifted)]
    dataset = b"".join(json.dumps(r).encode() + b"\n" for r in rows)
    config = make_config(
        dataset,
        training={"lora_rank": 4, "learning_rate": "1e-3", "batch_size": 1024, "max_context_length": 512},
    )
    path = tmp_path / "config.json"
    path.write_text(config.to_json())
    assert main(["--config", str(path)]) == 0
    result = parse_termination_message(Path(config.termination_log).read_text())
    assert isinstance(result, TrainerResult)
    assert result.metrics["samples"] == "4"
    assert result.metrics["drifted_turns"] == "1"
    assert float(result.metrics["sampler_logp_abs_diff"]) > 0  # line 2's logprobs are made up
    assert "is_capped_fraction" in result.metrics
    assert "re-tokenization drift: 1 assistant turns of 4 trajectory samples" in capsys.readouterr().err
