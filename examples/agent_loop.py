"""A tool-using agent loop, trained with rft-operator on the sampler's own tokens.

Each episode is a trajectory of two assistant turns around a tool call: the model's first turn
names a word, which the harness sends as a call of `lookup` (a glossary written here); the
glossary's answer goes back as a `tool` message; the model answers in a second turn. The rows
are built with `rft.sdk.trajectory.Trajectory` from the token ids and logprobs the sampler
returned (`token_ids=True`), so the trainer trains exactly the tokens the policy produced, with
its logprobs as the behaviour policy (docs/dataset-format.md, "Trajectories"). Then, as in
examples/rl_loop.py: sync the dataset, run one reinforcement step, poll it, serve the new
checkpoint as a LoRA deployment on the base, repeat.

    RFT_BUCKET=s3://my-bucket/rft RFT_SERVICE_ACCOUNT=rft-trainer \
    python examples/agent_loop.py --base-model qwen3-0-6b --accelerator NVIDIA_H100_80GB

    make demo LOOP=examples/agent_loop.py    # the local cluster, the tiny model, vLLM on CPU

The tool call is the harness's, written from the model's text: the demo's tiny model speaks
only whole words (rft_devcluster.tiny's `words_only`) and cannot write a Hermes `<tool_call>`
block, so the first turn is sampled with `max_tokens=1` and its word becomes the call's argument.
The chat template then renders that turn as the word followed by the call's markup, which the
model did not write: the trainer reports every such turn as re-tokenization drift
(`drifted_turns` in each step's metrics: one per trajectory here), trains only the ids the
sampler produced, and trains the answer in the context the server fed the sampler (the markup
and the tool's answer included, masked). A model that writes its own calls (served with vLLM's
`--enable-auto-tool-choice`) sends them back parsed, and the harness would run those instead.

The reward: 0.5 when the lookup found an entry (the model called the tool with a word the
glossary knows), plus 0.5 times the share of the answer's words the glossary knows. What the
tiny random model can learn in a few steps is which words to call the tool with and to answer
with, as it learns the demo's toy reward; it cannot read the tool's answer (its context holds it,
but nothing in a random network uses it), so a reward on the answer's use of the entry (naming
the kind the glossary gave) would need a real model.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from typing import Any

from rft import LLM, Dataset
from rft.sdk.trajectory import Trajectory, row

GLOSSARY = {
    kind: words.split()
    for kind, words in {
        "a number": "one two three four five six seven eight nine ten",
        "a colour": "red blue green",
        "a fruit": "apple banana cherry",
        "an animal": "cat dog bird fish",
        "a person": "people he she they we you",
        "a reply": "yes no maybe hello thanks please",
    }.items()
}
KIND = {word: kind for kind, words in GLOSSARY.items() for word in words}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look a word up in the glossary.",
            "parameters": {
                "type": "object",
                "properties": {"word": {"type": "string"}},
                "required": ["word"],
            },
        },
    }
]
PROMPTS = [f"Look up a word in the glossary, then tell me about it (question {i})." for i in range(16)]
SAMPLING = {"temperature": 1.0, "top_p": 1.0}
# No `seed`: the requests run concurrently, and vLLM's CPU build kills its engine when a seeded
# request's prompt is prefilled across two batches ("CPU Generator does not use offset").


def lookup(word: str) -> str | None:
    """The tool: the glossary's entry for `word`, or None when it has none."""
    kind = KIND.get(word.strip().lower())
    if kind is None:
        return None
    others = ", ".join(w for w in GLOSSARY[kind] if w != word.strip().lower())
    return f"{word.strip()} is {kind}, like {others}."


def reward(found: bool, answer: str) -> float:
    """Half for a call the tool could answer, half for an answer in words the glossary knows."""
    words = [w.strip(".,!?").lower() for w in answer.split()]
    known = sum(w in KIND for w in words) / max(len(words), 1)
    return 0.5 * found + 0.5 * known


async def episodes(
    llm: LLM, prompt: str, group: int, answer_tokens: int
) -> tuple[dict[str, Any], list[float], int]:
    """`group` episodes from one prompt: the tool-calling turn (one request, `group` choices),
    the tool's answers, then each episode's answer turn (concurrent requests)."""
    first = await llm.chat.completions.acreate(
        messages=[{"role": "user", "content": prompt}],
        tools=TOOLS,
        tool_choice="none",  # the harness makes the call from the model's word (see above)
        token_ids=True,
        n=group,
        max_tokens=1,
        **SAMPLING,
    )
    trajectories = []
    found = []
    for k, choice in enumerate(first.choices):
        trajectory = Trajectory([{"role": "user", "content": prompt}], tools=TOOLS)
        trajectory.add_choice(choice)
        word = trajectory.messages[-1]["content"].strip()
        call_id = f"call_{k}"
        trajectory.messages[-1]["tool_calls"] = [
            {
                "id": call_id,
                "type": "function",
                "function": {"name": "lookup", "arguments": json.dumps({"word": word})},
            }
        ]
        entry = lookup(word)
        trajectory.add_tool_result(call_id, entry or f"No entry for {word!r}.")
        trajectories.append(trajectory)
        found.append(entry is not None)
    replies = await asyncio.gather(
        *[
            llm.chat.completions.acreate(
                messages=t.request_messages(),
                tools=TOOLS,
                tool_choice="none",
                token_ids=True,
                max_tokens=answer_tokens,
                **SAMPLING,
            )
            for t in trajectories
        ]
    )
    samples = []
    scores = []
    for trajectory, hit, reply in zip(trajectories, found, replies, strict=True):
        trajectory.add_choice(reply.choices[0])
        score = reward(hit, trajectory.messages[-1]["content"])
        scores.append(score)
        samples.append(trajectory.sample({"score": score}, sampling=SAMPLING))
    return row(samples, tools=TOOLS), scores, sum(found)


