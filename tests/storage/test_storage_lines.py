"""Splitting a chunked byte stream into lines in bounded memory, and hashing while reading."""

from __future__ import annotations

import hashlib
import io
import random
from collections.abc import Iterator

import pytest
from rft.storage.lines import DigestingChunks, split_lines


def _chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 10_000])
def test_lines_do_not_depend_on_chunking(chunk: int) -> None:
    data = b"alpha\nbeta\r\n\ngamma\r\ndelta"
    assert list(split_lines(_chunked(data, chunk))) == [b"alpha", b"beta", b"", b"gamma", b"delta"]


def test_random_documents_match_splitlines_reference() -> None:
    rng = random.Random(7)
    for _ in range(200):
        lines = [
            bytes(rng.choice(b"ab{}\r") for _ in range(rng.randrange(0, 20)))
            for _ in range(rng.randrange(0, 15))
        ]
        data = b"\n".join(lines)
        expected = [line[:-1] if line.endswith(b"\r") else line for line in data.split(b"\n")]
        if data.endswith(b"\n") or not data:
            expected = expected[:-1]
        assert list(split_lines(_chunked(data, rng.randrange(1, 9)))) == expected


def test_trailing_newline_adds_no_empty_line_and_empty_stream_yields_nothing() -> None:
    assert list(split_lines([b"a\n"])) == [b"a"]
    assert list(split_lines([b"a\n\n"])) == [b"a", b""]
    assert list(split_lines([])) == []
    assert list(split_lines([b""])) == []


@pytest.mark.parametrize("chunk", [1, 3, 5, 1000])
def test_long_lines_are_cut_to_limit_plus_one(chunk: int) -> None:
    data = b"short\n" + b"x" * 50 + b"\nexactly10!\r\nok"
    lines = list(split_lines(_chunked(data, chunk), max_line_bytes=10))
    assert lines == [b"short", b"x" * 11, b"exactly10!", b"ok"]


def test_a_cut_line_stays_over_the_limit_even_if_the_cut_ends_in_cr() -> None:
    data = b"y" * 10 + b"\r" + b"z" * 5 + b"\n"
    assert list(split_lines(_chunked(data, 4), max_line_bytes=10)) == [b"y" * 10 + b"\r"]


def test_memory_stays_bounded_for_a_huge_line() -> None:
    """A 64 MiB line never gets buffered: what is kept is bounded by the limit."""
    chunk = b"q" * (1024 * 1024)

    def stream() -> Iterator[bytes]:
        for _ in range(64):
            yield chunk
        yield b"\nnext"

    lines = list(split_lines(stream(), max_line_bytes=1000))
    assert [len(line) for line in lines] == [1001, 4]


def test_digesting_chunks_hash_and_count_the_raw_bytes() -> None:
    data = b"line one\r\nline two\n" * 1000
    chunks = DigestingChunks(io.BytesIO(data), chunk_bytes=777)
    assert len(list(split_lines(chunks))) == 2000
    assert chunks.bytes == len(data)
    assert chunks.digest == "sha256:" + hashlib.sha256(data).hexdigest()
