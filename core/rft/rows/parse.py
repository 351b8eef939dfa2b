"""Parsing JSONL rows into prompt groups, with a precise reason for every bad row.

Two row formats:

- ``samples`` (the managed service's):
  ``{"samples": [{"messages": [...prompt..., {"role": "assistant", "content": "..."}],
  "evals": {"score": 0.7}, "logprobs": [...]?}, ...]}``
- ``prompt-completions``:
  ``{"prompt": [messages] | "text", "completions": ["...", ...], "rewards": [0.1, ...] |
  [{"score": 0.1}, ...], "logprobs": [[...] | null, ...]?}``

A ``samples`` sample may also be a multi-turn trajectory: ``"prompt_messages": N`` says that its
first N messages are the (shared) prompt and the rest the trajectory, assistant turns (trained,
with or without tool calls) interleaved with tool and user turns (not trained). An assistant turn
of a sample may carry the sampler's ``token_ids`` and their ``logprobs``; the sample then may say
its ``sampling`` parameters. A row may carry ``tools``, the function schemas the chat template
renders.

Prompt turns may carry OpenAI tool calls (``tool_calls`` on assistant messages, answered by
``tool`` messages with their ``tool_call_id``). Unknown keys are ignored at row, sample and
message level, so rows exported with extra bookkeeping fields still load. A bad row, however
malformed, is a :class:`RowError` naming its line and (where there is one) the field path.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable, Iterator
from typing import Any, Literal, NoReturn

from rft.rows.model import Completion, Message, PromptGroup, RowError, SamplingParams, ToolCall, TurnTokens

Format = Literal["samples", "prompt-completions"]
FORMATS: tuple[Format, ...] = ("samples", "prompt-completions")
DEFAULT_MAX_LINE_BYTES = 16 * 1024 * 1024
MIN_COMPLETIONS = 2
# A prompt group is a handful to a few hundred completions (GRPO: typically 4 to 64); thousands in
# one row are a malformed export, and the trainer holds a whole group in memory at once.
MAX_COMPLETIONS = 1024
MAX_REASON_CHARS = 1000  # a reason quoting long keys is cut in the middle
ROLES = frozenset({"system", "user", "assistant", "tool"})
SCALAR_REWARD_KEY = "score"  # the key a bare number reward gets in prompt-completions rows
_BOM = "\ufeff"


class _ReasonError(Exception):
    """Raised inside the parsers with just the reason; turned into RowError with the line."""


def _fail(reason: str) -> NoReturn:
    raise _ReasonError(reason)


def _show(value: Any, limit: int = 40) -> str:
    """A short rendering of a user value for an error message (containers by their type only:
    rendering them whole could be slow or deep)."""
    if isinstance(value, str):
        text = repr(value[: limit + 1])
    elif value is None or isinstance(value, bool | int | float):
        text = (
            json.dumps(value) if not isinstance(value, int) or value.bit_length() < 64 else "a huge integer"
        )
    elif isinstance(value, list) and all(isinstance(item, str) for item in value[:20]):
        text = json.dumps(value[:20], ensure_ascii=False)
    else:
        return _kind(value)
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


class _Constant(float):
    """A NaN or Infinity literal, kept so that the walk can name where it is."""

    literal: str


class _HugeInt(float):
    """An integer literal of more digits than Python converts, kept so the walk can name it."""

    digits: int


class _RepeatedKeys(dict[str, Any]):
    """A JSON object that named a key twice (the last value won)."""

    repeated: str


def _constant(literal: str) -> _Constant:
    value = _Constant(literal.replace("Infinity", "inf"))
    value.literal = literal
    return value


def _huge_int(literal: str) -> int | float:
    digits = len(literal.lstrip("-"))
    if digits <= sys.get_int_max_str_digits():
        return int(literal)
    value = _HugeInt("-inf" if literal.startswith("-") else "inf")
    value.digits = digits
    return value


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) == len(pairs):
        return result
    marked = _RepeatedKeys(result)
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            marked.repeated = key
            break
        seen.add(key)
    return marked


# Rows nest a few levels (row, samples, messages, tool calls); metadata kept alongside them may
# nest more, but no JSON of a row needs more than this, and deeper values stress every consumer.
MAX_DEPTH = 64
_PATH_CHARS = 120  # a field path longer than this is shown cut in the middle


def _decode(line: int, raw: bytes | str, max_line_bytes: int) -> Any:
    size = len(raw.encode("utf-8", "surrogatepass")) if isinstance(raw, str) else len(raw)
    if size > max_line_bytes:
        _fail(f"line is longer than the limit of {max_line_bytes} bytes")
    if isinstance(raw, bytes):
        if line == 1 and raw.startswith((b"\xff\xfe", b"\xfe\xff")):
            _fail(
                "the file starts with a UTF-16 (or UTF-32) byte-order mark; a dataset is UTF-8 text "
                "(convert it, e.g. iconv -f UTF-16 -t UTF-8)"
            )
        nul = raw.find(b"\x00")
        if nul >= 0:
            _fail(
                f"holds a NUL byte at byte {nul + 1}; a dataset is UTF-8 text, and JSON has no raw NUL "
                "(a UTF-16 file, or binary data? inside a string, write \\u0000)"
            )
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad = raw[exc.start]
            _fail(
                f"not valid UTF-8 (byte {exc.start + 1} is 0x{bad:02x}); a dataset is UTF-8 text "
                "(is the file in Latin-1, Windows-1252 or another encoding?)"
            )
    else:
        text = raw
        if "\x00" in text:
            _fail(
                f"holds a NUL character at character {text.index(chr(0)) + 1}; inside a string, write \\u0000"
            )
    if text.startswith(_BOM):
        if line != 1:
            _fail(
                "starts with a UTF-8 byte-order mark, allowed only at the start of the file (files concatenated?)"
            )
        text = text[1:]
    if not text.strip():
        _fail("blank line")
    return _loads(text, "")


def _loads(text: str, where: str) -> Any:
    """Parse one JSON document and refuse what JSON or the row format cannot hold, naming where."""
    try:
        try:
            value = json.loads(text, parse_constant=_constant, object_pairs_hook=_object)
        except ValueError as exc:
            if isinstance(exc, json.JSONDecodeError) or "digits" not in str(exc):
                raise
            # Python converts integers of at most sys.get_int_max_str_digits() digits: parse once
            # more keeping such literals as markers, so that the walk can name the field.
            value = json.loads(text, parse_constant=_constant, object_pairs_hook=_object, parse_int=_huge_int)
    except json.JSONDecodeError as exc:
        _fail(f"{where + ': ' if where else ''}not valid JSON: {_json_problem(text, exc)}")
    except RecursionError:
        _fail(f"{where + ': ' if where else ''}nested more than {MAX_DEPTH} levels deep")
    _walk(value, where)
    return value


def _json_problem(text: str, exc: json.JSONDecodeError) -> str:
    """JSON's own message, with the likely cause for the mistakes people make."""
    pos = exc.pos
    column = f"at column {exc.colno}"
    before = text[:pos].rstrip()
    if exc.msg.startswith("Unterminated string") or pos >= len(text.rstrip()):
        return (
            f"{exc.msg} {column}: the line ends inside a value (cut short, or one row spread over "
            "several lines? each row is one JSON object on one line)"
        )
    if before.endswith(",") and text[pos : pos + 1] in ("}", "]"):
        return f"a trailing comma before {text[pos]!r} {column}"
    if exc.msg == "Extra data":
        return f"extra data after the JSON value {column} (two rows on one line?)"
    if exc.msg == "Invalid control character at":
        return f"a raw control character U+{ord(text[pos]):04X} inside a string {column} (escape it, e.g. \\n or \\t)"
    if text[pos : pos + 1] == "'":
        return f"{exc.msg} {column} (JSON strings use double quotes)"
    return f"{exc.msg} {column}"


