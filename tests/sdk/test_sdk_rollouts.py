"""Concurrent rollouts: bounded concurrency, results in order, the first failure surfaces."""

from __future__ import annotations

import asyncio

import pytest
from rft.sdk.rollouts import gather_limited


def test_results_keep_input_order_and_concurrency_stays_bounded() -> None:
    running = 0
    peak = 0

    async def job(index: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.001 * (index % 3))
        running -= 1
        return index * index

    results = asyncio.run(gather_limited((job(i) for i in range(20)), limit=4))
    assert results == [i * i for i in range(20)]
    assert peak == 4


def test_first_failure_is_raised_and_the_rest_cancelled() -> None:
    finished: list[int] = []

    async def job(index: int) -> int:
        if index == 0:
            raise ValueError("reward server down")
        await asyncio.sleep(0.05)
        finished.append(index)
        return index

    with pytest.raises(ValueError, match=r"reward server down"):
        asyncio.run(gather_limited([job(i) for i in range(5)], limit=5))
    assert finished == []


def test_limit_is_checked() -> None:
    with pytest.raises(ValueError, match=r"limit: must be between 1"):
        asyncio.run(gather_limited([], limit=0))
