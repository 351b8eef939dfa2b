"""Polling with a deadline, on an injected clock (no real sleeping)."""

from __future__ import annotations

import pytest
from rft.sdk.errors import WaitTimeoutError
from rft.sdk.waiting import poll_until


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_returns_the_first_result_that_is_done() -> None:
    clock = FakeClock()
    values = iter(["CREATING", "CREATING", "READY"])
    result = poll_until(
        lambda: next(values),
        lambda v: v == "READY",
        timeout=60,
        interval=2,
        what="x",
        describe=str,
        sleep=clock.sleep,
        clock=clock,
    )
    assert result == "READY"
    assert clock.sleeps == [2, 2]


def test_timeout_names_what_and_where_it_stands() -> None:
    clock = FakeClock()
    with pytest.raises(
        WaitTimeoutError, match=r"timed out after 5s waiting for deployment d: phase CREATING"
    ):
        poll_until(
            lambda: "CREATING",
            lambda v: False,
            timeout=5,
            interval=2,
            what="deployment d",
            describe=lambda v: f"phase {v}",
            sleep=clock.sleep,
            clock=clock,
        )
    assert clock.sleeps == [2, 2, 1]


def test_done_may_raise_to_stop_early() -> None:
    clock = FakeClock()

    def done(value: str) -> bool:
        if value == "FAILED":
            raise RuntimeError("failed")
        return False

    with pytest.raises(RuntimeError, match=r"failed"):
        poll_until(
            lambda: "FAILED",
            done,
            timeout=None,
            interval=1,
            what="x",
            describe=str,
            sleep=clock.sleep,
            clock=clock,
        )
    assert clock.sleeps == []
