"""Parsing JSONL rows into prompt groups, with a precise reason for every bad row.

Two row formats:

- ``samples`` (the managed service's):
  ``{"samples": [{"messages": [...prompt..., {"role": "assistant", "content": "..."}],
  "evals": {"score": 0.7}, "logprobs": [...]?}, ...]}``
- ``prompt-completions``:
  ``{"prompt": [messages] | "text", "completions": ["...", ...], "rewards": [0.1, ...] |
  [{"score": 0.1}, ...], "logprobs": [[...] | null, ...]?}``

Unknown keys are ignored at row, sample and message level, so rows exported with extra
bookkeeping fields still load.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable, Iterator
from typing import Any, Literal, NoReturn

from rft.rows.model import Completion, Message, PromptGroup, RowError

Format = Literal["samples", "prompt-completions"]
FORMATS: tuple[Format, ...] = ("samples", "prompt-completions")
DEFAULT_MAX_LINE_BYTES = 16 * 1024 * 1024
MIN_COMPLETIONS = 2
ROLES = frozenset({"system", "user", "assistant", "tool"})
SCALAR_REWARD_KEY = "score"  # the key a bare number reward gets in prompt-completions rows
_BOM = "\ufeff"


class _ReasonError(Exception):
    """Raised inside the parsers with just the reason; turned into RowError with the line."""


def _fail(reason: str) -> NoReturn:
    raise _ReasonError(reason)


def _show(value: Any, limit: int = 40) -> str:
    """A short rendering of a user value for an error message."""
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _kind(value: Any) -> str:
    """The JSON type name of a parsed value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _reject_constant(name: str) -> NoReturn:
    _fail(f"{name} is not allowed: JSON has no NaN or Infinity, and rewards must be finite numbers")


def _decode(line: int, raw: bytes | str, max_line_bytes: int) -> Any:
    size = len(raw.encode()) if isinstance(raw, str) else len(raw)
    if size > max_line_bytes:
        _fail(f"line is longer than the limit of {max_line_bytes} bytes")
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            _fail(f"not valid UTF-8 (byte {exc.start + 1})")
    else:
        text = raw
    if line == 1 and text.startswith(_BOM):
        text = text[1:]
    if not text.strip():
        _fail("blank line")
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        _fail(f"not valid JSON: {exc.msg} at column {exc.colno}")
    except RecursionError:
        _fail("not valid JSON: nested too deeply")
    except ValueError:  # Python refuses integers of more than sys.get_int_max_str_digits() digits
        _fail(f"holds an integer of more than {sys.get_int_max_str_digits()} digits; numbers must be finite")
    _refuse_lone_surrogates(value)
    return value


def _refuse_lone_surrogates(value: Any) -> None:
    """JSON's \\uD800-\\uDFFF escapes decode to lone surrogates unless paired: no valid Unicode text
    holds one, and UTF-8 cannot encode it (a tokenizer or a later json.dumps would fail)."""
    pending: list[tuple[Any, str]] = [(value, "")]
    while pending:
        item, where = pending.pop()
        if isinstance(item, str):
            _check_text(item, where or "the row")
        elif isinstance(item, dict):
            for key, child in item.items():
                _check_text(key, f"a key of {where or 'the row'}")
                pending.append((child, f"{where}.{key}" if where else key))
        elif isinstance(item, list):
            pending.extend((child, f"{where}[{index}]") for index, child in enumerate(item))


def _check_text(text: str, where: str) -> None:
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(text[exc.start])
        _fail(
            f"{where.encode('utf-8', 'backslashreplace').decode()} holds a lone surrogate \\u{code:04x} at "
            f"character {exc.start + 1}: not valid Unicode (a \\uD800-\\uDFFF escape without its pair)"
        )


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool):
        _fail(f"{where} is a boolean; rewards must be numbers (use 1.0 / 0.0)")
    if not isinstance(value, int | float):
        _fail(f"{where} must be a number, got {_kind(value)}" + ("" if value is None else f" {_show(value)}"))
    try:
        number = float(value)
    except OverflowError:  # an integer of hundreds of digits (floats never overflow here)
        digits = int(int(value).bit_length() * math.log10(2)) + 1
        _fail(f"{where} is not a finite number (an integer of about {digits} digits)")
    if not math.isfinite(number):
        _fail(f"{where} is not a finite number")
    return number


