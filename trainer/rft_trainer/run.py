"""One reinforcement step from config to published adapter: setup, train, save, as separate steps."""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rft.api.model import AdapterCanary
from rft.contracts.trainer_config import ProgressReport, TrainerConfig, TrainerResult
from torch.distributed.fsdp import FSDPModule

from rft_trainer.canary import canary_logprobs, canary_tokens, record_canary
from rft_trainer.checkpoint import build_metadata, publish, save_adapter
from rft_trainer.data import SampleTokenizer, TokenizedDataset, tokenize_samples
from rft_trainer.dataset import LoadedDataset, ScoredDataset, load_dataset, parse_reward_weights, score_groups
from rft_trainer.errors import BadInputError
from rft_trainer.loop import Distributed, OptimSettings, StepStats, Trainer, TrainOutcome
from rft_trainer.loss import LossParams
from rft_trainer.metrics_log import MetricsLog, flops_per_token, peak_flops
from rft_trainer.model import (
    adapter_materialized_on,
    attach_new_adapter,
    attach_parent_adapter,
    check_parent_compatible,
    enable_gradient_checkpointing,
    load_base_model,
    load_base_model_on_meta,
    read_adapter_config,
    resolve_device,
    trainable_parameter_count,
)
from rft_trainer.progress import ProgressReporter
from rft_trainer.resume import StepCheckpointer, StopFlag, fingerprint
from rft_trainer.sharding import (
    load_sharded_base,
    loads_sharded,
    resident_bytes,
    shard_frozen_base,
    whole_root,
)
from rft_trainer.sources import fetch_base_model, fetch_parent_adapter, output_is_free
from rft_trainer.threads import cpu_threads
from rft_trainer.trackers import Tracker, open_mlflow


def optim_settings(config: TrainerConfig) -> OptimSettings:
    """The optimiser numbers from the CRD's decimal strings."""
    t = config.training
    return OptimSettings(
        learning_rate=float(t.learning_rate),
        weight_decay=float(t.weight_decay),
        max_grad_norm=float(t.max_grad_norm),
        warmup_steps=t.warmup_steps,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        epochs=t.epochs,
        batch_tokens=t.batch_size,
        max_context_length=t.max_context_length,
        seed=t.seed,
    )


