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


def _launch(world: int, work_dir: Path) -> dict[str, Any]:
    module = [sys.executable, "-m", "bench.trainer_scaling", "worker", str(work_dir)]
    if world > 1:
        module = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={world}",
            "-m",
            "bench.trainer_scaling",
            "worker",
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


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    one = sub.add_parser("worker", help="(internal) one rank, under torchrun or alone")
    one.add_argument("work_dir", type=Path)
    args = parser.parse_args(argv)
    if args.command == "worker":
        worker(args.work_dir)


if __name__ == "__main__":
    main()
