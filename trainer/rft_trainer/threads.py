"""How many CPU threads torch should use: the container's CPU quota, not the node's core count.

torch sizes its thread pool from the cores it can see; in a pod limited to 2 CPUs on a 64-core
node that is 64 threads fighting over 2 CPUs, which can make CPU training ten times slower.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def cgroup_cpu_limit(cpu_max: Path = CGROUP_CPU_MAX) -> float | None:
    """The cgroup v2 CPU quota in CPUs ("200000 100000" -> 2.0); None when unlimited or unknown."""
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return int(quota) / int(period)
    except (ValueError, ZeroDivisionError):
        return None


def cpu_threads(environ: Mapping[str, str] | None = None, cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """OMP_NUM_THREADS when set, else the CPUs this process may use (affinity, capped by the quota)."""
    env = os.environ if environ is None else environ
    explicit = env.get("OMP_NUM_THREADS", "")
    if explicit.isdigit() and int(explicit) > 0:
        return int(explicit)
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    limit = cgroup_cpu_limit(cpu_max)
    if limit is not None:
        available = min(available, max(1, math.ceil(limit)))
    return max(1, available)
