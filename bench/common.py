"""What every benchmark shares: the machine's description, peak memory, matmul peak, statistics, JSON."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
THREADS = 2
"""Torch threads for every measured process (both sides of a comparison get the same)."""


@dataclass
class Row:
    """One line of the printed table: a benchmark, what was measured, ours, the peer, the ratio."""

    benchmark: str
    metric: str
    ours: str
    peer: str = ""
    ratio: str = ""
    target: str = ""
    met: bool | None = None
    note: str = ""


@dataclass
class Stats:
    """Median and spread of repeated measurements."""

    values: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)

    def to_json(self) -> dict[str, Any]:
        return {"median": self.median, "min": self.low, "max": self.high, "values": self.values}


def cpu_model() -> str:
    """The CPU's model name as the kernel reports it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """Cores, CPU model, memory and library versions: printed with every table and stored in every JSON."""
    import torch  # noqa: PLC0415 - only the benchmarks that need torch pay for importing it

    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": THREADS,
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        info["memory_gib"] = round(pages / 2**30, 1)
    except (ValueError, OSError):
        pass
    flags = ""
    with contextlib.suppress(OSError):
        flags = Path("/proc/cpuinfo").read_text()
    info["simd"] = [f for f in ("avx2", "avx512f", "amx_bf16") if f" {f}" in flags]
    for name in ("transformers", "peft", "trl"):
        try:
            module = __import__(name)
            info[name] = str(module.__version__)
        except ImportError:
            info[name] = None
    return info


def _status_kib(field_name: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_kib() -> int:
    """Resident set size now, in KiB."""
    value = _status_kib("VmRSS")
    return value if value is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS; False when the kernel cannot."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_kib() -> int:
    """Peak resident set size of this process (since start or the last `reset_peak_rss`), in KiB.

    VmHWM rather than ru_maxrss: ru_maxrss cannot be reset and, in a child, starts from the
    forking parent's peak.
    """
    value = _status_kib("VmHWM")
    return value if value is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def matmul_peak_flops(
    sizes: tuple[int, ...] = (512, 768, 1024, 1536), seconds: float = 0.75, threads: int = THREADS
) -> float:
    """This CPU's float32 matmul peak (FLOP/s) with `threads` torch threads: the best timed square
    product over several sizes, so that brief interference from other processes does not lower it.
    (Sizes that are multiples of 2048 are avoided: their power-of-two strides alias in the caches
    and run at a third of the rate on this kind of CPU.)"""
    import torch  # noqa: PLC0415 - only the benchmarks that need torch pay for importing it

    torch.set_num_threads(threads)
    best = 0.0
    for size in sizes:
        a = torch.randn(size, size)
        b = torch.randn(size, size)
        out = torch.empty(size, size)
        for _ in range(2):
            torch.mm(a, b, out=out)
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            torch.mm(a, b, out=out)
            best = max(best, 2 * size**3 / (time.perf_counter() - started))
    return best


def write_result(name: str, payload: dict[str, Any], results_dir: Path | None = None) -> Path:
    """Write one benchmark's figures as `<results_dir>/<name>.json` (pretty, sorted keys)."""
    directory = results_dir or RESULTS_DIR
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    return path


def format_table(rows: Sequence[Row]) -> str:
    """The rows as an aligned plain-text table."""
    header = ["benchmark", "metric", "ours", "peer", "ours/peer", "target", "met", "note"]
    lines = [
        [
            r.benchmark,
            r.metric,
            r.ours,
            r.peer,
            r.ratio,
            r.target,
            "" if r.met is None else ("yes" if r.met else "NO"),
            r.note,
        ]
        for r in rows
    ]
    widths = [
        max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)
    ]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    out.append("  ".join("-" * w for w in widths))
    out.extend("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines)
    return "\n".join(out)