def _rewards(value: Any, where: str) -> dict[str, float]:
    if not isinstance(value, dict):
        _fail(f'{where} must be an object of named rewards like {{"score": 0.7}}, got {_kind(value)}')
    if not value:
        _fail(f'{where} is empty; give at least one reward, e.g. {{"score": 0.7}}')
    return {key: _number(reward, f"{where}.{key}") for key, reward in value.items()}


# OpenAI's finish reasons; only "length" (cut at max_tokens) means no end-of-turn was sampled.
FINISH_REASONS = ("stop", "length", "tool_calls", "content_filter", "function_call")


def _finished(value: Any, where: str) -> bool:
    if value is None:
        return True
    if value not in FINISH_REASONS:
        _fail(
            f"{where} must be one of {', '.join(FINISH_REASONS)} (the sampler's finish_reason), got {_show(value)}"
        )
    return bool(value != "length")


def _logprobs(value: Any, where: str) -> list[float] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        _fail(
            f"{where} must be a list of numbers (the completion tokens' sampling logprobs), got {_kind(value)}"
        )
    if not value:
        _fail(f"{where} is empty; omit it or give one logprob per completion token")
    result = []
    for index, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, int | float) or not math.isfinite(item):
            _fail(f"{where}[{index}] must be a finite number, got {_show(item)}")
        result.append(float(item))
    return result


def _message(value: Any, where: str) -> Message:
    if not isinstance(value, dict):
        _fail(f"{where} must be an object with 'role' and 'content', got {_kind(value)}")
    role = value.get("role")
    if not isinstance(role, str) or role not in ROLES:
        shown = "missing" if role is None else _show(role)
        _fail(f"{where}.role is {shown}; expected one of {', '.join(sorted(ROLES))}")
    content = value.get("content")
    if not isinstance(content, str):
        shown = "missing" if content is None else f"{_kind(content)}"
        _fail(f"{where}.content must be a string, got {shown}")
    if not content.strip():
        _fail(f"{where}.content is empty")
    return Message(role, content)


def _messages(value: Any, where: str) -> list[Message]:
    if not isinstance(value, list):
        _fail(f"{where} must be a list of messages, got {_kind(value)}")
    if not value:
        _fail(f"{where} is empty")
    messages = [_message(item, f"{where}[{index}]") for index, item in enumerate(value)]
    for index, message in enumerate(messages[1:], start=1):
        if message.role == "system":
            _fail(f"{where}[{index}]: a 'system' message may only come first")
    return messages


def _reward_keys_match(keys: list[set[str]], where: str) -> None:
    for index, these in enumerate(keys[1:], start=1):
        if these != keys[0]:
            _fail(
                f"{where}[{index}] has reward keys {sorted(these)} but {where}[0] has {sorted(keys[0])}; "
                "every completion of a row needs the same reward keys"
            )


def _same_prompt_fast_path(
    raw: Any, first_raw: list[Any], prompt: list[Message] | None, where: str
) -> list[Message] | None:
    """The messages of a later sample whose prompt turns equal samples[0]'s byte for byte.

    Only the completion is validated then: the prompt turns were checked in samples[0]. Returns
    None (validate everything, for the precise error) when the fast path does not apply.
    """
    if (
        prompt is None
        or not isinstance(raw, list)
        or len(raw) != len(first_raw)
        or raw[:-1] != first_raw[:-1]
    ):
        return None
    last = _message(raw[-1], f"{where}.messages[{len(raw) - 1}]")
    return [*prompt, last] if last.role == "assistant" else None