def init_distributed(device_choice: str) -> tuple[Distributed, torch.device]:
    """Join the torchrun process group when WORLD_SIZE > 1; pick this rank's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed(), resolve_device(device_choice)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_choice != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local_rank)
    torch.distributed.init_process_group(backend="nccl" if use_cuda else "gloo")
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    return Distributed(rank=torch.distributed.get_rank(), world_size=world_size), device


@contextmanager
def scratch_directory(root: str) -> Iterator[Path]:
    """A fresh private directory under `root`, removed afterwards."""
    Path(root).mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="step-", dir=root))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@dataclass
class Prepared:
    """Everything training needs, loaded and checked."""

    dataset: LoadedDataset
    scored: ScoredDataset
    tokenized: TokenizedDataset
    policy: Any
    new_adapter: bool
    device: torch.device
    # The canary's tokens and their logprobs under the weights training starts from (computed
    # after the shards are loaded when the base was built on the meta device).
    canary_tokens: list[int]
    canary_start: list[float]
    # Where the ranks read their shards of the base from, when it was built on the meta device.
    sharded_load_from: str | None = None


def prepare(
    config: TrainerConfig,
    scratch: Path,
    reporter: ProgressReporter,
    device: torch.device,
    world_size: int = 1,
) -> Prepared:
    """Check the output is free, read and score the dataset, load the model and its adapter."""
    reporter.phase("loading", "checking the output location")
    if not output_is_free(config.output_url):
        raise BadInputError(
            "OutputExists",
            f"the output location {config.output_url} already holds objects; checkpoints are never "
            "overwritten (choose another output model name)",
        )
    reporter.phase("loading", "reading the dataset")
    dataset = load_dataset(config.dataset_url, config.dataset_digest, config.dataset_format)
    scored = score_groups(dataset.groups, parse_reward_weights(config.reward_weights), config.loss.advantage)
    reporter.log(
        f"dataset: {len(dataset.groups)} rows, {len(scored.samples)} samples, mean reward "
        f"{scored.mean_reward:.4g}, {scored.advantages.zero_signal_groups} rows with identical rewards (no signal)"
    )

    reporter.phase("loading", "loading the base model")
    source = fetch_base_model(
        config.base_model_url,
        scratch,
        allow_hub_download=config.allow_hub_download,
        files_digest=config.base_model_files_digest,
        pinned=config.base_model_files,
    )
    sharded_load = source.local_files_only and loads_sharded(source.location, world_size)
    if sharded_load:  # weights come later, each rank its shards (`sharding.load_sharded_base`)
        model, tokenizer = load_base_model_on_meta(source.location, device)
    else:
        model, tokenizer = load_base_model(source.location, device, local_files_only=source.local_files_only)
    lora = config.lora_settings()
    on_device = adapter_materialized_on(model, device) if sharded_load else contextlib.nullcontext()
    if config.parent_adapter_url and config.parent_model_name:
        reporter.phase("loading", f"loading the parent checkpoint {config.parent_model_name}")
        adapter_dir, parent_metadata = fetch_parent_adapter(
            config.parent_adapter_url, scratch, config.parent_model_name
        )
        check_parent_compatible(
            read_adapter_config(adapter_dir),
            parent_metadata,
            lora,
            config.base_model_name,
            config.parent_model_name,
            training=config.training_record(),
        )
        with on_device:
            policy = attach_parent_adapter(model, adapter_dir, config.parent_model_name)
        new_adapter = False
    else:
        with on_device:
            policy = attach_new_adapter(model, lora, config.training.seed)
        new_adapter = True
    tokens = canary_tokens(policy, tokenizer)
    start = [] if sharded_load else canary_logprobs(policy, tokens)
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(policy)

    tokenized = tokenize_samples(
        scored.samples,
        SampleTokenizer(
            tokenizer,
            config.training.max_context_length,
            vocab_size=model.get_input_embeddings().num_embeddings,
        ),
    )
    if not tokenized.samples:
        raise BadInputError(
            "InvalidDataset",
            f"line 0: no sample fits maxContextLength={config.training.max_context_length}: every prompt "
            "is at least that long",
        )
    if tokenized.skipped or tokenized.truncated:
        reporter.log(
            f"{tokenized.skipped} samples skipped (prompt too long), {tokenized.truncated} completions "
            f"truncated to maxContextLength={config.training.max_context_length}"
        )
    if tokenized.drifted:
        shown = ", ".join(f"line {line} {where} turn {turn}" for line, where, turn in tokenized.drifted[:10])
        reporter.log(
            f"re-tokenization drift: {len(tokenized.drifted)} assistant turns of "
            f"{tokenized.trajectory_samples} trajectory samples differ from the sampler's token ids once "
            f"re-rendered by the chat template ({shown}); their carried ids are trained, and "
            f"{tokenized.split} trajectories are split where a turn's context drifted"
        )
    return Prepared(
        dataset,
        scored,
        tokenized,
        policy,
        new_adapter,
        device,
        tokens,
        start,
        sharded_load_from=source.location if sharded_load else None,
    )


def _fmt(value: float) -> str:
    return f"{value:.6g}" if math.isfinite(value) else str(value)


def _off_policy_metrics(steps: list[StepStats]) -> dict[str, float]:
    """Truncated importance sampling over the run (rows with sampling logprobs only)."""
    tokens = sum(s.is_tokens for s in steps)
    if not tokens:
        return {}
    return {
        "is_capped_fraction": sum(s.is_capped_tokens for s in steps) / tokens,
        "is_weight_mean": sum(s.is_weight_sum for s in steps) / tokens,
        "sampler_logp_abs_diff": sum(s.sampler_gap_sum for s in steps) / tokens,
    }


def final_metrics(prepared: Prepared, outcome: TrainOutcome) -> dict[str, str]:
    """The run's metrics as decimal strings (the Model and the step status record them)."""
    steps = outcome.steps
    tokens = max(sum(s.tokens for s in steps), 1)
    scored = prepared.scored
    adv = [a for group in scored.advantages.values for a in group]
    metrics = {
        "loss": sum(s.loss for s in steps) / max(len(steps), 1),
        "mean_reward": scored.mean_reward,
        "reward_std": scored.reward_std,
        "advantage_abs_mean": sum(abs(a) for a in adv) / len(adv),
        "kl": sum(s.kl_sum for s in steps) / tokens,
        "clip_fraction": sum(s.clipped_tokens for s in steps) / tokens,
        "adv_logp_first_step": steps[0].metrics()["adv_logp"] if steps else 0.0,
        "adv_logp_last_step": steps[-1].metrics()["adv_logp"] if steps else 0.0,
        "grad_norm_last_step": steps[-1].grad_norm if steps else 0.0,
        "rows": len(prepared.dataset.groups),
        "samples": len(prepared.tokenized.samples),
        "zero_signal_rows": scored.advantages.zero_signal_groups,
        "truncated_samples": prepared.tokenized.truncated,
        "skipped_samples": prepared.tokenized.skipped,
        "drifted_turns": len(prepared.tokenized.drifted),
        **_off_policy_metrics(steps),
        "optimizer_steps": outcome.optimizer_steps,
        "trained_tokens": outcome.packed_tokens,
        "train_seconds": outcome.train_seconds,
        "tokens_per_second": outcome.packed_tokens / outcome.train_seconds
        if outcome.train_seconds > 0
        else 0.0,
    }
    return {k: _fmt(float(v)) for k, v in metrics.items()}


