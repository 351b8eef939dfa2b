"""The iterative RL loop, as users of the managed service write it, against rft-operator.

Deploy the current policy, roll out, score with your own reward function, sync a dataset to your
bucket, run one reinforcement step, poll it, put the new checkpoint on the base deployment, and
repeat. Only the import line and the account names differ from the managed service's version.

    RFT_BUCKET=s3://my-bucket/rft RFT_SERVICE_ACCOUNT=rft-trainer \
    python examples/rl_loop.py --base-model qwen3-0-6b --accelerator NVIDIA_H100_80GB

`make demo` runs it on the local cluster with a tiny model on CPU (see tools/rft_devcluster/demo.py).
The toy reward here: the fraction of the completion's tokens (under the base model's tokenizer)
that fall in a fixed quarter of the vocabulary. Replace `reward` with your own scoring.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable

from rft import LLM, Dataset
from transformers import AutoTokenizer

PROMPTS = [f"Say something about topic {i}." for i in range(16)]


def token_quarter_reward(tokenizer_dir: str) -> Callable[[str], float]:
    """The demo's toy reward. Any function from completion text to a number will do."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)

    def reward(completion: str) -> float:
        ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
        return sum(1 for i in ids if i % 4 == 1) / max(len(ids), 1)

    return reward


def rollouts(
    llm: LLM, reward: Callable[[str], float], group: int, max_tokens: int, seed: int
) -> tuple[list[dict[str, object]], list[float]]:
    rows: list[dict[str, object]] = []
    scores: list[float] = []
    for i, prompt in enumerate(PROMPTS):
        messages = [{"role": "user", "content": prompt}]
        reply = llm.chat.completions.create(
            messages=messages, n=group, temperature=1.0, max_tokens=max_tokens, seed=seed * 1000 + i
        )
        samples = []
        for choice in reply.choices:
            text = choice.message.content or "."
            score = reward(text)
            scores.append(score)
            samples.append(
                {
                    "messages": [*messages, {"role": "assistant", "content": text}],
                    "evals": {"score": score},
                    # "length": cut at max_tokens, so the trainer trains no end-of-turn token for it.
                    "finish_reason": choice.finish_reason,
                }
            )
        rows.append({"samples": samples})
    return rows, scores


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--base-model", required=True, help="the base Model (short or accounts/<ns>/models/<name>)"
    )
    parser.add_argument(
        "--tokenizer-dir", required=True, help="a local copy of the base model's tokenizer (toy reward)"
    )
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--group", type=int, default=8, help="completions per prompt")
    parser.add_argument("--max-tokens", type=int, default=10)
    parser.add_argument("--accelerator", default="CPU")
    parser.add_argument("--learning-rate", type=float, default=2e-2)
    parser.add_argument("--lora-rank", type=int, default=8)
    parser.add_argument("--results", help="write the per-step figures as JSON here")
    args = parser.parse_args()

    reward = token_quarter_reward(args.tokenizer_dir)
    base = LLM(
        args.base_model,
        "on-demand",
        id="policy-base",
        accelerator_type=args.accelerator,
        accelerator_count=0 if args.accelerator == "CPU" else 1,
    )
    base.apply()
    llm = base
    history: list[dict[str, object]] = []
    for step in range(1, args.steps + 1):
        started = time.monotonic()
        rows, scores = rollouts(llm, reward, args.group, args.max_tokens, seed=step)
        mean = statistics.fmean(scores)
        print(
            f"step {step}: policy {llm.model}: mean reward {mean:.3f} over {len(scores)} completions",
            flush=True,
        )

        dataset = Dataset.from_list(rows)
        dataset.sync()
        job = llm.reinforcement_step(
            dataset,
            output_model=f"policy-step-{step}",
            lora_rank=args.lora_rank,
            learning_rate=args.learning_rate,
            max_context_length=64,
            epochs=2,
            batch_size=1024,
            accelerator_type=args.accelerator,
            accelerator_count=0 if args.accelerator == "CPU" else 1,
            kl_coefficient=0,
        )
        while not job.is_completed:
            job.raise_if_bad_state()
            time.sleep(1)
            job = job.get()
            assert job is not None, "the step was deleted while running"
        print(
            f"step {step}: {job.state} -> {job.output_model} ({time.monotonic() - started:.0f}s)", flush=True
        )
        history.append(
            {"step": step, "policy": llm.model, "mean_reward": mean, "output_model": job.output_model}
        )
        dataset.delete()
        if llm is not base:
            llm.delete_deployment()
        llm = LLM(job.output_model, "on-demand-lora", base_id="policy-base")

    _, scores = rollouts(llm, reward, args.group, args.max_tokens, seed=999)
    final = statistics.fmean(scores)
    history.append({"step": args.steps + 1, "policy": llm.model, "mean_reward": final, "output_model": None})
    print(f"final policy {llm.model}: mean reward {final:.3f}", flush=True)
    rewards = [float(h["mean_reward"]) for h in history]  # type: ignore[arg-type]
    print("mean reward by policy: " + " -> ".join(f"{r:.3f}" for r in rewards), flush=True)
    if args.results:
        with open(args.results, "w") as fh:
            json.dump(history, fh, indent=1)
    if rewards[-1] > rewards[0]:
        print(f"the reward rose by {rewards[-1] - rewards[0]:+.3f} over {args.steps} steps", flush=True)
        return 0
    print(f"the reward did not rise ({rewards[0]:.3f} -> {rewards[-1]:.3f})", flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