def _parse_samples(row: dict[str, Any]) -> tuple[list[Message], list[Completion]]:
    samples = row["samples"]
    if not isinstance(samples, list):
        _fail(f"'samples' must be a list, got {_kind(samples)}")
    if len(samples) < MIN_COMPLETIONS:
        _fail(
            f"'samples' has {len(samples)} sample(s); a row is a prompt group and needs at least {MIN_COMPLETIONS}"
        )
    prompt: list[Message] | None = None
    first_raw: list[Any] = []
    completions: list[Completion] = []
    for index, sample in enumerate(samples):
        where = f"samples[{index}]"
        if not isinstance(sample, dict):
            _fail(f"{where} must be an object, got {_kind(sample)}")
        if "messages" not in sample:
            _fail(f"{where} has no 'messages'")
        raw = sample["messages"]
        messages = _same_prompt_fast_path(raw, first_raw, prompt, where)
        if messages is None:
            messages = _messages(raw, f"{where}.messages")
        if index == 0:
            first_raw = raw
        if messages[-1].role != "assistant":
            _fail(
                f"{where}.messages: the last message must be the assistant's completion, "
                f"got role {messages[-1].role!r}"
            )
        if len(messages) < 2:
            _fail(f"{where}.messages has no prompt turn before the assistant's completion")
        if prompt is None:
            prompt = messages[:-1]
        elif messages[:-1] != prompt:
            _fail(f"{where}: prompt turns differ from samples[0]'s; all samples of a row share one prompt")
        if "evals" not in sample:
            _fail(f"{where} has no 'evals' (its rewards, e.g. {{\"score\": 0.7}})")
        rewards = _rewards(sample["evals"], f"{where}.evals")
        logprobs = _logprobs(sample.get("logprobs"), f"{where}.logprobs")
        finished = _finished(sample.get("finish_reason"), f"{where}.finish_reason")
        completions.append(Completion(messages[-1].content, rewards, logprobs, finished))
    _reward_keys_match([set(c.rewards) for c in completions], "samples")
    assert prompt is not None  # at least MIN_COMPLETIONS samples were parsed
    return prompt, completions


def _parse_prompt_completions(row: dict[str, Any]) -> tuple[list[Message], list[Completion]]:
    if "prompt" not in row:
        _fail("missing 'prompt'")
    raw_prompt = row["prompt"]
    if isinstance(raw_prompt, str):
        if not raw_prompt.strip():
            _fail("'prompt' is empty")
        prompt = [Message("user", raw_prompt)]
    elif isinstance(raw_prompt, list):
        prompt = _messages(raw_prompt, "prompt")
    else:
        _fail(f"'prompt' must be a string or a list of messages, got {_kind(raw_prompt)}")
    if "completions" not in row:
        _fail("missing 'completions'")
    texts = row["completions"]
    if not isinstance(texts, list):
        _fail(f"'completions' must be a list of strings, got {_kind(texts)}")
    if len(texts) < MIN_COMPLETIONS:
        _fail(
            f"'completions' has {len(texts)} item(s); a row is a prompt group and needs at least {MIN_COMPLETIONS}"
        )
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            _fail(f"completions[{index}] must be a string, got {_kind(text)}")
        if not text.strip():
            _fail(f"completions[{index}] is empty")
    if "rewards" not in row:
        _fail("missing 'rewards' (one per completion)")
    raw_rewards = row["rewards"]
    if not isinstance(raw_rewards, list):
        _fail(f"'rewards' must be a list with one reward per completion, got {_kind(raw_rewards)}")
    if len(raw_rewards) != len(texts):
        _fail(f"'rewards' has {len(raw_rewards)} item(s) but 'completions' has {len(texts)}")
    if all(isinstance(item, dict) for item in raw_rewards):
        rewards = [_rewards(item, f"rewards[{index}]") for index, item in enumerate(raw_rewards)]
        _reward_keys_match([set(item) for item in rewards], "rewards")
    elif any(isinstance(item, dict) for item in raw_rewards):
        _fail("'rewards' mixes numbers and objects; use one form for all completions")
    else:
        rewards = [
            {SCALAR_REWARD_KEY: _number(item, f"rewards[{index}]")} for index, item in enumerate(raw_rewards)
        ]
    raw_logprobs = row.get("logprobs")
    if raw_logprobs is None:
        logprobs: list[list[float] | None] = [None] * len(texts)
    elif not isinstance(raw_logprobs, list) or len(raw_logprobs) != len(texts):
        _fail("'logprobs' must be a list with one entry (a list of numbers, or null) per completion")
    else:
        logprobs = [_logprobs(item, f"logprobs[{index}]") for index, item in enumerate(raw_logprobs)]
    completions = [
        Completion(text, reward, lp) for text, reward, lp in zip(texts, rewards, logprobs, strict=True)
    ]
    return prompt, completions