# Values the walk has nothing to check in (the markers above are subclasses, so not these types).
_PLAIN = frozenset({int, float, bool, type(None)})


def _walk(value: Any, base: str) -> None:
    """Refuse, naming the field, what parsed but no row may hold: NaN/Infinity, integers too long to
    convert, repeated keys, nesting deeper than MAX_DEPTH, and lone surrogates (from \\uD800-\\uDFFF
    escapes without their pair: not valid Unicode, and UTF-8 cannot encode them)."""
    pending: list[tuple[Any, str, int]] = [(value, base, 0)]
    while pending:
        item, where, depth = pending.pop()
        if isinstance(item, str):
            _check_text(item, where or "the row")
        elif isinstance(item, dict):
            if depth >= MAX_DEPTH:
                _fail(f"{_path(where) or 'the row'} is nested more than {MAX_DEPTH} levels deep")
            if isinstance(item, _RepeatedKeys):
                _fail(
                    f"{_path(where) or 'the row'} has the key {_show(item.repeated)} more than once; "
                    "a JSON object names each key once"
                )
            children: list[tuple[Any, str, int]] = []
            for key, child in item.items():
                if not key.isascii():
                    _check_text(key, f"a key of {where or 'the row'}")
                if type(child) not in _PLAIN:
                    children.append((child, f"{where}.{key}" if where else key, depth + 1))
            children.reverse()
            pending.extend(children)
        elif isinstance(item, list):
            if depth >= MAX_DEPTH:
                _fail(f"{_path(where) or 'the row'} is nested more than {MAX_DEPTH} levels deep")
            children = [
                (child, f"{where}[{index}]", depth + 1)
                for index, child in enumerate(item)
                if type(child) not in _PLAIN
            ]
            children.reverse()
            pending.extend(children)
        elif isinstance(item, _Constant):
            _fail(
                f"{_path(where) or 'the row'} is {item.literal}, which is not allowed: JSON has no NaN or "
                "Infinity, and rewards must be finite numbers"
            )
        elif isinstance(item, _HugeInt):
            _fail(
                f"{_path(where) or 'the row'} is an integer of {item.digits} digits; numbers must be finite "
                f"(at most {sys.get_int_max_str_digits()} digits, and rewards must fit a float)"
            )


