"""A loop iteration through a TrainingSession against the same iteration through a ReinforcementStep,
on the local cluster: the per-iteration latency of training on one batch of scored rows and
publishing the new adapter to the bucket, as a ratio.

The environment is `make demo`'s without vLLM (`rft_devcluster.demo`): the control plane, the local
node that runs every pod as a real process (the trainer image's code, on this machine's CPU), moto
as the S3 bucket reached through emulated IRSA, the demo's tiny chat model as the base `Model`
(checked by its Job), and the operator under the Helm chart's RBAC. Sampling is left out of both
sides (it is the same vLLM either way): each
iteration trains on rows generated here, different rows per iteration (a real loop's new
rollouts; the same rows again would find their Dataset already validated), the same rows for both
sides.

What one timed iteration includes:

- **ReinforcementStep** (the SDK loop users write, `examples/rl_loop.py`'s train half):
  `Dataset.from_list(rows).sync()` (upload to the bucket, the Dataset object, its validation Job
  until READY), `llm.reinforcement_step(...)` (the step warm-starts from the previous iteration's
  checkpoint, as the loop does), then polling `job.get()` every 0.5 s until JOB_STATE_COMPLETED:
  the training Job's pod (scheduled, the trainer process started, base model and dataset fetched,
  one optimizer step, the adapter published create-only to the bucket) and the output `Model`
  registered. Not timed: `dataset.delete()` afterwards.
- **TrainingSession** (the official `tinker` client against the session's Service endpoint):
  the same rows turned into Tinker `Datum`s on the client with the trainer's own tokenisation and
  advantages (`rft_trainer.data.tokenize_samples`, group advantages), `forward_backward`,
  `optim_step` and `save_weights_for_sampler(name)`, all waited for: the adapter is published
  create-only to the bucket (the same layout and commit marker as a step's). Not timed, reported
  apart: the one-time cost of creating the session until READY (its pod fetches and loads the base
  model) and creating its LoRA training client.

The same work on both sides: LoRA rank 8 on the block linears, one AdamW step (learning rate 1e-3,
betas 0.9/0.999, eps 1e-8, no weight decay or clipping) over the iteration's rows, REINFORCE with
group-normalised advantages and token-mean aggregation, no KL. The step trains with loss method
`reinforce` (the rows carry no sampling logprobs, so its ratio is 1); the session with
`cross_entropy` weighted by advantage / completion tokens, the same gradient. CPU accelerators on
both sides (the accelerator map's CPU shape).

Run: `flock /work/heavy.lock python -m bench session_vs_step` (a few minutes: the cluster starts
first). `--quick` runs 2 iterations per side instead of 4.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import Row, write_result

NAMESPACE = "demo"
SESSION = "bench"
RANK = 8
LR = 1e-3
GROUPS = 8
COMPLETIONS = 4
MAX_CONTEXT = 64


def iteration_rows(iteration: int, groups: int = GROUPS, completions: int = COMPLETIONS) -> list[dict[str, Any]]:
    """The scored rows of one loop iteration: `groups` prompts with `completions` completions each
    (words of the tiny model's vocabulary), rewards seeded by the iteration."""
    from rft_devcluster.tiny import vocabulary_words  # noqa: PLC0415 - torch-free, but keep imports local

    words = vocabulary_words()
    rng = np.random.default_rng(iteration)
    rows = []
    for g in range(groups):
        samples = []
        for _ in range(completions):
            text = " ".join(str(w) for w in rng.choice(words, size=int(rng.integers(3, 9))))
            samples.append(
                {
                    "messages": [
                        {"role": "user", "content": f"iteration {iteration} question {g}: say some words"},
                        {"role": "assistant", "content": text},
                    ],
                    "evals": {"score": round(float(rng.random()), 4)},
                }
            )
        rows.append({"samples": samples})
    return rows


def rows_to_datums(rows: list[dict[str, Any]], tokenizer: Any) -> list[Any]:
    """The rows as Tinker Datums, tokenised and scored as the step's trainer does: group
    advantages, each completion token weighted by advantage / completion tokens of the batch
    (token-mean), for cross_entropy (the REINFORCE gradient at ratio 1)."""
    from rft.rows import iter_groups  # noqa: PLC0415
    from rft_trainer.data import SampleTokenizer, tokenize_samples  # noqa: PLC0415
    from rft_trainer.dataset import score_groups  # noqa: PLC0415
    from tinker import types  # noqa: PLC0415

    groups = list(iter_groups(json.dumps(row) for row in rows))
    scored = score_groups(groups, {}, "group")
    samples = tokenize_samples(scored.samples, SampleTokenizer(tokenizer, MAX_CONTEXT)).samples
    tokens = sum(s.completion_len for s in samples)
    datums = []
    for sample in samples:
        ids = sample.token_ids
        weights = np.zeros(len(ids) - 1, dtype=np.float32)
        first = sample.prompt_len - 1  # the target at `first` is the first completion token
        weights[first : first + sample.completion_len] = sample.advantage / tokens
        datums.append(
            types.Datum(
                model_input=types.ModelInput.from_ints(ids[:-1]),
                loss_fn_inputs={
                    "target_tokens": types.TensorData.from_numpy(np.asarray(ids[1:], dtype=np.int64)),
                    "weights": types.TensorData.from_numpy(weights),
                },
            )
        )
    return datums


@dataclass
class Environment:
    cluster: Any  # rft_devcluster.handle.ClusterHandle
    bucket: str  # s3://<bucket>/rft
    tokenizer_dir: Path


@contextlib.contextmanager
def local_cluster(state_dir: Path) -> Iterator[Environment]:
    """`make demo`'s environment without vLLM, the SDK's variables set in this process."""
    from rft_devcluster import demo  # noqa: PLC0415
    from rft_devcluster.binaries import ensure_binaries  # noqa: PLC0415
    from rft_devcluster.controlplane import ClusterOptions, ControlPlane, LocalNodeOptions  # noqa: PLC0415
    from rft_devcluster.emulators import DEFAULT_REGION, create_s3_bucket, start_moto_server  # noqa: PLC0415

    bin_dir = ensure_binaries()
    saved = dict(os.environ)
    with start_moto_server(log_dir=state_dir) as moto:
        create_s3_bucket(moto.endpoint, demo.BUCKET)
        node = LocalNodeOptions(
            gpus=8,
            gpu_product="NVIDIA-A100-SXM4-80GB",
            cpu="64",
            memory="512Gi",
            workload_identity_env=(
                ("AWS_ENDPOINT_URL", moto.endpoint),
                ("AWS_DEFAULT_REGION", DEFAULT_REGION),
                ("AWS_REGION", DEFAULT_REGION),
                ("AWS_EC2_METADATA_DISABLED", "true"),
            ),
        )
        with ControlPlane(state_dir / "cluster", bin_dir, ClusterOptions(gpu_nodes=0, local_node=node)) as cluster:
            demo.install_crds(cluster)
            location, local_model = demo.upload_base_model(state_dir, moto.endpoint)
            demo.apply_yaml(cluster, demo.user_objects(location))
            kubeconfig = demo.operator_kubeconfig(cluster, state_dir)
            with demo.running_operator(kubeconfig, state_dir / "operator.log"):
                os.environ.update(demo.loop_environment(cluster, moto.endpoint))
                try:
                    yield Environment(cluster, f"s3://{demo.BUCKET}/rft", local_model)
                finally:
                    os.environ.clear()
                    os.environ.update(saved)


def _wait_model_ready(name: str, timeout: float = 300) -> None:
    from rft.api import Model  # noqa: PLC0415
    from rft.sdk.session import Session  # noqa: PLC0415

    sdk = Session.create()
    deadline = time.monotonic() + timeout
    while True:
        obj = sdk.client.get(Model, sdk.namespace, name)
        if obj is not None and obj.status.phase == "READY":
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"Model {name} not READY in {timeout}s: {obj.status if obj else None}")
        time.sleep(1)


