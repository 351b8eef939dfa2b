"""Streaming helpers: split a byte stream into lines in bounded memory, and hash while reading."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import BinaryIO

CHUNK_BYTES = 1024 * 1024


def iter_chunks(stream: BinaryIO, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """Read ``stream`` to its end in chunks of at most ``chunk_bytes``."""
    while chunk := stream.read(chunk_bytes):
        yield chunk


def split_lines(chunks: Iterable[bytes], max_line_bytes: int | None = None) -> Iterator[bytes]:
    """Yield the lines of a chunked byte stream without their ``\\n`` or ``\\r\\n`` endings.

    Memory stays bounded by the chunk size plus ``max_line_bytes``: a line longer than
    ``max_line_bytes`` is yielded cut to ``max_line_bytes + 1`` bytes (the rest is discarded while
    streaming), so a caller can tell it was too long by its length. A final line without a
    newline is yielded too; an empty stream yields nothing.
    """
    # Keep one byte more than the limit for a '\r' that may end a line of exactly the limit.
    keep = max_line_bytes + 2 if max_line_bytes is not None else None
    pending = bytearray()
    seen = 0  # bytes of the unfinished line seen so far (pending holds at most `keep` of them)
    in_line = False
    for chunk in chunks:
        start = 0
        end = len(chunk)
        while start < end:
            newline = chunk.find(b"\n", start)
            stop = end if newline < 0 else newline
            if not in_line and newline >= 0:
                yield _finish(chunk[start:stop], stop - start, max_line_bytes)  # the whole line is here
            else:
                room = stop - start if keep is None else min(stop - start, max(keep - len(pending), 0))
                pending += chunk[start : start + room]
                seen += stop - start
                in_line = True
                if newline < 0:
                    break
                yield _finish(bytes(pending), seen, max_line_bytes)
                pending.clear()
                seen = 0
                in_line = False
            start = newline + 1
    if in_line:
        yield _finish(bytes(pending), seen, max_line_bytes)


def _finish(line: bytes, length: int, max_line_bytes: int | None) -> bytes:
    """Strip a trailing '\\r' and cut an over-long line to ``max_line_bytes + 1`` bytes."""
    if length == len(line) and line.endswith(b"\r"):
        line = line[:-1]
    elif length != len(line):  # cut while streaming: certainly over the limit
        return line[: max_line_bytes + 1] if max_line_bytes is not None else line
    if max_line_bytes is not None and len(line) > max_line_bytes:
        return line[: max_line_bytes + 1]
    return line


class DigestingChunks:
    """Iterate a stream's chunks while counting its bytes and computing its sha256 digest."""

    def __init__(self, stream: BinaryIO, chunk_bytes: int = CHUNK_BYTES) -> None:
        self._stream = stream
        self._chunk_bytes = chunk_bytes
        self._hash = hashlib.sha256()
        self.bytes = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in iter_chunks(self._stream, self._chunk_bytes):
            self._hash.update(chunk)
            self.bytes += len(chunk)
            yield chunk

    @property
    def digest(self) -> str:
        """``sha256:<hex>`` of the bytes read so far (all of them once iteration has finished)."""
        return f"sha256:{self._hash.hexdigest()}"