def open_trackers(config: TrainerConfig, reporter: ProgressReporter) -> list[Tracker]:
    """The experiment trackers the config names (a tracker that cannot be reached is skipped with a warning)."""
    if config.mlflow is None:
        return []
    params = {
        **{f"training.{k}": str(v) for k, v in config.training.to_wire().items()},
        **{f"loss.{k}": str(v) for k, v in config.loss.to_wire().items()},
        "base_model": config.base_model_name,
        "parent_model": config.parent_model_name or "",
        "dataset_digest": config.dataset_digest,
        "output_url": config.output_url,
    }
    tracker = open_mlflow(
        config.mlflow,
        run_key=config.step_uid or f"{config.namespace}/{config.step_name}",
        run_name=f"{config.namespace}/{config.step_name}",
        params={k: v[:500] for k, v in params.items()},
        tags={
            "rft.namespace": config.namespace,
            "rft.step": config.step_name,
            "rft.output_model": config.output_model_name,
        },
        warn=reporter.log,
    )
    return [tracker] if tracker is not None else []


def open_metrics_log(
    config: TrainerConfig, prepared: Prepared, scratch: Path, reporter: ProgressReporter
) -> MetricsLog:
    """The run's per-optimizer-step series, written under scratch until it is published."""
    parameters = sum(p.numel() for p in prepared.policy.parameters())
    return MetricsLog(
        scratch / "series",
        flops_per_token=flops_per_token(parameters, gradient_checkpointing=config.gradient_checkpointing),
        peak_flops=peak_flops(prepared.device),
        run_name=config.output_model_name,
        trackers=open_trackers(config, reporter),
    )


def publish_result(
    config: TrainerConfig,
    prepared: Prepared,
    outcome: TrainOutcome,
    canary: AdapterCanary,
    series: MetricsLog,
    scratch: Path,
    reporter: ProgressReporter,
) -> TrainerResult:
    """Save the adapter with its per-step series and lineage, publish it, and summarise the run."""
    reporter.phase("writing_results", f"publishing the adapter to {config.output_url}")
    metrics = final_metrics(prepared, outcome)
    adapter_dir = save_adapter(prepared.policy, scratch / "adapter", config.base_model_name)
    series.copy_into(adapter_dir)  # the per-step series is published with the adapter
    metadata = build_metadata(
        config,
        dataset_digest=prepared.dataset.digest,
        dataset_rows=len(prepared.dataset.groups),
        dataset_samples=len(prepared.scored.samples),
        metrics=metrics,
        trainable_parameters=trainable_parameter_count(prepared.policy),
    )
    files = publish(adapter_dir, config.output_url, metadata)
    return TrainerResult(
        output_location=config.output_url,
        files=files,
        metrics=metrics,
        dataset_digest=prepared.dataset.digest,
        lora=config.lora_settings(),
        training=config.training_record(),
        canary=canary,
    )


