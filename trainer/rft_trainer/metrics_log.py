"""The per-optimizer-step series of a run: JSONL and TensorBoard event files, published with the adapter.

Every optimizer step appends one JSON line to ``metrics/steps.jsonl`` and one scalar per metric
(tag ``train/<name>``, global step = the optimizer step) to a TensorBoard event file under
``metrics/``. Both are written to scratch while training and copied into the adapter's directory
just before it is published, so they travel with the checkpoint's commit protocol: created
create-only, listed with their sha256 in the manifest, and visible only once ``_COMMITTED`` is.
A reader never sees a half-written series, and a series is never overwritten.

TensorBoard's format is what every tracker imports (MLflow, W&B, TensorBoard itself); the JSONL is
for everything else (``rft plot STEP`` reads it). The writer is tensorboardX: numpy and protobuf
only, where ``torch.utils.tensorboard`` needs the whole ``tensorboard`` package (a web server and
grpc) in the trainer image.

FLOP utilisation: training a LoRA adapter costs about 4N FLOPs per token (2N forward, 2N for the
input gradients; the frozen base has no weight gradients), 6N with gradient checkpointing (one
more forward). ``flops_per_second`` is that times the step's packed tokens per second; ``mfu``
divides it by the accelerator's peak (dense bf16), logged only where the peak is known: a CUDA
device of the table below, or ``RFT_PEAK_FLOPS`` (FLOP/s) set on the pod.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import torch

from rft_trainer.trackers import Tracker

METRICS_DIR = "metrics"
JSONL_FILE = "steps.jsonl"
TAG_PREFIX = "train/"
PEAK_FLOPS_ENV = "RFT_PEAK_FLOPS"
# Dense bf16 tensor-core peaks from the vendors' data sheets (FLOP/s), matched on the device name.
PEAK_FLOPS_BY_DEVICE = (
    ("H200", 989.4e12),
    ("H100", 989.4e12),
    ("A100", 312e12),
    ("L40S", 362.05e12),
)


def peak_flops(device: torch.device) -> float | None:
    """The device's peak FLOP/s, or None when unknown (CPUs, unlisted GPUs without RFT_PEAK_FLOPS)."""
    configured = os.environ.get(PEAK_FLOPS_ENV)
    if configured:
        try:
            value = float(configured)
        except ValueError:
            return None
        return value if value > 0 else None
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_FLOPS_BY_DEVICE if key in name), None)


def flops_per_token(parameters: int, *, gradient_checkpointing: bool) -> float:
    """Training FLOPs per token of a LoRA step on a model of `parameters` parameters."""
    return (6.0 if gradient_checkpointing else 4.0) * parameters


class MetricsLog:
    """Writes each optimizer step's metrics to ``<root>/metrics/`` (JSONL and a TensorBoard event file)."""

    def __init__(
        self,
        root: Path,
        *,
        flops_per_token: float | None = None,
        peak_flops: float | None = None,
        run_name: str = "",
        trackers: Sequence[Tracker] = (),
    ) -> None:
        # Imported here: only rank 0 of a run writes, and the module loads with the trainer.
        from tensorboardX import SummaryWriter  # noqa: PLC0415

        self.directory = root / METRICS_DIR
        self.directory.mkdir(parents=True, exist_ok=True)
        self._flops_per_token = flops_per_token
        self._peak_flops = peak_flops
        self.trackers = list(trackers)
        self._jsonl: TextIO | None = (self.directory / JSONL_FILE).open("w", encoding="utf-8")
        # flush_secs/max_queue: every point reaches the file at once (a step is seconds, not microseconds).
        self._writer: SummaryWriter | None = SummaryWriter(
            logdir=str(self.directory),
            max_queue=1,
            flush_secs=1,
            filename_suffix=f".{run_name}" if run_name else "",
        )
        self.steps = 0
        self._lines: list[dict[str, Any]] = []

    def values(self, metrics: Mapping[str, float]) -> dict[str, float]:
        """`metrics` plus the FLOP estimates derived from its tokens_per_second."""
        out = {k: float(v) for k, v in metrics.items()}
        rate = out.get("tokens_per_second")
        if self._flops_per_token is not None and rate is not None:
            out["flops_per_second"] = self._flops_per_token * rate
            if self._peak_flops:
                out["mfu"] = out["flops_per_second"] / self._peak_flops
        return out

    def record(self, step: int, epoch: int | None, metrics: Mapping[str, float]) -> dict[str, float]:
        """Append optimizer step `step` (1-based); returns the values written."""
        if self._jsonl is None or self._writer is None:
            raise RuntimeError("the metrics log is closed")
        values = self.values(metrics)
        now = time.time()
        self._write({"step": step, "epoch": epoch, "time": round(now, 3), **values})
        for tracker in self.trackers:
            tracker.log(step, values)
        return values

    def lines(self) -> list[dict[str, Any]]:
        """Every point written so far, as its JSONL line (for the in-step checkpoint)."""
        return [dict(line) for line in self._lines]

    def replay(self, lines: list[dict[str, Any]]) -> None:
        """Write the points an earlier pod of this run recorded (from its in-step checkpoint) again,
        with their own steps and times; trackers are not sent them twice (their run continues)."""
        for line in lines:
            self._write(dict(line))

    def _write(self, line: dict[str, Any]) -> None:
        if self._jsonl is None or self._writer is None:
            raise RuntimeError("the metrics log is closed")
        self._jsonl.write(json.dumps(line, sort_keys=True, allow_nan=True) + "\n")
        self._jsonl.flush()
        for name, value in line.items():
            if name not in ("step", "epoch", "time") and isinstance(value, (int, float)):
                self._writer.add_scalar(
                    TAG_PREFIX + name, value, global_step=int(line["step"]), walltime=line["time"]
                )
        self._lines.append(line)
        self.steps += 1

    def close(self) -> None:
        """Flush and close both files (idempotent)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None

    def finish(self, succeeded: bool) -> None:
        """End the trackers' runs (the files are closed by `close`)."""
        for tracker in self.trackers:
            tracker.finish(succeeded)
        self.trackers = []

    def copy_into(self, checkpoint_dir: Path) -> list[str]:
        """Close, then copy the series into ``checkpoint_dir/metrics/``; returns the relative paths copied."""
        self.close()
        target = checkpoint_dir / METRICS_DIR
        shutil.copytree(self.directory, target)
        return sorted(p.relative_to(checkpoint_dir).as_posix() for p in target.rglob("*") if p.is_file())
