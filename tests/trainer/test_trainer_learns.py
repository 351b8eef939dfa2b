"""It learns: three reinforcement steps, each on rollouts sampled from the current policy, raise the reward.

The toy task: reward = the fraction of a completion's words that belong to a fixed quarter of the
built-in vocabulary words. Sampling is restricted to whole-word tokens (" cat", " dog", ...), so the
completion text tokenizes back to exactly the sampled tokens, as it does for a real model's
output; a random model's free sampling produces sub-word soups that re-tokenize differently. The
tiny model has a wider, untied output head (`head_init_std`): with the default initialisation no
block-linear adapter can move the output distribution enough to learn anything.

Each step samples groups from the newest checkpoint (the base model, then the adapter the previous
step wrote), scores them, writes a samples-format dataset, and runs the trainer's entry point
continuing from the previous adapter, exactly as the operator would.
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import PeftModel
from rft.api.model import Model
from rft.cli import app
from rft.cli.context import CliContext
from rft.contracts.trainer_config import TrainerConfig, TrainerResult, parse_termination_message
from rft_devcluster.tiny import build_tiny_model, vocabulary_words
from rft_trainer.main import main
from rich.console import Console
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from tests.trainer.trainer_testlib import sha256_of

PROMPTS = 16
GROUP = 8
NEW_TOKENS = 6
STEPS = 3
LEARNING_RATE = "5e-3"
EPOCHS = 4
TARGET_WORDS = frozenset(vocabulary_words()[::4])


def reward(text: str) -> float:
    """Fraction of the completion's words that are target words."""
    words = text.split()
    return sum(word in TARGET_WORDS for word in words) / max(len(words), 1)


