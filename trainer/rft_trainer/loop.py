"""The optimisation loop of one reinforcement step: reference pass, then epochs of packed batches.

Order of work:
1. A no-grad reference pass over all samples computes the log-probabilities the importance ratio
   is taken against where the data has no sampling logprobs (the policy at the start of the step),
   and the base model's (adapter disabled) when a KL penalty is on. For a new adapter (B = 0) the
   two are the same numbers, so one pass, with the adapter disabled, serves both.
2. For each epoch: a seeded shuffle, token-budget packing, and optimizer steps of
   `gradient_accumulation_steps` packed batches each (times the world size under torchrun). The loss
   of each micro-batch is normalised by totals over the whole optimizer step, so accumulation does
   not change the aggregation.

Under torchrun (WORLD_SIZE > 1) the frozen base weights are sharded with FSDP2 (`sharding`), each
rank takes every world_size-th batch of an optimizer step, the replicated LoRA gradients are
all-reduced and averaged (so the loss is multiplied by the world size to keep the step's sum), and
the reference pass is split over the ranks and all-gathered.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from rft.contracts.trainer_config import ProgressReport
from torch.distributed.fsdp import FSDPModule

from rft_trainer import fused_lora, rotary
from rft_trainer.data import PackedBatch, Sample, epoch_order, pack
from rft_trainer.errors import BadInputError
from rft_trainer.logprobs import CompletionLogprobs, hf_model, row_tokens_for
from rft_trainer.loss import LossParams, Normalizers, policy_loss
from rft_trainer.resume import StepCheckpointer, StoppedError, agree_to_stop
from rft_trainer.sharding import all_reduce_replicated_grads, shard_frozen_base


@dataclass(frozen=True)
class OptimSettings:
    """Numbers the loop needs, resolved from TrainingParameters."""

    learning_rate: float
    weight_decay: float
    max_grad_norm: float
    warmup_steps: int
    gradient_accumulation_steps: int
    epochs: int
    batch_tokens: int
    max_context_length: int
    seed: int


@dataclass(frozen=True)
class Distributed:
    """This process's place in a torchrun job (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


@dataclass
class StepStats:
    """What one optimizer step measured."""

    loss: float = 0.0
    tokens: int = 0
    packed_tokens: int = 0
    pg_loss_sum: float = 0.0
    kl_sum: float = 0.0
    clipped_tokens: int = 0
    ratio_sum: float = 0.0
    adv_logp_sum: float = 0.0
    is_tokens: int = 0
    is_capped_tokens: int = 0
    is_weight_sum: float = 0.0
    sampler_gap_sum: float = 0.0
    logp_sum: float = 0.0
    grad_norm: float = 0.0
    seconds: float = 0.0
    # Of the step's sequences (every rank sees the whole group: not all-reduced).
    sequences: int = 0
    reward_sum: float = 0.0
    advantage_sum: float = 0.0

    def metrics(self) -> dict[str, float]:
        n = max(self.tokens, 1)
        off_policy: dict[str, float] = {}
        if self.is_tokens:
            # truncated importance sampling, over the tokens that carry a sampler logprob
            off_policy = {
                "is_capped_fraction": self.is_capped_tokens / self.is_tokens,
                "is_weight_mean": self.is_weight_sum / self.is_tokens,
                "sampler_logp_abs_diff": self.sampler_gap_sum / self.is_tokens,
            }
        return {
            **off_policy,
            "pg_loss": self.pg_loss_sum / n,
            "kl": self.kl_sum / n,
            "clip_fraction": self.clipped_tokens / n,
            "ratio_mean": self.ratio_sum / n,
            "adv_logp": self.adv_logp_sum / n,
            "grad_norm": self.grad_norm,
            # -mean log p of the completion tokens: the policy's entropy, estimated by Monte Carlo
            # when the completions were sampled from it (the full-vocabulary entropy is never computed).
            "entropy": -self.logp_sum / n,
            "mean_reward": self.reward_sum / max(self.sequences, 1),
            "mean_advantage": self.advantage_sum / max(self.sequences, 1),
            "completion_tokens": float(self.tokens),
            "tokens_per_second": self.packed_tokens / self.seconds if self.seconds > 0 else 0.0,
        }