def _path(where: str) -> str:
    where = where.encode("utf-8", "backslashreplace").decode()
    if len(where) <= _PATH_CHARS:
        return where
    return where[: _PATH_CHARS // 2] + "..." + where[-_PATH_CHARS // 2 :]


def _check_text(text: str, where: str) -> None:
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(text[exc.start])
        _fail(
            f"{_path(where)} holds a lone surrogate \\u{code:04x} at "
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
        _fail(f"{where} is not a finite number (an integer of {len(str(abs(int(value))))} digits)")
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
        shown = "missing" if "role" not in value else _show(role)
        _fail(f"{where}.role is {shown}; expected one of {', '.join(sorted(ROLES))}")
    tool_calls = (
        _tool_calls(value["tool_calls"], f"{where}.tool_calls", role) if "tool_calls" in value else ()
    )
    content = value.get("content")
    if tool_calls and (content is None or content == ""):
        content = ""  # OpenAI's assistant turn that only calls tools has null (or no) content
    elif not isinstance(content, str):
        shown = "missing" if "content" not in value else _kind(content)
        hint = (
            " (content parts are not supported: join their text into one string)"
            if isinstance(content, list)
            else ""
        )
        _fail(f"{where}.content must be a string, got {shown}{hint}")
    elif not content.strip():
        _fail(f"{where}.content is empty")
    tool_call_id = None
    if role == "tool":
        tool_call_id = value.get("tool_call_id")
        if not isinstance(tool_call_id, str) or not tool_call_id:
            shown = "missing" if "tool_call_id" not in value else _show(tool_call_id)
            _fail(
                f"{where}.tool_call_id is {shown}; a tool message names the call it answers "
                "(the id of a tool call of an earlier assistant message)"
            )
    return Message(role, content, tool_calls, tool_call_id)


def _tool_calls(value: Any, where: str, role: str) -> tuple[ToolCall, ...]:
    """An assistant turn's calls in OpenAI's shape:
    ``[{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{...}"}}]``."""
    if role != "assistant":
        _fail(f"{where}: only an assistant message may carry tool_calls, not a {role!r} message")
    if not isinstance(value, list):
        _fail(f"{where} must be a list of tool calls, got {_kind(value)}")
    if not value:
        _fail(f"{where} is empty; omit it, or give at least one call")
    calls: list[ToolCall] = []
    for index, call in enumerate(value):
        at = f"{where}[{index}]"
        if not isinstance(call, dict):
            _fail(f"{at} must be an object with 'id', 'type' and 'function', got {_kind(call)}")
        call_id = call.get("id")
        if not isinstance(call_id, str) or not call_id:
            _fail(
                f"{at}.id is {'missing' if 'id' not in call else _show(call_id)}; a tool call needs a non-empty string id"
            )
        if any(earlier.id == call_id for earlier in calls):
            _fail(f"{at}.id {_show(call_id)} repeats the id of an earlier call of this message")
        if call.get("type", "function") != "function":
            _fail(f"{at}.type is {_show(call['type'])}; expected 'function'")
        function = call.get("function")
        if not isinstance(function, dict):
            shown = "missing" if "function" not in call else _kind(function)
            _fail(f"{at}.function must be an object with 'name' and 'arguments', got {shown}")
        name = function.get("name")
        if not isinstance(name, str) or not name.strip():
            _fail(
                f"{at}.function.name is {'missing' if 'name' not in function else _show(name)}; "
                "a tool call names its function"
            )
        arguments = function.get("arguments")
        if not isinstance(arguments, str):
            shown = "missing" if "arguments" not in function else _kind(arguments)
            _fail(
                f"{at}.function.arguments must be a string holding a JSON object (OpenAI's format: "
                f"json.dumps the arguments), got {shown}"
            )
        parsed = _loads(arguments, f"{at}.function.arguments") if arguments.strip() else None
        if not isinstance(parsed, dict):
            _fail(
                f"{at}.function.arguments must hold a JSON object, got {_kind(parsed) if arguments.strip() else 'an empty string'}"
            )
        calls.append(ToolCall(call_id, name, arguments))
    return tuple(calls)


def _messages(value: Any, where: str, *, completion: bool = False) -> list[Message]:
    """The messages at ``where``; with ``completion``, the last one is the sampled completion."""
    if not isinstance(value, list):
        _fail(f"{where} must be a list of messages, got {_kind(value)}")
    if not value:
        _fail(f"{where} is empty")
    messages = [_message(item, f"{where}[{index}]") for index, item in enumerate(value)]
    for index, message in enumerate(messages[1:], start=1):
        if message.role == "system":
            _fail(f"{where}[{index}]: a 'system' message may only come first")
    if completion and messages[-1].tool_calls:
        _fail(
            f"{where}[{len(messages) - 1}]: the completion (the last message) has tool_calls; a completion is "
            "trained as text, so tool calls are accepted in the prompt turns only"
        )
    _check_tool_turns(messages, where)
    return messages


def _check_tool_turns(messages: list[Message], where: str) -> None:
    """OpenAI's rule: an assistant turn's tool calls are each answered by one tool message (with
    the call's id) right after it, before any other turn."""
    open_calls: dict[str, int] = {}  # id -> index of the assistant message that made the call
    answered: set[str] = set()
    for index, message in enumerate(messages):
        if message.role == "tool":
            call_id = message.tool_call_id or ""
            if call_id in open_calls:
                del open_calls[call_id]
                answered.add(call_id)
            elif call_id in answered:
                _fail(
                    f"{where}[{index}].tool_call_id {_show(call_id)} answers a call that was already answered"
                )
            else:
                _fail(
                    f"{where}[{index}].tool_call_id {_show(call_id)} matches no tool call of an earlier "
                    "assistant message"
                )
            continue
        if open_calls:
            _unanswered(open_calls, where, f"before {where}[{index}]")
        for call in message.tool_calls:
            if call.id in answered:
                _fail(f"{where}[{index}].tool_calls: the id {_show(call.id)} was used by an earlier call")
            open_calls[call.id] = index
    if open_calls:
        _unanswered(open_calls, where, "at the end of the prompt")


def _unanswered(open_calls: dict[str, int], where: str, place: str) -> NoReturn:
    call_id, index = next(iter(open_calls.items()))
    _fail(
        f"{where}[{index}].tool_calls: the call {_show(call_id)} has no tool message answering it {place} "
        "(each call is answered by a tool message with its tool_call_id, right after the call)"
    )


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
    return [*prompt, last] if last.role == "assistant" and not last.tool_calls else None


def _carries_tokens(raw: Any) -> bool:
    return isinstance(raw, list) and any(isinstance(item, dict) and "token_ids" in item for item in raw)


def _trajectory(sample: dict[str, Any], where: str) -> tuple[list[Message], Completion]:
    """The prompt turns and the completion of a sample whose messages are a prompt and then a
    trajectory (or carry the sampler's tokens)."""
    raw = sample["messages"]
    messages = _messages(raw, f"{where}.messages")
    count = sample.get("prompt_messages", len(messages) - 1)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count < len(messages):
        _fail(
            f"{where}.prompt_messages must be an integer from 1 to {len(messages) - 1} (how many of its "
            f"{len(messages)} messages are the prompt), got {_show(count)}"
        )
    turns = messages[count:]
    if turns[0].role != "assistant":
        _fail(
            f"{where}.messages[{count}]: the trajectory (after prompt_messages={count}) must start with an "
            f"assistant turn, got role {turns[0].role!r}"
        )
    if messages[-1].role != "assistant":
        _fail(
            f"{where}.messages: the last message must be the assistant's completion, got role {messages[-1].role!r}"
        )
    for index in range(count):
        if isinstance(raw[index], dict) and "token_ids" in raw[index]:
            _fail(
                f"{where}.messages[{index}] carries token_ids but is a prompt turn (prompt_messages={count})"
            )
    turn_tokens = tuple(
        _turn_tokens(raw[count + offset], f"{where}.messages[{count + offset}]")
        if message.role == "assistant"
        else None
        for offset, message in enumerate(turns)
    )
    has_tokens = any(tokens is not None for tokens in turn_tokens)
    if has_tokens and sample.get("logprobs") is not None:
        _fail(
            f"{where} has both 'logprobs' and per-turn token_ids; give the logprobs with each turn's token_ids"
        )
    if "evals" not in sample:
        _fail(f"{where} has no 'evals' (its rewards, e.g. {{\"score\": 0.7}})")
    return messages[:count], Completion(
        text=messages[-1].content,
        rewards=_rewards(sample["evals"], f"{where}.evals"),
        logprobs=None if has_tokens else _logprobs(sample.get("logprobs"), f"{where}.logprobs"),
        finished=_finished(sample.get("finish_reason"), f"{where}.finish_reason"),
        turns=tuple(turns),
        turn_tokens=turn_tokens,
        sampling=_sampling(sample.get("sampling"), f"{where}.sampling"),
    )


def _turn_tokens(message: dict[str, Any], where: str) -> TurnTokens | None:
    """The sampler's token ids (and logprobs) of one assistant turn, if the message carries them."""
    if "token_ids" not in message:
        if "logprobs" in message:
            _fail(
                f"{where} has 'logprobs' without 'token_ids'; the logprobs belong to the sampler's token ids"
            )
        return None
    ids = message["token_ids"]
    if not isinstance(ids, list) or not ids:
        _fail(f"{where}.token_ids must be a non-empty list of token ids, got {_kind(ids)}")
    for index, item in enumerate(ids):
        if isinstance(item, bool) or not isinstance(item, int) or item < 0:
            _fail(f"{where}.token_ids[{index}] must be a token id (an integer >= 0), got {_show(item)}")
    logprobs = _logprobs(message.get("logprobs"), f"{where}.logprobs")
    if logprobs is not None:
        if len(logprobs) != len(ids):
            _fail(
                f"{where}.logprobs has {len(logprobs)} numbers but token_ids has {len(ids)}; give one per token"
            )
        for index, value in enumerate(logprobs):
            if value > 0:
                _fail(f"{where}.logprobs[{index}] is {value}; a log-probability is at most 0")
    return TurnTokens(tuple(ids), tuple(logprobs) if logprobs is not None else None)


def _sampling(value: Any, where: str) -> SamplingParams | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        _fail(
            f'{where} must be an object like {{"temperature": 1.0, "top_p": 1.0, "top_k": -1}}, got {_kind(value)}'
        )
    temperature = value.get("temperature")
    if temperature is not None and (_number(temperature, f"{where}.temperature") < 0):
        _fail(f"{where}.temperature must be >= 0, got {_show(temperature)}")
    top_p = value.get("top_p")
    if top_p is not None and not 0 < _number(top_p, f"{where}.top_p") <= 1:
        _fail(f"{where}.top_p must be in (0, 1], got {_show(top_p)}")
    top_k = value.get("top_k")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < -1):
        _fail(f"{where}.top_k must be an integer >= -1 (-1 or 0: no top-k), got {_show(top_k)}")
    return SamplingParams(
        temperature=float(temperature) if temperature is not None else None,
        top_p=float(top_p) if top_p is not None else None,
        top_k=top_k,
    )


def _tools(value: Any) -> tuple[dict[str, Any], ...] | None:
    """The row's function schemas, in OpenAI's ``tools`` shape."""
    if value is None:
        return None
    if not isinstance(value, list):
        _fail(f"'tools' must be a list of function schemas, got {_kind(value)}")
    for index, tool in enumerate(value):
        at = f"tools[{index}]"
        if not isinstance(tool, dict):
            _fail(
                f'{at} must be an object like {{"type": "function", "function": {{"name": ...}}}}, got {_kind(tool)}'
            )
        if tool.get("type", "function") != "function":
            _fail(f"{at}.type is {_show(tool.get('type'))}; expected 'function'")
        function = tool.get("function")
        if (
            not isinstance(function, dict)
            or not isinstance(function.get("name"), str)
            or not function["name"].strip()
        ):
            _fail(f"{at}.function must be an object with a non-empty 'name'")
    return tuple(value)


def _parse_samples(row: dict[str, Any]) -> tuple[list[Message], list[Completion]]:
    samples = row["samples"]
    if not isinstance(samples, list):
        _fail(f"'samples' must be a list, got {_kind(samples)}")
    if len(samples) < MIN_COMPLETIONS:
        _fail(
            f"'samples' has {len(samples)} sample(s); a row is a prompt group and needs at least {MIN_COMPLETIONS}"
        )
    if len(samples) > MAX_COMPLETIONS:
        _fail(f"'samples' has {len(samples)} samples; a row holds at most {MAX_COMPLETIONS}")
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
        if "prompt_messages" in sample or _carries_tokens(raw):
            turn_prompt, completion = _trajectory(sample, where)
            completions.append(completion)  # (first_raw stays empty: no fast path after a trajectory)
            if prompt is None:
                prompt = turn_prompt
            elif turn_prompt != prompt:
                _fail(
                    f"{where}: prompt turns differ from samples[0]'s; all samples of a row share one prompt"
                )
            continue
        messages = _same_prompt_fast_path(raw, first_raw, prompt, where)
        if messages is None:
            messages = _messages(raw, f"{where}.messages", completion=True)
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
    if len(texts) > MAX_COMPLETIONS:
        _fail(f"'completions' has {len(texts)} items; a row holds at most {MAX_COMPLETIONS}")
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
        tools = _tools(row.get("tools"))
    except _ReasonError as exc:
        reason = str(exc)
        if len(reason) > MAX_REASON_CHARS:
            half = MAX_REASON_CHARS // 2
            reason = reason[:half] + " ... " + reason[-half:]
        raise RowError(line, reason) from None
    return PromptGroup(line, prompt, completions, detected, tools)


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
        except Exception as exc:  # a bug here must not turn a bad row into endless Job retries
            yield RowError(
                number,
                f"could not be checked: internal error of the validator ({type(exc).__name__}); "
                "the row is refused, please report it",
            )
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
