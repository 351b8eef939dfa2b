"""Trainer step benchmark: our LoRA policy-gradient step against TRL's GRPOTrainer on stored rollouts.

The workload (`bench.workload.WorkloadSpec`): a random Qwen2-architecture model (4 layers, hidden
256, vocabulary 4096), 64 prompt groups of 8 stored completions of 4 to 320 tokens with rewards,
LoRA rank 16 on the seven linear layers of every block, one epoch, the GRPO clipped loss
(epsilon 0.2, group-normalised advantages, token-mean over the optimizer batch, no KL), AdamW at
the same learning rate, gradient clipping at 1.0, float32, no gradient checkpointing, 2 torch
threads, 8 optimizer steps on each side.

- TRL (`trl`, the peer): `GRPOTrainer` with a `rollout_func` that returns the stored token ids
  (nothing is generated) and a reward function that returns the stored rewards; 8 completions
  (one group) per micro-batch, 8 micro-batches per optimizer step: 8 steps of 64 completions. One
  generation batch holds all 512 stored completions (`steps_per_generation` 64), as the dataset
  is one generation: TRL then computes the old policy's logprobs first and takes every step's
  ratio against them, the same update as ours.
- TRL on-policy (`trl-on-policy`, shown beside it): a generation batch per optimizer step, the
  configuration of the earlier runs. TRL then skips the old-logprob pass and takes the ratio to be
  1 at every step: less work, and after the first step a different update (it treats each batch
  as sampled by the current policy).
- Ours: `rft_trainer.loop.Trainer` on the same samples; packed rows of at most `batch_tokens`
  tokens, `gradient_accumulation_steps` rows per optimizer step, chosen so that the epoch takes
  the same 8 optimizer steps (a step then holds about, not exactly, 64 completions). The rows
  carry no sampling logprobs, so it first computes the start-of-step logprobs (its reference
  pass, like TRL's old-logprob pass).

First ours is checked to compute TRL's loss and LoRA gradients on the same first optimizer batch
(groups 0-7); then each side trains the whole epoch in its own subprocess, alternating, several
times. Each subprocess reports its wall time and its peak resident memory during training (VmHWM,
reset just before training starts).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import torch
from datasets import Dataset
from rft.api.model import LoraSettings
from rft_trainer.data import Sample
from rft_trainer.loop import OptimSettings, Trainer, plan_epoch, total_optimizer_steps
from rft_trainer.loss import LossParams, compute_advantages
from rft_trainer.model import attach_new_adapter, load_base_model
from torch.optim.optimizer import register_optimizer_step_pre_hook
from trl.trainer.grpo_config import GRPOConfig
from trl.trainer.grpo_trainer import GRPOTrainer

from bench import workload
from bench.common import (
    THREADS,
    Row,
    Stats,
    format_table,
    machine,
    matmul_peak_flops,
    peak_rss_kib,
    reset_peak_rss,
    rss_kib,
    write_result,
)
from bench.workload import LORA_TARGETS, Rollout, WorkloadSpec

NAME = "trainer_vs_trl"
LOSS_RTOL = 1e-3
GRAD_RTOL = 1e-3
"""Equivalence tolerances, relative. The one known difference is the advantage's epsilon: TRL
divides by (std + 1e-4), the trainer by (std + 1e-6); with rewards spread over [0, 10] (group
std about 3) that changes every advantage by about 3e-5 relatively. The rest is float32 rounding
(packed rows against padded rows, summation order), about 1e-6."""


# ---------------------------------------------------------------------------------------------
# Common setup


def _set_threads(threads: int = THREADS) -> None:
    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # only settable before any inter-op work has started
        torch.set_num_interop_threads(threads)


def _cpu_seconds() -> float:
    """User + system CPU time of this process: with other work on the machine, wall time varies
    more than this does (recorded beside the wall time, not used for the ratios)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _load_policy(work_dir: Path, spec: WorkloadSpec) -> tuple[Any, Any]:
    """The base model as the trainer loads it (float32, sdpa, frozen) with a new LoRA adapter
    seeded like the trainer seeds it. Both sides start from these identical weights."""
    model, tokenizer = load_base_model(str(work_dir / "model"), torch.device("cpu"))
    lora = LoraSettings(rank=spec.lora_rank, alpha=spec.lora_alpha, target_modules=list(LORA_TARGETS))
    return attach_new_adapter(model, lora, spec.seed), tokenizer