def run_step(config: TrainerConfig, reporter: ProgressReporter) -> TrainerResult | None:
    """Run the whole step; returns the result on rank 0 (None on other ranks)."""
    dist, device = init_distributed(config.device)
    if device.type == "cpu":
        torch.set_num_threads(cpu_threads())
    stop = StopFlag()
    try:
        with scratch_directory(config.scratch_dir) as scratch, stop.on_sigterm():
            prepared = prepare(config, scratch, reporter, device, dist.world_size)
            trainer = Trainer(
                prepared.policy,
                prepared.tokenized.samples,
                optim_settings(config),
                LossParams.from_settings(config.loss),
                device,
                new_adapter=prepared.new_adapter,
                dist=dist,
            )
            if dist.enabled:
                shard_frozen_base(trainer.scorer, prepared.policy, device, dist.world_size)
                if prepared.sharded_load_from is not None:
                    load_sharded_base(trainer.scorer, prepared.policy, prepared.sharded_load_from, device)
                held = resident_bytes(prepared.policy)
                reporter.log(
                    f"FSDP2: the frozen base is sharded over {dist.world_size} ranks, "
                    f"{held['frozen_parameters'] / 2**20:.1f} MiB of it on this rank; the LoRA "
                    f"parameters ({held['trainable_parameters'] / 2**20:.1f} MiB) are replicated; "
                    + (
                        "each rank read only its shards of the base"
                        if prepared.sharded_load_from is not None
                        else "each rank loaded the whole base first"
                    )
                )
            if prepared.sharded_load_from is not None and isinstance(trainer.scorer, FSDPModule):
                # through the FSDP2 root (a collective: every rank), now that the weights are in
                prepared.canary_start = canary_logprobs(
                    prepared.policy, prepared.canary_tokens, scorer=trainer.scorer
                )
                trainer.scorer.reshard()  # the root keeps its weights gathered after a forward
            mean_reward = prepared.scored.mean_reward
            series = open_metrics_log(config, prepared, scratch, reporter) if dist.rank == 0 else None
            reporter.update(
                ProgressReport(
                    phase="training",
                    epoch=1,
                    step=0,
                    total_steps=trainer.total_steps,
                    mean_reward=mean_reward,
                    message=f"{trainable_parameter_count(prepared.policy)} trainable parameters",
                )
            )

            def on_step(report: ProgressReport) -> None:
                if series is not None:
                    values = series.record(
                        report.step, report.epoch, {"loss": report.loss or 0.0, **report.metrics}
                    )
                    values.pop("loss")
                    reporter.update(report.model_copy(update={"mean_reward": mean_reward, "metrics": values}))

            checkpointer = StepCheckpointer(
                config.output_url,
                scratch,
                every_steps=config.training.checkpoint_every_steps,
                fingerprint=fingerprint(config, dist.world_size),
                rank=dist.rank,
                stop=stop,
                log=reporter.log,
                series=series,
            )
            try:
                outcome = trainer.run(on_step, checkpointer)
                # On every rank: with sharded weights each forward is a collective.
                with whole_root(trainer.scorer):
                    canary = record_canary(prepared.policy, prepared.canary_tokens, prepared.canary_start)
                if series is None:
                    return None
                # The output prefix must be empty for the create-only publish: the in-step state goes.
                checkpointer.discard()
                result = publish_result(config, prepared, outcome, canary, series, scratch, reporter)
            except BaseException:
                if series is not None:
                    series.finish(succeeded=False)
                raise
            finally:
                if series is not None:
                    series.close()
            series.finish(succeeded=True)
            return result
    finally:
        if dist.enabled:
            torch.distributed.destroy_process_group()
