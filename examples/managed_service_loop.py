"""The managed service's iterative RL loop, pasted as its users have it, against rft-operator.

Only the import line (`from fireworks import LLM, Dataset` became `from rft import LLM, Dataset`)
and the account names (`accounts/demo/...`: the namespace of `make demo`'s cluster) differ from
the managed service's version: GPU deployments (NVIDIA_A100_80GB) on vLLM, rollouts through the
OpenAI-style client (sync and async), a dataset of scored rows synced to the bucket, one
reinforcement step per iteration, polled until it completes, each new LoRA checkpoint loaded
onto the base deployment.

    make demo LOOP=examples/managed_service_loop.py

runs it on the local cluster, whose local node stands in for A100 nodes (the same labels and
resources the operator's accelerator map asks for) and runs the pods on this machine's CPU.
"""

import asyncio
import time

from rft import LLM, Dataset

base_model = "accounts/demo/models/tiny-chat"
num_steps = 2
prompts = [f"Tell me about the {thing}." for thing in ("cat", "dog", "bird", "fish", "apple", "water")]


def reward_fn(text):
    """Your reward: here, the share of the answer's words that name an animal."""
    words = text.split()
    animals = {"cat", "dog", "bird", "fish"}
    return sum(word.strip(".,!?") in animals for word in words) / max(len(words), 1)


def score(messages, response):
    samples = []
    for choice in response.choices:
        text = choice.message.content or ""
        samples.append(
            {
                "messages": messages + [{"role": "assistant", "content": text}],
                "evals": {"score": reward_fn(text)},
            }
        )
    return {"samples": samples}


async def rollouts_async(llm, batch):
    responses = await asyncio.gather(
        *[
            llm.chat.completions.acreate(messages=messages, n=4, temperature=1.0, max_tokens=16)
            for messages in batch
        ]
    )
    return [score(messages, response) for messages, response in zip(batch, responses)]


base_deployment = LLM(
    model=base_model,
    deployment_type="on-demand",
    id="rft-base",
    accelerator_type="NVIDIA_A100_80GB",
    min_replica_count=1,
    max_replica_count=1,
    enable_addons=True,
)
base_deployment.apply()

llm = base_deployment
for step in range(num_steps):
    conversations = [[{"role": "user", "content": prompt}] for prompt in prompts]
    # Half the rollouts one request at a time, half concurrently.
    rows = []
    for messages in conversations[: len(conversations) // 2]:
        response = llm.chat.completions.create(messages=messages, n=4, temperature=1.0, max_tokens=16)
        rows.append(score(messages, response))
    rows += asyncio.run(rollouts_async(llm, conversations[len(conversations) // 2 :]))
    mean_reward = sum(s["evals"]["score"] for row in rows for s in row["samples"]) / sum(
        len(row["samples"]) for row in rows
    )
    print(f"step {step}: {llm.model} mean reward {mean_reward:.3f}")

    dataset = Dataset.from_list(rows)
    dataset.sync()

    job = llm.reinforcement_step(
        dataset=dataset,
        output_model=f"rft-step-{step}",
        epochs=1,
        learning_rate=1e-3,
        lora_rank=8,
        max_context_length=512,
        accelerator_type="NVIDIA_A100_80GB",
        accelerator_count=1,
    )
    while not job.is_completed:
        job.raise_if_bad_state()
        time.sleep(2)
        job = job.get()
        if job is None:
            raise Exception("the reinforcement step was deleted")
    print(f"step {step}: {job.state}, new checkpoint {job.output_model}")

    dataset.delete()
    if llm is not base_deployment:
        llm.delete_deployment()
    llm = LLM(model=job.output_model, deployment_type="on-demand-lora", base_id=base_deployment.deployment_id)
    llm.apply()

final = llm.chat.completions.create(messages=[{"role": "user", "content": prompts[0]}], max_tokens=16)
print(f"final checkpoint {llm.model} says: {final.choices[0].message.content}")