@dataclass(frozen=True)
class Counts:
    """Token and FLOP counts of a set of rollouts (real tokens: no padding)."""

    tokens: int
    completion_tokens: int
    flops: float


def model_sizes(spec: WorkloadSpec) -> dict[str, int]:
    """Parameter counts that enter the FLOP estimate (weights only: biases and norms are noise)."""
    head_dim = spec.hidden_size // spec.heads
    kv = spec.kv_heads * head_dim
    h, i = spec.hidden_size, spec.intermediate_size
    shapes = {  # (in, out) of each adapted linear
        "q_proj": (h, h),
        "k_proj": (h, kv),
        "v_proj": (h, kv),
        "o_proj": (h, h),
        "gate_proj": (h, i),
        "up_proj": (h, i),
        "down_proj": (i, h),
    }
    block = sum(a * b for a, b in shapes.values()) * spec.layers
    lora = sum(spec.lora_rank * (a + b) for a, b in shapes.values()) * spec.layers
    return {"block_linear": block, "lora": lora, "head": h * spec.vocab_size}


def count(spec: WorkloadSpec, rollouts: Sequence[Rollout]) -> Counts:
    """Useful training FLOPs of one pass over `rollouts`, counted on real tokens only.

    Per token: 4 x the frozen block weights (forward, and the input gradient of the backward;
    frozen weights need no weight gradient) plus 6 x the LoRA weights (forward, input and weight
    gradients). Per completion token: 4 x the output head (the only positions whose logits are
    needed). Per sequence of L tokens and per layer: causal attention, 2 L^2 d forward (QK^T and
    PV over the L^2/2 visible pairs) and twice that backward. Recomputation, padding, a
    reference pass and the logits of prompt positions are work, but not useful work: not counted.
    """
    sizes = model_sizes(spec)
    tokens = sum(r.length for r in rollouts)
    completion = sum(len(r.completion_ids) for r in rollouts)
    flops = tokens * (4 * sizes["block_linear"] + 6 * sizes["lora"]) + completion * 4 * sizes["head"]
    flops += sum(6 * r.length**2 * spec.hidden_size * spec.layers for r in rollouts)
    return Counts(tokens=tokens, completion_tokens=completion, flops=float(flops))


# ---------------------------------------------------------------------------------------------
# Our trainer


def ours_samples(
    rollouts: Sequence[Rollout], group_size: int, logprobs: Sequence[list[float]] | None = None
) -> list[Sample]:
    """The trainer's `Sample`s for the rollouts, advantages from the trainer's own function;
    with `logprobs` (one list per rollout), the rows carry the sampler's logprobs."""
    groups: dict[int, list[tuple[int, Rollout]]] = {}
    for i, r in enumerate(rollouts):
        groups.setdefault(r.group, []).append((i, r))
    advantages = compute_advantages([[r.reward for _, r in g] for g in groups.values()], "group").values
    samples: list[Sample] = []
    for members, advs in zip(groups.values(), advantages, strict=True):
        assert len(members) == group_size
        for (i, r), adv in zip(members, advs, strict=True):
            samples.append(
                Sample(
                    index=len(samples),
                    line=r.group + 1,
                    group=r.group,
                    token_ids=r.prompt_ids + r.completion_ids,
                    prompt_len=len(r.prompt_ids),
                    reward=r.reward,
                    advantage=adv,
                    sampling_logprobs=list(logprobs[i]) if logprobs is not None else None,
                )
            )
    return samples


def _optim_settings(spec: WorkloadSpec, batch_tokens: int, accumulation: int, max_length: int) -> Any:
    return OptimSettings(
        learning_rate=spec.learning_rate,
        weight_decay=0.0,
        max_grad_norm=1.0,
        warmup_steps=0,
        gradient_accumulation_steps=accumulation,
        epochs=1,
        batch_tokens=batch_tokens,
        max_context_length=max_length,
        seed=spec.seed,
    )