@dataclass
class TrainOutcome:
    """Per-step history and totals of the run."""

    steps: list[StepStats] = field(default_factory=list)
    optimizer_steps: int = 0
    reference_seconds: float = 0.0
    train_seconds: float = 0.0
    packed_tokens: int = 0


ProgressCallback = Callable[[ProgressReport], None]


def plan_epoch(samples: Sequence[Sample], settings: OptimSettings, epoch: int) -> list[PackedBatch]:
    """The packed batches of one epoch (seeded shuffle, token budget)."""
    return pack(samples, epoch_order(len(samples), settings.seed, epoch), settings.batch_tokens)


def optimizer_step_groups(
    batches: Sequence[PackedBatch], accumulation: int, world_size: int
) -> Iterator[list[PackedBatch]]:
    """The batches of each optimizer step: `accumulation * world_size` at a time (the last may be short)."""
    size = accumulation * world_size
    for start in range(0, len(batches), size):
        yield list(batches[start : start + size])


def total_optimizer_steps(n_batches_per_epoch: Sequence[int], accumulation: int, world_size: int) -> int:
    """How many optimizer steps the plan takes."""
    size = accumulation * world_size
    return sum(math.ceil(n / size) for n in n_batches_per_epoch)


def warmup_factor(step: int, warmup_steps: int) -> float:
    """Linear warm-up over `warmup_steps` optimizer steps (0-based `step`), then constant."""
    if warmup_steps <= 0:
        return 1.0
    return min(1.0, (step + 1) / warmup_steps)


