"""tinker-cookbook's RL training loop, unchanged, against a TrainingSession on your own cluster.

The loop is the cookbook's own `tinker_cookbook.rl.train.main` (sampling through the session's
vLLM, group-centred advantages, the `importance_sampling` loss, checkpoints, metrics.jsonl): only
its `base_url` and `model_name` point at the session, whose API key the official client reads
from `TINKER_API_KEY`. What is defined here is what every cookbook recipe defines for itself: the
environment and its dataset builder (a toy reward the tiny demo model can learn), and the config.

    make demo LOOP=examples/cookbook_rl.py

serves the demo's base Model with vLLM (the session's `samplingDeployment`), creates a
TrainingSession on it, waits until it is READY, and runs the recipe for three iterations on the
local cluster; it prints the mean reward of each iteration.
The toy reward, as `examples/rl_loop.py`'s: the share of the completion's tokens whose id falls
in a fixed quarter of the vocabulary (id % 4 == 1). Replace the environment with your own.

Two settings differ from the recipes' defaults, because the session refuses what it would not
honour: a session does not train the unembedding (an adapter on the output head cannot be served
by vLLM), so the run starts from a state made with `train_unembed=False` (`load_checkpoint_path`;
`starting_state` below makes one), and checkpoints stay in the bucket until deleted, so
`ttl_seconds=None`.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import chz
import tinker
from tinker_cookbook import renderers
from tinker_cookbook.completers import StopCondition
from tinker_cookbook.rl import train
from tinker_cookbook.rl.types import (
    Action,
    ActionExtra,
    Env,
    EnvGroupBuilder,
    Metrics,
    Observation,
    RLDataset,
    RLDatasetBuilder,
    StepResult,
    Trajectory,
)
from tinker_cookbook.tokenizer_utils import get_tokenizer, register_tokenizer
from tinker_cookbook.utils import cost_estimation

PROMPTS = [f"Say something about topic {i}." for i in range(16)]
# The demo model's chat template is ChatML without a system turn: the cookbook's qwen3_instruct
# renderer writes exactly its tokens (tests/operator/test_training_session_cookbook.py checks it).
RENDERER = "qwen3_instruct"


def quarter_reward(tokens: Sequence[int]) -> float:
    """The toy reward: the share of the completion's tokens with id % 4 == 1."""
    return sum(1 for t in tokens if t % 4 == 1) / max(len(tokens), 1)


class QuarterTokensEnv(Env):
    """One single-turn episode: a prompt, one completion, the toy reward on its tokens."""

    def __init__(self, prompt: str, renderer: renderers.Renderer) -> None:
        self.prompt = prompt
        self.renderer = renderer

    async def initial_observation(self) -> tuple[Observation, StopCondition]:
        messages: list[renderers.Message] = [{"role": "user", "content": self.prompt}]
        return self.renderer.build_generation_prompt(messages), self.renderer.get_stop_sequences()

    async def step(self, action: Action, *, extra: ActionExtra | None = None) -> StepResult:
        reward = quarter_reward(action)
        return StepResult(
            reward=reward,
            episode_done=True,
            next_observation=tinker.ModelInput.empty(),
            next_stop_condition=self.renderer.get_stop_sequences(),
            metrics={"quarter_share": reward},
        )


@dataclass(frozen=True)
class QuarterTokensGroupBuilder(EnvGroupBuilder):
    """A group of episodes on one prompt (their rewards are centred within the group)."""

    prompt: str
    group_size: int
    model_name: str
    renderer_name: str

    async def make_envs(self) -> Sequence[Env]:
        renderer = renderers.get_renderer(self.renderer_name, get_tokenizer(self.model_name))
        return [QuarterTokensEnv(self.prompt, renderer) for _ in range(self.group_size)]

    async def compute_group_rewards(
        self, trajectory_group: list[Trajectory], env_group: Sequence[Env]
    ) -> list[tuple[float, Metrics]]:
        return [(0.0, {}) for _ in trajectory_group]  # the per-step rewards are the whole reward

    def logging_tags(self) -> list[str]:
        return ["quarter_tokens"]


class QuarterTokensDataset(RLDataset):
    """`batches` batches of `groups_per_batch` prompts (cycling through PROMPTS)."""

    def __init__(self, builder: QuarterTokensDatasetBuilder) -> None:
        self.builder = builder

    def get_batch(self, index: int) -> Sequence[EnvGroupBuilder]:
        b = self.builder
        return [
            QuarterTokensGroupBuilder(
                prompt=PROMPTS[(index * b.groups_per_batch + k) % len(PROMPTS)],
                group_size=b.group_size,
                model_name=b.model_name,
                renderer_name=b.renderer_name,
            )
            for k in range(b.groups_per_batch)
        ]

    def __len__(self) -> int:
        return self.builder.batches


@chz.chz
class QuarterTokensDatasetBuilder(RLDatasetBuilder):
    model_name: str
    renderer_name: str = RENDERER
    batches: int = 3
    groups_per_batch: int = 16
    group_size: int = 8

    async def __call__(self) -> tuple[RLDataset, RLDataset | None]:
        return QuarterTokensDataset(self), None


def register_local_tokenizer(model_name: str, tokenizer_dir: str | Path) -> None:
    """Let the cookbook's `get_tokenizer(model_name)` load the base model's tokenizer from a local
    copy (its own registry), instead of looking the session's model name up on the Hub."""
    from transformers import AutoTokenizer  # noqa: PLC0415 - a slow import, as the cookbook defers it

    register_tokenizer(model_name, functools.cache(lambda: AutoTokenizer.from_pretrained(str(tokenizer_dir))))