def step_iterations(base_model: str, iterations: int) -> tuple[list[float], list[dict[str, Any]]]:
    """Seconds per iteration through Dataset + ReinforcementStep (see the module docstring), and
    what each step reported (its parent checkpoint, the trainer's final metrics)."""
    from rft.sdk import LLM, Dataset  # noqa: PLC0415

    llm = LLM(base_model, "on-demand", id="bench-base", accelerator_type="CPU", accelerator_count=0)
    times: list[float] = []
    reports: list[dict[str, Any]] = []
    for i in range(1, iterations + 1):
        rows = iteration_rows(i)
        started = time.monotonic()
        dataset = Dataset.from_list(rows)
        dataset.sync()
        job = llm.reinforcement_step(
            dataset,
            output_model=f"bench-step-{i}",
            lora_rank=RANK,
            learning_rate=LR,
            max_context_length=MAX_CONTEXT,
            epochs=1,
            batch_size=4096,
            accelerator_type="CPU",
            accelerator_count=0,
            loss_method="reinforce",
            kl_coefficient=0,
        )
        while not job.is_completed:
            job.raise_if_bad_state()
            time.sleep(0.5)
            fresh = job.get()
            if fresh is None:
                raise RuntimeError(f"step bench-step-{i} was deleted while running")
            job = fresh
        times.append(time.monotonic() - started)
        status = job.resource.status
        reports.append({"warm_start_from": status.warm_start_from, "metrics": dict(status.metrics)})
        print(f"[bench] step iteration {i}: {times[-1]:.1f}s -> {job.output_model}", file=sys.stderr, flush=True)
        dataset.delete()
        llm = LLM(job.output_model, "on-demand-lora", base_id="bench-base")
    return times, reports