def _autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _to(batch: PackedBatch, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return (
        batch.input_ids.to(device),
        batch.position_ids.to(device),
        batch.target_positions.to(device),
    )


@torch.no_grad()
def reference_logprobs(
    scorer: CompletionLogprobs,
    batches: Sequence[PackedBatch],
    device: torch.device,
    dist: Distributed = Distributed(),
) -> dict[int, torch.Tensor]:
    """Per sample index: its completion tokens' log-probabilities under `scorer` as it is now (CPU)."""
    was_training = scorer.training
    scorer.eval()
    out: dict[int, torch.Tensor] = {}
    try:
        # Every rank runs the same number of forwards (each is a collective when sharded): a rank
        # whose share is short repeats the first batch and drops the result.
        for j in range(math.ceil(len(batches) / dist.world_size)):
            i = j * dist.world_size + dist.rank
            batch = batches[i] if i < len(batches) else batches[0]
            with _autocast(device):
                logp = scorer(*_to(batch, device)).float().cpu()
            if i >= len(batches):
                continue
            for k, index in enumerate(batch.sample_indices):
                out[index] = logp[batch.seq_ids == k]
    finally:
        scorer.train(was_training)
    if dist.enabled:
        gathered: list[dict[int, torch.Tensor] | None] = [None] * dist.world_size
        torch.distributed.all_gather_object(gathered, out)
        out = {k: v for part in gathered if part for k, v in part.items()}
    return out


def _gather(cache: dict[int, torch.Tensor], batch: PackedBatch) -> torch.Tensor:
    return torch.cat([cache[i] for i in batch.sample_indices])


class Trainer:
    """Runs the optimizer steps of one reinforcement step on a PEFT model."""

    def __init__(
        self,
        policy: Any,
        samples: Sequence[Sample],
        settings: OptimSettings,
        loss_params: LossParams,
        device: torch.device,
        *,
        new_adapter: bool,
        dist: Distributed = Distributed(),
    ) -> None:
        self.policy = policy
        self.samples = samples
        self.settings = settings
        self.loss_params = loss_params
        self.device = device
        self.new_adapter = new_adapter
        self.dist = dist
        # same numbers as PEFT's LoRA forward and transformers' rotary, fewer passes over memory
        fused_lora.install(policy)
        rotary.install(hf_model(policy))
        self.scorer = CompletionLogprobs(
            policy, row_tokens=row_tokens_for(policy, settings.max_context_length)
        )
        self.epoch_batches = [plan_epoch(samples, settings, e) for e in range(settings.epochs)]
        self.total_steps = total_optimizer_steps(
            [len(b) for b in self.epoch_batches], settings.gradient_accumulation_steps, dist.world_size
        )

    # -- reference pass ---------------------------------------------------------------------

    def _needs_policy_reference(self) -> bool:
        if self.loss_params.off_policy != "none":
            return True  # the clip ratio's reference is the policy at the start of the step
        return any(
            s.sampling_logprobs is None or any(map(math.isnan, s.sampling_logprobs)) for s in self.samples
        )

    def compute_references(self) -> tuple[dict[int, torch.Tensor] | None, dict[int, torch.Tensor] | None]:
        """(start-of-step policy logprobs or None, base logprobs or None), per sample index."""
        want_kl = self.loss_params.kl_coefficient > 0
        want_policy = self._needs_policy_reference() or (want_kl and self.new_adapter)
        batches = self.epoch_batches[0]
        policy_ref = None
        if want_policy:
            # A new adapter's B matrices are zero: the policy is exactly the base model, so the
            # pass skips the LoRA layers (bit-identical numbers, fewer matmuls).
            with self.policy.disable_adapter() if self.new_adapter else contextlib.nullcontext():
                policy_ref = reference_logprobs(self.scorer, batches, self.device, self.dist)
        base_ref = None
        if want_kl:
            if self.new_adapter:
                base_ref = policy_ref  # B = 0: the adapter adds exactly nothing yet
            else:
                with self.policy.disable_adapter():
                    base_ref = reference_logprobs(self.scorer, batches, self.device, self.dist)
        return policy_ref, base_ref

    # -- training ---------------------------------------------------------------------------

    def run(
        self, on_step: ProgressCallback | None = None, checkpointer: StepCheckpointer | None = None
    ) -> TrainOutcome:
        """Train for all epochs; calls `on_step` with a progress report after each optimizer step.

        With a `checkpointer`, continues from its saved in-step state (if any), saves every N
        optimizer steps and, after SIGTERM, saves and raises `StoppedError`."""
        settings = self.settings
        torch.manual_seed(settings.seed)
        outcome = TrainOutcome()
        started = time.perf_counter()
        if self.dist.enabled and not isinstance(self.scorer, FSDPModule):
            shard_frozen_base(self.scorer, self.policy, self.device, self.dist.world_size)
        policy_ref, base_ref = self.compute_references()
        outcome.reference_seconds = time.perf_counter() - started

        module: torch.nn.Module = self.scorer
        params = [p for p in self.policy.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=settings.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_factor(step, settings.warmup_steps)
        )
        done = 0
        restored = checkpointer.restore(self.policy, optimizer, scheduler) if checkpointer else None
        previous_seconds = 0.0
        if restored is not None:
            done = restored.step
            outcome.steps = [StepStats(**s) for s in restored.stats]
            outcome.optimizer_steps = done
            outcome.packed_tokens = restored.packed_tokens
            previous_seconds = restored.train_seconds
        self.policy.train()
        train_started = time.perf_counter()
        index = 0
        for epoch, batches in enumerate(self.epoch_batches, start=1):
            for group in optimizer_step_groups(
                batches, settings.gradient_accumulation_steps, self.dist.world_size
            ):
                index += 1
                if index <= done:
                    continue  # done before the in-step checkpoint this run continued from
                stats = self._optimizer_step(
                    module,
                    group,
                    params=params,
                    optimizer=optimizer,
                    policy_ref=policy_ref,
                    base_ref=base_ref,
                )
                scheduler.step()
                outcome.steps.append(stats)
                outcome.optimizer_steps += 1
                outcome.packed_tokens += stats.packed_tokens
                if on_step is not None:
                    on_step(
                        ProgressReport(
                            phase="training",
                            epoch=epoch,
                            step=outcome.optimizer_steps,
                            total_steps=self.total_steps,
                            loss=stats.loss,
                            metrics={**stats.metrics(), "lr": float(scheduler.get_last_lr()[0])},
                        )
                    )
                if checkpointer is not None:
                    self._checkpoint(
                        checkpointer, optimizer, scheduler, outcome, previous_seconds, train_started
                    )
        outcome.train_seconds = previous_seconds + time.perf_counter() - train_started
        self.policy.eval()
        return outcome

    def _checkpoint(
        self,
        checkpointer: StepCheckpointer,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        outcome: TrainOutcome,
        previous_seconds: float,
        train_started: float,
    ) -> None:
        step = outcome.optimizer_steps
        stop = agree_to_stop(checkpointer.stop, self.device, self.dist.enabled)
        if stop or checkpointer.should_save(step, self.total_steps):
            checkpointer.save(
                self.policy,
                optimizer,
                scheduler,
                step=step,
                stats=[dataclasses.asdict(s) for s in outcome.steps],
                packed_tokens=outcome.packed_tokens,
                train_seconds=previous_seconds + time.perf_counter() - train_started,
            )
        if stop:
            raise StoppedError(
                "Interrupted",
                f"stopped by SIGTERM after optimizer step {step} of {self.total_steps}; the in-step "
                "checkpoint was saved and a retried or resumed pod continues from it",
            )

    def _optimizer_step(
        self,
        module: torch.nn.Module,
        group: list[PackedBatch],
        *,
        params: list[torch.nn.Parameter],
        optimizer: torch.optim.Optimizer,
        policy_ref: dict[int, torch.Tensor] | None,
        base_ref: dict[int, torch.Tensor] | None,
    ) -> StepStats:
        started = time.perf_counter()
        norms = Normalizers(
            tokens=sum(b.n_completion_tokens for b in group),
            sequences=sum(b.n_sequences for b in group),
            max_context_length=self.settings.max_context_length,
        )
        # Rank r takes the r-th of every world_size batches. A short last step leaves some ranks a
        # batch short, but every rank must run as many forwards and backwards as the others (each
        # gathers sharded weights): they redo the step's first batch with weight 0.
        mine = [(b, 1.0) for b in group[self.dist.rank :: self.dist.world_size]]
        mine += [(group[0], 0.0)] * (math.ceil(len(group) / self.dist.world_size) - len(mine))
        stats = StepStats()
        optimizer.zero_grad(set_to_none=True)
        for batch, weight in mine:
            stats_part = self._micro_batch(
                module, batch, norms=norms, policy_ref=policy_ref, base_ref=base_ref, weight=weight
            )
            stats.loss += stats_part.loss
            stats.tokens += stats_part.tokens
            stats.packed_tokens += stats_part.packed_tokens
            stats.pg_loss_sum += stats_part.pg_loss_sum
            stats.kl_sum += stats_part.kl_sum
            stats.clipped_tokens += stats_part.clipped_tokens
            stats.ratio_sum += stats_part.ratio_sum
            stats.adv_logp_sum += stats_part.adv_logp_sum
            stats.is_tokens += stats_part.is_tokens
            stats.is_capped_tokens += stats_part.is_capped_tokens
            stats.is_weight_sum += stats_part.is_weight_sum
            stats.sampler_gap_sum += stats_part.sampler_gap_sum
            stats.logp_sum += stats_part.logp_sum
        if self.dist.enabled:
            all_reduce_replicated_grads(params, self.dist.world_size)
            stats = _all_reduce_stats(stats, self.device)
        stepped = [self.samples[i] for batch in group for i in batch.sample_indices]
        stats.sequences = len(stepped)
        stats.reward_sum = sum(s.reward for s in stepped)
        stats.advantage_sum = sum(s.advantage for s in stepped)
        max_norm = self.settings.max_grad_norm if self.settings.max_grad_norm > 0 else math.inf
        stats.grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
        if not (math.isfinite(stats.loss) and math.isfinite(stats.grad_norm)):
            # Checked before the update: a non-finite step would silently ruin the adapter.
            raise BadInputError(
                "TrainingFailed",
                f"training diverged: loss {stats.loss}, gradient norm {stats.grad_norm}. Lower "
                "training.learningRate, or check the rows' sampling logprobs (a ratio "
                "exp(policy - sampling) overflows when they are far off).",
            )
        optimizer.step()
        stats.seconds = time.perf_counter() - started
        return stats

    def _micro_batch(
        self,
        module: torch.nn.Module,
        batch: PackedBatch,
        *,
        norms: Normalizers,
        policy_ref: dict[int, torch.Tensor] | None,
        base_ref: dict[int, torch.Tensor] | None,
        weight: float = 1.0,
    ) -> StepStats:
        input_ids, position_ids, targets = _to(batch, self.device)
        with _autocast(self.device):
            logp = module(input_ids, position_ids, targets).float()
        ref = batch.sampling_logprobs
        sampler = None
        if policy_ref is not None and self.loss_params.off_policy != "none":
            # TIS: the sampler's logprobs are the behaviour policy, pi_old the ratio's reference
            sampler, ref = ref.to(self.device), _gather(policy_ref, batch)
        elif policy_ref is not None:
            ref = torch.where(torch.isnan(ref), _gather(policy_ref, batch), ref)
        base = _gather(base_ref, batch).to(self.device) if base_ref is not None else None
        out = policy_loss(
            logp,
            ref.to(self.device),
            batch.advantages.to(self.device),
            batch.seq_ids.to(self.device),
            batch.n_sequences,
            params=self.loss_params,
            norms=norms,
            base_logp=base,
            sampler_logp=sampler,
        )
        torch.autograd.backward(out.loss * (weight * self.dist.world_size))
        if weight == 0.0:
            return StepStats()
        return StepStats(
            loss=float(out.loss.detach()),
            tokens=out.tokens,
            packed_tokens=batch.n_tokens,
            pg_loss_sum=out.pg_loss_sum,
            kl_sum=out.kl_sum,
            clipped_tokens=out.clipped_tokens,
            ratio_sum=out.ratio_sum,
            adv_logp_sum=out.adv_logp_sum,
            is_tokens=out.is_tokens,
            is_capped_tokens=out.is_capped_tokens,
            is_weight_sum=out.is_weight_sum,
            sampler_gap_sum=out.sampler_gap_sum,
            logp_sum=float(logp.detach().sum()),
        )


_SUMMED_FIELDS = (
    "loss",
    "tokens",
    "packed_tokens",
    "pg_loss_sum",
    "kl_sum",
    "clipped_tokens",
    "ratio_sum",
    "adv_logp_sum",
    "is_tokens",
    "is_capped_tokens",
    "is_weight_sum",
    "sampler_gap_sum",
    "logp_sum",
)


def _all_reduce_stats(stats: StepStats, device: torch.device) -> StepStats:
    """Sum a step's statistics over all ranks (each rank saw only its share of the batches)."""
    values = torch.tensor(
        [float(getattr(stats, f)) for f in _SUMMED_FIELDS], dtype=torch.float64, device=device
    )
    torch.distributed.all_reduce(values)
    summed = StepStats(**dict(zip(_SUMMED_FIELDS, values.tolist(), strict=True)))
    summed.tokens = int(summed.tokens)
    summed.packed_tokens = int(summed.packed_tokens)
    summed.clipped_tokens = int(summed.clipped_tokens)
    summed.is_tokens = int(summed.is_tokens)
    summed.is_capped_tokens = int(summed.is_capped_tokens)
    return summed
