"""Output lines cut to a byte cap on UTF-8 character boundaries (`LOG_LINE_MAX_BYTES`).

An agent (or a build step) that prints without newlines would otherwise hand the service one line as
long as its whole output: every reader of output (the engine's log stream, build output, git's output)
emits a piece as soon as it holds `max_bytes` of a line, and the stored build log splits what it is
given the same way, so no line anywhere is longer, and no reader buffers more than about that much.
The cut falls before the character that would straddle the cap, so every piece decodes on its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO

__all__ = ["cut_at", "read_lines", "split_bytes", "split_text"]


def cut_at(data: bytes, max_bytes: int) -> int:
    """Where to cut `data` (longer than `max_bytes`) so the head is at most `max_bytes` and ends on a character.

    Bytes that are not UTF-8 (no character start within the last 3 bytes before the cap) are cut at the cap.
    """
    for back in range(min(3, max_bytes - 1) + 1):
        if data[max_bytes - back] & 0xC0 != 0x80:  # not a continuation byte: a character starts here
            return max_bytes - back
    return max_bytes


def split_bytes(data: bytes, max_bytes: int) -> Iterator[bytes]:
    """`data` in pieces of at most `max_bytes`, cut on character boundaries (one piece when it fits, even empty)."""
    while len(data) > max_bytes:
        cut = cut_at(data, max_bytes)
        yield data[:cut]
        data = data[cut:]
    yield data


def split_text(text: str, max_bytes: int) -> list[str]:
    """`text` as pieces of at most `max_bytes` in UTF-8 (one piece, maybe empty, when it fits)."""
    encoded = text.encode("utf-8", errors="surrogatepass")
    if len(encoded) <= max_bytes:
        return [text]
    return [piece.decode("utf-8", errors="replace") for piece in split_bytes(encoded, max_bytes)]


def read_lines(stream: IO[bytes], max_bytes: int) -> Iterator[str]:
    """The lines of a byte stream (without their line ends), a longer one in pieces of at most `max_bytes`.

    Reads at most `max_bytes + 1` bytes at a time (`readline`'s limit), so it never holds more of a line.
    """
    buffer = b""
    while True:
        chunk = stream.readline(max_bytes + 1 - len(buffer))
        buffer += chunk
        if not chunk or buffer.endswith(b"\n"):
            if buffer:
                yield buffer.removesuffix(b"\n").decode("utf-8", errors="replace").removesuffix("\r")
            if not chunk:
                return
            buffer = b""
        elif len(buffer) > max_bytes:
            cut = cut_at(buffer, max_bytes)
            yield buffer[:cut].decode("utf-8", errors="replace")
            buffer = buffer[cut:]
