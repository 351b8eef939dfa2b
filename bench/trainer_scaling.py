"""Sharded training on 1, 2 and 4 CPU ranks (torchrun, gloo): tokens/s as a ratio to one process,
and the memory each rank holds.

The workload is the benchmark's (bench/workload.py: a 4-layer Qwen2-shaped model, hidden 256,
vocabulary 4096, 512 stored completions, 8 optimizer steps). One process runs the trainer's loop
as `trainer_vs_trl` does; N ranks run it under `torch.distributed.run` with the frozen base
sharded by FSDP2 (`rft_trainer.sharding`), each optimizer step taking the same packed batches
(gradient accumulation divided by N). The machine's cores are shared: one process gets THREADS
torch threads, N ranks get max(1, THREADS // N) each, so the ratio shows what sharding costs on
the same CPUs (communication, padding, more processes), not a speed-up from more hardware.

Per rank it reports the bytes torch holds for the model's parameters (the local shards of the
sharded ones), the LoRA gradients and AdamW state (2 x the LoRA parameters), and the resident set
after sharding and its peak during training (VmRSS / VmHWM, which include the Python and torch
runtime of every process).

    python -m bench trainer_scaling          # writes bench/results/trainer_scaling.json

`trainer_load_memory` (below, in this module) measures loading instead: the peak resident set of
each rank from start to the end of the first optimizer step, on a model large enough that its
weights dominate the process (LOAD_SPEC: 16 layers, hidden 1024, 184M weights stored in bfloat16
as real checkpoints are, 368 MB of safetensors, 736 MB in the trainer's float32), with the two ways the trainer can load a base under torchrun: `whole` (every rank
loads the whole base with `from_pretrained`, then FSDP2 shards it; the only way before, and still
the fallback) and `sharded` (meta-device model, adapter, FSDP2, then each rank reads only its
slices: `rft_trainer.sharding.load_sharded_base`). One process loads whole (no sharding).

    python -m bench trainer_load_memory      # writes bench/results/trainer_load_memory.json
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import workload
from bench.common import THREADS, Row, machine, peak_rss_kib, reset_peak_rss, rss_kib, write_result

NAME = "trainer_scaling"
RANKS = (1, 2, 4)
BATCH_TOKENS = 2048

LOAD_NAME = "trainer_load_memory"
# Weights dominate: 184M parameters stored in bfloat16 like real checkpoints (368 MB of
# safetensors; 736 MB once in float32, the trainer's CPU dtype), a step of four short completions.
LOAD_SPEC = workload.WorkloadSpec(
    layers=16,
    hidden_size=1024,
    heads=16,
    kv_heads=4,
    intermediate_size=2816,
    vocab_size=4096,
    groups=2,
    group_size=2,
    prompt_words=(4, 8),
    completion_tokens=(4, 16),
    optimizer_steps=1,
    weights_dtype="bfloat16",
)
LOAD_MODES = ("whole", "sharded")


def worker(work_dir: Path) -> None:
    """One rank (or the single process): train the epoch, print this run's figures (rank 0)."""
    import torch  # noqa: PLC0415 - the driver does not need torch
    from rft_trainer.loop import Distributed, Trainer  # noqa: PLC0415
    from rft_trainer.sharding import resident_bytes, shard_frozen_base  # noqa: PLC0415

    from bench.trainer_vs_trl import _load_policy, _loss_params, _optim_settings, ours_samples, plan_ours  # noqa: PLC0415

    world = int(os.environ.get("WORLD_SIZE", "1"))
    torch.set_num_threads(max(1, THREADS // world))
    dist = Distributed()
    if world > 1:
        torch.distributed.init_process_group("gloo")
        dist = Distributed(rank=torch.distributed.get_rank(), world_size=world)
    spec, _, rollouts = workload.load(work_dir)
    plan = plan_ours(spec, rollouts, BATCH_TOKENS)
    policy, _ = _load_policy(work_dir, spec)
    longest = max(r.length for r in rollouts)
    trainer = Trainer(
        policy,
        ours_samples(rollouts, spec.group_size),
        _optim_settings(spec, plan.batch_tokens, math.ceil(plan.accumulation / world), longest),
        _loss_params(),
        torch.device("cpu"),
        new_adapter=True,
        dist=dist,
    )
    if dist.enabled:
        shard_frozen_base(trainer.scorer, policy, torch.device("cpu"), world)
    gc.collect()
    after_shard = rss_kib()
    reset_peak_rss()
    started = time.perf_counter()
    outcome = trainer.run()
    seconds = time.perf_counter() - started
    held = resident_bytes(policy)
    held["optimizer_state"] = 2 * held["trainable_parameters"]  # AdamW: exp_avg and exp_avg_sq
    mine = {
        "rank": dist.rank,
        "bytes": held,
        "rss_after_shard_kib": after_shard,
        "peak_rss_during_training_kib": peak_rss_kib(),
    }
    ranks = [mine]
    if dist.enabled:
        gathered: list[Any] = [None] * world
        torch.distributed.all_gather_object(gathered, mine)
        ranks = gathered
    if dist.rank == 0:
        print(
            json.dumps(
                {
                    "world_size": world,
                    "threads_per_rank": torch.get_num_threads(),
                    "seconds": seconds,
                    "reference_seconds": outcome.reference_seconds,
                    "train_seconds": outcome.train_seconds,
                    "optimizer_steps": outcome.optimizer_steps,
                    "processed_tokens": outcome.packed_tokens,
                    "tokens_per_second": outcome.packed_tokens / outcome.train_seconds,
                    "final_loss": outcome.steps[-1].loss,
                    "ranks": ranks,
                }
            ),
            flush=True,
        )
    if dist.enabled:
        torch.distributed.barrier()  # no rank tears gloo down while another still prints
        torch.distributed.destroy_process_group()


def load_worker(work_dir: Path, mode: str) -> None:
    """One rank: load the base (`mode`), attach the adapter, shard, run the first (only) optimizer
    step; print each rank's resident set after loading and its peak over the whole run (rank 0)."""
    import torch  # noqa: PLC0415 - the driver does not need torch
    from rft.api.model import LoraSettings  # noqa: PLC0415
    from rft_trainer.loop import Distributed, Trainer  # noqa: PLC0415
    from rft_trainer.model import (  # noqa: PLC0415
        adapter_materialized_on,
        attach_new_adapter,
        load_base_model,
        load_base_model_on_meta,
    )
    from rft_trainer.sharding import load_sharded_base, resident_bytes, shard_frozen_base  # noqa: PLC0415

    from bench.trainer_vs_trl import _loss_params, _optim_settings, ours_samples, plan_ours  # noqa: PLC0415

    world = int(os.environ.get("WORLD_SIZE", "1"))
    torch.set_num_threads(max(1, THREADS // world))
    dist = Distributed()
    if world > 1:
        torch.distributed.init_process_group("gloo")
        dist = Distributed(rank=torch.distributed.get_rank(), world_size=world)
    spec, _, rollouts = workload.load(work_dir)
    cpu = torch.device("cpu")
    gc.collect()
    before_load = rss_kib()
    started = time.perf_counter()
    model_dir = str(work_dir / "model")
    lora = LoraSettings(
        rank=spec.lora_rank, alpha=spec.lora_alpha, target_modules=list(workload.LORA_TARGETS)
    )
    if mode == "sharded":
        model, _ = load_base_model_on_meta(model_dir, cpu)
        with adapter_materialized_on(model, cpu):
            policy = attach_new_adapter(model, lora, spec.seed)
    else:
        model, _ = load_base_model(model_dir, cpu)
        policy = attach_new_adapter(model, lora, spec.seed)
    plan = plan_ours(spec, rollouts, BATCH_TOKENS)
    longest = max(r.length for r in rollouts)
    trainer = Trainer(
        policy,
        ours_samples(rollouts, spec.group_size),
        _optim_settings(spec, plan.batch_tokens, math.ceil(plan.accumulation / world), longest),
        _loss_params(),
        cpu,
        new_adapter=True,
        dist=dist,
    )
    if dist.enabled:
        shard_frozen_base(trainer.scorer, policy, cpu, world)
        if mode == "sharded":
            load_sharded_base(trainer.scorer, policy, model_dir, cpu)
    gc.collect()
    load_seconds = time.perf_counter() - started
    after_load = rss_kib()
    peak_load = peak_rss_kib()
    outcome = trainer.run()
    held = resident_bytes(policy)
    mine = {
        "rank": dist.rank,
        "rss_before_load_kib": before_load,
        "rss_after_load_kib": after_load,
        "peak_rss_to_load_kib": peak_load,
        "peak_rss_to_first_step_kib": peak_rss_kib(),
        "frozen_bytes": held["frozen_parameters"],
        "load_seconds": load_seconds,
    }
    ranks = [mine]
    if dist.enabled:
        gathered: list[Any] = [None] * world
        torch.distributed.all_gather_object(gathered, mine)
        ranks = gathered
    if dist.rank == 0:
        print(
            json.dumps(
                {
                    "world_size": world,
                    "mode": mode,
                    "optimizer_steps": outcome.optimizer_steps,
                    "loss": outcome.steps[-1].loss,
                    "ranks": ranks,
                }
            ),
            flush=True,
        )
    if dist.enabled:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def _launch(world: int, work_dir: Path, command: Sequence[str] = ("worker",)) -> dict[str, Any]:
    module = [sys.executable, "-m", "bench.trainer_scaling", *command, str(work_dir)]
    if world > 1:
        module = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={world}",
            "-m",
            "bench.trainer_scaling",
            *command,
            str(work_dir),
        ]
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": str(max(1, THREADS // world))}
    proc = subprocess.run(module, env=env, capture_output=True, text=True, timeout=1200, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{world} rank(s) failed:\n{proc.stderr[-3000:]}")
    lines = [line for line in proc.stdout.splitlines() if line.startswith('{"')]
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def run(
    work_dir: Path, ranks: Sequence[int] = RANKS, spec: workload.WorkloadSpec | None = None
) -> dict[str, Any]:
    workload.prepare(spec or workload.WorkloadSpec(), work_dir)
    runs = {str(n): _launch(n, work_dir) for n in ranks}
    base = runs[str(ranks[0])]
    return {
        "benchmark": NAME,
        "machine": machine(),
        "load_average_1min": os.getloadavg()[0],
        "workload": (spec or workload.WorkloadSpec()).to_json(),
        "runs": runs,
        "scaling_ratio_tokens_per_second": {
            n: r["tokens_per_second"] / base["tokens_per_second"] for n, r in runs.items()
        },
        "frozen_bytes_per_rank_ratio": {
            n: r["ranks"][0]["bytes"]["frozen_parameters"] / base["ranks"][0]["bytes"]["frozen_parameters"]
            for n, r in runs.items()
        },
        "loss_same_as_one_process": {
            n: abs(r["final_loss"] - base["final_loss"]) <= 1e-4 * max(1.0, abs(base["final_loss"]))
            for n, r in runs.items()
        },
    }


def benchmark(quick: bool = False) -> list[Row]:
    """Entry point for `python -m bench` (quick: a smaller workload, 1 and 2 ranks)."""
    spec = workload.WorkloadSpec()
    ranks: Sequence[int] = RANKS
    if quick:
        spec = workload.WorkloadSpec(groups=16, completion_tokens=(4, 160), optimizer_steps=2)
        ranks = (1, 2)
    with tempfile.TemporaryDirectory(prefix="rft-bench-scaling-") as tmp:
        payload = run(Path(tmp), ranks, spec)
    if not quick:
        write_result(NAME, payload)
    rows = []
    for n, r in payload["runs"].items():
        held = r["ranks"][0]["bytes"]
        rows.append(
            Row(
                NAME,
                f"tokens/s, {n} rank(s)",
                f"{r['tokens_per_second']:.0f}",
                ratio=f"{payload['scaling_ratio_tokens_per_second'][n]:.2f}",
                note=f"base weights per rank {held['frozen_parameters'] / 2**20:.1f} MiB, "
                f"peak RSS {r['ranks'][0]['peak_rss_during_training_kib'] / 1024:.0f} MiB",
            )
        )
    return rows


def run_load_memory(work_dir: Path, ranks: Sequence[int] = RANKS) -> dict[str, Any]:
    """Peak RSS per rank to the end of the first step, whole vs sharded loading, for each world size."""
    workload.prepare(LOAD_SPEC, work_dir)
    model_bytes = sum(f.stat().st_size for f in (work_dir / "model").glob("*.safetensors"))
    runs: dict[str, dict[str, Any]] = {}
    for n in ranks:
        modes = LOAD_MODES if n > 1 else ("whole",)  # one process never shards
        runs[str(n)] = {mode: _launch(n, work_dir, ("load-worker", mode)) for mode in modes}

    return {
        "benchmark": LOAD_NAME,
        "machine": machine(),
        "load_average_1min": os.getloadavg()[0],
        "workload": LOAD_SPEC.to_json(),
        "safetensors_bytes": model_bytes,
        "runs": runs,
        **load_summary(runs),
    }


def load_summary(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Ratios of the highest rank's peaks: while loading (to the weights sharded and in), and to
    the end of the first step; each world size's sharded load against its whole load, and the
    growth of the resident set while loading (peak minus the resident set before it)."""

    def peak(run: dict[str, Any], key: str) -> int:
        return max(int(r[key]) for r in run["ranks"])

    def growth(run: dict[str, Any]) -> int:
        return max(int(r["peak_rss_to_load_kib"]) - int(r["rss_before_load_kib"]) for r in run["ranks"])

    sharded = {n: by_mode for n, by_mode in runs.items() if "sharded" in by_mode}
    return {
        "load_growth_kib": {
            n: {mode: growth(r) for mode, r in by_mode.items()} for n, by_mode in runs.items()
        },
        "load_growth_ratio_sharded_to_whole": {
            n: growth(by_mode["sharded"]) / growth(by_mode["whole"]) for n, by_mode in sharded.items()
        },
        "peak_rss_to_load_ratio_sharded_to_whole": {
            n: peak(by_mode["sharded"], "peak_rss_to_load_kib")
            / peak(by_mode["whole"], "peak_rss_to_load_kib")
            for n, by_mode in sharded.items()
        },
        "peak_rss_to_first_step_ratio_sharded_to_whole": {
            n: peak(by_mode["sharded"], "peak_rss_to_first_step_kib")
            / peak(by_mode["whole"], "peak_rss_to_first_step_kib")
            for n, by_mode in sharded.items()
        },
        "same_loss_sharded_and_whole": {
            n: by_mode["sharded"]["loss"] == by_mode["whole"]["loss"] for n, by_mode in sharded.items()
        },
    }


def load_memory_benchmark(quick: bool = False) -> list[Row]:
    """Entry point for `python -m bench trainer_load_memory` (quick: 1 and 2 ranks, not written)."""
    ranks: Sequence[int] = (1, 2) if quick else RANKS
    with tempfile.TemporaryDirectory(prefix="rft-bench-load-") as tmp:
        payload = run_load_memory(Path(tmp), ranks)
    if not quick:
        write_result(LOAD_NAME, payload)
    rows = []
    for n, by_mode in payload["runs"].items():
        for mode, r in by_mode.items():
            load = max(int(x["peak_rss_to_load_kib"]) for x in r["ranks"])
            step = max(int(x["peak_rss_to_first_step_kib"]) for x in r["ranks"])
            ratio = payload["load_growth_ratio_sharded_to_whole"].get(n) if mode == "sharded" else None
            rows.append(
                Row(
                    LOAD_NAME,
                    f"peak RSS per rank while loading, {n} rank(s), {mode} load",
                    f"{load / 1024:.0f} MiB",
                    ratio=f"{ratio:.2f}" if ratio is not None else "",
                    note=f"growth while loading {payload['load_growth_kib'][n][mode] / 1024:.0f} MiB "
                    f"(ratio: sharded/whole); base weights per rank {r['ranks'][0]['frozen_bytes'] / 2**20:.0f} MiB; "
                    f"peak to the end of the first step {step / 1024:.0f} MiB",
                )
            )
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    one = sub.add_parser("worker", help="(internal) one rank, under torchrun or alone")
    one.add_argument("work_dir", type=Path)
    load = sub.add_parser("load-worker", help="(internal) one rank of the load-memory measurement")
    load.add_argument("mode", choices=LOAD_MODES)
    load.add_argument("work_dir", type=Path)
    args = parser.parse_args(argv)
    if args.command == "worker":
        worker(args.work_dir)
    elif args.command == "load-worker":
        load_worker(args.work_dir, args.mode)


if __name__ == "__main__":
    main()
