"""CPU thread count: the container's quota, not the node's cores."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from rft_trainer.threads import cgroup_cpu_limit, cpu_threads


@pytest.mark.parametrize(
    ("content", "expected"),
    [("200000 100000\n", 2.0), ("150000 100000", 1.5), ("max 100000\n", None), ("garbage", None)],
)
def test_cgroup_quota_is_read_in_cpus(tmp_path: Path, content: str, expected: float | None) -> None:
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text(content)
    assert cgroup_cpu_limit(cpu_max) == expected


def test_threads_follow_the_quota_rounded_up_and_never_exceed_the_visible_cpus(tmp_path: Path) -> None:
    visible = len(os.sched_getaffinity(0))
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("50000 100000")  # half a CPU
    assert cpu_threads({}, cpu_max) == 1
    cpu_max.write_text(f"{(visible + 8) * 100000} 100000")
    assert cpu_threads({}, cpu_max) == visible
    assert cpu_threads({}, tmp_path / "missing") == visible


def test_omp_num_threads_wins(tmp_path: Path) -> None:
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("100000 100000")
    assert cpu_threads({"OMP_NUM_THREADS": "3"}, cpu_max) == 3
    assert cpu_threads({"OMP_NUM_THREADS": "zero"}, cpu_max) == 1
