"""Agent trajectories as dataset rows, with the sampler's own token ids and logprobs.

Ask the server for them with ``token_ids=True`` (the SDK sends vLLM's ``logprobs`` and
``return_tokens_as_token_ids``), run the agent loop, and let a :class:`Trajectory` collect the
turns::

    from rft.sdk.trajectory import Trajectory, row

    trajectory = Trajectory([{"role": "user", "content": "What is 17 * 23?"}], tools=TOOLS)
    while True:
        reply = llm.chat.completions.create(
            messages=trajectory.request_messages(), tools=TOOLS, token_ids=True, temperature=1.0
        )
        message = trajectory.add_choice(reply.choices[0])
        if not message.get("tool_calls"):
            break
        for call in message["tool_calls"]:
            trajectory.add_tool_result(call["id"], run_tool(call))
    sample = trajectory.sample({"score": reward(trajectory)}, sampling={"temperature": 1.0})
    rows.append(row([sample, ...], tools=TOOLS))

Each assistant turn of the sample carries ``token_ids`` and ``logprobs`` (docs/dataset-format.md):
the trainer trains on exactly those tokens, with the logprobs as the behaviour policy.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any

_TOKEN_PREFIX = "token_id:"  # noqa: S105 - vLLM's prefix of a token given as its id
_SAMPLER_KEYS = ("token_ids", "logprobs")


def with_token_ids(request: dict[str, Any]) -> dict[str, Any]:
    """``request`` (keyword arguments of ``chat.completions.create``) asking for the sampled tokens'
    ids and logprobs; the caller's own ``extra_body`` is kept."""
    out = dict(request)
    if out.get("logprobs") is False:
        raise ValueError("token_ids=True needs logprobs: do not pass logprobs=False with it")
    out["logprobs"] = True
    extra = dict(out.get("extra_body") or {})
    extra["return_tokens_as_token_ids"] = True
    out["extra_body"] = extra
    return out


def _get(value: Any, key: str) -> Any:
    """``value[key]`` for a dict, ``value.key`` for the openai client's objects."""
    return value.get(key) if isinstance(value, Mapping) else getattr(value, key, None)


def choice_tokens(choice: Any) -> tuple[list[int], list[float]]:
    """The sampled token ids and their logprobs of one choice of a chat completion (requested with
    ``token_ids=True``). Raises ValueError when the choice does not carry them."""
    logprobs = _get(choice, "logprobs")
    content = _get(logprobs, "content") if logprobs is not None else None
    if not content:
        raise ValueError(
            "the choice has no token logprobs: request it with token_ids=True (vLLM's logprobs and "
            "return_tokens_as_token_ids)"
        )
    ids: list[int] = []
    values: list[float] = []
    for entry in content:
        token = str(_get(entry, "token"))
        if not token.startswith(_TOKEN_PREFIX):
            raise ValueError(
                f"the choice's tokens are text ({token!r}), not ids: the server ignored "
                "return_tokens_as_token_ids (is it vLLM?)"
            )
        ids.append(int(token.removeprefix(_TOKEN_PREFIX)))
        value = float(_get(entry, "logprob"))
        values.append(value if math.isfinite(value) else -1e30)
    return ids, values


def _tool_calls(message: Any) -> list[dict[str, Any]]:
    calls = _get(message, "tool_calls") or []
    out = []
    for call in calls:
        function = _get(call, "function")
        out.append(
            {
                "id": _get(call, "id"),
                "type": "function",
                "function": {"name": _get(function, "name"), "arguments": _get(function, "arguments")},
            }
        )
    return out


class Trajectory:
    """The messages of one agent episode: the prompt, then the assistant turns the sampler produced
    (with their token ids and logprobs) and the tool and user turns the environment added."""

    def __init__(self, prompt: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None = None):
        if not prompt:
            raise ValueError("a trajectory starts from a prompt of at least one message")
        self.messages: list[dict[str, Any]] = [dict(m) for m in prompt]
        self.prompt_messages = len(self.messages)
        self.tools = [dict(t) for t in tools] if tools else None
        self.finish_reason: str | None = None

    def request_messages(self) -> list[dict[str, Any]]:
        """The messages to send for the next turn (without the sampler's token fields)."""
        return [{k: v for k, v in m.items() if k not in _SAMPLER_KEYS} for m in self.messages]

    def add_choice(self, choice: Any) -> dict[str, Any]:
        """Append the assistant turn of ``choice`` (a chat completion choice requested with
        ``token_ids=True``); returns the message as it is stored (with token_ids and logprobs)."""
        ids, logprobs = choice_tokens(choice)
        message = _get(choice, "message")
        turn: dict[str, Any] = {"role": "assistant", "content": _get(message, "content") or ""}
        calls = _tool_calls(message)
        if calls:
            turn["tool_calls"] = calls
        turn["token_ids"] = ids
        turn["logprobs"] = logprobs
        self.messages.append(turn)
        self.finish_reason = _get(choice, "finish_reason")
        return copy.deepcopy(turn)

    def add_tool_result(self, tool_call_id: str, content: str) -> None:
        """Append a tool's answer to the call ``tool_call_id`` of the last assistant turn."""
        self.messages.append({"role": "tool", "tool_call_id": tool_call_id, "content": content})

    def add_user(self, content: str) -> None:
        """Append a user turn (e.g. the environment's feedback)."""
        self.messages.append({"role": "user", "content": content})

    def sample(
        self, evals: Mapping[str, float], *, sampling: Mapping[str, float | int] | None = None
    ) -> dict[str, Any]:
        """The trajectory as one sample of a ``samples`` row (docs/dataset-format.md)."""
        if len(self.messages) <= self.prompt_messages or self.messages[-1]["role"] != "assistant":
            raise ValueError("a trajectory sample ends with an assistant turn; add the model's last reply")
        out: dict[str, Any] = {
            "messages": copy.deepcopy(self.messages),
            "prompt_messages": self.prompt_messages,
            "evals": dict(evals),
        }
        if self.finish_reason is not None:
            out["finish_reason"] = self.finish_reason
        if sampling:
            out["sampling"] = dict(sampling)
        return out


def row(
    samples: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None = None
) -> dict[str, Any]:
    """One dataset row (a prompt group) of trajectory samples sharing a prompt."""
    out: dict[str, Any] = {"samples": [dict(s) for s in samples]}
    if tools:
        out["tools"] = [dict(t) for t in tools]
    return out