def starting_state(base_url: str, model_name: str, lora_rank: int) -> str:
    """A fresh adapter's state (B = 0: the base model's policy) saved through the session with
    `train_unembed=False`, for the recipe's `load_checkpoint_path`. Closing the client releases the
    session's adapter for the recipe's own training client."""
    with tinker.ServiceClient(base_url=base_url) as service:
        tc = service.create_lora_training_client(
            model_name,
            rank=lora_rank,
            seed=0,
            train_unembed=False,
            user_metadata={"renderer_name": RENDERER},  # what the recipe checks a loaded state for
        ).result()
        return tc.save_state("start").result().path


def skip_price_lookup() -> None:
    """The recipe looks the managed service's token prices up on the web once per process, for
    its cost metrics (and logs token counts only when that fails). A session has no price list and
    this code reaches nothing outside the cluster: mark the lookup as done without one, which is
    the state a failed lookup leaves (`tinker_cookbook.utils.cost_estimation.load_model_pricing`)."""
    cost_estimation._pricing_fetched = True
    cost_estimation._pricing_entries = None


def recipe_config(
    *,
    base_url: str,
    model_name: str,
    load_checkpoint_path: str,
    log_path: str,
    batches: int = 3,
    groups_per_batch: int = 16,
    group_size: int = 8,
    max_tokens: int = 10,
    learning_rate: float = 1e-2,
    lora_rank: int = 8,
) -> train.Config:
    """The recipe's config: the session's base URL and model name, the toy dataset, and the two
    settings the session needs (a starting state without the unembedding, no TTL)."""
    return train.Config(
        base_url=base_url,
        model_name=model_name,
        recipe_name="rft_cookbook_rl",
        renderer_name=RENDERER,
        dataset_builder=QuarterTokensDatasetBuilder(
            model_name=model_name, batches=batches, groups_per_batch=groups_per_batch, group_size=group_size
        ),
        learning_rate=learning_rate,
        max_tokens=max_tokens,
        lora_rank=lora_rank,
        log_path=log_path,
        load_checkpoint_path=load_checkpoint_path,
        eval_every=0,
        save_every=0,
        ttl_seconds=None,
    )


def rewards_by_iteration(log_path: str | Path) -> list[float]:
    """The mean reward of each iteration, from the recipe's own metrics.jsonl."""
    rows = [json.loads(line) for line in (Path(log_path) / "metrics.jsonl").read_text().splitlines() if line]
    return [float(r["env/all/reward/total"]) for r in rows if "env/all/reward/total" in r]


def main() -> int:
    """`make demo LOOP=examples/cookbook_rl.py`: the base Model served by vLLM (the session's
    sampling Deployment), a TrainingSession on it, the recipe against the session, the reward of
    each iteration."""
    from rft import LLM  # noqa: PLC0415 - the SDK only for the demo's setup
    from rft.api import Model  # noqa: PLC0415
    from rft.sdk.endpoints import resolve_base_url  # noqa: PLC0415
    from rft.sdk.session import Session  # noqa: PLC0415
    from rft.sdk.training_session import api_key, create_training_session, wait_ready  # noqa: PLC0415
    from rft.storage.checkpoints import fetch_checkpoint  # noqa: PLC0415

    model_name = os.environ["RFT_BASE_MODEL"]
    sdk = Session.create()
    sampler = LLM(
        model_name,
        "on-demand",
        id="cookbook-vllm",
        accelerator_type="CPU",
        accelerator_count=0,
        max_loras=4,
        max_lora_rank=8,
        session=sdk,
    )
    sampler.apply()
    create_training_session(
        "cookbook",
        base_model=model_name,
        state_location=f"{os.environ['RFT_BUCKET']}/sessions/",
        sampling_deployment="cookbook-vllm",
        accelerator_type="CPU",
        accelerator_count=0,
        max_lora_rank=8,
        session=sdk,
    )
    ready = wait_ready("cookbook", timeout=900, session=sdk)
    assert ready.status.endpoint is not None
    base_url = resolve_base_url(ready.status.endpoint, sdk.client)
    os.environ["TINKER_API_KEY"] = api_key(ready, sdk)
    with tempfile.TemporaryDirectory(prefix="cookbook-") as tmp:
        model = sdk.client.require(Model, sdk.namespace, model_name)
        fetch_checkpoint(str(model.spec.location), Path(tmp) / "base")  # for its tokenizer
        register_local_tokenizer(model_name, Path(tmp) / "base")
        skip_price_lookup()
        log_path = str(Path(tmp) / "run")
        start = starting_state(base_url, model_name, lora_rank=8)
        config = recipe_config(
            base_url=base_url,
            model_name=model_name,
            load_checkpoint_path=start,
            log_path=log_path,
            groups_per_batch=8,
        )
        asyncio.run(train.main(config))
        rewards = rewards_by_iteration(log_path)
    print("mean reward by iteration: " + " -> ".join(f"{r:.3f}" for r in rewards), flush=True)
    results: dict[str, Any] = {"rewards": rewards}
    if out := os.environ.get("COOKBOOK_RESULTS"):
        Path(out).write_text(json.dumps(results))
    return 0 if rewards and rewards[-1] > rewards[0] else 1


if __name__ == "__main__":
    sys.exit(main())