def session_iterations(
    env: Environment, base_model: str, iterations: int
) -> tuple[list[float], list[float], float, float]:
    """(seconds per iteration through the session, each forward_backward's summed loss, seconds
    until READY, seconds to create the LoRA training client)."""
    from rft.sdk.training_session import create_training_session, tinker_service_client  # noqa: PLC0415
    from tinker import types  # noqa: PLC0415
    from transformers import AutoTokenizer  # noqa: PLC0415

    tokenizer = AutoTokenizer.from_pretrained(str(env.tokenizer_dir))
    started = time.monotonic()
    create_training_session(
        SESSION,
        base_model=base_model,
        state_location=f"{env.bucket}/sessions/",
        accelerator_type="CPU",
        accelerator_count=0,
        max_lora_rank=RANK,
    )
    service = tinker_service_client(SESSION, timeout=600)
    ready = time.monotonic() - started
    started = time.monotonic()
    tc = service.create_lora_training_client(base_model, rank=RANK, seed=0, train_unembed=False).result()
    client_seconds = time.monotonic() - started
    adam = types.AdamParams(learning_rate=LR, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0)
    times: list[float] = []
    losses: list[float] = []
    for i in range(1, iterations + 1):
        rows = iteration_rows(i)
        started = time.monotonic()
        datums = rows_to_datums(rows, tokenizer)
        fb = tc.forward_backward(datums, "cross_entropy")
        optim = tc.optim_step(adam)
        saved = tc.save_weights_for_sampler(f"iteration-{i}")
        losses.append(float(fb.result().metrics["loss:sum"]))
        optim.result()
        path = saved.result().path
        times.append(time.monotonic() - started)
        print(f"[bench] session iteration {i}: {times[-1]:.2f}s -> {path}", file=sys.stderr, flush=True)
    service.close("success").result()
    return times, losses, ready, client_seconds


def benchmark(quick: bool, results_dir: Path | None = None) -> list[Row]:
    """Median per-iteration latency through a TrainingSession and through ReinforcementSteps."""
    from rft_devcluster import demo  # noqa: PLC0415

    iterations = 2 if quick else 4
    with (
        tempfile.TemporaryDirectory(prefix="rft-bench-session-step-") as tmp,
        local_cluster(Path(tmp)) as env,
    ):
        _wait_model_ready(demo.BASE_MODEL)
        step, step_reports = step_iterations(demo.BASE_MODEL, iterations)
        session, session_losses, ready, client_seconds = session_iterations(env, demo.BASE_MODEL, iterations)
    session_s, step_s = statistics.median(session), statistics.median(step)
    write_result(
        "session_vs_step",
        {
            "workload": {
                "groups": GROUPS,
                "completions_per_group": COMPLETIONS,
                "lora_rank": RANK,
                "iterations": iterations,
                "base_model": "the demo's tiny chat model (rft_devcluster.tiny, VLLM_CPU_SHAPE)",
            },
            "session_iteration_seconds": session,
            "step_iteration_seconds": step,
            "step_reports": step_reports,
            "session_losses": session_losses,
            "session_ready_seconds": ready,
            "session_client_seconds": client_seconds,
            "session_includes": "rows -> Datums (client), forward_backward + optim_step + "
            "save_weights_for_sampler (adapter committed in the bucket)",
            "step_includes": "Dataset.from_list + sync (upload, validation Job, READY) + "
            "ReinforcementStep until JOB_STATE_COMPLETED (training Job, adapter committed in the "
            "bucket, output Model registered)",
        },
        results_dir,
    )
    break_even = ready / max(step_s - session_s, 1e-9)
    return [
        Row(
            "session_vs_step",
            "train+publish per loop iteration, s (TrainingSession / ReinforcementStep)",
            f"{session_s:.2f}",
            f"{step_s:.1f}",
            f"{session_s / step_s:.3f}x",
            note=f"median of {iterations}; session READY in {ready:.0f}s once (pays off after "
            f"{break_even:.1f} iterations), training client {client_seconds:.1f}s",
        ),
    ]
