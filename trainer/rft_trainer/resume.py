"""In-step checkpoints: a killed, preempted or suspended trainer pod continues where it stopped.

Every `training.checkpointEverySteps` optimizer steps, and when the pod gets SIGTERM (suspend,
preemption, node drain), rank 0 writes one object, `<output>/_resume/state.pt`, holding everything
the rest of the step depends on: the trainable (LoRA) tensors, the optimizer and scheduler state,
the RNG states, the number of optimizer steps done (the data order is a pure function of the seed
and the epoch, so that number is the position in the data) and the per-step statistics the final
metrics are computed from. It is one object, replaced in place: a reader sees the old or the new
state, never half of one.

A new pod of the same step (a Job retry, or the Job resumed after `spec.suspend`) finds it,
checks that it was written by the same run (a fingerprint of the dataset digest, the base model,
the parent, the training and loss settings and the world size), restores it after the reference
pass (which depends only on the weights the step starts from, so it is recomputed exactly), skips
the optimizer steps already done and logs from which step it continues.

The scratch prefix is never a checkpoint (no commit marker: no reader trusts it, no Model points
at it) and it is removed when training ends, just before the adapter is published create-only to
the then-empty output prefix.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

import torch
from rft.contracts.trainer_config import EXIT_INFRASTRUCTURE, TrainerConfig
from rft.storage import download_file, exists, list_objects, upload_file
from rft.storage.checkpoints import discard_uncommitted

from rft_trainer.errors import TrainerError
from rft_trainer.sources import resume_prefix

STATE_FILE = "state.pt"
STATE_FORMAT = "rft-operator/in-step-checkpoint/v1"


class StoppedError(TrainerError):
    """SIGTERM arrived: the state was saved and the pod stops; a retry continues (exit 2)."""

    exit_code = EXIT_INFRASTRUCTURE


def fingerprint(config: TrainerConfig, world_size: int) -> str:
    """What a saved state must have been trained with to be continued by this run."""
    training = config.training.to_wire()
    training.pop("checkpointEverySteps", None)  # how often to save does not change the numbers
    identity = {
        "step": config.step_name,
        "dataset": config.dataset_digest,
        "rewardWeights": config.reward_weights,
        "base": [config.base_model_name, config.base_model_files_digest],
        "parent": config.parent_adapter_url,
        "training": training,
        "loss": config.loss.to_wire(),
        "worldSize": world_size,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


class StopFlag:
    """Set by SIGTERM while installed; the loop saves and stops at the next optimizer step."""

    def __init__(self) -> None:
        self._event = threading.Event()

    @property
    def is_set(self) -> bool:
        return self._event.is_set()

    def set(self) -> None:
        self._event.set()

    @contextmanager
    def on_sigterm(self) -> Iterator[StopFlag]:
        """Install the SIGTERM handler for the duration (main thread only; elsewhere a no-op)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return

        def handler(_signum: int, _frame: FrameType | None) -> None:
            self._event.set()

        previous = signal.signal(signal.SIGTERM, handler)
        try:
            yield self
        finally:
            signal.signal(signal.SIGTERM, previous)


class SeriesLog(Protocol):
    """The run's per-step series (rft_trainer.metrics_log.MetricsLog), kept in the in-step state."""

    def lines(self) -> list[dict[str, Any]]: ...

    def replay(self, lines: list[dict[str, Any]]) -> None: ...


@dataclasses.dataclass
class Restored:
    """What a saved state gives back to the loop."""

    step: int
    stats: list[dict[str, Any]]
    packed_tokens: int
    train_seconds: float