async def rollouts(llm: LLM, group: int, answer_tokens: int) -> tuple[list[dict[str, Any]], list[float], int]:
    results = await asyncio.gather(*[episodes(llm, p, group, answer_tokens) for p in PROMPTS])
    rows = [r for r, _, _ in results]
    scores = [s for _, ss, _ in results for s in ss]
    return rows, scores, sum(f for _, _, f in results)


def show(rows: list[dict[str, Any]]) -> str:
    """One episode, as the conversation reads (the first sample of the first row)."""
    sample = rows[0]["samples"][0]
    lines = []
    for m in sample["messages"]:
        text = m["content"]
        for call in m.get("tool_calls", []):
            text += f" -> {call['function']['name']}({call['function']['arguments']})"
        lines.append(f"  {m['role']:>9}: {text.strip()}")
    return "\n".join([*lines, f"  {'reward':>9}: {sample['evals']['score']:.3f}"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--base-model",
        default=os.environ.get("RFT_BASE_MODEL"),
        help="the base Model (short or accounts/<ns>/models/<name>); default $RFT_BASE_MODEL",
    )
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--group", type=int, default=8, help="episodes per prompt")
    parser.add_argument("--answer-tokens", type=int, default=10, help="max_tokens of the answer turn")
    parser.add_argument("--accelerator", default="CPU")
    parser.add_argument("--learning-rate", type=float, default=2e-2)
    parser.add_argument("--lora-rank", type=int, default=8)
    parser.add_argument(
        "--results",
        default=os.environ.get("AGENT_LOOP_RESULTS"),
        help="write the per-step figures, metrics and rows as JSON here; default $AGENT_LOOP_RESULTS",
    )
    args = parser.parse_args()
    if not args.base_model:
        parser.error("--base-model (or $RFT_BASE_MODEL) is required")

    accelerator_count = 0 if args.accelerator == "CPU" else 1
    base = LLM(
        args.base_model,
        "on-demand",
        id="agent-base",
        accelerator_type=args.accelerator,
        accelerator_count=accelerator_count,
    )
    base.apply()
    llm = base
    history: list[dict[str, Any]] = []
    for step in range(1, args.steps + 1):
        started = time.monotonic()
        rows, scores, found = asyncio.run(rollouts(llm, args.group, args.answer_tokens))
        mean = statistics.fmean(scores)
        print(
            f"step {step}: policy {llm.model}: mean reward {mean:.3f} over {len(scores)} episodes "
            f"({found} lookups found an entry)",
            flush=True,
        )
        if step == 1:
            print(show(rows), flush=True)

        dataset = Dataset.from_list(rows)
        dataset.sync()
        job = llm.reinforcement_step(
            dataset,
            output_model=f"agent-step-{step}",
            lora_rank=args.lora_rank,
            learning_rate=args.learning_rate,
            max_context_length=512,
            epochs=2,
            batch_size=4096,
            accelerator_type=args.accelerator,
            accelerator_count=accelerator_count,
            kl_coefficient=0,
        )
        while not job.is_completed:
            job.raise_if_bad_state()
            time.sleep(1)
            fresh = job.get()
            assert fresh is not None, "the step was deleted while running"
            job = fresh
        metrics = dict(job.resource.status.metrics)
        print(
            f"step {step}: {job.state} -> {job.output_model} ({time.monotonic() - started:.0f}s): "
            f"{metrics.get('samples')} trajectories, {metrics.get('drifted_turns')} drifted turns, "
            f"sampler-trainer logprob gap {metrics.get('sampler_logp_abs_diff')}",
            flush=True,
        )
        history.append(
            {
                "step": step,
                "policy": llm.model,
                "mean_reward": mean,
                "found": found,
                "output_model": job.output_model,
                "metrics": metrics,
                "rows": rows,
            }
        )
        dataset.delete()
        if llm is not base:
            llm.delete_deployment()
        llm = LLM(job.output_model, "on-demand-lora", base_id="agent-base")
        llm.apply()  # before the concurrent rollouts, which would each wait for it

    rows, scores, found = asyncio.run(rollouts(llm, args.group, args.answer_tokens))
    final = statistics.fmean(scores)
    print(f"final policy {llm.model}: mean reward {final:.3f} ({found} lookups found an entry)", flush=True)
    print(show(rows), flush=True)
    history.append(
        {
            "step": args.steps + 1,
            "policy": llm.model,
            "mean_reward": final,
            "found": found,
            "output_model": None,
        }
    )
    rewards = [float(h["mean_reward"]) for h in history]
    print("mean reward by policy: " + " -> ".join(f"{r:.3f}" for r in rewards), flush=True)
    if args.results:
        with open(args.results, "w") as fh:
            json.dump(history, fh)
    if rewards[-1] > rewards[0]:
        print(f"the reward rose by {rewards[-1] - rewards[0]:+.3f} over {args.steps} steps", flush=True)
        return 0
    print(f"the reward did not rise ({rewards[0]:.3f} -> {rewards[-1]:.3f})", flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
