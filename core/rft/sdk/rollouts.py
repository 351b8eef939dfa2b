"""Many concurrent requests for rollouts, with a bound on how many are in flight.

The pattern::

    import asyncio
    from rft.sdk.rollouts import gather_limited

    async def rollouts(llm, prompts):
        return await gather_limited(
            (llm.chat.completions.acreate(messages=p, n=8, temperature=1.0) for p in prompts),
            limit=32,
        )

    completions = asyncio.run(rollouts(llm, prompts))

or, from synchronous code, `chat_rollouts(llm, [{"messages": p, "n": 8} for p in prompts])`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from rft.sdk.validation import check_int

T = TypeVar("T")
DEFAULT_LIMIT = 32


class _ChatTarget(Protocol):
    @property
    def chat(self) -> Any: ...


async def gather_limited(awaitables: Iterable[Awaitable[T]], limit: int = DEFAULT_LIMIT) -> list[T]:
    """Await every awaitable with at most `limit` running at once; results in input order.

    If one fails, the others are cancelled and its exception is raised.
    """
    check_int(limit, "limit", minimum=1, maximum=1_000_000)
    semaphore = asyncio.Semaphore(limit)

    async def bounded(awaitable: Awaitable[T]) -> T:
        async with semaphore:
            return await awaitable

    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(bounded(awaitable)) for awaitable in awaitables]
    except ExceptionGroup as failures:
        raise failures.exceptions[0] from failures
    return [task.result() for task in tasks]


def chat_rollouts(
    llm: _ChatTarget, requests: Sequence[Mapping[str, Any]], limit: int = DEFAULT_LIMIT
) -> list[Any]:
    """Send each request (keyword arguments of `chat.completions.create`) concurrently; blocks.

    For use outside a running event loop; inside one, await `gather_limited` instead.
    """
    return asyncio.run(
        gather_limited((llm.chat.completions.acreate(**dict(request)) for request in requests), limit)
    )