def _loss_params() -> Any:
    return LossParams(
        method="grpo",
        clip_low=0.2,
        clip_high=0.2,
        kl_coefficient=0.0,
        advantage="group",
        aggregation="token-mean",
    )


@dataclass(frozen=True)
class OursPlan:
    """How our token-budget batches map to the peer's optimizer steps."""

    batch_tokens: int
    accumulation: int
    packed_batches: int
    optimizer_steps: int


def plan_ours(spec: WorkloadSpec, rollouts: Sequence[Rollout], batch_tokens: int) -> OursPlan:
    """The smallest token budget from `batch_tokens` up (in steps of 64) and the accumulation that
    give exactly `spec.optimizer_steps` optimizer steps over the epoch."""
    samples = ours_samples(rollouts, spec.group_size)
    longest = max(r.length for r in rollouts)
    budget = max(batch_tokens, longest)
    for _ in range(200):
        settings = _optim_settings(spec, budget, 1, longest)
        n = len(plan_epoch(samples, settings, 0))
        accumulation = max(1, math.ceil(n / spec.optimizer_steps))
        steps = total_optimizer_steps([n], accumulation, 1)
        if steps == spec.optimizer_steps:
            return OursPlan(budget, accumulation, n, steps)
        budget += 64
    raise RuntimeError(f"no token budget from {batch_tokens} gives {spec.optimizer_steps} optimizer steps")


def ours_trainer(
    policy: Any,
    spec: WorkloadSpec,
    rollouts: Sequence[Rollout],
    batch_tokens: int,
    accumulation: int,
) -> Trainer:
    longest = max(r.length for r in rollouts)
    return Trainer(
        policy,
        ours_samples(rollouts, spec.group_size),
        _optim_settings(spec, batch_tokens, accumulation, longest),
        _loss_params(),
        torch.device("cpu"),
        new_adapter=True,
    )


def run_ours(work_dir: Path, batch_tokens: int, accumulation: int) -> dict[str, Any]:
    """Train the epoch with our trainer; wall time and peak memory of `Trainer.run`, which
    includes the reference pass (the rows carry no sampling logprobs): its time is reported apart."""
    spec, _, rollouts = workload.load(work_dir)
    policy, _ = _load_policy(work_dir, spec)
    trainer = ours_trainer(policy, spec, rollouts, batch_tokens, accumulation)
    baseline = rss_kib()
    reset_peak_rss()
    cpu, started = _cpu_seconds(), time.perf_counter()
    outcome = trainer.run()
    seconds = time.perf_counter() - started
    cpu = _cpu_seconds() - cpu
    peak = peak_rss_kib()
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "reference_seconds": outcome.reference_seconds,
        "train_seconds": outcome.train_seconds,
        "optimizer_steps": outcome.optimizer_steps,
        "processed_tokens": outcome.packed_tokens,
        "baseline_rss_kib": baseline,
        "peak_rss_kib": peak,
        "final_loss": outcome.steps[-1].loss if outcome.steps else None,
    }


# ---------------------------------------------------------------------------------------------
# TRL


@dataclass
class _TrlProbe:
    """What the TRL subclass records: each micro-batch's loss and the padded tokens it processed."""

    losses: list[float] = field(default_factory=list)
    padded_tokens: int = 0
    old_logprob_batches: int = 0  # micro-batches whose ratio is taken against old-policy logprobs


