"""One of tinker-cookbook's RL recipes, unchanged, against a TrainingSession on the local cluster.

The recipe's training loop is the cookbook's own `tinker_cookbook.rl.train.main` (0.6.1): it
creates its training client from a starting state, samples every episode through the session
(whose samples vLLM answers: the session's `samplingDeployment`, real vLLM on the local node),
centres the rewards per group, trains with `importance_sampling`, saves sampler weights each
iteration and a final checkpoint, and logs metrics.jsonl. Only its base URL and model name point
at the session (and its API key, in `TINKER_API_KEY`); the environment is examples/cookbook_rl.py's
toy one (the share of completion tokens with id % 4 == 1), on the demo's model. Checked: the
recipe's own logged mean reward rises over three iterations (two optimizer steps), and its final
checkpoint is committed in the bucket.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rft.storage.checkpoints import is_committed, upload_tree
from rft_devcluster.handle import ClusterHandle
from rft_devcluster.pytest_fixtures_storage import S3Bucket
from rft_devcluster.tiny import VLLM_CPU_SHAPE, build_tiny_model
from tinker_cookbook import renderers
from tinker_cookbook.rl import train
from tinker_cookbook.tokenizer_utils import get_tokenizer

from examples.cookbook_rl import (
    RENDERER,
    recipe_config,
    register_local_tokenizer,
    rewards_by_iteration,
    skip_price_lookup,
    starting_state,
)
from tests.operator.conftest import WORKLOAD, Objects, OperatorProcess
from tests.operator.serving_support import wait_deployment

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.localnode,
    pytest.mark.slow,
    pytest.mark.vllm,
    pytest.mark.timeout(1500),
]

ROLE = "arn:aws:iam::123456789012:role/rft-cookbook"
MODEL = "tiny-cookbook"
CPU = {"type": "CPU", "count": 0}
# vLLM's engine start on 2 shared cores: 70-90 s idle, several minutes under the suite's load.
VLLM_READY_SECONDS = 600


def _wait(what: str, check: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout}s")
        time.sleep(0.5)


def test_a_cookbook_rl_recipe_raises_the_reward_through_a_session(
    operator: OperatorProcess,
    objects: Objects,
    cluster: ClusterHandle,
    s3_bucket: S3Bucket,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ns = objects.namespace
    objects.core.create_namespaced_service_account(
        ns,
        {
            "metadata": {
                "name": "rft-cookbook",
                "labels": WORKLOAD,
                "annotations": {"eks.amazonaws.com/role-arn": ROLE},
            }
        },
    )
    # the demo's model: whole words only, a head size vLLM's CPU attention supports
    base_dir = build_tiny_model(tmp_path / "base", words_only=True, **VLLM_CPU_SHAPE)
    base_location = f"s3://{s3_bucket.name}/rft/models/{MODEL}/"
    upload_tree(base_dir, base_location)
    objects.create(
        "models",
        "Model",
        MODEL,
        {"kind": "base", "location": base_location, "serviceAccountName": "rft-cookbook"},
    )
    objects.create(
        "deployments",
        "Deployment",
        "cookbook-vllm",
        {
            "model": MODEL,
            "deploymentType": "on-demand",
            "engine": "vllm",
            "accelerator": CPU,
            "serviceAccountName": "rft-cookbook",
            "maxLoraRank": 8,
            "maxLoras": 4,
            "maxModelLen": 512,
        },
    )
    state_location = f"s3://{s3_bucket.name}/rft/sessions/"
    objects.create(
        "trainingsessions",
        "TrainingSession",
        "cookbook",
        {
            "baseModel": MODEL,
            "samplingDeployment": "cookbook-vllm",
            "maxLoraRank": 8,
            "maxContextLength": 128,
            "accelerator": CPU,
            "serviceAccountName": "rft-cookbook",
            "stateLocation": state_location,
            "idleTimeoutSeconds": 3600,
        },
    )
    wait_deployment(objects, "cookbook-vllm", "READY", timeout=VLLM_READY_SECONDS)

    def ready() -> dict[str, Any] | None:
        obj = objects.get("trainingsessions", "cookbook")
        return obj if obj and obj.get("status", {}).get("phase") == "READY" else None

    status = _wait("the session READY", ready, 300)["status"]
    secret = objects.core.read_namespaced_secret(status["apiKeySecret"], ns)
    endpoints = _wait(
        "a ready session endpoint", lambda: cluster.ready_endpoints(ns, "cookbook-session", "http"), 120
    )
    host, port = endpoints[0]
    base_url = f"http://{host}:{port}"  # what `kubectl port-forward` to the Service would reach

    # The recipe's process: the official client reads the key from TINKER_API_KEY; nothing is
    # fetched from the Hub (the tokenizer is the base model's local copy, registered under the
    # session's model name) and the recipe's web price lookup is marked done.
    monkeypatch.setenv("TINKER_API_KEY", base64.b64decode(secret.data["api-key"]).decode())
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    register_local_tokenizer(MODEL, base_dir)
    skip_price_lookup()
    # the renderer the recipe is given writes exactly the model's own chat template
    tokenizer = get_tokenizer(MODEL)
    messages: list[renderers.Message] = [{"role": "user", "content": "Say something about topic 3."}]
    rendered = renderers.get_renderer(RENDERER, tokenizer).build_generation_prompt(messages).to_ints()
    template = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert rendered == tokenizer.encode(template, add_special_tokens=False)

    start = starting_state(base_url, MODEL, lora_rank=8)
    log_path = tmp_path / "run"
    config = recipe_config(
        base_url=base_url,
        model_name=MODEL,
        load_checkpoint_path=start,
        log_path=str(log_path),
        batches=3,
        groups_per_batch=8,
        group_size=8,
        max_tokens=10,
        learning_rate=1e-2,
        lora_rank=8,
    )
    started = time.monotonic()
    asyncio.run(train.main(config))
    rewards = rewards_by_iteration(log_path)
    rows = [json.loads(line) for line in (log_path / "metrics.jsonl").read_text().splitlines() if line]
    steps = [r for r in rows if "optim/entropy" in r]
    print(
        f"\ncookbook rl.train.main, {len(rewards)} iterations in {time.monotonic() - started:.0f}s; "
        "mean reward by iteration: "
        + " -> ".join(f"{r:.3f}" for r in rewards)
        + "; sampled-token entropy: "
        + " -> ".join(f"{r['optim/entropy']:.3f}" for r in steps)
        + "; KL(sampler, trainer): "
        + ", ".join(f"{r['optim/kl_sample_train_v1']:.1e}" for r in steps)
    )
    assert len(rewards) == 3
    assert rewards[-1] > rewards[0] + 0.05, rewards

    # the recipe's final checkpoint: state and sampler weights, committed in the session's bucket
    records = [json.loads(line) for line in (log_path / "checkpoints.jsonl").read_text().splitlines()]
    final = records[-1]
    assert final["name"] == "final"
    for key, kind in (("state_path", "weights"), ("sampler_path", "sampler_weights")):
        run, segment, name = final[key].removeprefix("tinker://").split("/")
        assert (segment, name) == (kind, "final")
        assert is_committed(f"{state_location}{run.replace(':', '-')}/{kind}/final")
