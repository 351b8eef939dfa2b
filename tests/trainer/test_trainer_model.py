"""What one training step changes (adapter only, only B at first) and continuing from checkpoints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from rft.api.model import LoraSettings, TrainingRecord
from rft.api.reinforcement_step import LossSettings
from rft_devcluster.tiny import build_tiny_model
from rft_trainer.checkpoint import save_adapter
from rft_trainer.data import RawSample, SampleTokenizer, tokenize_samples
from rft_trainer.errors import BadInputError
from rft_trainer.loop import OptimSettings, Trainer
from rft_trainer.loss import LossParams
from rft_trainer.model import (
    attach_new_adapter,
    attach_parent_adapter,
    check_parent_compatible,
    load_base_model,
    read_adapter_config,
    trainable_parameter_count,
)

LORA = LoraSettings(rank=4, alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
CPU = torch.device("cpu")
RECORD = TrainingRecord(learning_rate="1e-2", max_context_length=128, batch_size=4096, epochs=1, loss_method="grpo")
LINEAGE = {"baseModel": {"name": "tiny-base"}, "training": RECORD.to_wire()}


def _settings(**overrides: Any) -> OptimSettings:
    values: dict[str, Any] = {
        "learning_rate": 1e-2,
        "weight_decay": 0.0,
        "max_grad_norm": 1.0,
        "warmup_steps": 0,
        "gradient_accumulation_steps": 1,
        "epochs": 1,
        "batch_tokens": 4096,
        "max_context_length": 128,
        "seed": 0,
    }
    values.update(overrides)
    return OptimSettings(**values)


def _raw_samples() -> list[RawSample]:
    texts = [("cat cat", 1.0), ("dog", 0.0), ("apple cat", 0.5), ("red blue", 0.0)]
    return [
        RawSample(
            line=1 + g,
            group=g,
            where=f"samples[{k}]",
            prompt=[{"role": "user", "content": f"animal {g}"}],
            completion=text,
            reward=reward,
            advantage=(reward - 0.375) * (1 if g == 0 else -1),
            sampling_logprobs=None,
        )
        for g in range(2)
        for k, (text, reward) in enumerate(texts)
    ]


def _train(policy: Any, tokenizer: Any, *, new_adapter: bool, **settings: Any) -> None:
    samples = tokenize_samples(_raw_samples(), SampleTokenizer(tokenizer, 128)).samples
    params = LossParams.from_settings(LossSettings(method="grpo", kl_coefficient="0.01"))
    Trainer(policy, samples, _settings(**settings), params, CPU, new_adapter=new_adapter).run()


def _snapshot(model: Any) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def test_one_step_moves_only_lora_b_and_never_the_base(tiny_model_dir: Path) -> None:
    model, tokenizer = load_base_model(str(tiny_model_dir), CPU)
    policy = attach_new_adapter(model, LORA, seed=0)
    before = _snapshot(policy)
    _train(policy, tokenizer, new_adapter=True)
    after = _snapshot(policy)
    moved = {name for name in before if not torch.equal(before[name], after[name])}
    lora_b = {name for name in before if "lora_B" in name}
    assert len(lora_b) == 2 * len(LORA.target_modules)  # 2 layers
    assert moved == lora_b  # A has no gradient while B is zero; base weights are frozen


def test_later_steps_move_a_too_but_never_the_base(tiny_model_dir: Path) -> None:
    model, tokenizer = load_base_model(str(tiny_model_dir), CPU)
    policy = attach_new_adapter(model, LORA, seed=0)
    before = _snapshot(policy)
    _train(policy, tokenizer, new_adapter=True, epochs=3, weight_decay=0.1)
    after = _snapshot(policy)
    for name in before:
        changed = not torch.equal(before[name], after[name])
        assert changed == ("lora_" in name), name


def _trained_checkpoint(tiny_model_dir: Path, out: Path, base_name: str = "tiny-base") -> Path:
    model, tokenizer = load_base_model(str(tiny_model_dir), CPU)
    policy = attach_new_adapter(model, LORA, seed=0)
    _train(policy, tokenizer, new_adapter=True, epochs=2)
    save_adapter(policy, out, base_name)
    (out.parent / "lineage.json").write_text(json.dumps({"baseModel": {"name": base_name}}))
    return out


def test_continuation_loads_trainable_and_keeps_training(tiny_model_dir: Path, tmp_path: Path) -> None:
    adapter_dir = _trained_checkpoint(tiny_model_dir, tmp_path / "adapter")
    model, tokenizer = load_base_model(str(tiny_model_dir), CPU)
    check_parent_compatible(read_adapter_config(adapter_dir), LINEAGE, LORA, "tiny-base", "parent", training=RECORD)
    policy = attach_parent_adapter(model, adapter_dir, "parent")
    assert trainable_parameter_count(policy) > 0
    loaded = _snapshot(policy)
    assert any("lora_B" in n and loaded[n].abs().sum() > 0 for n in loaded)  # the trained B came back
    _train(policy, tokenizer, new_adapter=False)
    after = _snapshot(policy)
    moved = {n for n in loaded if not torch.equal(loaded[n], after[n])}
    assert any("lora_A" in n for n in moved)  # with B non-zero, A trains from the first step
    assert all("lora_" in n for n in moved)


@pytest.mark.parametrize(
    ("expected", "metadata", "message"),
    [
        (LoraSettings(rank=8, alpha=8, target_modules=LORA.target_modules), LINEAGE, r"LoRA rank 4 \(this step: 8\)"),
        (LoraSettings(rank=4, alpha=16, target_modules=LORA.target_modules), LINEAGE, r"LoRA alpha 8 \(this step: 16\)"),
        (LoraSettings(rank=4, alpha=8, target_modules=["q_proj"]), LINEAGE, r"target modules \['k_proj'"),
        (
            LORA,
            {**LINEAGE, "baseModel": {"name": "other-base"}},
            r"base model 'other-base' \(this step: 'tiny-base'\)",
        ),
        # The warm-start rule (rft.api.rules): a parent that records no training parameters is
        # refused, as the SDK and the operator refuse it.
        (LORA, {"baseModel": {"name": "tiny-base"}}, r"no record of the training parameters"),
        (LORA, None, r"no record of the training parameters"),
        (
            LORA,
            {**LINEAGE, "training": {**RECORD.to_wire(), "learningRate": "0.02"}},
            r"learning rate 0.02 \(this step: 1e-2\)",
        ),
    ],
)
def test_incompatible_parent_is_refused_with_the_reason(
    tiny_model_dir: Path, tmp_path: Path, expected: LoraSettings, metadata: dict[str, Any] | None, message: str
) -> None:
    adapter_dir = _trained_checkpoint(tiny_model_dir, tmp_path / "adapter")
    with pytest.raises(BadInputError, match=message) as caught:
        check_parent_compatible(
            read_adapter_config(adapter_dir), metadata, expected, "tiny-base", "step-1-out", training=RECORD
        )
    assert caught.value.reason == "IncompatibleCheckpoint"
    assert "cannot continue from checkpoint 'step-1-out'" in caught.value.message


def test_checkpoint_of_a_differently_shaped_base_does_not_load(tiny_model_dir: Path, tmp_path: Path) -> None:
    adapter_dir = _trained_checkpoint(tiny_model_dir, tmp_path / "adapter")
    other_base = build_tiny_model(tmp_path / "wide-base", hidden_size=96, intermediate_size=192, heads=4)
    model, _ = load_base_model(str(other_base), CPU)
    with pytest.raises(BadInputError, match="cannot load checkpoint 'parent' onto the base model") as caught:
        attach_parent_adapter(model, adapter_dir, "parent")
    assert caught.value.reason == "IncompatibleCheckpoint"


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        (["lm_head"], "'lm_head' .* is not a Linear layer of the transformer blocks"),
        (["embed_tokens"], "'embed_tokens' .* is not a Linear layer of the transformer blocks"),
        (["qkv_proj"], "no Linear layer named 'qkv_proj'; its block linears are .*q_proj"),
    ],
)
def test_target_modules_must_be_block_linears(tiny_model_dir: Path, targets: list[str], message: str) -> None:
    model, _ = load_base_model(str(tiny_model_dir), CPU)
    with pytest.raises(BadInputError, match=message):
        attach_new_adapter(model, LoraSettings(rank=4, alpha=8, target_modules=targets), seed=0)