def _trl_trainer(
    policy: Any,
    tokenizer: Any,
    spec: WorkloadSpec,
    prompts: Sequence[str],
    rollouts: Sequence[Rollout],
    out_dir: Path,
    *,
    shuffle: bool,
    max_steps: int = -1,
    one_generation: bool = True,
) -> tuple[Any, _TrlProbe]:
    """A GRPOTrainer fed the stored rollouts: its rollout hook returns the stored token ids, its
    reward function the stored rewards. Settings mirror ours (see the module docstring).
    `one_generation`: all rollouts form one generation batch (TRL computes the old policy's
    logprobs and takes the ratio against them); otherwise one generation per optimizer step."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    by_group: dict[int, list[Rollout]] = {}
    for r in rollouts:
        by_group.setdefault(r.group, []).append(r)
    group_of = {prompts[g]: g for g in by_group}

    def rollout_func(batch_prompts: list[Any], trainer: Any) -> dict[str, Any]:
        # The sampler repeats each prompt group_size times in a row: hand out its completions in order.
        served: dict[int, int] = {}
        out: dict[str, list[Any]] = {"prompt_ids": [], "completion_ids": [], "stored_reward": []}
        for messages in batch_prompts:
            group = group_of[messages[-1]["content"]]
            k = served.get(group, 0)
            served[group] = k + 1
            r = by_group[group][k % spec.group_size]
            out["prompt_ids"].append(r.prompt_ids)
            out["completion_ids"].append(r.completion_ids)
            out["stored_reward"].append(r.reward)
        return {**out, "logprobs": None}

    def stored_reward(completions: list[Any], stored_reward: list[float], **_: Any) -> list[float]:
        return list(stored_reward)

    probe = _TrlProbe()

    class StoredRolloutGRPOTrainer(GRPOTrainer):
        def compute_loss(
            self,
            model: Any,
            inputs: dict[str, Any],
            return_outputs: bool = False,
            num_items_in_batch: Any = None,
        ) -> Any:
            loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            probe.losses.append(float(loss.detach()))
            probe.padded_tokens += int(inputs["prompt_ids"].numel() + inputs["completion_ids"].numel())
            probe.old_logprob_batches += inputs.get("old_per_token_logps") is not None
            return loss

    per_device = spec.group_size
    accumulation = spec.samples // spec.optimizer_steps // per_device
    micro_batches = len(rollouts) // per_device
    args = GRPOConfig(
        output_dir=str(out_dir),
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accumulation,
        steps_per_generation=micro_batches if one_generation else accumulation,
        num_generations=spec.group_size,
        num_train_epochs=1,
        max_steps=max_steps,
        learning_rate=spec.learning_rate,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        optim="adamw_torch",
        loss_type="dapo",  # token-mean over the optimizer batch, like aggregation="token-mean"
        scale_rewards="group",
        epsilon=0.2,
        beta=0.0,
        temperature=1.0,
        max_completion_length=max(len(r.completion_ids) for r in rollouts),
        shuffle_dataset=shuffle,
        gradient_checkpointing=False,  # TRL's default is True; ours is off: compare the same computation
        bf16=False,  # TRL's default is True; the trainer trains in float32 on CPU
        use_cpu=True,
        disable_dropout=True,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=spec.seed,
        log_completions=False,
    )
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": prompts[g]}]} for g in by_group])
    trainer = StoredRolloutGRPOTrainer(
        model=policy,
        reward_funcs=[cast(Any, stored_reward)],
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        rollout_func=rollout_func,
    )
    return trainer, probe


def run_trl(work_dir: Path, *, one_generation: bool) -> dict[str, Any]:
    """Train the epoch with TRL; wall time and peak memory of `trainer.train()`."""
    spec, prompts, rollouts = workload.load(work_dir)
    policy, tokenizer = _load_policy(work_dir, spec)
    with tempfile.TemporaryDirectory(prefix="trl-out-") as out_dir:
        trainer, probe = _trl_trainer(
            policy,
            tokenizer,
            spec,
            prompts,
            rollouts,
            Path(out_dir),
            shuffle=True,
            one_generation=one_generation,
        )
        baseline = rss_kib()
        reset_peak_rss()
        cpu, started = _cpu_seconds(), time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
        cpu = _cpu_seconds() - cpu
        peak = peak_rss_kib()
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "optimizer_steps": int(trainer.state.global_step),
        "processed_tokens": probe.padded_tokens,
        "old_logprob_batches": probe.old_logprob_batches,
        "baseline_rss_kib": baseline,
        "peak_rss_kib": peak,
        "final_loss": sum(probe.losses[-(spec.samples // spec.optimizer_steps // spec.group_size) :]),
    }


# ---------------------------------------------------------------------------------------------
# Equivalence on the first optimizer batch


@contextlib.contextmanager
def _capture_first_step(policy: Any) -> Iterator[dict[str, Any]]:
    """Record the LoRA gradients as the first optimizer step is about to apply them (after
    clipping), by a global optimizer pre-hook: both trainers build their own AdamW."""
    captured: dict[str, Any] = {}

    def hook(optimizer: Any, args: Any, kwargs: Any) -> None:
        if "grads" not in captured:
            captured["grads"] = {
                name: p.grad.detach().clone()
                for name, p in policy.named_parameters()
                if p.requires_grad and p.grad is not None
            }
            captured["norm"] = float(
                torch.linalg.vector_norm(torch.stack([g.norm() for g in captured["grads"].values()]))
            )

    handle = register_optimizer_step_pre_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


def check_equivalence(work_dir: Path) -> dict[str, Any]:
    """Loss and LoRA gradients of the first optimizer batch (groups 0 to 7: TRL's first step with
    shuffling off; ours with everything in one optimizer step) on both sides."""
    spec, prompts, rollouts = workload.load(work_dir)
    per_step = spec.samples // spec.optimizer_steps // spec.group_size  # groups per optimizer step
    first = [r for r in rollouts if r.group < per_step]

    longest = max(r.length for r in first)
    ours_runs: dict[str, tuple[float, dict[str, Any]]] = {}
    policy, _ = _load_policy(work_dir, spec)
    trainer = ours_trainer(policy, spec, first, batch_tokens=max(1024, longest), accumulation=1024)
    with _capture_first_step(policy) as captured:
        outcome = trainer.run()
    ours_runs["ours"] = (outcome.steps[0].loss, captured)

    policy, tokenizer = _load_policy(work_dir, spec)
    with tempfile.TemporaryDirectory(prefix="trl-out-") as out_dir, _capture_first_step(policy) as trl:
        trl_trainer, probe = _trl_trainer(
            policy,
            tokenizer,
            spec,
            prompts,
            first,
            Path(out_dir),
            shuffle=False,
            max_steps=1,
            one_generation=False,
        )
        trl_trainer.train()
    trl_loss = sum(probe.losses)

    result: dict[str, Any] = {"samples": len(first), "trl_loss": trl_loss, "passed": True}
    for variant, (ours_loss, ours) in ours_runs.items():
        names = sorted(ours["grads"])
        if names != sorted(trl["grads"]):
            raise RuntimeError("the two sides train different LoRA parameters")
        diff = max(float((ours["grads"][n] - trl["grads"][n]).abs().max()) for n in names)
        scale = max(float(trl["grads"][n].abs().max()) for n in names)
        cos = torch.nn.functional.cosine_similarity(
            torch.cat([ours["grads"][n].flatten() for n in names]).double(),
            torch.cat([trl["grads"][n].flatten() for n in names]).double(),
            dim=0,
        )
        loss_rel = abs(ours_loss - trl_loss) / max(abs(trl_loss), 1e-12)
        grad_rel = diff / max(scale, 1e-30)
        result[variant] = {
            "loss": ours_loss,
            "loss_rel_diff": loss_rel,
            "grad_max_abs_diff": diff,
            "grad_max_abs": scale,
            "grad_rel_diff": grad_rel,
            "grad_cosine": float(cos),
            "grad_norm_after_clip": ours["norm"],
            "passed": loss_rel <= LOSS_RTOL and grad_rel <= GRAD_RTOL,
        }
        result["passed"] = result["passed"] and result[variant]["passed"]
    result.update(trl_grad_norm_after_clip=trl["norm"], loss_rtol=LOSS_RTOL, grad_rtol=GRAD_RTOL)
    return result


# ---------------------------------------------------------------------------------------------
# Orchestration: subprocesses, repetitions, rows


SIDES = ("ours", "trl", "trl-on-policy")
"""ours: the trainer; trl: GRPOTrainer doing the same update (one generation batch of all the
rollouts, ratios against the old policy's logprobs); trl-on-policy: a generation per optimizer
step (ratio 1, no old-logprob pass). The rows carry no sampling logprobs, so our trainer first
runs its reference pass (rows with the sampler's logprobs skip it): its time is measured apart,
and the table also shows the rate of the training loop alone."""
PEER = "trl"


def _worker(side: str, work_dir: Path, threads: int, extra: Sequence[str] = ()) -> dict[str, Any]:
    """Run one side in a fresh interpreter; its last stdout line is its JSON result."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "TOKENIZERS_PARALLELISM": "false",
    }
    cmd = [
        sys.executable,
        "-m",
        "bench.trainer_vs_trl",
        "worker",
        side,
        str(work_dir),
        "--threads",
        str(threads),
    ]
    proc = subprocess.run(
        [*cmd, *extra],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{side} worker failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


@dataclass
class Options:
    """What a run of the benchmark measures and where."""

    spec: WorkloadSpec = field(default_factory=WorkloadSpec)
    repetitions: int = 5
    batch_tokens: int = 2048  # with packed attention, 1024 to 4096 are within 3% of each other
    threads: int = THREADS
    work_dir: Path | None = None
    results_dir: Path | None = None
    log: Callable[[str], None] = field(default=lambda line: print(line, file=sys.stderr, flush=True))


def run(options: Options) -> tuple[list[Row], dict[str, Any]]:
    """The whole benchmark: prepare, check equivalence, time the sides alternating; rows + JSON."""
    log = options.log
    with contextlib.ExitStack() as stack:
        work_dir = options.work_dir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-trl-"))
        )
        spec = options.spec
        log(f"[{NAME}] building the model and rollouts in {work_dir}")
        workload.prepare(spec, work_dir)
        _, _, rollouts = workload.load(work_dir)
        counts = count(spec, rollouts)
        plans = {"ours": plan_ours(spec, rollouts, options.batch_tokens)}
        log(f"[{NAME}] {counts.tokens} tokens ({counts.completion_tokens} completion); {plans}")

        log(f"[{NAME}] equivalence check on the first optimizer batch")
        equivalence = _worker("check", work_dir, options.threads)
        log(f"[{NAME}] {json.dumps(equivalence)}")

        load = [os.getloadavg()[0]]
        peaks = [matmul_peak_flops(threads=options.threads)]
        runs: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
        for rep in range(options.repetitions):
            order = SIDES if rep % 2 == 0 else tuple(reversed(SIDES))
            for side in order:
                result = _worker(side, work_dir, options.threads, _plan_args(plans.get(side)))
                runs[side].append(result)
                log(
                    f"[{NAME}] rep {rep + 1}/{options.repetitions} {side}: {result['seconds']:.1f}s "
                    f"(cpu {result['cpu_seconds']:.1f}s), peak {result['peak_rss_kib'] / 1024:.0f} MiB"
                )
        peaks.append(matmul_peak_flops(threads=options.threads))
        load.append(os.getloadavg()[0])
    peak = max(peaks)
    return summarize(spec, counts, plans, equivalence, runs, peak, options, load)


def _plan_args(plan: OursPlan | None) -> list[str]:
    if plan is None:
        return []
    return ["--batch-tokens", str(plan.batch_tokens), "--accumulation", str(plan.accumulation)]


def summarize(
    spec: WorkloadSpec,
    counts: Counts,
    plans: dict[str, OursPlan],
    equivalence: dict[str, Any],
    runs: dict[str, list[dict[str, Any]]],
    peak: float,
    options: Options,
    load: Sequence[float] = (),
) -> tuple[list[Row], dict[str, Any]]:
    """Median/min/max per side, ratios, the table rows and the JSON payload."""
    sides: dict[str, dict[str, Stats]] = {}
    for side, results in runs.items():
        sides[side] = {
            "seconds": Stats([r["seconds"] for r in results]),
            "cpu_seconds": Stats([r["cpu_seconds"] for r in results]),
            "tokens_per_second": Stats([counts.tokens / r["seconds"] for r in results]),
            "peak_rss_mib": Stats([r["peak_rss_kib"] / 1024 for r in results]),
            "training_rss_mib": Stats([(r["peak_rss_kib"] - r["baseline_rss_kib"]) / 1024 for r in results]),
            "flops_fraction": Stats([counts.flops / r["seconds"] / peak for r in results]),
        }
        if all("train_seconds" in r for r in results):
            # the training loop alone: what rows carrying sampling logprobs cost (no reference pass)
            sides[side]["loop_tokens_per_second"] = Stats(
                [counts.tokens / r["train_seconds"] for r in results]
            )
            sides[side]["loop_flops_fraction"] = Stats(
                [counts.flops / r["train_seconds"] / peak for r in results]
            )
    trl = sides[PEER]

    def paired(mine: str, peer: str, key: str, invert: bool = False) -> Stats:
        # Ratio within each repetition (the runs of one repetition are adjacent in time): on a
        # machine whose load changes, these vary much less than the ratio of two medians.
        values = sides[mine][key].values
        peers = sides[peer]["tokens_per_second" if key.endswith("tokens_per_second") else key].values
        return Stats([(p / m) if invert else (m / p) for m, p in zip(values, peers, strict=True)])

    ratios = {
        peer: {
            "tokens_per_second": paired("ours", peer, "tokens_per_second"),
            "loop_tokens_per_second": paired("ours", peer, "loop_tokens_per_second"),
            "cpu_seconds": paired("ours", peer, "cpu_seconds", invert=True),
            "training_rss": paired("ours", peer, "training_rss_mib"),
            "peak_rss": paired("ours", peer, "peak_rss_mib"),
        }
        for peer in SIDES
        if peer != "ours"
    }

    def spread(s: Stats, fmt: str) -> str:
        return f"{fmt.format(s.median)} ({fmt.format(s.low)}-{fmt.format(s.high)})"

    eq = equivalence["ours"]
    rows = [
        Row(
            NAME,
            "loss, first batch",
            f"{eq['loss']:.6g}",
            f"{equivalence['trl_loss']:.6g}",
            f"rel diff {eq['loss_rel_diff']:.0e}",
            f"<= {LOSS_RTOL:g}",
            eq["loss_rel_diff"] <= LOSS_RTOL,
        ),
        Row(
            NAME,
            "LoRA grads, first batch",
            f"max diff {eq['grad_max_abs_diff']:.1e}",
            f"max |g| {eq['grad_max_abs']:.1e}",
            f"rel diff {eq['grad_rel_diff']:.0e}",
            f"<= {GRAD_RTOL:g}",
            eq["grad_rel_diff"] <= GRAD_RTOL,
            f"cosine {eq['grad_cosine']:.6f}",
        ),
    ]
    n = f"median (min-max) of {options.repetitions}"
    mine = sides["ours"]

    def throughput(metric: str, key: str, peer: str, note: str, target: float | None = None) -> Row:
        ratio = ratios[peer][key]
        return Row(
            NAME,
            metric,
            spread(mine[key], "{:.0f}"),
            spread(sides[peer]["tokens_per_second"], "{:.0f}"),
            spread(ratio, "{:.2f}x"),
            f">= {target:g}x" if target is not None else "",
            ratio.median >= target if target is not None else None,
            note,
        )

    rows += [
        throughput(
            "trained tokens/s",
            "tokens_per_second",
            PEER,
            f"{n}; both with the old-logprob pass; CPU-time ratio "
            + spread(ratios[PEER]["cpu_seconds"], "{:.2f}x"),
            target=3.0,
        ),
        throughput(
            "trained tokens/s vs TRL on-policy",
            "tokens_per_second",
            "trl-on-policy",
            "TRL: ratio 1 at every step, no old-logprob pass (a different update after step 1)",
        ),
        throughput(
            "tokens/s, loop only vs TRL on-policy",
            "loop_tokens_per_second",
            "trl-on-policy",
            "neither side makes a reference pass (ours: rows carrying sampling logprobs)",
        ),
    ]
    mem = ratios[PEER]["training_rss"].median
    rows.append(
        Row(
            NAME,
            "RSS added by training, MiB",
            spread(mine["training_rss_mib"], "{:.0f}"),
            spread(trl["training_rss_mib"], "{:.0f}"),
            f"{mem:.2f}x",
            "<= 0.7x",
            mem <= 0.7,
            "peak minus RSS when training starts",
        )
    )
    rows.append(
        Row(
            NAME,
            "peak RSS of the process, MiB",
            spread(mine["peak_rss_mib"], "{:.0f}"),
            spread(trl["peak_rss_mib"], "{:.0f}"),
            f"{ratios[PEER]['peak_rss'].median:.2f}x",
            "",
            None,
            "includes torch, libraries, weights",
        )
    )
    rows.append(
        Row(
            NAME,
            "useful FLOP/s / matmul peak",
            spread(mine["flops_fraction"], "{:.1%}"),
            spread(trl["flops_fraction"], "{:.1%}"),
            "",
            ">= 35%",
            mine["flops_fraction"].median >= 0.35,
            f"loop only {mine['loop_flops_fraction'].median:.1%}; TRL on-policy "
            f"{sides['trl-on-policy']['flops_fraction'].median:.1%}; peak {peak / 1e9:.0f} GFLOP/s",
        )
    )
    payload = {
        "benchmark": NAME,
        "machine": machine(),
        "threads": options.threads,
        "load_average_1min": list(load),
        "workload": spec.to_json(),
        "tokens": counts.tokens,
        "completion_tokens": counts.completion_tokens,
        "useful_flops": counts.flops,
        "model_sizes": model_sizes(spec),
        "matmul_peak_flops": peak,
        "ours_plans": {side: asdict(plan) for side, plan in plans.items()},
        "trl_plan": {
            "per_device_train_batch_size": spec.group_size,
            "gradient_accumulation_steps": spec.samples // spec.optimizer_steps // spec.group_size,
            "num_generations": spec.group_size,
            "steps_per_generation": {
                "trl": spec.samples // spec.group_size,
                "trl-on-policy": spec.samples // spec.optimizer_steps // spec.group_size,
            },
        },
        "equivalence": equivalence,
        "repetitions": options.repetitions,
        "runs": runs,
        "summary": {side: {k: v.to_json() for k, v in stats.items()} for side, stats in sides.items()},
        "ratios": {peer: {k: v.to_json() for k, v in by_key.items()} for peer, by_key in ratios.items()},
        "ratio_note": "per repetition (runs of one repetition are adjacent), ours/peer, keyed by peer; "
        "cpu_seconds is peer/ours",
    }
    write_result(NAME, payload, options.results_dir)
    return rows, payload


def benchmark(quick: bool = False) -> list[Row]:
    """Entry point for `python -m bench` (quick: a smaller workload and one repetition)."""
    options = Options()
    if quick:
        options.spec = replace(options.spec, groups=16, completion_tokens=(4, 160), optimizer_steps=2)
        options.repetitions = 1
    rows, _ = run(options)
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    worker = sub.add_parser("worker", help="(internal) run one side in this process, print JSON")
    worker.add_argument("side", choices=[*SIDES, "check"])
    worker.add_argument("work_dir", type=Path)
    worker.add_argument("--threads", type=int, default=THREADS)
    worker.add_argument("--batch-tokens", type=int, default=1024)
    worker.add_argument("--accumulation", type=int, default=1)
    bench = sub.add_parser("run", help="run the benchmark")
    bench.add_argument("--repetitions", type=int, default=5)
    bench.add_argument("--batch-tokens", type=int, default=2048)
    bench.add_argument("--threads", type=int, default=THREADS)
    bench.add_argument("--work-dir", type=Path, help="keep the model and rollouts here (reused when present)")
    bench.add_argument("--results-dir", type=Path)
    args = parser.parse_args(argv)
    if args.command == "worker":
        _set_threads(args.threads)
        if args.side == "ours":
            result = run_ours(args.work_dir, args.batch_tokens, args.accumulation)
        elif args.side in ("trl", "trl-on-policy"):
            result = run_trl(args.work_dir, one_generation=args.side == "trl")
        else:
            result = check_equivalence(args.work_dir)
        print(json.dumps(result))
        return
    options = Options(
        repetitions=args.repetitions,
        batch_tokens=args.batch_tokens,
        threads=args.threads,
        work_dir=args.work_dir,
        results_dir=args.results_dir,
    )
    rows, _ = run(options)
    print(format_table(rows))


if __name__ == "__main__":
    main()