def detect_format(row: dict[str, Any]) -> Format:
    """The format a parsed row is in, from its keys."""
    has_samples = "samples" in row
    has_pc = "prompt" in row or "completions" in row
    if has_samples and has_pc:
        _fail("row mixes 'samples' with 'prompt'/'completions'; use one format")
    if has_samples:
        return "samples"
    if has_pc:
        return "prompt-completions"
    _fail(f"missing 'samples' (row keys: {_show(sorted(row))})")


def _check_format(row: dict[str, Any], fmt: str) -> Format:
    """``fmt`` when the row can be in it, else a reason that names the format the row looks like."""
    if fmt == "samples" and "samples" not in row:
        if "prompt" in row or "completions" in row:
            _fail(
                "missing 'samples': the row is in the prompt-completions format but the dataset's format is samples"
            )
        _fail(f"missing 'samples' (row keys: {_show(sorted(row))})")
    if fmt == "prompt-completions" and "samples" in row:
        _fail("the row is in the samples format but the dataset's format is prompt-completions")
    return "samples" if fmt == "samples" else "prompt-completions"


def parse_row(
    line: int, raw: bytes | str, *, fmt: str = "auto", max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
) -> PromptGroup:
    """Parse one JSONL line (without its line ending) into a :class:`PromptGroup`.

    ``fmt`` is ``"auto"`` (from the row's keys), ``"samples"`` or ``"prompt-completions"``.
    Raises :class:`RowError` with the line number and the reason.
    """
    if fmt not in ("auto", *FORMATS):
        raise ValueError(f"unknown row format {fmt!r}; expected auto, {', '.join(FORMATS)}")
    try:
        row = _decode(line, raw, max_line_bytes)
        if not isinstance(row, dict):
            _fail(f"a row must be a JSON object, got {_kind(row)}")
        detected = detect_format(row) if fmt == "auto" else _check_format(row, fmt)
        parser = _parse_samples if detected == "samples" else _parse_prompt_completions
        prompt, completions = parser(row)
    except _ReasonError as exc:
        raise RowError(line, str(exc)) from None
    return PromptGroup(line, prompt, completions, detected)


def scan_rows(
    lines: Iterable[bytes | str],
    *,
    fmt: str = "auto",
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> Iterator[PromptGroup | RowError]:
    """Parse every non-blank line, yielding a group or the row's error, in line order.

    Blank lines are allowed only at the end. With ``fmt="auto"`` the first good row fixes the
    format, and a later row in the other format is an error.
    """
    fixed: tuple[str, int] | None = None
    blank_since: int | None = None
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            blank_since = blank_since or number
            continue
        if blank_since is not None:
            yield RowError(blank_since, "blank line; blank lines are allowed only at the end")
            blank_since = None
        try:
            group = parse_row(number, raw, fmt=fmt, max_line_bytes=max_line_bytes)
        except RowError as error:
            yield error
            continue
        if fixed is None:
            fixed = (group.format, number)
        elif group.format != fixed[0]:
            yield RowError(
                number,
                f"row is in the {group.format} format but line {fixed[1]} is in the {fixed[0]} format; "
                "a dataset uses one format",
            )
            continue
        yield group


def iter_groups(
    lines: Iterable[bytes | str],
    *,
    fmt: str = "auto",
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> Iterator[PromptGroup]:
    """The prompt groups of a JSONL stream; raises :class:`RowError` at the first bad row."""
    for item in scan_rows(lines, fmt=fmt, max_line_bytes=max_line_bytes):
        if isinstance(item, RowError):
            raise item
        yield item