class StepCheckpointer:
    """Saves and restores the in-step checkpoint of one run (rank 0 writes, every rank reads)."""

    def __init__(
        self,
        output_url: str,
        scratch: Path,
        *,
        every_steps: int,
        fingerprint: str,
        rank: int = 0,
        stop: StopFlag | None = None,
        log: Any = print,
        series: SeriesLog | None = None,
    ) -> None:
        self.series = series
        self.url = resume_prefix(output_url) + STATE_FILE
        self.prefix = resume_prefix(output_url)
        self.scratch = scratch
        self.every_steps = every_steps
        self.fingerprint = fingerprint
        self.rank = rank
        self.stop = stop or StopFlag()
        self.log = log

    # -- restore ----------------------------------------------------------------------------

    def load(self) -> dict[str, Any] | None:
        """The saved state of this run, or None (nothing saved, or saved by another run)."""
        if not exists(self.url):
            return None
        local = self.scratch / f"resume-rank{self.rank}.pt"
        download_file(self.url, local)
        try:
            # weights_only: tensors and plain containers, never pickled code from the bucket
            state: dict[str, Any] = torch.load(local, map_location="cpu", weights_only=True)
        finally:
            local.unlink(missing_ok=True)
        if state.get("format") != STATE_FORMAT or state.get("fingerprint") != self.fingerprint:
            self.log(f"ignoring the in-step checkpoint at {self.url}: another run wrote it; starting over")
            return None
        return state

    def restore(self, policy: Any, optimizer: torch.optim.Optimizer, scheduler: Any) -> Restored | None:
        """Load the saved state into the model, optimizer, scheduler and RNG; None to start over."""
        state = self.load()
        if state is None:
            return None
        params = dict(trainable_parameters(policy))
        saved: dict[str, torch.Tensor] = state["adapter"]
        if saved.keys() != params.keys():
            self.log(f"ignoring the in-step checkpoint at {self.url}: its tensors differ from the adapter's")
            return None
        with torch.no_grad():
            for name, param in params.items():
                param.copy_(saved[name].to(param.device))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["cpu"])
        if torch.cuda.is_available() and state["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(state["rng"]["cuda"])
        step = int(state["step"])
        if self.series is not None:
            # The per-step series so far (rank 0): the published series has every optimizer step.
            self.series.replay(list(state.get("series", [])))
        self.log(f"resuming from the in-step checkpoint at optimizer step {step} ({self.url})")
        return Restored(
            step=step,
            stats=list(state["stats"]),
            packed_tokens=int(state["packed_tokens"]),
            train_seconds=float(state["train_seconds"]),
        )

    # -- save -------------------------------------------------------------------------------

    def should_save(self, step: int, total_steps: int) -> bool:
        """Periodic saves; never after the last step (the adapter is published instead)."""
        return self.every_steps > 0 and step % self.every_steps == 0 and step < total_steps

    def save(
        self,
        policy: Any,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        *,
        step: int,
        stats: list[dict[str, Any]],
        packed_tokens: int,
        train_seconds: float,
    ) -> None:
        """Write the state after `step` optimizer steps (rank 0 only; others return at once)."""
        if self.rank != 0:
            return
        state = {
            "format": STATE_FORMAT,
            "fingerprint": self.fingerprint,
            "step": step,
            "adapter": {n: p.detach().to("cpu", copy=True) for n, p in trainable_parameters(policy)},
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": {
                "cpu": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
            },
            "stats": stats,
            "series": self.series.lines() if self.series is not None else [],
            "packed_tokens": packed_tokens,
            "train_seconds": train_seconds,
        }
        local = self.scratch / "resume-save.pt"
        torch.save(state, local)
        upload_file(local, self.url, create_only=False)  # one object, replaced atomically
        local.unlink(missing_ok=True)
        self.log(f"in-step checkpoint saved at optimizer step {step}")

    def discard(self) -> int:
        """Remove the scratch prefix (before publishing; rank 0). Returns the objects removed."""
        if self.rank != 0 or not list_objects(self.prefix):
            return 0
        return discard_uncommitted(self.prefix)


def trainable_parameters(policy: Any) -> Iterator[tuple[str, torch.nn.Parameter]]:
    """The parameters training changes (the LoRA tensors), by name."""
    for name, param in policy.named_parameters():
        if param.requires_grad:
            yield name, param


def agree_to_stop(stop: StopFlag, device: torch.device, distributed: bool) -> bool:
    """Whether any rank got SIGTERM: all ranks stop at the same optimizer step."""
    if not distributed:
        return stop.is_set
    flag = torch.tensor([1.0 if stop.is_set else 0.0], device=device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return bool(flag.item() > 0)
