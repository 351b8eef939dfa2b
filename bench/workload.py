"""The fixed benchmark workload: a random small causal LM built locally and stored rollouts for it.

Everything is deterministic from `WorkloadSpec` (seeded): the same spec gives the same model
weights, tokenizer, prompts, completions and rewards in every process, so the benchmark's worker
subprocesses rebuild nothing from the network and agree on the data.

The model is a Qwen2-architecture decoder (the shape of `rft_devcluster.tiny`, larger). Its
byte-level BPE tokenizer is `rft_devcluster.tiny.build_tokenizer`, trained on a larger
synthetic text: the tiny corpus stops merging at about 1,300 tokens, and the benchmark wants a
vocabulary of several thousand so that the output head costs what it costs in real models.
Completions are random token ids (a random model's samples are random anyway); each ends with the
end-of-turn token, like the trainer's tokenization of a finished completion.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from rft_devcluster import tiny
from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

SPEC_FILE = "workload.json"
ROLLOUTS_FILE = "rollouts.json"
SAMPLING_LOGPROBS_FILE = "sampling_logprobs.json"  # written by the benchmark from the model; stale on rebuild
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class WorkloadSpec:
    """Sizes of the model and of the stored rollouts. The defaults are the documented benchmark."""

    layers: int = 4
    hidden_size: int = 256
    heads: int = 4
    kv_heads: int = 2
    intermediate_size: int = 1024
    vocab_size: int = 4096
    groups: int = 64
    group_size: int = 8
    prompt_words: tuple[int, int] = (4, 20)  # words of the user message (about 3 tokens each)
    completion_tokens: tuple[int, int] = (4, 320)  # uniform, end-of-turn token included
    lora_rank: int = 16
    lora_alpha: int = 32
    learning_rate: float = 1e-4
    optimizer_steps: int = 8  # 512 completions in 8 optimizer steps of 64 (8 groups)
    seed: int = 0
    weights_dtype: str = "float32"  # as stored in the safetensors file ("bfloat16" like real checkpoints)

    @property
    def samples(self) -> int:
        return self.groups * self.group_size

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WorkloadSpec:
        fields = dict(data)
        for key in ("prompt_words", "completion_tokens"):
            fields[key] = tuple(fields[key])
        return cls(**fields)


@dataclass(frozen=True)
class Rollout:
    """One stored completion: its group's prompt tokens, its own tokens and its reward."""

    group: int
    prompt_ids: list[int]
    completion_ids: list[int]
    reward: float

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + len(self.completion_ids)


def _synthetic_corpus(spec: WorkloadSpec, lines: int = 3000) -> list[str]:
    """Enough distinct words for BPE to reach `vocab_size` merges (seeded, pronounceable-ish)."""
    rng = random.Random(spec.seed + 17)
    consonants, vowels = "bcdfghjklmnprstvwz", "aeiou"
    words = [
        "".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(rng.randint(1, 4)))
        for _ in range(6000)
    ]
    return [" ".join(rng.choice(words) for _ in range(16)) + f". {i}!" for i in range(lines)]


def build_tokenizer(spec: WorkloadSpec) -> Any:
    """A byte-level BPE tokenizer with exactly `spec.vocab_size` entries and the tiny chat template."""
    return tiny.build_tokenizer(spec.vocab_size, _synthetic_corpus(spec))


def build_model(spec: WorkloadSpec, out_dir: Path) -> Path:
    """Write the random model (config, safetensors, tokenizer) to `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(spec)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.kv_heads,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(spec.seed)
    model = Qwen2ForCausalLM(config).to(getattr(torch, spec.weights_dtype))
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def prompt_text(group: int, words: list[str]) -> str:
    """The user message of a group; the leading tag makes every prompt unique (TRL's rollout hook
    finds the stored completions by prompt)."""
    return f"#{group} " + " ".join(words)


def make_rollouts(spec: WorkloadSpec, tokenizer: Any) -> tuple[list[str], list[Rollout]]:
    """The prompts (one per group) and the group_size stored completions of each, with rewards."""
    rng = random.Random(spec.seed)
    specials = set(tokenizer.all_special_ids)
    ordinary = [i for i in range(len(tokenizer)) if i not in specials]
    vocab_words = ["the", "a", "cat", "dog", "answer", "question", "please", "count", "apple", "seven"]
    prompts: list[str] = []
    rollouts: list[Rollout] = []
    for group in range(spec.groups):
        words = [rng.choice(vocab_words) for _ in range(rng.randint(*spec.prompt_words))]
        text = prompt_text(group, words)
        prompts.append(text)
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
        prompt_ids = list(tokenizer(rendered, add_special_tokens=False)["input_ids"])
        for _ in range(spec.group_size):
            n = rng.randint(*spec.completion_tokens)
            completion = [rng.choice(ordinary) for _ in range(n - 1)] + [tokenizer.eos_token_id]
            reward = round(rng.uniform(0.0, 10.0), 2)
            rollouts.append(Rollout(group, prompt_ids, completion, reward))
    return prompts, rollouts


def prepare(spec: WorkloadSpec, work_dir: Path) -> Path:
    """Build the model and the rollouts under `work_dir` (once); returns `work_dir`."""
    model_dir = work_dir / "model"
    spec_path = work_dir / SPEC_FILE
    if spec_path.exists() and json.loads(spec_path.read_text()) == json.loads(json.dumps(spec.to_json())):
        return work_dir
    (work_dir / SAMPLING_LOGPROBS_FILE).unlink(missing_ok=True)
    build_model(spec, model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    prompts, rollouts = make_rollouts(spec, tokenizer)
    payload = {"prompts": prompts, "rollouts": [asdict(r) for r in rollouts]}
    (work_dir / ROLLOUTS_FILE).write_text(json.dumps(payload))
    spec_path.write_text(json.dumps(spec.to_json()))
    return work_dir


def load(work_dir: Path) -> tuple[WorkloadSpec, list[str], list[Rollout]]:
    """The spec, prompts and rollouts written by `prepare`."""
    spec = WorkloadSpec.from_json(json.loads((work_dir / SPEC_FILE).read_text()))
    payload = json.loads((work_dir / ROLLOUTS_FILE).read_text())
    return spec, list(payload["prompts"]), [Rollout(**r) for r in payload["rollouts"]]
