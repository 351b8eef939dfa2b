"""`llm.chat.completions` and `llm.completions`: the official `openai` client aimed at a Deployment.

The first call applies the deployment (creating it if needed and waiting until it is READY), then
sends the request to the deployment's endpoint with the model name the server expects
(`status.servedModelName`).
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import openai

from rft.sdk.trajectory import with_token_ids


class InferenceTarget(Protocol):
    """What the inference namespaces need from an LLM."""

    def sync_client(self) -> openai.OpenAI:
        """An OpenAI client for the deployment (applies it on first use)."""
        ...

    def async_client(self) -> openai.AsyncOpenAI:
        """An async OpenAI client bound to the running event loop (applies the deployment first)."""
        ...

    def served_model_name(self) -> str:
        """The model name to send."""
        ...

    def is_resolved(self) -> bool:
        """True once the endpoint is known, so no blocking call remains."""
        ...


def _request(target: InferenceTarget, kwargs: dict[str, Any]) -> dict[str, Any]:
    if "model" in kwargs:
        raise TypeError(
            "model: do not pass model=; the LLM sends the model name its deployment serves "
            f"({target.served_model_name()!r})"
        )
    kwargs = dict(kwargs)
    if kwargs.pop("token_ids", False):
        kwargs = with_token_ids(kwargs)
    return {"model": target.served_model_name(), **kwargs}


async def _resolve_async(target: InferenceTarget) -> openai.AsyncOpenAI:
    if not target.is_resolved():
        # Applying the deployment polls the API server: keep it off the event loop.
        await asyncio.to_thread(target.served_model_name)
    return target.async_client()


class ChatCompletions:
    """`llm.chat.completions`: `create(messages=..., n=..., temperature=..., max_tokens=..., ...)`.

    With `token_ids=True`, each choice carries the sampled tokens' ids and logprobs (vLLM's
    `logprobs` and `return_tokens_as_token_ids`); `rft.sdk.trajectory` turns them into rows.
    """

    def __init__(self, target: InferenceTarget) -> None:
        self._target = target

    def create(self, **kwargs: Any) -> Any:
        """Send a chat completion request; returns the openai client's `ChatCompletion` (or a stream)."""
        request = _request(self._target, kwargs)
        return self._target.sync_client().chat.completions.create(**request)

    async def acreate(self, **kwargs: Any) -> Any:
        """Async `create`: gather many of these for concurrent rollouts."""
        client = await _resolve_async(self._target)
        return await client.chat.completions.create(**_request(self._target, kwargs))


class Chat:
    """`llm.chat`."""

    def __init__(self, target: InferenceTarget) -> None:
        self.completions = ChatCompletions(target)


class Completions:
    """`llm.completions`: `create(prompt=..., max_tokens=..., logprobs=..., ...)`."""

    def __init__(self, target: InferenceTarget) -> None:
        self._target = target

    def create(self, **kwargs: Any) -> Any:
        """Send a text completion request; returns the openai client's `Completion` (or a stream)."""
        request = _request(self._target, kwargs)
        return self._target.sync_client().completions.create(**request)

    async def acreate(self, **kwargs: Any) -> Any:
        """Async `create`."""
        client = await _resolve_async(self._target)
        return await client.completions.create(**_request(self._target, kwargs))
