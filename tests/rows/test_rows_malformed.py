"""Malformed datasets: validation never crashes, and names every bad line with a reason.

Each case is a whole file as raw bytes (encodings matter), mostly good rows around the bad ones.
For each, the validator must report exactly the expected line numbers, each reason must contain
the expected fragments (the field path where there is one, and what is wrong), and the good rows
of the file must still count as valid. Cases marked accepted document what is *not* an error.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from rft import storage
from rft.pods import validate
from rft.rows import parse_row, validate_bytes
from rft_devcluster.pytest_fixtures_storage import S3Bucket

# --- good rows to build files from -----------------------------------------------------------------

USER = {"role": "user", "content": "What is 2+2?"}


def sample(
    answer: str = "4", score: Any = 1.0, prompt: list[Any] | None = None, **extra: Any
) -> dict[str, Any]:
    messages = [*(prompt if prompt is not None else [USER]), {"role": "assistant", "content": answer}]
    return {"messages": messages, "evals": {"score": score}, **extra}


def row(*samples: dict[str, Any]) -> dict[str, Any]:
    return {"samples": list(samples) or [sample("4", 1.0), sample("5", 0.0)]}


def enc(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()


GOOD = enc(row())
GOOD_PC = enc({"prompt": "Say hi", "completions": ["hi", "hello"], "rewards": [0.2, 0.8]})


def with_sample(index: int = 1, **changes: Any) -> dict[str, Any]:
    """A good row whose samples[index] has the given keys replaced."""
    base = row()
    base["samples"][index] = {**base["samples"][index], **changes}
    return base


def with_messages(*messages: Any) -> dict[str, Any]:
    """A good row whose samples all have these messages then their own completion."""
    return row(
        {"messages": [*messages, {"role": "assistant", "content": "4"}], "evals": {"score": 1}},
        {"messages": [*messages, {"role": "assistant", "content": "5"}], "evals": {"score": 0}},
    )


def call(
    call_id: str = "call_1", name: str = "add", arguments: Any = '{"a": 2, "b": 2}', **extra: Any
) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}, **extra}


def calling(*calls: dict[str, Any], content: Any = None) -> dict[str, Any]:
    return {"role": "assistant", "content": content, "tool_calls": list(calls)}


def tool(call_id: Any = "call_1", content: str = "4", **extra: Any) -> dict[str, Any]:
    message = {"role": "tool", "content": content, **extra}
    if call_id is not None:
        message["tool_call_id"] = call_id
    return message


# A well-formed agentic row: a tool call in the prompt turns, answered, then the completion.
TOOL_ROW = with_messages(
    USER,
    calling(call("call_1"), call("call_2", arguments='{"a": 1, "b": 1}')),
    tool("call_1"),
    tool("call_2", "2"),
)


@dataclass
class Case:
    """A file, the lines that must be reported (line -> fragments its reason must contain), and
    the rows that must count as valid. ``lines`` are joined with ``\\n`` unless ``raw`` is given."""

    name: str
    category: str
    lines: list[bytes] = field(default_factory=list)
    errors: dict[int, list[str]] = field(default_factory=dict)
    valid_rows: int | None = None  # default: the file's rows minus the reported lines
    raw: bytes | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def data(self) -> bytes:
        return self.raw if self.raw is not None else b"\n".join(self.lines) + b"\n"


def bad(name: str, category: str, line: bytes, *fragments: str, **options: Any) -> Case:
    """Good rows on lines 1-2 and 4-5, the bad one on line 3."""
    return Case(name, category, [GOOD, GOOD, line, GOOD, GOOD], {3: list(fragments)}, 4, options=options)


def bad_row(name: str, category: str, value: Any, *fragments: str) -> Case:
    return bad(name, category, enc(value), *fragments)


def accepted(name: str, category: str, data: bytes, rows: int) -> Case:
    return Case(name, category, raw=data, errors={}, valid_rows=rows)


TRUNCATED = GOOD[: len(GOOD) // 2]
PRETTY = json.dumps(row(), indent=1).encode().split(b"\n")
UTF16_ROWS = "\n".join(GOOD.decode() for _ in range(3)) + "\n"
UTF16_ERRORS = {1: ["UTF-16", "byte-order mark"], 2: ["NUL byte"], 3: ["NUL byte"], 4: ["NUL byte"]}

CASES: list[Case] = [
    # --- bad JSON ----------------------------------------------------------------------------------
    bad("truncated", "json", TRUNCATED, "not valid JSON", "the line ends inside a value"),
    bad(
        "truncated-in-string",
        "json",
        GOOD[:30],
        "not valid JSON",
        "Unterminated string",
        "ends inside a value",
    ),
    bad("trailing-comma-object", "json", GOOD[:-1] + b", }", "not valid JSON", "trailing comma before '}'"),
    bad("trailing-comma-array", "json", GOOD.replace(b"}]}", b"},]}"), "trailing comma before ']'"),
    bad("nan-reward", "json", GOOD.replace(b"0.0", b"NaN"), "samples[1].evals.score is NaN", "finite"),
    bad(
        "infinity-reward-pc",
        "json",
        b'{"prompt": "p", "completions": ["a", "b"], "rewards": [Infinity, 1]}',
        "rewards[0] is Infinity",
    ),
    bad(
        "infinity-logprob",
        "json",
        enc(with_sample(0, logprobs=[-0.5, 0.25])).replace(b"0.25", b"-Infinity"),
        "samples[0].logprobs[1] is -Infinity",
    ),
    bad(
        "duplicate-key-row",
        "json",
        b'{"samples": [], ' + GOOD[1:],
        "the row has the key 'samples' more than once",
    ),
    bad(
        "duplicate-key-evals",
        "json",
        GOOD.replace(b'"score": 0.0', b'"score": 0.0, "score": 1.0'),
        "samples[1].evals has the key 'score' more than once",
    ),
    bad("top-level-array", "json", b"[1, 2]", "a row must be a JSON object, got an array"),
    bad("top-level-string", "json", b'"a row"', "a row must be a JSON object, got a string"),
    bad("top-level-null", "json", b"null", "a row must be a JSON object, got null"),
    bad("top-level-number", "json", b"42", "a row must be a JSON object, got a number"),
    Case(
        "row-over-two-lines",
        "json",
        [GOOD, GOOD, PRETTY[0] + PRETTY[1], b" ".join(PRETTY[2:]), GOOD],
        {3: ["the line ends inside a value", "one row spread over several lines"], 4: ["not valid JSON"]},
        3,
    ),
    Case(
        "pretty-printed-file", "json", PRETTY, {n: ["not valid JSON"] for n in range(1, len(PRETTY) + 1)}, 0
    ),
    bad(
        "two-rows-on-one-line",
        "json",
        GOOD + b" " + GOOD,
        "extra data after the JSON value",
        "two rows on one line",
    ),
    bad(
        "single-quotes", "json", GOOD.replace(b'"', b"'"), "not valid JSON", "JSON strings use double quotes"
    ),
    bad("raw-tab-in-string", "json", GOOD.replace(b'"4"', b'"\t4"'), "raw control character U+0009"),
    bad("unquoted-key", "json", GOOD.replace(b'"samples"', b"samples"), "not valid JSON", "column 2"),
    # --- wrong types -------------------------------------------------------------------------------
    bad_row(
        "reward-string",
        "types",
        with_sample(evals={"score": "0.5"}),
        "samples[1].evals.score must be a number, got a string",
    ),
    bad_row(
        "reward-bool", "types", with_sample(evals={"score": False}), "samples[1].evals.score is a boolean"
    ),
    bad_row(
        "reward-null",
        "types",
        with_sample(evals={"score": None}),
        "samples[1].evals.score must be a number, got null",
    ),
    bad_row(
        "reward-list",
        "types",
        with_sample(evals={"score": [1]}),
        "samples[1].evals.score must be a number, got an array",
    ),
    bad_row(
        "evals-number",
        "types",
        with_sample(0, evals=1.0),
        "samples[0].evals must be an object of named rewards",
    ),
    bad_row(
        "pc-reward-string",
        "types",
        {"prompt": "p", "completions": ["a", "b"], "rewards": [1, "2"]},
        "rewards[1] must be a number, got a string",
    ),
    bad_row(
        "messages-object",
        "types",
        with_sample(0, messages={"role": "user"}),
        "samples[0].messages must be a list of messages, got an object",
    ),
    bad_row("samples-string", "types", {"samples": "many"}, "'samples' must be a list, got a string"),
    bad_row(
        "content-object",
        "types",
        with_sample(messages=[USER, {"role": "assistant", "content": {"text": "4"}}]),
        "samples[1].messages[1].content must be a string, got an object",
    ),
    bad_row(
        "content-parts",
        "types",
        with_messages({"role": "user", "content": [{"type": "text", "text": "hi"}]}),
        "samples[0].messages[0].content must be a string, got an array",
        "content parts are not supported",
    ),
    bad_row(
        "content-null",
        "types",
        with_sample(messages=[USER, {"role": "assistant", "content": None}]),
        "samples[1].messages[1].content must be a string, got null",
    ),
    bad_row(
        "role-unknown",
        "types",
        with_messages({"role": "developer", "content": "be brief"}, USER),
        "samples[0].messages[0].role is 'developer'; expected one of assistant, system, tool, user",
    ),
    bad_row(
        "role-number",
        "types",
        with_messages({"role": 1, "content": "x"}),
        "samples[0].messages[0].role is 1; expected",
    ),
    bad_row(
        "role-null",
        "types",
        with_messages({"role": None, "content": "x"}),
        "samples[0].messages[0].role is null; expected",
    ),
    bad_row(
        "completion-null",
        "types",
        {"prompt": "p", "completions": ["a", None], "rewards": [1, 0]},
        "completions[1] must be a string, got null",
    ),
    # --- encodings ---------------------------------------------------------------------------------
    bad(
        "latin-1",
        "encoding",
        GOOD.replace(b"What", "Wh\u00e4t".encode("latin-1")),
        f"not valid UTF-8 (byte {GOOD.index(b'What') + 3} is 0xe4)",
        "Latin-1",
    ),
    bad("overlong-utf8", "encoding", GOOD.replace(b"What", b"Wh\xc0\xafat"), "not valid UTF-8", "0xc0"),
    bad(
        "surrogate-bytes-utf8",
        "encoding",
        GOOD.replace(b"What", b"Wh\xed\xa0\x80at"),
        "not valid UTF-8",
        "0xed",
    ),
    Case("utf-16-le-bom", "encoding", raw=UTF16_ROWS.encode("utf-16"), errors=UTF16_ERRORS, valid_rows=0),
    Case(
        "utf-16-be-bom",
        "encoding",
        raw=b"\xfe\xff" + UTF16_ROWS.encode("utf-16-be"),
        errors={1: ["UTF-16", "byte-order mark"], 2: ["NUL byte at byte 1"], 3: ["NUL byte at byte 1"]},
        valid_rows=0,
    ),
    Case(
        "utf-16-no-bom",
        "encoding",
        raw=UTF16_ROWS.encode("utf-16-le"),
        errors={
            1: ["NUL byte at byte 2", "UTF-16"],
            2: ["NUL byte at byte 1"],
            3: ["NUL byte"],
            4: ["NUL byte"],
        },
        valid_rows=0,
    ),
    accepted("utf-8-bom-at-start", "encoding", b"\xef\xbb\xbf" + b"\n".join([GOOD] * 3), 3),
    bad(
        "utf-8-bom-on-line-3",
        "encoding",
        b"\xef\xbb\xbf" + GOOD,
        "byte-order mark, allowed only at the start",
    ),
    bad(
        "lone-surrogate-key",
        "encoding",
        GOOD.replace(b'"score": 0.0', b'"\\ud800": 0.0'),
        "a key of samples[1].evals holds a lone surrogate \\ud800",
    ),
    bad(
        "lone-surrogate-content",
        "encoding",
        GOOD.replace(b'"5"', b'"5\\udfff"'),
        "samples[1].messages[1].content holds a lone surrogate \\udfff at character 2",
    ),
    bad(
        "lone-surrogate-unknown-key",
        "encoding",
        GOOD[:-1] + b', "id": "\\ud83d"}',
        "id holds a lone surrogate \\ud83d",
    ),
    bad(
        "reversed-surrogate-pair",
        "encoding",
        b'{"prompt": "\\ude00\\ud83d", "completions": ["a", "b"], "rewards": [0, 1]}',
        "prompt holds a lone surrogate \\ude00",
    ),
    accepted(
        "surrogate-pair-escape",
        "encoding",
        b"\n".join([GOOD.replace(b'"4"', b'"\\ud83d\\ude00 4"')] * 3),
        3,
    ),
    bad("nul-byte", "encoding", GOOD.replace(b'"4"', b'"4\x00"'), "NUL byte at byte", "\\u0000"),
    accepted("nul-escape", "encoding", b"\n".join([GOOD.replace(b'"4"', b'"4\\u0000"')] * 3), 3),
    accepted("crlf", "encoding", b"\r\n".join([GOOD] * 3) + b"\r\n", 3),
    Case(
        "crlf-with-bad-line",
        "encoding",
        raw=b"\r\n".join([GOOD, b"{", GOOD, GOOD]) + b"\r\n",
        errors={2: ["ends inside a value"]},
        valid_rows=3,
    ),
    accepted(
        "non-ascii-content",
        "encoding",
        b"\n".join([GOOD.replace(b'"4"', '"vier \u00e4\u6f22\u5b57"'.encode())] * 3),
        3,
    ),
    # --- sizes -------------------------------------------------------------------------------------
    bad(
        "line-over-limit",
        "sizes",
        enc(with_sample(messages=[USER, {"role": "assistant", "content": "x" * 5000}])),
        "line is longer than the limit of 4096 bytes",
        max_line_bytes=4096,
    ),
    bad_row(
        "too-many-samples",
        "sizes",
        row(*[sample(str(i), i % 2) for i in range(1025)]),
        "'samples' has 1025 samples; a row holds at most 1024",
    ),
    bad_row(
        "too-many-completions",
        "sizes",
        {"prompt": "p", "completions": ["c"] * 2000, "rewards": [0] * 2000},
        "'completions' has 2000 items; a row holds at most 1024",
    ),
    bad(
        "huge-int-reward",
        "sizes",
        GOOD.replace(b"0.0", b"9" * 5000),
        "samples[1].evals.score is an integer of 5000 digits",
    ),
    bad(
        "big-int-reward",
        "sizes",
        GOOD.replace(b"0.0", b"-" + b"9" * 400),
        "samples[1].evals.score is not a finite number (an integer of 400 digits)",
    ),
    bad(
        "huge-int-unknown-key",
        "sizes",
        GOOD[:-1] + b', "seed": ' + b"1" * 4400 + b"}",
        "seed is an integer of 4400 digits",
    ),
    bad(
        "overflowing-float",
        "sizes",
        GOOD.replace(b"0.0", b"1e999"),
        "samples[1].evals.score is not a finite number",
    ),
    bad(
        "deep-metadata",
        "sizes",
        GOOD[:-1] + b', "meta": ' + b"[" * 100 + b"]" * 100 + b"}",
        "meta[0][0][0]",
        "[0][0] is nested more than 64 levels deep",
    ),
    bad(
        "deep-role",
        "sizes",
        GOOD.replace(b'"user"', b"[" * 200 + b"]" * 200, 1),
        "samples[0].messages[0].role[0][0]",
        "is nested more than 64 levels deep",
    ),
    bad("recursion-limit", "sizes", b"[" * 100_000 + b"]" * 100_000, "nested more than 64 levels deep"),
    bad("deep-objects", "sizes", b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "nested more than 64 levels deep"),
    Case(
        "empty-file", "sizes", raw=b"", errors={0: ["the dataset is empty", "at least 3 rows"]}, valid_rows=0
    ),
    Case(
        "only-blank-lines",
        "sizes",
        raw=b"\n  \n\t\n\r\n",
        errors={0: ["no rows, only 4 blank line(s)"]},
        valid_rows=0,
    ),
    bad("blank-line-in-the-middle", "sizes", b"   ", "blank line; blank lines are allowed only at the end"),
    Case(
        "too-many-rows",
        "sizes",
        [GOOD] * 6,
        {5: ["row 5 is over the limit of 4 rows"]},
        4,
        options={"max_rows": 4},
    ),
    # --- tool-call shapes --------------------------------------------------------------------------
    accepted("tool-calls-well-formed", "tools", b"\n".join([enc(TOOL_ROW)] * 3), 3),
    accepted(
        "tool-calls-pc-prompt",
        "tools",
        b"\n".join(
            [
                enc(
                    {
                        "prompt": [USER, calling(call(), content="Let me add."), tool()],
                        "completions": ["4", "5"],
                        "rewards": [1, 0],
                    }
                )
            ]
            * 3
        ),
        3,
    ),
    bad_row(
        "tool-calls-not-a-list",
        "tools",
        with_messages(USER, {"role": "assistant", "content": None, "tool_calls": call()}, tool()),
        "samples[0].messages[1].tool_calls must be a list of tool calls, got an object",
    ),
    bad_row(
        "tool-calls-empty",
        "tools",
        with_messages(USER, calling(content="hm")),
        "samples[0].messages[1].tool_calls is empty",
    ),
    bad_row(
        "tool-call-without-name",
        "tools",
        with_messages(
            USER, calling({"id": "call_1", "type": "function", "function": {"arguments": "{}"}}), tool()
        ),
        "samples[0].messages[1].tool_calls[0].function.name is missing",
    ),
    bad_row(
        "tool-call-without-function",
        "tools",
        with_messages(USER, calling({"id": "call_1", "type": "function", "name": "add"}), tool()),
        "samples[0].messages[1].tool_calls[0].function must be an object",
    ),
    bad_row(
        "tool-call-arguments-object",
        "tools",
        with_messages(USER, calling(call(arguments={"a": 2})), tool()),
        "samples[0].messages[1].tool_calls[0].function.arguments must be a string holding a JSON object",
        "got an object",
    ),
    bad_row(
        "tool-call-arguments-bad-json",
        "tools",
        with_messages(USER, calling(call(arguments="{'a': 2}")), tool()),
        "samples[0].messages[1].tool_calls[0].function.arguments: not valid JSON",
    ),
    bad_row(
        "tool-call-arguments-array",
        "tools",
        with_messages(USER, calling(call(arguments="[2, 2]")), tool()),
        "tool_calls[0].function.arguments must hold a JSON object, got an array",
    ),
    bad_row(
        "tool-call-arguments-nan",
        "tools",
        with_messages(USER, calling(call(arguments='{"a": NaN}')), tool()),
        "tool_calls[0].function.arguments.a is NaN",
    ),
    bad_row(
        "tool-call-arguments-lone-surrogate",
        "tools",
        with_messages(USER, calling(call(arguments='{"city": "\\ud800"}')), tool()),
        "tool_calls[0].function.arguments.city holds a lone surrogate \\ud800",
    ),
    bad_row(
        "tool-call-without-id",
        "tools",
        with_messages(
            USER, calling({"type": "function", "function": {"name": "add", "arguments": "{}"}}), tool()
        ),
        "samples[0].messages[1].tool_calls[0].id is missing",
    ),
    bad_row(
        "tool-call-type",
        "tools",
        with_messages(USER, calling(call(type="retrieval")), tool()),
        "tool_calls[0].type is 'retrieval'; expected 'function'",
    ),
    bad_row(
        "tool-message-without-id",
        "tools",
        with_messages(USER, calling(call()), tool(None)),
        "samples[0].messages[2].tool_call_id is missing",
    ),
    bad_row(
        "tool-call-id-unmatched",
        "tools",
        with_messages(USER, calling(call()), tool("call_9")),
        "samples[0].messages[2].tool_call_id 'call_9' matches no tool call of an earlier assistant message",
    ),
    bad_row(
        "tool-message-without-call",
        "tools",
        with_messages(USER, tool("call_1")),
        "samples[0].messages[1].tool_call_id 'call_1' matches no tool call",
    ),
    bad_row(
        "tool-call-answered-twice",
        "tools",
        with_messages(USER, calling(call()), tool(), tool()),
        "samples[0].messages[3].tool_call_id 'call_1' answers a call that was already answered",
    ),
    bad_row(
        "tool-call-unanswered",
        "tools",
        with_messages(USER, calling(call(), call("call_2")), tool()),
        "samples[0].messages[1].tool_calls: the call 'call_2' has no tool message answering it before "
        "samples[0].messages[3]",
    ),
    bad_row(
        "tool-call-unanswered-pc",
        "tools",
        {"prompt": [USER, calling(call())], "completions": ["4", "5"], "rewards": [1, 0]},
        "prompt[1].tool_calls: the call 'call_1' has no tool message answering it at the end of the prompt",
    ),
    bad_row(
        "tool-calls-in-completion",
        "tools",
        with_sample(messages=[USER, calling(call())]),
        "samples[1].messages[1]: the completion (the last message) has tool_calls",
    ),
    bad_row(
        "tool-calls-on-user",
        "tools",
        with_messages({"role": "user", "content": "x", "tool_calls": [call()]}),
        "samples[0].messages[0].tool_calls: only an assistant message may carry tool_calls, not a 'user' message",
    ),
    bad_row(
        "tool-call-id-repeated",
        "tools",
        with_messages(USER, calling(call(), call()), tool(), tool()),
        "tool_calls[1].id 'call_1' repeats the id of an earlier call",
    ),
]


def _rows_of(data: bytes) -> int:
    return sum(1 for line in data.split(b"\n") if line.strip())


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_malformed_dataset_is_reported_by_line(case: Case) -> None:
    data = case.data()
    report = validate_bytes(data, max_errors=1000, **case.options)
    reported = dict(report.errors)
    assert sorted(reported) == sorted(case.errors), report.errors
    assert report.error_count == len(case.errors)
    for line, fragments in case.errors.items():
        for fragment in fragments:
            assert fragment in reported[line], f"line {line}: {reported[line]!r} lacks {fragment!r}"
        assert "internal error" not in reported[line]
    assert report.ok == (not case.errors)
    assert report.valid_rows == (
        case.valid_rows if case.valid_rows is not None else _rows_of(data) - len(case.errors)
    )


def test_the_set_covers_every_category() -> None:
    categories = {case.category for case in CASES}
    assert categories == {"json", "types", "encoding", "sizes", "tools"}
    assert sum(1 for case in CASES if case.errors) >= 40
    assert len({case.name for case in CASES}) == len(CASES)


def test_all_bad_lines_of_one_file_are_reported_and_good_ones_counted() -> None:
    """Every single bad line of the set in one file, between good rows: each reported at its line."""
    data, expected, good = _all_single_line_cases()
    report = validate_bytes(data, max_errors=10_000)
    assert [line for line, _ in report.errors] == sorted(expected)
    for line, reason in report.errors:
        assert all(fragment in reason for fragment in expected[line]), (line, reason)
    assert report.valid_rows == good
    assert report.rows == _rows_of(data)  # the blank line is no row


def test_tool_calls_reach_the_chat_template_in_openai_shape() -> None:
    group = parse_row(1, enc(TOOL_ROW))
    assert [message.template_dict() for message in group.prompt] == [
        USER,
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "add", "arguments": {"a": 2, "b": 2}},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "add", "arguments": {"a": 1, "b": 1}},
                },
            ],
        },
        {"role": "tool", "content": "4", "tool_call_id": "call_1"},
        {"role": "tool", "content": "2", "tool_call_id": "call_2"},
    ]
    assert [completion.text for completion in group.completions] == ["4", "5"]


INSERTS = [
    b"\\ud800",
    b"NaN",
    b"[",
    b"{",
    b",",
    b'"',
    b"\x00",
    b"\xff",
    b"\n",
    b"\r",
    b"\xef\xbb\xbf",
    b"9" * 5000,
]


def corrupt(rng: random.Random, line: bytes) -> bytes:
    """The line truncated, or with one byte replaced, deleted, or something nasty inserted."""
    at = rng.randrange(len(line))
    kind = rng.randrange(4)
    if kind == 0:
        return line[:at]
    if kind == 1:
        return line[:at] + bytes([rng.randrange(256)]) + line[at + 1 :]
    if kind == 2:
        return line[:at] + line[at + 1 :]
    return line[:at] + rng.choice(INSERTS) + line[at:]


def test_random_corruptions_never_crash() -> None:
    """Corrupted rows (seeded) are reported by line, never raised, and never an internal error."""
    rng = random.Random(18)
    sources = [GOOD, GOOD_PC, enc(TOOL_ROW)]
    for _ in range(1500):
        lines = [rng.choice(sources) for _ in range(4)]
        index = rng.randrange(len(lines))
        lines[index] = corrupt(rng, lines[index])
        data = b"\n".join(lines)
        report = validate_bytes(data, min_rows=1, max_errors=100)
        total_lines = data.count(b"\n") + 1
        for line, reason in report.errors:
            assert 0 <= line <= total_lines, (line, reason, data)
            assert "internal error" not in reason, (reason, data)


def _all_single_line_cases() -> tuple[bytes, dict[int, list[str]], int]:
    """One file holding every single bad line of the set between good rows: data, errors, good rows."""
    singles = [case for case in CASES if set(case.errors) == {3} and not case.options]
    lines: list[bytes] = []
    expected: dict[int, list[str]] = {}
    for case in singles:
        lines += [GOOD, case.lines[2]]
        expected[len(lines)] = case.errors[3]
    lines.append(GOOD)
    return b"\n".join(lines) + b"\n", expected, len(singles) + 1


def test_the_validation_job_reports_lines_within_the_termination_message_limit(
    s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    """`python -m rft.pods.validate` as the Job runs it, on moto S3: exit 1 (invalid data, not the
    retried storage code 2), the first errors by line, the total count, and under 4096 bytes."""
    data, expected, good = _all_single_line_cases()
    source = f"{s3_bucket.url}/datasets/malformed.jsonl"
    storage.create_bytes(source, data)
    log = tmp_path / "termination-log"
    result = subprocess.run(
        [sys.executable, "-m", "rft.pods.validate", "--source", source, "--termination-log", str(log)],
        env=s3_bucket.pod_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    message = log.read_bytes()
    assert len(message) < 4096
    summary = json.loads(message)
    assert summary["ok"] is False
    assert summary["errorCount"] == len(expected)
    assert summary["rows"] == _rows_of(data)
    assert summary["validRows"] == good
    kept = summary["errors"]
    assert 5 <= len(kept) <= 20
    assert [error["line"] for error in kept] == sorted(expected)[: len(kept)]
    for error in kept:
        first = expected[error["line"]][0]
        assert error["message"].startswith(first[:200]) or first in error["message"], error
    assert summary["errorsOmitted"] == len(expected) - len(kept)
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [event["line"] for event in events if event["event"] == "row_error"] == sorted(expected)[:20]
    assert f"INVALID: {source}" in result.stdout
    assert f"{len(expected)} error(s); the first:" in result.stdout


@pytest.mark.parametrize("name", ["utf-16-le-bom", "recursion-limit", "huge-int-reward", "empty-file"])
def test_the_validation_job_exits_invalid_not_retryable(name: str, tmp_path: Path) -> None:
    """The crash-prone files of the set, through the entry point in-process: exit 1 and a summary."""
    case = next(case for case in CASES if case.name == name)
    source = tmp_path / "d.jsonl"
    source.write_bytes(case.data())
    log = tmp_path / "log"
    assert validate.main(["--source", str(source), "--termination-log", str(log)]) == validate.EXIT_INVALID
    summary = json.loads(log.read_bytes())
    assert [error["line"] for error in summary["errors"]] == sorted(case.errors)
