"""Polling until an object reaches a state, with a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from rft.sdk.errors import WaitTimeoutError

T = TypeVar("T")


def poll_until(
    fetch: Callable[[], T],
    done: Callable[[T], bool],
    *,
    timeout: float | None,
    interval: float,
    what: str,
    describe: Callable[[T], str],
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Call `fetch` every `interval` seconds until `done(result)`; return that result.

    `done` may raise to stop early (a FAILED phase). With `timeout` None, waits forever;
    otherwise raises WaitTimeoutError saying `what` was awaited and where it stands (`describe`).
    """
    deadline = None if timeout is None else clock() + timeout
    while True:
        current = fetch()
        if done(current):
            return current
        if deadline is not None:
            remaining = deadline - clock()
            if remaining <= 0:
                raise WaitTimeoutError(
                    f"timed out after {timeout:g}s waiting for {what}: {describe(current)}"
                )
            sleep(min(interval, remaining))
        else:
            sleep(interval)