@pytest.fixture(scope="module")
def steerable_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model whose random distribution an adapter can steer."""
    return build_tiny_model(tmp_path_factory.mktemp("steerable-model"), head_init_std=0.2)


def non_word_tokens(tokenizer: Any) -> list[int]:
    """Every token id that is not a whole built-in word with its leading space."""
    words = {tokenizer.convert_tokens_to_ids("Ġ" + w) for w in vocabulary_words()} - {tokenizer.unk_token_id}
    return [i for i in range(len(tokenizer)) if i not in words]


def _policy(base_dir: Path, adapter_dir: Path | None) -> Any:
    model: Any = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    if adapter_dir is not None:
        model = PeftModel.from_pretrained(model, str(adapter_dir))
    return model.eval()


def sample_rows(base_dir: Path, adapter_dir: Path | None, tokenizer: Any, seed: int) -> tuple[list[dict[str, Any]], float]:
    """GROUP completions per prompt sampled from the current policy, scored into samples-format rows."""
    model = _policy(base_dir, adapter_dir)
    suppressed = non_word_tokens(tokenizer)
    torch.manual_seed(seed)
    rows, rewards = [], []
    for p in range(PROMPTS):
        messages = [{"role": "user", "content": f"say something {p}"}]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        prompt = tokenizer(text, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(
                **prompt,
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                max_new_tokens=NEW_TOKENS,
                min_new_tokens=NEW_TOKENS,
                suppress_tokens=suppressed,
                num_return_sequences=GROUP,
                pad_token_id=tokenizer.pad_token_id,
            )
        samples = []
        for sequence in out[:, prompt["input_ids"].shape[1] :]:
            completion = tokenizer.decode(sequence)
            assert tokenizer(completion, add_special_tokens=False)["input_ids"] == sequence.tolist()
            score = reward(completion)
            rewards.append(score)
            samples.append(
                {"messages": [*messages, {"role": "assistant", "content": completion}], "evals": {"score": score}}
            )
        rows.append({"samples": samples})
    return rows, sum(rewards) / len(rewards)


def _config(step: int, base: Path, parent: tuple[str, Path] | None, dataset: Path, data: bytes, tmp: Path) -> TrainerConfig:
    return TrainerConfig.model_validate(
        {
            "step_name": f"step-{step}",
            "namespace": "team-a",
            "dataset_url": str(dataset),
            "dataset_digest": sha256_of(data),
            "base_model_url": str(base),
            "base_model_name": "tiny-base",
            "parent_adapter_url": str(parent[1]) if parent else None,
            "parent_model_name": parent[0] if parent else None,
            "output_url": str(tmp / "models" / f"model-{step}"),
            "output_model_name": f"model-{step}",
            "scratch_dir": str(tmp / "scratch"),
            "termination_log": str(tmp / f"termination-{step}"),
            "training": {
                "lora_rank": 8,
                "learning_rate": LEARNING_RATE,
                "batch_size": 1024,
                "max_context_length": 64,
                "epochs": EPOCHS,
                "seed": step,
            },
            "loss": {"method": "grpo", "kl_coefficient": "0"},
        }
    )


@pytest.mark.slow
def test_mean_reward_rises_over_three_steps(
    steerable_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    base = steerable_model_dir
    tokenizer = AutoTokenizer.from_pretrained(base)
    parent: tuple[str, Path] | None = None
    mean_rewards: list[float] = []
    timings: list[str] = []
    for step in range(1, STEPS + 1):
        rows, mean_reward = sample_rows(base, parent[1] if parent else None, tokenizer, seed=step)
        mean_rewards.append(mean_reward)
        data = "".join(json.dumps(row) + "\n" for row in rows).encode()
        dataset = tmp_path / f"rollouts-{step}.jsonl"
        dataset.write_bytes(data)
        config = _config(step, base, parent, dataset, data, tmp_path)
        config_path = tmp_path / f"config-{step}.json"
        config_path.write_text(config.to_json())
        started = time.perf_counter()
        code = main(["--config", str(config_path)])
        elapsed = time.perf_counter() - started
        assert code == 0, capsys.readouterr().err[-3000:]
        result = parse_termination_message(Path(config.termination_log).read_text())
        assert isinstance(result, TrainerResult)
        assert float(result.metrics["mean_reward"]) == pytest.approx(mean_reward, abs=1e-5)
        timings.append(
            f"step {step}: {elapsed:.2f}s wall, {result.metrics['train_seconds']}s training, "
            f"{result.metrics['tokens_per_second']} tokens/s, {result.metrics['optimizer_steps']} optimizer steps"
        )
        parent = (config.output_model_name, Path(config.output_url))
    assert parent is not None
    _, final_reward = sample_rows(base, parent[1], tokenizer, seed=100)
    mean_rewards.append(final_reward)
    with capsys.disabled():
        print("\nmean reward by step:", " -> ".join(f"{r:.3f}" for r in mean_rewards))
        print("\n".join(timings))
    assert all(later > earlier for earlier, later in itertools.pairwise(mean_rewards)), mean_rewards
    assert mean_rewards[-1] > mean_rewards[0] + 0.15, mean_rewards

    # `rft plot` draws the chain's per-optimizer-step curves from the series beside each checkpoint
    # (README's figure is this PNG).
    chain = [_model(step, tmp_path) for step in range(1, STEPS + 1)]
    base_model = Model.model_validate(
        {"metadata": {"name": "tiny-base", "namespace": "team-a"}, "spec": {"kind": "base", "location": f"file://{base}/"}}
    )
    reader = _Models([base_model, *chain])
    context = CliContext(namespace="team-a", reader=reader, console=Console(width=250, color_system=None))
    figure = tmp_path / "rft-plot-demo.png"
    drawn = CliRunner().invoke(app, ["plot", "model-3", "-o", str(figure)], obj=context)
    assert drawn.exit_code == 0, drawn.output
    steps = sum(int(float(m.spec.metrics["optimizer_steps"])) for m in chain)
    assert f"({steps} optimizer step(s) over 3 checkpoint(s))" in drawn.output
    assert figure.read_bytes().startswith(b"\x89PNG")


class _Models:
    """A ClusterReader over the Models a cluster would hold for these checkpoints."""

    def __init__(self, models: list[Model]) -> None:
        self.models = {m.metadata.name: m for m in models}

    def get(self, kind: type[Any], namespace: str, name: str) -> Any:
        return self.models.get(name) if kind is Model else None

    def list(self, kind: type[Any], namespace: str, label_selector: str | None = None) -> list[Any]:
        return list(self.models.values()) if kind is Model else []


def _model(step: int, tmp: Path) -> Model:
    """The Model the operator registers for step `step`'s checkpoint (from its metadata.json)."""
    location = tmp / "models" / f"model-{step}"
    metadata = json.loads((location / "metadata.json").read_text())
    return Model.model_validate(
        {
            "metadata": {"name": f"model-{step}", "namespace": "team-a"},
            "spec": {
                "kind": "lora",
                "location": f"file://{location}/",
                "baseModel": "tiny-base",
                "parent": f"model-{step - 1}" if step > 1 else None,
                "lora": metadata["lora"],
                "files": metadata["files"],
                "metrics": metadata["metrics"],
            },
        }
    )
